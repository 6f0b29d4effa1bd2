"""Pictures of what the model sees during ``sdcorr test``: on W&B, and as files that ``index.html`` shows."""

from __future__ import annotations

import os
from typing import Any, Literal, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from datamodules.base import PairDataModule
from sdcorr.errors import OptionError
from sdcorr.images import save_picture
from sdcorr.pages.index import missing_note
from sdcorr.pages.plots import correspondence_plot, heatmap_plot
from sdcorr.pages.viewer import PairAssets, pair_assets, panel_picture, write_assets
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.pairs import pairs_to_draw
from sdcorr.runs.records import Prediction


class PictureCallback(Callback):
    """Draw the first pairs of a test run, like the paper's supplementary figures.

    Per drawn pair (see :mod:`sdcorr.pages.plots`): a correspondence plot (a line from each source keypoint
    to its prediction, blue when correct at PCK@``alpha``, orange when wrong), the target attention
    heatmaps (ground truth: yellow star; prediction: white ring) and, with ``source_maps``, where the
    fitted embeddings attend in the source image. Each is drawn in ``on_test_batch_end`` from the
    module's outputs (the prediction, its :class:`~sdcorr.matchers.base.MatchResult` and, for the pairs
    this callback asks for at setup, the source maps: one more locate pass of the model per drawn pair,
    made in the module's ``test_step``; the model never runs in a callback).

    Per drawn pair also the files of the page's viewer (see :mod:`sdcorr.pages.viewer`): the images at
    ``height`` rows and every map (each read layer's and their mean, target and source) as
    ``map_size`` tiles of one 8-bit PNG, which ``index.html`` embeds (see :mod:`sdcorr.pages.viewer_section`):
    every pair of the run, sortable and filterable, and per keypoint its maps per layer. Measured
    (docs/outputs.md): with the defaults (8 drawn pairs, maps of 8 keypoints) and 4 read layers the
    page is about 2.3 MB (0.28 MB per drawn pair, about 60 bytes per keypoint of any other pair);
    with the tiny model's 2 layers and 5-6 keypoints, 1.2 MB for a 50-pair run. When the page
    embedded the PNGs, 3 pairs made 3.3 MB.

    Where they go: into the run folder's ``pictures/`` (see :mod:`sdcorr.pages.viewer`; ``files: always``,
    the default: the page of every test run shows them, whatever the logger), and also to W&B when a
    ``WandbLogger`` is among the Trainer's loggers (images with ``log_image``; at the end of the test loop
    the tables ``pictures/pairs`` and ``viewer/keypoints``, each drawn keypoint with its target maps);
    ``files: auto`` writes files only when no WandbLogger is configured or ``WANDB_MODE=disabled``. A
    file that cannot be written (a full disk) stops the run with an
    :class:`~sdcorr.errors.OutputError` naming it. This callback writes nothing else: ``index.html``,
    which shows these files, is written at the end of the run by
    :class:`~callbacks.run_folder.RunFolderWriter` from what ``pictures/`` holds (every
    ``on_test_batch_end`` comes before any ``on_test_end``, so in any callback order). It reads no file
    another callback wrote and looks up no other callback; the run folder is ``dir``, else the Trainer's
    ``default_root_dir`` (the ``sdcorr`` command links ``dir`` to ``--output.dir``).

    Only rank 0 draws (under DDP: from the pairs of process 0). Only ``test`` runs are drawn.

    Which pairs: ``pair_ids``, else the first ``num_pairs`` of the run's pairs (the
    :class:`~datamodules.base.PairDataModule`'s ``selected``, process 0's share under DDP, see
    :func:`sdcorr.runs.pairs.pairs_to_draw`; without a datamodule, the first pairs matched), decided
    before the run starts, so a resumed run draws the same pairs as an uninterrupted one. They are
    recorded in ``pictures/chosen.json``. A chosen pair that an earlier, interrupted run of the folder
    finished without its pictures (killed or stopped by a full disk between the prediction and the
    pictures, or the pictures were deleted; its ``<pair>.viewer.json``, written last, is missing) is
    matched again in this run's test loop, with the same random draws, and drawn: the callback asks the
    datamodule at setup (:meth:`~datamodules.base.PairDataModule.rematch`); the pair is neither scored
    nor recorded twice. A chosen pair still without pictures at the end (under DDP a pair matched again
    by another process than 0) is named by index.html and by a warning, the run's last line, with the
    command that draws it (``sdcorr report RUN --draw PAIR``).

    Args:
        enabled: draw anything at all; false costs nothing.
        num_pairs: draw the first this many pairs of the run.
        pair_ids: draw these pairs instead of the first ``num_pairs``.
        keypoints: at most this many keypoints (the first ones) get heatmap panels; None: all.
            Correspondence plots always show every keypoint.
        alpha: PCK threshold of the colours and the histogram; one of the model's ``alphas``.
        alphas: the model's PCK alphas, to check ``alpha`` against when the callback is built (the
            ``sdcorr`` command links them from ``model.alphas``); None: checked when the run starts.
        source_maps: also draw the source-side heatmaps (extra passes through the model per drawn pair,
            made by the module's ``test_step`` for the pairs this callback asks for at setup; with a
            datamodule that is no ``PairDataModule`` the drawn pairs are not known then, and none are drawn).
        files: write pictures/ (the PNGs and the viewer's files): always (also with W&B), auto (only
            without a WandbLogger) or never.
        height: height in pixels of the correspondence plots and of the viewer's images.
        panel_size: longest side in pixels of each heatmap panel.
        map_size: side in pixels of each map kept for the viewer (``map_size x map_size`` per layer,
            keypoint and side; the page stretches them to the image).
        dir: the run folder; default: the Trainer's ``default_root_dir`` (the ``sdcorr`` command links it
            to ``--output.dir``).
        overwrite: delete the folder's ``pictures/`` at setup, the pictures of the run the folder held (the
            ``sdcorr`` command links it to ``--output.overwrite``, which discards that run).
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
        files: Literal["auto", "always", "never"] = "always",
        height: int = 320,
        panel_size: int = 192,
        map_size: int = 64,
        dir: Optional[str] = None,
        overwrite: bool = False,
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
        self.dir = dir
        self.overwrite = overwrite
        self._drawn = 0
        self._rows: list[list[Any]] = []
        self._keypoint_rows: list[list[Any]] = []  # W&B viewer/keypoints: [pair, keypoint, correct, maps...]
        self._targets: Optional[list[str]] = None  # the pairs to draw, when the run's pair list is known
        self._layers: Optional[list[str]] = None  # the read layers' names, for the W&B keypoint table

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

    def run_folder(self, trainer: Trainer) -> RunFolder:
        """The run folder (see :meth:`RunFolder.of`)."""
        return RunFolder.of(trainer.default_root_dir, self.dir)

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
        self._drawn, self._rows, self._keypoint_rows = 0, [], []
        layers = (getattr(getattr(pl_module, "source", None), "hparams", None) or {}).get("layers")
        self._layers = [str(layer) for layer in layers] if isinstance(layers, list) else None
        datamodule = getattr(trainer, "datamodule", None)
        selected = datamodule.selected if isinstance(datamodule, PairDataModule) else None
        self._targets = pairs_to_draw(selected, trainer.world_size, self.num_pairs, self.pair_ids)
        run = self.run_folder(trainer)
        if self.overwrite and trainer.is_global_zero:
            run.clear_pictures()
        if self.writes_files(trainer) and self._targets is not None:
            undrawn = None
            if trainer.is_global_zero:
                run.write_chosen(self._targets)
                undrawn = run.undrawn()
            if trainer.world_size > 1:  # every process must match the same pairs
                undrawn = trainer.strategy.broadcast(undrawn, src=0)
            if isinstance(datamodule, PairDataModule):  # those an earlier run finished: matched again for pictures
                datamodule.rematch(set(undrawn or ()))
        if self._active(trainer) and self.source_maps and self._targets is not None:
            # the module computes them in its test_step: no model pass in a callback
            pl_module.source_map_requests.update(dict.fromkeys(self._targets, self.keypoints))

    def _wanted(self, pair_id: str) -> bool:
        if self._targets is not None:
            return pair_id in self._targets
        return self._drawn < self.num_pairs

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._active(trainer) or not outputs:
            return
        matches = outputs.get("matches") or [None] * len(outputs["predictions"])
        located = outputs.get("source_maps") or [None] * len(outputs["predictions"])
        for sample, prediction, match, source in zip(batch, outputs["predictions"], matches, located):
            if self._wanted(prediction.pair_id):
                self._drawn += 1
                self._publish(trainer, prediction, *self.draw(sample, prediction, match, source))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The tables of the drawn pairs, to W&B."""
        logger = self.wandb_logger(trainer) if self._active(trainer) else None
        if logger is not None:
            self._log_tables(logger, trainer)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Warn about chosen pairs that still have no pictures, with the command that draws them."""
        if stage != "test" or not self._active(trainer) or not self.writes_files(trainer) or self._targets is None:
            return
        run = self.run_folder(trainer)
        missing = run.undrawn()
        if missing:
            rank_zero_warn(f"pictures: {missing_note(missing, run.path)}")

    # drawing
    def _kinds(self) -> list[str]:
        return ["correspondence", "target-heatmaps"] + (["source-heatmaps"] if self.source_maps else [])

    def draw(
        self, sample: dict, prediction: Prediction, match: Any, located: Any = None
    ) -> tuple[dict[str, Image.Image], Optional[PairAssets]]:
        """The pictures of one pair, ``{"correspondence": ..., "target-heatmaps": ..., "source-heatmaps": ...}``,
        and its files for the page's viewer (see :mod:`sdcorr.pages.viewer`; None without a MatchResult).

        Args:
            sample: the sample dict (images, see :mod:`datamodules.base`).
            prediction: its ``predictions.jsonl`` line (points, ``correct``).
            match: its :class:`~sdcorr.matchers.base.MatchResult` (heatmaps ``[N, S, S]``, per-layer maps
                ``[L, N, S, S]``, embeddings), or None.
            located: where its fitted embeddings attend in the source (the module's ``source_maps`` output
                of this pair, a MatchResult of the first ``keypoints``), or None: no source-side pictures.
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
        located = located if self.source_maps else None
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
            for kind, picture in pictures.items():
                save_picture(picture, run.picture_file(prediction.pair_id, kind))
            if assets is not None:  # the viewer's files last: its viewer.json marks the pair drawn
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

    def _log_tables(self, logger: WandbLogger, trainer: Trainer) -> None:
        """``pictures/pairs`` (each drawn pair: its PCK and pictures) and ``viewer/keypoints`` (each drawn
        keypoint, correct or not, its target maps: mean and per layer)."""
        step = trainer.global_step
        if self._rows:
            columns = ["pair_id", "category", f"pck@{self.alpha:g}", *self._kinds()]
            logger.log_table("pictures/pairs", columns=columns, data=self._rows, step=step)
        if self._keypoint_rows:
            width = max(len(row) for row in self._keypoint_rows)
            names = self._layers or []
            layers = [f"layer {names[i] if i < len(names) else i}" for i in range(width - 4)]
            columns = ["pair_id", "keypoint", f"correct@{self.alpha:g}", "mean of layers", *layers]
            data = [row + [None] * (width - len(row)) for row in self._keypoint_rows]
            logger.log_table("viewer/keypoints", columns=columns, data=data, step=step)


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
