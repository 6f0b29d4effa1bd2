"""Pictures of what the model sees during ``sdcorr test``: on W&B, as PNG files and in ``index.html``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal, Optional

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from callbacks.predictions import RunResultsCallback, pair_datamodule, run_folder_of, writer_of
from datamodules.schedule import split
from sdcorr.errors import OptionError, SdcorrError
from sdcorr.pages.index import histogram_of, missing_note, write_report
from sdcorr.pages.plots import correspondence_plot, heatmap_plot, histogram_plot
from sdcorr.pages.viewer import PairAssets, pair_assets, panel_picture, write_assets
from sdcorr.pages.viewer_section import layer_names, pair_entry
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.records import Prediction
from sdcorr.runs.scoring import BOUNDS, layer_rows, summary_rows


class PictureCallback(RunResultsCallback):
    """Draw the first pairs of a test run and summarise the run, like the paper's supplementary figures.

    Per drawn pair (see :mod:`sdcorr.pages.plots`): a correspondence plot (a line from each source keypoint
    to its prediction, blue when correct at PCK@``alpha``, orange when wrong), the target attention
    heatmaps (ground truth: yellow star; prediction: white ring) and, with ``source_maps``, where the
    fitted embeddings attend in the source image. At the end of the test run, when the
    :class:`~callbacks.predictions.PredictionWriter` hands over the run's tables (in any callback
    order, see :class:`~callbacks.predictions.RunResultsCallback`): the PCK tables (per category, per
    group, per layer) and the histogram of pairs by the fraction of their keypoints that are correct.
    Without a PredictionWriter, the page has the pictures only.

    Per drawn pair also the files of the page's viewer (see :mod:`sdcorr.pages.viewer`): the images at
    ``height`` rows and every map (each read layer's and their mean, target and source) as
    ``map_size`` tiles of one 8-bit PNG, which ``index.html`` embeds (see :mod:`sdcorr.pages.viewer_section`):
    every pair of the run, sortable and filterable, and per keypoint its maps per layer. Measured
    (docs/outputs.md): with the defaults (8 drawn pairs, maps of 8 keypoints) and 4 read layers the
    page is about 2.3 MB (0.28 MB per drawn pair, about 60 bytes per keypoint of any other pair);
    with the tiny model's 2 layers and 5-6 keypoints, 1.2 MB for a 50-pair run. When the page
    embedded the PNGs, 3 pairs made 3.3 MB.

    Where they go: to W&B when a ``WandbLogger`` is among the Trainer's loggers (images with
    ``log_image``, tables with ``log_table``: also ``viewer/pairs``, every pair with its PCK, and
    ``viewer/keypoints``, each drawn keypoint with its target maps; a bar chart of the histogram); into
    the output folder (``pictures/*``, see :mod:`sdcorr.pages.viewer`, and a self-contained ``index.html``,
    see :mod:`sdcorr.pages.index`) when no WandbLogger is configured or ``WANDB_MODE=disabled``
    (``files: auto``), or always (``files: always``).

    Only rank 0 draws (under DDP: from the pairs of process 0). Only ``test`` runs are drawn.

    Which pairs: ``pair_ids``, else the first ``num_pairs`` of the run's pairs (the
    :class:`~datamodules.base.PairDataModule`'s ``selected``, process 0's share under DDP; without a
    datamodule, the first pairs matched), decided before the run starts, so a resumed run draws
    the same pairs as an uninterrupted one. Pairs among them that an earlier, interrupted run of the
    folder finished without their pictures (killed between the prediction and the picture, or the
    pictures were deleted) are matched again when the test loop starts (the same random draws: the
    same maps) and drawn from their saved predictions. When nothing is left to run, they cannot be:
    index.html and a warning name them and say how to redraw them.

    Args:
        enabled: draw anything at all; false costs nothing.
        num_pairs: draw the first this many pairs of the run.
        pair_ids: draw these pairs instead of the first ``num_pairs``.
        keypoints: at most this many keypoints (the first ones) get heatmap panels; None: all.
            Correspondence plots always show every keypoint.
        alpha: PCK threshold of the colours and the histogram; one of the model's ``alphas``.
        alphas: the model's PCK alphas, to check ``alpha`` against when the callback is built (the
            ``sdcorr`` command links them from ``model.alphas``); None: checked when the run starts.
        source_maps: also draw the source-side heatmaps (extra passes through the model per drawn pair).
        files: write pictures/*.png and index.html: auto (only without a WandbLogger), always or never.
        height: height in pixels of the correspondence plots and of the viewer's images.
        panel_size: longest side in pixels of each heatmap panel.
        map_size: side in pixels of each map kept for the viewer (``map_size x map_size`` per layer,
            keypoint and side; the page stretches them to the image).
    """

    def __init__(
        self,
        enabled: bool = True,
        num_pairs: int = 8,
        pair_ids: Optional[list[str]] = None,
        keypoints: Optional[int] = 8,
        alpha: float = 0.1,
        alphas: Optional[list[float]] = None,
        source_maps: bool = True,
        files: Literal["auto", "always", "never"] = "auto",
        height: int = 320,
        panel_size: int = 192,
        map_size: int = 64,
    ) -> None:
        if num_pairs < 0:
            raise OptionError(self, "num_pairs", f"expected a number of pairs >= 0; got {num_pairs}")
        if keypoints is not None and keypoints < 1:
            raise OptionError(self, "keypoints", f"expected a number >= 1 (or null for all); got {keypoints}")
        if map_size < 4:
            raise OptionError(self, "map_size", f"expected a side in pixels >= 4; got {map_size}")
        if files not in ("auto", "always", "never"):
            raise OptionError(self, "files", f"expected 'auto', 'always' or 'never'; got {files!r}")
        if alphas is not None:
            _check_alpha(self, alpha, alphas)
        self.enabled = enabled
        self.num_pairs = num_pairs
        self.pair_ids = None if pair_ids is None else list(pair_ids)
        self.keypoints = keypoints
        self.alpha = alpha
        self.source_maps = source_maps
        self.files = files
        self.height = height
        self.panel_size = panel_size
        self.map_size = map_size
        self._drawn = 0
        self._rows: list[list[Any]] = []
        self._keypoint_rows: list[list[Any]] = []  # W&B viewer/keypoints: [pair, keypoint, correct, maps...]
        self._targets: Optional[list[str]] = None  # the pairs to draw, when the run's pair list is known
        self._undrawn: Optional[list[str]] = None  # targets predicted by an earlier run without pictures

    # where things go
    @staticmethod
    def wandb_logger(trainer: Trainer) -> Optional[WandbLogger]:
        """The first WandbLogger among the Trainer's loggers; None if there is none or ``WANDB_MODE=disabled``."""
        if os.environ.get("WANDB_MODE") == "disabled":  # W&B would drop everything: write files instead
            return None
        return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)

    def writes_files(self, trainer: Trainer) -> bool:
        """Whether PNGs and index.html go to the output folder."""
        return self.files == "always" or (self.files == "auto" and self.wandb_logger(trainer) is None)

    @staticmethod
    def run_folder(trainer: Trainer) -> RunFolder:
        """The output folder: the PredictionWriter's, else the Trainer's ``default_root_dir``."""
        return run_folder_of(trainer)

    def _active(self, trainer: Trainer) -> bool:
        """Enabled, rank 0, and somewhere to put the pictures (files or W&B)."""
        if not self.enabled or not trainer.is_global_zero:
            return False
        return self.writes_files(trainer) or self.wandb_logger(trainer) is not None

    # hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled or stage != "test":
            return
        _check_alpha(self, self.alpha, pl_module.alphas)
        self._drawn, self._rows, self._keypoint_rows, self._undrawn = 0, [], [], None
        self._targets = None
        if self.pair_ids is not None:
            self._targets = list(self.pair_ids)
        elif trainer.datamodule is not None:  # process r's share (datamodules.base.UnpaddedDistributedSampler)
            selected = pair_datamodule(trainer, "the PictureCallback").selected
            part = split(selected, trainer.world_size)[trainer.global_rank]
            self._targets = [selected[i]["pair_id"] for i in part][: self.num_pairs]

    def _find_undrawn(self, trainer: Trainer) -> list[str]:
        """Pairs to draw that the folder's predictions have but its pictures do not (an earlier run's)."""
        if not self._active(trainer) or not self.writes_files(trainer) or self._targets is None:
            return []
        run = self.run_folder(trainer)
        try:
            done = {prediction.pair_id for prediction in run.predictions()}
        except (SdcorrError, OSError):  # the PredictionWriter reports a broken folder
            return []
        return [i for i in self._targets if i in done and not run.picture_file(i, "correspondence").is_file()]

    def _wanted(self, pair_id: str) -> bool:
        if self._targets is not None:
            return pair_id in self._targets
        return self._drawn < self.num_pairs

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw the pairs to draw that an earlier run of the folder predicted but did not draw."""
        self._undrawn = self._find_undrawn(trainer)
        if not self._undrawn:
            return
        datamodule = pair_datamodule(trainer, "the PictureCallback")
        predictions = {p.pair_id: p for p in self.run_folder(trainer).predictions()}
        pairs = {pair["pair_id"]: pair for pair in datamodule.selected}
        for pair_id in list(self._undrawn):
            batch = [datamodule.load_sample(pairs[pair_id])]
            (sample,) = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            match = pl_module.match_pair(sample)  # the same seed as the first time: the same maps
            prediction = predictions[pair_id]
            self._publish(trainer, prediction, *self.draw(pl_module, sample, prediction, match))
            self._undrawn.remove(pair_id)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._active(trainer) or not outputs:
            return
        matches = outputs.get("matches") or [None] * len(outputs["predictions"])
        for sample, prediction, match in zip(batch, outputs["predictions"], matches):
            if self._wanted(prediction.pair_id):
                self._drawn += 1
                self._publish(trainer, prediction, *self.draw(pl_module, sample, prediction, match))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if writer_of(trainer) is None:  # no tables will come: the page of the pictures alone
            self._summarise(trainer, None)

    def on_run_results(self, trainer: Trainer, pl_module: LightningModule, results: dict[str, Any]) -> None:
        """The PredictionWriter wrote results.json: the tables and the page (also when nothing was left to run)."""
        if self.enabled and self._undrawn is None:  # nothing was left to run: no test loop, nothing redrawn
            self._undrawn = self._find_undrawn(trainer)
        self._summarise(trainer, results)

    def _summarise(self, trainer: Trainer, results: Optional[dict[str, Any]]) -> None:
        """The run's tables and histogram, to W&B and/or into index.html (rank 0)."""
        if not self._active(trainer):
            return
        run = self.run_folder(trainer)
        if self._undrawn:
            rank_zero_warn(f"pictures: {missing_note(self._undrawn)}")
        logger = self.wandb_logger(trainer)
        if logger is not None:
            if self._rows:
                columns = ["pair_id", "category", f"pck@{self.alpha:g}", *self._kinds()]
                logger.log_table("pictures/pairs", columns=columns, data=self._rows, step=trainer.global_step)
            self._log_viewer_tables(logger, trainer, run, results)
            if results is not None:
                self._log_summary(logger, trainer, run, results)
        if self.writes_files(trainer):
            counts = histogram_of(run, self.alpha, results) if results is not None else None
            if counts is not None:
                run.pictures.mkdir(parents=True, exist_ok=True)
                self._histogram_picture(counts).save(run.histogram_file)
            write_report(run, self.alpha, missing=self._undrawn, results=results)

    # drawing
    def _kinds(self) -> list[str]:
        return ["correspondence", "target-heatmaps"] + (["source-heatmaps"] if self.source_maps else [])

    def draw(
        self, pl_module: LightningModule, sample: dict, prediction: Prediction, match: Any
    ) -> tuple[dict[str, Image.Image], Optional[PairAssets]]:
        """The pictures of one pair, ``{"correspondence": ..., "target-heatmaps": ..., "source-heatmaps": ...}``,
        and its files for the page's viewer (see :mod:`sdcorr.pages.viewer`; None without a MatchResult).

        Args:
            sample: the sample dict (images, see :mod:`datamodules.base`).
            prediction: its ``predictions.jsonl`` line (points, ``correct``).
            match: its :class:`~sdcorr.matchers.base.MatchResult` (heatmaps ``[N, S, S]``, per-layer maps
                ``[L, N, S, S]``, embeddings), or None.
        """
        correct = (prediction.correct_flags or {}).get(f"{self.alpha:g}")
        target = prediction.target_keypoints
        score = f"PCK@{self.alpha:g} {sum(correct)}/{len(correct)}" if correct is not None else "no ground truth"
        pictures = {
            "correspondence": correspondence_plot(
                sample["source_image"],
                sample["target_image"],
                prediction.source_keypoints,
                prediction.predicted_keypoints,
                correct,
                target,
                height=self.height,
                caption=f"{prediction.pair_id} ({prediction.category})  {score}",
            )
        }
        if match is None:
            return pictures, None
        n = len(prediction.source_keypoints)
        k = n if self.keypoints is None else self.keypoints
        flags = correct if correct is not None else [None] * n
        labels = [f"#{i}" + {None: "", True: " correct", False: " wrong"}[ok] for i, ok in enumerate(flags)][:k]
        pictures["target-heatmaps"] = heatmap_plot(
            sample["target_image"],
            match.heatmaps[:k],
            points=None if target is None else target[:k],
            predictions=prediction.predicted_keypoints[:k],
            labels=labels,
            panel_size=self.panel_size,
        )
        located = None
        if self.source_maps:
            # the fitted embeddings of the drawn keypoints only: their maps do not depend on the others
            embeddings = None if match.embeddings is None else match.embeddings[:k]
            located = pl_module.source_maps(sample, dataclasses.replace(match, embeddings=embeddings))
            if located is not None:
                pictures["source-heatmaps"] = heatmap_plot(
                    sample["source_image"],
                    located.heatmaps[:k],
                    points=prediction.source_keypoints[:k],
                    labels=[f"#{i}" for i in range(len(located.heatmaps[:k]))],
                    panel_size=self.panel_size,
                )
        assets = pair_assets(
            sample["source_image"],
            sample["target_image"],
            prediction,
            match.heatmaps,
            target_layer_maps=match.layer_heatmaps,
            source_maps=None if located is None else located.heatmaps,
            source_layer_maps=None if located is None else located.layer_heatmaps,
            keypoints=k,
            height=self.height,
            tile=self.map_size,
        )
        return pictures, assets

    def _publish(
        self, trainer: Trainer, prediction: Prediction, pictures: dict[str, Image.Image], assets: Optional[PairAssets]
    ) -> None:
        if self.writes_files(trainer):
            run = self.run_folder(trainer)
            run.pictures.mkdir(parents=True, exist_ok=True)
            for kind, picture in pictures.items():
                picture.save(run.picture_file(prediction.pair_id, kind))
            if assets is not None:
                write_assets(run, assets)
        logger = self.wandb_logger(trainer)
        if logger is None:
            return
        import wandb

        caption = f"{prediction.pair_id} ({prediction.category})"
        for kind, picture in pictures.items():
            logger.log_image(f"pictures/{kind}", [picture], step=trainer.global_step, caption=[caption])
        correct = (prediction.correct_flags or {}).get(f"{self.alpha:g}")
        fraction = None if not correct else sum(correct) / len(correct)
        images = [wandb.Image(pictures[k]) if k in pictures else None for k in self._kinds()]
        self._rows.append([prediction.pair_id, prediction.category, fraction, *images])
        if assets is not None:
            self._keypoint_rows += _keypoint_rows(assets, correct)

    def _log_viewer_tables(
        self, logger: WandbLogger, trainer: Trainer, run: RunFolder, results: Optional[dict[str, Any]]
    ) -> None:
        """The viewer's tables on W&B: ``viewer/pairs`` (every pair of the run's predictions, with its PCK)
        and ``viewer/keypoints`` (each drawn keypoint, correct or not, its target maps: mean and per layer)."""
        step = trainer.global_step
        try:
            predictions, manifest = run.predictions(), run.read_manifest()
        except (SdcorrError, OSError):  # the PredictionWriter reports a broken folder
            predictions, manifest = [], None
        if predictions:
            rows = []
            for prediction in predictions:
                entry = pair_entry(prediction, self.alpha)
                groups = ", ".join(f"{k}={v}" for k, v in sorted(entry["groups"].items()))
                rows.append([entry["id"], entry["category"], groups, entry["pck"]])
            columns = ["pair_id", "category", "groups", f"pck@{self.alpha:g}"]
            logger.log_table("viewer/pairs", columns=columns, data=rows, step=step)
        if self._keypoint_rows:
            width = max(len(row) for row in self._keypoint_rows)
            names = layer_names(manifest, results) or []
            layers = [f"layer {names[i] if i < len(names) else i}" for i in range(width - 4)]
            columns = ["pair_id", "keypoint", f"correct@{self.alpha:g}", "mean of layers", *layers]
            data = [row + [None] * (width - len(row)) for row in self._keypoint_rows]
            logger.log_table("viewer/keypoints", columns=columns, data=data, step=step)

    def _histogram_picture(self, counts: dict[str, Any]) -> Image.Image:
        title = f"pairs by fraction of keypoints correct at PCK@{self.alpha:g}"
        return histogram_plot(counts["bins"], counts["counts"], title=title)

    def _log_summary(self, logger: WandbLogger, trainer: Trainer, run: RunFolder, results: dict[str, Any]) -> None:
        """Per-category and per-layer tables (each figure with its 95% interval's ``/low`` and ``/high``),
        the overall intervals and per-layer PCK values, and the histogram, to W&B."""
        import wandb

        step = trainer.global_step
        columns, rows = summary_rows(results, intervals=True)
        logger.log_table("pck/per_category", columns=columns, data=rows, step=step)
        bounds = {c: v for c, v in zip(columns[3:], rows[-1][3:]) if c.endswith(BOUNDS) and v is not None}
        logger.log_metrics(bounds, step=step)  # the overall row's: pck@0.1/per_image/low, ...
        columns, rows = layer_rows(results, intervals=True)
        if rows:
            logger.log_table("pck/per_layer", columns=columns, data=rows, step=step)
            values = {f"per_layer/{row[0]}/{c}": v for row in rows for c, v in zip(columns[1:], row[1:])}
            logger.log_metrics({k: v for k, v in values.items() if v is not None}, step=step)
        counts = histogram_of(run, self.alpha, results)
        if counts is None:
            return
        data = [[label, count] for label, count in zip(counts["bins"], counts["counts"])]
        logger.log_table("pck/histogram", columns=["bin", "pairs"], data=data, step=step)
        title = f"pairs by fraction of keypoints correct at PCK@{self.alpha:g}"
        chart = wandb.plot.bar(wandb.Table(columns=["bin", "pairs"], data=data), "bin", "pairs", title=title)
        logger.log_metrics({"pck/histogram_chart": chart}, step=step)
        logger.log_image("pck/histogram_image", [self._histogram_picture(counts)], step=step)


def _keypoint_rows(assets: PairAssets, correct: Optional[list[bool]]) -> list[list[Any]]:
    """Rows of the W&B table ``viewer/keypoints`` for one drawn pair: ``[pair_id, keypoint, correct,
    mean map, map of layer 0, ...]``, the maps as ``wandb.Image`` of the target panels (see
    :func:`sdcorr.pages.viewer.panel_picture`)."""
    import wandb

    panels = [i for i, panel in enumerate(assets.meta["panels"]) if panel["side"] == "target"]
    mean = [i for i in panels if assets.meta["panels"][i]["layer"] is None]
    layers = [i for i in panels if assets.meta["panels"][i]["layer"] is not None]
    rows = []
    for k in range(assets.meta["keypoints"]):
        images = [wandb.Image(panel_picture(assets, i, k)) for i in mean + layers]
        rows.append([assets.meta["pair_id"], k, None if correct is None else bool(correct[k]), *images])
    return rows


def _check_alpha(owner: object, alpha: float, alphas: list[float]) -> None:
    names = [f"{a:g}" for a in alphas]
    if f"{alpha:g}" not in names:
        raise OptionError(owner, "alpha", f"expected one of the model's alphas {names} (model.alphas); got {alpha:g}")
