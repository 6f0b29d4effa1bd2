"""Writes the run folder (see :mod:`sdcorr.runs.folder`) and resumes an interrupted run from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from datamodules.base import PairDataModule
from sdcorr.errors import OptionError, OutputError, SdcorrError
from sdcorr.runs.fingerprint import describe, model_description
from sdcorr.runs.folder import PredictionAppender, RunFolder, RunLock
from sdcorr.runs.scoring import format_table
from sdcorr.stats.intervals import RESAMPLES


class RunResultsCallback(Callback):
    """A callback that wants the run's metric tables: :class:`PredictionWriter` calls :meth:`on_run_results`
    on every such callback of the Trainer once results.json is written, whatever their order."""

    def on_run_results(self, trainer: Trainer, pl_module: LightningModule, results: dict[str, Any]) -> None:
        """The run's tables are written (rank 0 only); ``results`` is the content of results.json."""


def pair_datamodule(trainer: Trainer, who: str) -> PairDataModule:
    """The Trainer's datamodule, which ``who`` needs to be a :class:`PairDataModule`."""
    datamodule = getattr(trainer, "datamodule", None)
    if not isinstance(datamodule, PairDataModule):
        raise TypeError(f"Expected a PairDataModule for {who} but got {type(datamodule).__name__}")
    return datamodule


def writer_of(trainer: Trainer) -> Optional[PredictionWriter]:
    """The Trainer's :class:`PredictionWriter`, if it has one."""
    return next((c for c in trainer.callbacks if isinstance(c, PredictionWriter)), None)


def run_folder_of(trainer: Trainer) -> RunFolder:
    """Where a run's files go: the :class:`PredictionWriter`'s folder, else the Trainer's ``default_root_dir``."""
    writer = writer_of(trainer)
    return writer.run_folder(trainer) if writer is not None else RunFolder(trainer.default_root_dir)


