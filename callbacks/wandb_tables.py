"""The run's metric tables on W&B: per category and per layer with intervals, the histogram, every pair's PCK."""

from __future__ import annotations

import os
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from datamodules.base import PairDataModule
from sdcorr.pages.index import histogram_of, histogram_picture
from sdcorr.pages.viewer_section import pair_entry
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.results import BOUNDS, Results, layer_rows, summary_rows
from sdcorr.runs.scoring import results_of
from sdcorr.stats.intervals import RESAMPLES


class WandbTables(Callback):
    """Log the tables of a test run to W&B, when a ``WandbLogger`` is among the Trainer's loggers (and
    ``WANDB_MODE`` is not ``disabled``); otherwise it does nothing.

    At the end of the test loop (rank 0): ``pck/per_category`` and ``pck/per_layer`` (each figure with its
    95% interval's ``/low`` and ``/high``), the overall row's bounds and each layer's PCK as metrics,
    ``pck/histogram`` (a table, a bar chart and the picture the page shows), and ``viewer/pairs``: every
    pair with its PCK at ``alpha``.

    The tables are computed here, once, from the module's outputs of this run (gathered from every
    process) and the pairs an earlier run of the folder finished (the module's ``done``, see
    :meth:`sdcorr.module.CorrespondenceModule.add_done`): the same predictions results.json scores. It
    reads no file and looks up no other callback. A run with nothing left to match logs nothing.

    Args:
        alpha: PCK threshold of the histogram and of ``viewer/pairs``; the ``sdcorr`` command links it to
            ``--pictures.alpha``.
        resamples: bootstrap resamples of the intervals; the ``sdcorr`` command links it to ``--output.resamples``.
    """

    def __init__(self, alpha: float = 0.1, resamples: int = RESAMPLES) -> None:
        self.alpha = alpha
        self.resamples = resamples
        self._predictions: list[Prediction] = []

    @staticmethod
    def wandb_logger(trainer: Trainer) -> Optional[WandbLogger]:
        """The first WandbLogger among the Trainer's loggers; None if there is none or ``WANDB_MODE=disabled``."""
        if os.environ.get("WANDB_MODE") == "disabled":
            return None
        return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._predictions = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs and self.wandb_logger(trainer) is not None:
            self._predictions += outputs["predictions"]

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self.wandb_logger(trainer)
        if logger is None:
            return
        # every process's pairs to rank 0 (each process broadcasts its own; public Strategy API)
        gathered = [trainer.strategy.broadcast(self._predictions, src=r) for r in range(trainer.world_size)]
        if not trainer.is_global_zero:
            return
        by_id = {p.pair_id: p for p in [*pl_module.done, *(p for part in gathered for p in part)]}
        predictions = [by_id[key] for key in sorted(by_id)]
        if predictions:
            self.log_tables(logger, trainer.global_step, predictions, self._manifest(trainer, pl_module))

    @staticmethod
    def _manifest(trainer: Trainer, pl_module: LightningModule) -> Manifest:
        datamodule = trainer.datamodule if isinstance(trainer.datamodule, PairDataModule) else None
        return Manifest.new(
            data=datamodule.describe() if datamodule is not None else {},
            source=pl_module.source,
            matcher=pl_module.matcher,
            seed=pl_module.run_seed,
            precision=str(trainer.precision),
            pair_ids=datamodule.selected_ids() if datamodule is not None else [],
            alphas=pl_module.alphas,
            embeddings=pl_module.embeddings,
        )

    def log_tables(self, logger: WandbLogger, step: int, predictions: list[Prediction], manifest: Manifest) -> Results:
        """Score ``predictions`` and log every table (see the class docstring); returns the results."""
        results = results_of(predictions, manifest, resamples=self.resamples)
        rows = []
        for prediction in predictions:
            entry = pair_entry(prediction, self.alpha)
            groups = ", ".join(f"{k}={v}" for k, v in sorted(entry["groups"].items()))
            rows.append([entry["id"], entry["category"], groups, entry["pck"]])
        columns = ["pair_id", "category", "groups", f"pck@{self.alpha:g}"]
        logger.log_table("viewer/pairs", columns=columns, data=rows, step=step)
        self.log_summary(logger, step, results, predictions)
        return results

    def log_summary(
        self, logger: WandbLogger, step: int, results: Results, predictions: Optional[list[Prediction]] = None
    ) -> None:
        """Per-category and per-layer tables (each figure with its 95% interval's ``/low`` and ``/high``),
        the overall intervals and per-layer PCK values, and the histogram."""
        import wandb

        columns, rows = summary_rows(results, intervals=True)
        logger.log_table("pck/per_category", columns=columns, data=rows, step=step)
        bounds = {c: v for c, v in zip(columns[3:], rows[-1][3:]) if c.endswith(BOUNDS) and v is not None}
        logger.log_metrics(bounds, step=step)  # the overall row's: pck@0.1/per_image/low, ...
        columns, rows = layer_rows(results, intervals=True)
        if rows:
            logger.log_table("pck/per_layer", columns=columns, data=rows, step=step)
            values = {f"per_layer/{row[0]}/{c}": v for row in rows for c, v in zip(columns[1:], row[1:])}
            logger.log_metrics({k: v for k, v in values.items() if v is not None}, step=step)
        counts = histogram_of(predictions or [], self.alpha, results)
        if counts is None:
            return
        data: list[list[Any]] = [[label, count] for label, count in zip(counts.bins, counts.counts)]
        logger.log_table("pck/histogram", columns=["bin", "pairs"], data=data, step=step)
        chart = wandb.plot.bar(wandb.Table(columns=["bin", "pairs"], data=data), "bin", "pairs", title=counts.title())
        logger.log_metrics({"pck/histogram_chart": chart}, step=step)
        logger.log_image("pck/histogram_image", [histogram_picture(counts)], step=step)
