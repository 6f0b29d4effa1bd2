"""The one writer of a run folder (see :mod:`sdcorr.runs.folder`); it resumes an interrupted run from it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from datamodules.base import PairDataModule
from sdcorr.errors import OptionError, OutputError, SdcorrError, writing
from sdcorr.pages.index import histogram_of, write_report
from sdcorr.runs.folder import PredictionAppender, RunFolder, RunLock
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.results import Results, format_table
from sdcorr.stats.intervals import RESAMPLES


class RunFolderWriter(Callback):
    """Write the run folder of a ``test`` or ``predict`` run, and pick up where an interrupted run stopped.

    The only callback that writes these files of the folder (``dir``, default: the Trainer's
    ``default_root_dir``; see :mod:`sdcorr.runs.folder`), each from what it holds in memory:

    * ``run.json``: what was run (data selection, source, matcher, seed, precision) and which pairs;
    * ``predictions.jsonl``: one JSON line per pair, appended and flushed as soon as the pair is done
      (``predictions.rank<R>.jsonl`` per process when running on several processes);
    * ``results.json``: the metric tables, computed by rank 0 when a test run ends, and only then: a
      crashed run leaves no results file (a stale one is removed at start);
    * ``config.yaml``: the resolved command-line config (the ``sdcorr`` command hands it over with
      :meth:`keep_config`), written once the folder is known to take this run;
    * ``index.html`` (``report``): the page of the run (see :mod:`sdcorr.pages.index`) from the results
      and predictions it holds plus what ``pictures/`` holds when the test run ends: the pictures are the
      :class:`~callbacks.pictures.PictureCallback`'s files, finished by then in any callback order
      (every ``on_test_batch_end`` comes before any ``on_test_end``);
    * ``embeddings/<pair>.pt`` with ``save_embeddings``: the fitted ``[N, R, T, D]`` embeddings;
    * ``.lock``: rank 0 holds the folder's lock (:meth:`~sdcorr.runs.folder.RunFolder.lock`) from setup to
      teardown: a second run into a folder a live run is writing is refused at once; a killed run
      leaves no lock behind.

    Running the same command on the same folder again resumes: the folder is read once at the start,
    pairs with a prediction are skipped and results.json covers all pairs, equal to that of an
    uninterrupted run. A folder made by a different run (other data selection, model, protocol, seed or
    precision) is refused, and so is one of an older sdcorr. At the end predictions.jsonl is not read
    again (under DDP, rank 0 reads the folder's prediction files once, for the other processes' pairs).
    The pairs an earlier run finished count in the module's metrics (:meth:`CorrespondenceModule.add_done`).

    Needs a :class:`~datamodules.base.PairDataModule`. Looks up no other callback.

    Args:
        dir: output folder; default: ``trainer.default_root_dir``. Environment variables are expanded,
            e.g. ``runs/sweep/$WANDB_RUN_ID`` gives each W&B sweep run its own folder.
        overwrite: discard the run the folder holds (its predictions, embeddings and index.html; the
            ``sdcorr`` command links the pictures' ``overwrite`` to this) instead of resuming (needed to
            reuse a folder made by a different run, or by an older sdcorr).
        save_embeddings: also save each pair's fitted embeddings (77x768 float32 per keypoint and
            restart for SD 1.4, about 23 MB per 20-keypoint pair) for ``model.embeddings`` re-runs.
        resamples: bootstrap resamples of the 95% interval of every PCK figure in results.json (see
            :mod:`sdcorr.stats.intervals`; seeded, so a rerun gives the same intervals); 0: no intervals.
        report: write ``index.html`` at the end of a test run.
        alpha: PCK threshold of index.html's histogram and colours (the ``sdcorr`` command links it to
            ``--pictures.alpha``).
    """

    def __init__(
        self,
        dir: Optional[str] = None,
        overwrite: bool = False,
        save_embeddings: bool = False,
        resamples: int = RESAMPLES,
        report: bool = True,
        alpha: float = 0.1,
    ) -> None:
        if resamples < 0:
            raise OptionError(self, "resamples", f"expected an integer >= 0; got {resamples}")
        self.dir = dir
        self.overwrite = overwrite
        self.save_embeddings = save_embeddings
        self.resamples = resamples
        self.report = report
        self.alpha = alpha
        self.config: Optional[str] = None
        self._appender: Optional[PredictionAppender] = None
        self._lock: Optional[RunLock] = None
        self._manifest: Optional[Manifest] = None
        self._done: list[Prediction] = []  # rank 0: the pairs an earlier run finished
        self._new: list[Prediction] = []  # the pairs this process finished in this run
        self._skip: set[str] = set()  # every process: the pairs done before, recorded once (see _write)
        self._nothing_left = False

    def keep_config(self, text: str) -> None:
        """The resolved config to write as ``config.yaml`` when the folder takes the run (set by ``sdcorr``)."""
        self.config = text

    def run_folder(self, trainer: Trainer) -> RunFolder:
        """The run folder the files go to (see :meth:`RunFolder.of`)."""
        return RunFolder.of(trainer.default_root_dir, self.dir)

    @staticmethod
    def _datamodule(trainer: Trainer) -> PairDataModule:
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, PairDataModule):
            raise TypeError(f"Expected a PairDataModule for the RunFolderWriter but got {type(datamodule).__name__}")
        return datamodule

    def manifest(self, trainer: Trainer, pl_module: LightningModule) -> Manifest:
        """The ``run.json`` of this run: fingerprint, the model in words, pair ids, alphas and read layers."""
        datamodule = self._datamodule(trainer)
        return Manifest.new(
            data=datamodule.describe(),
            source=pl_module.source,
            matcher=pl_module.matcher,
            seed=pl_module.run_seed,
            precision=str(trainer.precision),
            pair_ids=datamodule.selected_ids(),
            alphas=pl_module.alphas,
            embeddings=pl_module.embeddings,
        )

    # hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run, datamodule = self.run_folder(trainer), self._datamodule(trainer)
        self._done, self._new, self._manifest = [], [], None
        decision: Any = None
        if trainer.is_global_zero:
            try:
                self._lock = self._lock or run.lock()  # before anything is written
                self._manifest = self.manifest(trainer, pl_module)
                self._done = run.begin(self._manifest, self.overwrite, clear_results=stage == "test")
                if self.config is not None:
                    run.write_config(self.config)
                decision = [p.pair_id for p in self._done]
            except SdcorrError as error:
                decision = error
            except OSError as error:
                decision = OutputError(f"{run.path}: cannot write the output folder ({error}); set --output.dir")
        decision = trainer.strategy.broadcast(decision, src=0)
        if isinstance(decision, Exception):  # every process stops with the same message
            self._release()
            raise decision
        done = self._skip = set(decision)
        # nothing left (all done, or a shard without pairs): Lightning runs no test loop (and calls no
        # on_test_end): scored in teardown, so that even an empty shard writes its (empty) results.json
        self._nothing_left = stage == "test" and len(done) == len(datamodule.selected_ids())
        if self._nothing_left and not done:
            rank_zero_info(f"{run.path}: this selection has no pairs (an empty shard); its results say so")
        elif self._nothing_left:
            rank_zero_info(f"{run.path}: all {len(done)} pairs are already done; nothing left to match")
        elif done:
            rank_zero_info(f"resuming {run.path}: {len(done)} pairs already done are skipped")
        if done:
            datamodule.exclude(done)
        self._appender = run.appender(trainer.global_rank, trainer.world_size)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # pairs done before a resume count in the metrics this run logs (once: on rank 0)
        if self._done and trainer.is_global_zero:
            pl_module.add_done(self._done)

    def _write(self, trainer: Trainer, outputs: Any) -> None:
        if self._appender is None or not outputs:
            return
        matches = outputs.get("matches") or [None] * len(outputs["predictions"])
        run = self.run_folder(trainer)
        for prediction, match in zip(outputs["predictions"], matches):
            if prediction.pair_id in self._skip:  # matched again for its pictures (PairDataModule.rematch)
                continue
            if self.save_embeddings and match is not None and match.embeddings is not None:
                path = run.embedding_file(prediction.pair_id)
                with writing(path):
                    path.parent.mkdir(exist_ok=True)
                    torch.save(match.embeddings.detach().cpu(), path)
            self._appender.write(prediction)
            self._new.append(prediction)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._nothing_left = False  # a loop ran (pairs matched again for pictures): scored here, not in teardown
        trainer.strategy.barrier()  # every process has written its last pair
        if trainer.is_global_zero:
            self.finish(trainer)

    def predictions(self, trainer: Trainer) -> list[Prediction]:
        """Every prediction of the run (rank 0, at its end), sorted by pair id: those held in memory; under
        DDP the folder's prediction files, read once, for the other processes' pairs."""
        if trainer.world_size > 1:
            self._appender.close()
            return self.run_folder(trainer).predictions()
        by_id = {p.pair_id: p for p in [*self._done, *self._new]}
        return [by_id[key] for key in sorted(by_id)]

    def finish(self, trainer: Trainer) -> Results:
        """Score the run, write results.json, print the table and write index.html (rank 0, at the end of a
        test run); returns the results."""
        run, predictions = self.run_folder(trainer), self.predictions(trainer)
        results = run.finish(self.resamples, self._manifest, predictions)
        note = f"\nskipped pairs (not scored): {results.skipped}" if results.skipped else ""
        # the run's result, on stdout (progress, warnings and notes go to stderr)
        print(f"\n{format_table(results)}{note}\nresults: {run.results_file}", flush=True)
        if self.report:
            counts = histogram_of(predictions, self.alpha, results)
            write_report(run, self.alpha, results=results, predictions=predictions, manifest=self._manifest,
                         counts=counts)  # fmt: skip
        return results

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()  # a failed run in a notebook lets the next one in
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            print(interrupted_line(self.run_folder(trainer).path, len(self._done) + len(self._new),
                                   trainer.world_size), file=sys.stderr, flush=True)  # fmt: skip

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        try:
            if self._nothing_left and trainer.is_global_zero:
                self._nothing_left = False
                self.finish(trainer)
        finally:
            if self._appender is not None:
                self._appender.close()
                self._appender = None
            self._release()


def interrupted_line(folder: Path, kept: int, processes: int = 1) -> str:
    """What a run stopped by Ctrl-C says: the pairs kept in its folder and how to go on.

    >>> interrupted_line(Path("runs/spair"), 12)
    'sdcorr: interrupted: 12 finished pairs are kept in runs/spair; run the same command again to resume'
    """
    kept_text = f"{kept} finished pairs are" if processes == 1 else f"rank 0's {kept} pairs and the others' are"
    return f"sdcorr: interrupted: {kept_text} kept in {folder}; run the same command again to resume"