class PredictionWriter(Callback):
    """Save what a ``test`` or ``predict`` run produced, and pick up where an interrupted run stopped.

    Files, in ``dir`` (default: the Trainer's ``default_root_dir``), see :mod:`sdcorr.runs.folder`:

    * ``run.json``: what was run (data selection, source, matcher, seed, precision) and which pairs;
    * ``predictions.jsonl``: one JSON object per pair, appended and flushed as soon as the pair is done
      (``predictions.rank<R>.jsonl`` per process when running on several processes);
    * ``results.json``: the metric table, computed from the predictions by rank 0 when a test run
      ends, and only then: a crashed run leaves no results file (a stale one is removed at start);
    * ``embeddings/<pair>.pt`` with ``save_embeddings``: the fitted ``[N, R, T, D]`` embeddings.

    Rank 0 holds the folder's lock (:meth:`~sdcorr.runs.folder.RunFolder.lock`) from setup to teardown: a
    second run into a folder a live run is writing is refused at once; a killed run leaves no lock behind.

    Running the same command on the same folder again resumes: pairs with a prediction are skipped
    and results.json covers all pairs, equal to that of an uninterrupted run. A folder made by a
    different run (other data selection, model, protocol, seed or precision) is refused.

    Once results.json is written, every :class:`RunResultsCallback` of the Trainer gets the tables
    (:meth:`RunResultsCallback.on_run_results`). Needs a :class:`~datamodules.base.PairDataModule`.

    Args:
        dir: output folder; default: ``trainer.default_root_dir``. Environment variables are expanded,
            e.g. ``runs/sweep/$WANDB_RUN_ID`` gives each W&B sweep run its own folder.
        overwrite: discard the predictions already in the folder instead of resuming (needed to reuse a
            folder made by a different run).
        save_embeddings: also save each pair's fitted embeddings (77x768 float32 per keypoint and
            restart for SD 1.4, about 23 MB per 20-keypoint pair) for ``model.embeddings`` re-runs.
        resamples: bootstrap resamples of the 95% interval of every PCK figure in results.json (see
            :mod:`sdcorr.stats.intervals`; seeded, so a rerun gives the same intervals); 0: no intervals.
    """

    def __init__(
        self,
        dir: Optional[str] = None,
        overwrite: bool = False,
        save_embeddings: bool = False,
        resamples: int = RESAMPLES,
    ) -> None:
        if resamples < 0:
            raise OptionError(self, "resamples", f"expected an integer >= 0; got {resamples}")
        self.dir = dir
        self.overwrite = overwrite
        self.save_embeddings = save_embeddings
        self.resamples = resamples
        self._appender: Optional[PredictionAppender] = None
        self._lock: Optional[RunLock] = None
        self._done: list[str] = []
        self._nothing_left = False

    def folder(self, trainer: Trainer) -> Path:
        """Where the files go."""
        return Path(os.path.expandvars(self.dir) if self.dir else trainer.default_root_dir)

    def run_folder(self, trainer: Trainer) -> RunFolder:
        """The run folder the files go to."""
        return RunFolder(self.folder(trainer))

    def manifest(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The ``run.json`` of this run: fingerprint, the model in words, pair ids, alphas and read layers."""
        datamodule = pair_datamodule(trainer, "the PredictionWriter")
        return {
            "fingerprint": {
                "data": datamodule.describe(),
                "source": describe(pl_module.source),
                "matcher": describe(pl_module.matcher),
                "seed": pl_module.run_seed,
                "precision": str(trainer.precision),
                "embeddings": pl_module.embeddings,
            },
            "model": model_description(pl_module.source),
            "pair_ids": datamodule.selected_ids(),
            "alphas": list(pl_module.alphas),
            "layers": (getattr(pl_module.source, "hparams", None) or {}).get("layers"),
        }

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run, datamodule = self.run_folder(trainer), pair_datamodule(trainer, "the PredictionWriter")
        decision: Any = None
        if trainer.is_global_zero:
            try:
                self._lock = self._lock or run.lock()  # before anything is written
                decision = run.begin(self.manifest(trainer, pl_module), self.overwrite, clear_results=stage == "test")
            except SdcorrError as error:
                decision = error
            except OSError as error:
                decision = OutputError(f"{run.path}: cannot write the output folder ({error}); set --output.dir")
        decision = trainer.strategy.broadcast(decision, src=0)
        if isinstance(decision, Exception):  # every process stops with the same message
            self._release()
            raise decision
        self._done = decision
        # nothing left: Lightning runs no test loop (and calls no on_test_end): scored in teardown
        self._nothing_left = stage == "test" and bool(self._done) and len(self._done) == len(datamodule.selected_ids())
        if self._done:
            rank_zero_info(f"resuming {run.path}: {len(self._done)} pairs already done are skipped")
            datamodule.exclude(set(self._done))
        self._appender = run.appender(trainer.global_rank, trainer.world_size)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # pairs done before a resume count in the metrics this run logs (once: on rank 0)
        if self._done and trainer.is_global_zero:
            done = set(self._done)
            pl_module.add_done([p for p in self.run_folder(trainer).predictions() if p.pair_id in done])

    def _write(self, trainer: Trainer, outputs: Any) -> None:
        if self._appender is None or not outputs:
            return
        matches = outputs.get("matches") or [None] * len(outputs["predictions"])
        run = self.run_folder(trainer)
        for prediction, match in zip(outputs["predictions"], matches):
            if self.save_embeddings and match is not None and match.embeddings is not None:
                path = run.embedding_file(prediction.pair_id)
                path.parent.mkdir(exist_ok=True)
                torch.save(match.embeddings.detach().cpu(), path)
            self._appender.write(prediction)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()  # every process has written its last pair
        if trainer.is_global_zero:
            self.write_results(trainer, pl_module)

    def write_results(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Score every pair of the folder, write results.json, print the table and hand the tables to
        every :class:`RunResultsCallback` (rank 0, at the end of a test run); returns them."""
        run = self.run_folder(trainer)
        results = run.finish(self.resamples)
        skipped = (results["data"] or {}).get("skipped")
        note = f"\nskipped pairs (not scored): {skipped}" if skipped else ""
        # the run's result, on stdout (progress, warnings and notes go to stderr)
        print(f"\n{format_table(results, results['alphas'])}{note}\nresults: {run.results_file}", flush=True)
        for callback in trainer.callbacks:
            if isinstance(callback, RunResultsCallback):
                callback.on_run_results(trainer, pl_module, results)
        return results

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()  # a failed run in a notebook lets the next one in

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        try:
            # every callback is set up by now, so the tables reach them all whatever their order
            if self._nothing_left and trainer.is_global_zero:
                self._nothing_left = False
                self.write_results(trainer, pl_module)
        finally:
            self._release()
