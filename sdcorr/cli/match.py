"""``sdcorr match``: the points of one image found in another, without a dataset or a run folder.

A thin use case over :meth:`sdcorr.module.CorrespondenceModule.match_pair`: read the two images, check
the points, run the module on the device and precision asked for (Lightning Fabric places the module
and enters the precision's autocast, as the Trainer does for ``test``), then write ``match.json`` and
``match.png`` and print the points.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric import Fabric
from PIL import Image

from datamodules.base import first_outside, sample_from_record
from sdcorr.errors import OutputError, UsageError
from sdcorr.images import save_picture
from sdcorr.matchers.base import MatchResult
from sdcorr.module import CorrespondenceModule
from sdcorr.pages import plots
from sdcorr.runs.fingerprint import model_description, settings_of
from sdcorr.runs.folder import MATCH_FILES, write_json

#: what ``sdcorr match`` writes into its output folder (named in :mod:`sdcorr.runs.folder`)
MATCH_FILE, PICTURE_FILE, CONFIG_FILE = MATCH_FILES["json"], MATCH_FILES["picture"], MATCH_FILES["config"]
_POINT = re.compile(r"^\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*,\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")


def parse_points(text: str) -> torch.Tensor:
    """``"x1,y1 x2,y2"`` (spaces or semicolons between points) -> ``[N, 2] (x, y)`` float32."""
    items = [item for item in re.split(r"[;\s]+", re.sub(r"\s*,\s*", ",", text.strip())) if item]
    points = []
    for item in items:
        match = _POINT.match(item)
        if match is None:
            raise UsageError(f'--points: cannot read {item!r}; expected pixel coordinates like "120,80 200,64.5"')
        points.append([float(match.group(1)), float(match.group(2))])
    if not points:
        raise UsageError('--points: no point given; expected pixel coordinates like "120,80 200,64.5"')
    return torch.tensor(points, dtype=torch.float32)


def match_files(
    model: CorrespondenceModule,
    source: str,
    target: str,
    points: str,
    folder: str | Path,
    fabric: Fabric,
    save_config: Optional[Callable[[Path], None]] = None,
) -> dict[str, Any]:
    """Find ``points`` of the image file ``source`` in ``target``; write match.json and match.png in ``folder``.

    Args:
        model: the correspondence module (source model and matcher).
        source: the image file the points are on.
        target: the image file to find them in.
        points: source-image pixel coordinates, ``"x1,y1 x2,y2 ..."``.
        folder: where match.json and match.png go (created).
        fabric: the device and precision to run on.
        save_config: writes the resolved config to the path it is given (``config.yaml`` in ``folder``),
            once the inputs are checked: a refused command writes nothing.

    Returns:
        The content of match.json.
    """
    keypoints = parse_points(points)
    pair = {
        "pair_id": f"{Path(source).name} -> {Path(target).name}",
        "category": "match",
        "source_path": source,
        "target_path": target,
        "source_keypoints": keypoints,
        "target_keypoints": None,
        "threshold": None,
    }
    sample = sample_from_record(pair)
    height, width = sample["source_image"].shape[1:]
    outside = first_outside(keypoints, (width, height))
    if outside is not None:
        x, y = keypoints[outside].tolist()
        size = f"W x H = {width} x {height}"
        raise UsageError(f"--points: point {outside + 1} ({x:g}, {y:g}) is outside {source} ({size})")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot write ({error}); set --output_dir") from error
    if save_config is not None:
        save_config(folder / CONFIG_FILE)
    fabric.setup_module(model)  # moves the module to the device and applies the precision (in place)
    with fabric.autocast():
        result = model.match_pair(fabric.to_device(sample))
    prediction = model.prediction(sample, result)
    payload = {
        "source": str(source),
        "target": str(target),
        "source_keypoints": prediction.source_keypoints,
        "predicted_keypoints": prediction.predicted_keypoints,
        "model": model_description(model.source),
        "config": {
            "source": settings_of(model.source),
            "matcher": settings_of(model.matcher),
            "seed": model.run_seed,
            "precision": str(fabric.strategy.precision.precision),
        },
    }
    if save_config is not None:
        payload["config"]["file"] = CONFIG_FILE  # the resolved command-line config, written beside match.json
    write_json(folder / MATCH_FILE, payload)  # each write names its file (see sdcorr.errors.writing)
    save_picture(draw(sample, result), folder / PICTURE_FILE)
    lines = [
        f"  ({sx:8.1f}, {sy:8.1f}) -> ({tx:8.1f}, {ty:8.1f})"
        for (sx, sy), (tx, ty) in zip(payload["source_keypoints"], payload["predicted_keypoints"])
    ]
    print(f"{pair['pair_id']}\n" + "\n".join(lines))
    print(f"wrote {folder / MATCH_FILE} and {folder / PICTURE_FILE}")
    return payload


def draw(sample: dict[str, Any], result: MatchResult) -> Image.Image:
    """The side-by-side correspondence plot above the target heatmaps, as one picture."""
    pair = plots.correspondence_plot(
        sample["source_image"], sample["target_image"], sample["source_keypoints"], result.keypoints.cpu(), height=384
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
    return canvas
