"""The Trainer of the ``sdcorr`` command: Lightning's, plus ``match`` for one image pair.

LightningCLI turns each Trainer method it is told about into a subcommand with the same config
files, model options and Trainer options (devices, precision); ``sdcorr match`` is this class's
:meth:`SdcorrTrainer.match`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from PIL import Image
from torch.utils.data import DataLoader

from callbacks.predictions import PredictionWriter
from datamodules.base import collate_pairs, first_outside, load_image
from sdcorr import plots
from sdcorr.errors import DataError, OutputError
from sdcorr.module import CorrespondenceModule
from sdcorr.runfolder import CONFIG_FILE, describe, model_description

_POINT = re.compile(r"^\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*,\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")


def parse_points(text: str) -> torch.Tensor:
    """``"x1,y1 x2,y2"`` (spaces or semicolons between points) -> ``[N, 2] (x, y)`` float32."""
    items = [item for item in re.split(r"[;\s]+", re.sub(r"\s*,\s*", ",", text.strip())) if item]
    points = []
    for item in items:
        match = _POINT.match(item)
        if match is None:
            raise DataError(f'--points: cannot read {item!r}; expected pixel coordinates like "120,80 200,64.5"')
        points.append([float(match.group(1)), float(match.group(2))])
    if not points:
        raise DataError('--points: no point given; expected pixel coordinates like "120,80 200,64.5"')
    return torch.tensor(points, dtype=torch.float32)


class SdcorrTrainer(Trainer):
    """Lightning's Trainer with :meth:`match`, which LightningCLI offers as ``sdcorr match``.

    ``test`` prints no Lightning metric table by default (``verbose=False``): the run prints its own
    PCK table on stdout (see :class:`callbacks.predictions.PredictionWriter`).
    """

    #: where ``match`` writes, while it runs (None otherwise); the saved config goes there too
    output_folder: Optional[Path] = None

    def test(
        self,
        model: Optional[LightningModule] = None,
        dataloaders: Any = None,
        ckpt_path: Optional[str] = None,
        verbose: bool = False,
        datamodule: Optional[LightningDataModule] = None,
        weights_only: Optional[bool] = None,
    ) -> list[dict[str, float]]:
        """Lightning's ``test``, quiet by default.

        Args:
            model: the correspondence module.
            dataloaders: test dataloaders, or a datamodule.
            ckpt_path: checkpoint to load first (not used by sdcorr's frozen models).
            verbose: also print Lightning's metric table (sdcorr prints its PCK table either way).
            datamodule: the pairs to test on.
            weights_only: passed to ``torch.load`` with ``ckpt_path``.
        """
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def match(
        self,
        model: CorrespondenceModule,
        source: str,
        target: str,
        points: str,
        output_dir: Optional[str] = None,
        datamodule: Optional[LightningDataModule] = None,
    ) -> dict[str, Any]:
        """Match points of one image in another: writes match.json and match.png, prints the points.

        Args:
            model: the correspondence module (``model:`` of the config files).
            source: the image the points are on.
            target: the image to find them in.
            points: source-image pixel coordinates, ``"x1,y1 x2,y2 ..."``.
            output_dir: folder for ``match.json`` and ``match.png``; default ``<default_root_dir>/match``.
            datamodule: ignored (config files of benchmark runs may carry a ``data:`` section).
        """
        keypoints = parse_points(points)
        source_image, target_image = load_image(source), load_image(target)
        size = (source_image.shape[2], source_image.shape[1])
        outside = first_outside(keypoints, size)
        if outside is not None:
            x, y = keypoints[outside].tolist()
            raise DataError(
                f"--points: point {outside + 1} ({x:g}, {y:g}) is outside {source} (W x H = {size[0]} x {size[1]})"
            )
        folder = Path(output_dir or Path(self.default_root_dir) / "match")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{folder}: cannot write ({error}); set --output_dir") from error
        sample = {
            "pair_id": f"{Path(source).name} -> {Path(target).name}",
            "category": "match",
            "source_image": source_image,
            "target_image": target_image,
            "source_keypoints": keypoints,
            "target_keypoints": None,
            "threshold": None,
            "pck_scale": torch.ones(2),
        }
        loader = DataLoader([sample], batch_size=1, collate_fn=collate_pairs)
        # match writes its own files: no run folder, nothing to resume
        callbacks = self.callbacks
        self.callbacks = [c for c in callbacks if not isinstance(c, PredictionWriter)]
        model.return_results = True
        self.output_folder = folder  # the config goes beside match.json (see sdcorr.cli.RunFolderConfig)
        try:
            (output,) = self.predict(model, dataloaders=loader, return_predictions=True)
        finally:
            self.callbacks = callbacks
            model.return_results = False
            self.output_folder = None
        record, result = output["predictions"][0].to_json(), output["matches"][0]
        payload = {
            "source": str(source),
            "target": str(target),
            "source_keypoints": record["source_keypoints"],
            "predicted_keypoints": record["predicted_keypoints"],
            "model": model_description(model.source),
            "config": {
                "source": describe(model.source),
                "matcher": describe(model.matcher),
                "seed": model.run_seed,
                "precision": str(self.precision),
            },
        }
        if (folder / CONFIG_FILE).is_file():
            payload["config"]["file"] = CONFIG_FILE  # the resolved command-line config, beside match.json
        (folder / "match.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        self._draw(folder / "match.png", sample, result)
        lines = [
            f"  ({sx:8.1f}, {sy:8.1f}) -> ({tx:8.1f}, {ty:8.1f})"
            for (sx, sy), (tx, ty) in zip(payload["source_keypoints"], payload["predicted_keypoints"])
        ]
        print(f"{Path(source).name} -> {Path(target).name}\n" + "\n".join(lines))
        print(f"wrote {folder / 'match.json'} and {folder / 'match.png'}")
        return payload

    @staticmethod
    def _draw(path: Path, sample: dict[str, Any], result: Any) -> None:
        """The side-by-side plot above the target heatmaps, one picture."""
        pair = plots.correspondence_plot(
            sample["source_image"], sample["target_image"], sample["source_keypoints"], result.keypoints, height=384
        )
        maps = plots.heatmap_plot(
            sample["target_image"],
            result.heatmaps.float().cpu(),
            predictions=result.keypoints.cpu(),
            labels=[f"point {i + 1}" for i in range(len(result.keypoints))],
        )
        canvas = Image.new("RGB", (max(pair.width, maps.width), pair.height + maps.height + 8), "white")
        canvas.paste(pair, (0, 0))
        canvas.paste(maps, (0, pair.height + 8))
        canvas.save(path)
