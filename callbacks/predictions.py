"""Writes the run folder (see :mod:`sdcorr.runfolder`) and resumes an interrupted run from it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from sdcorr.errors import OutputError, SdcorrError
from sdcorr.evaluate import PREDICTION_FILES, accumulate, read_predictions, results_payload
from sdcorr.results import format_table
from sdcorr.runfolder import (
    EMBEDDINGS,
    MANIFEST,
    RESULTS,
    describe,
    differences,
    embedding_file,
    model_description,
    read_manifest,
    write_json,
)


class PredictionWriter(Callback):
    """Save what a ``test`` or ``predict`` run produced, and pick up where an interrupted run stopped.

    Files, in ``dir`` (default: the Trainer's ``default_root_dir``):

    * ``run.json``: what was run (data selection, source, matcher, seed, precision) and which pairs;
    * ``predictions.jsonl``: one JSON object per pair, appended and flushed as soon as the pair is done
      (``predictions.rank<R>.jsonl`` per process when running on several processes);
    * ``results.json``: the metric table, computed from the predictions by rank 0 when a test run
      ends, and only then: a crashed run leaves no results file (a stale one is removed at start);
    * ``embeddings/<pair>.pt`` with ``save_embeddings``: the fitted ``[N, R, T, D]`` embeddings.

    Running the same command on the same folder again resumes: pairs with a prediction are skipped
    and results.json covers all pairs, equal to that of an uninterrupted run. A folder made by a
    different run (other data selection, model, protocol, seed or precision) is refused.

    Args:
        dir: output folder; default: ``trainer.default_root_dir``. Environment variables are expanded,
            e.g. ``runs/sweep/$WANDB_RUN_ID`` gives each W&B sweep run its own folder.
        overwrite: discard the predictions already in the folder instead of resuming (needed to reuse a
            folder made by a different run).
        save_embeddings: also save each pair's fitted embeddings (77x768 float32 per keypoint and
            restart for SD 1.4, about 23 MB per 20-keypoint pair) for ``model.embeddings`` re-runs.
    """

    def __init__(self, dir: Optional[str] = None, overwrite: bool = False, save_embeddings: bool = False) -> None:
        self.dir = dir
        self.overwrite = overwrite
        self.save_embeddings = save_embeddings
        self._file: Optional[IO[str]] = None
        self._done: list[str] = []
        self._results_written = False

    def folder(self, trainer: Trainer) -> Path:
        """Where the files go."""
        return Path(os.path.expandvars(self.dir) if self.dir else trainer.default_root_dir)

    def manifest(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The ``run.json`` of this run: fingerprint, the model in words, pair ids, alphas and read layers."""
        datamodule = trainer.datamodule
        data = datamodule.describe() if hasattr(datamodule, "describe") else None
        selected = getattr(datamodule, "selected", None) or []
        return {
            "fingerprint": {
                "data": data,
                "source": describe(pl_module.source),
                "matcher": describe(pl_module.matcher),
                "seed": pl_module.run_seed,
                "precision": str(trainer.precision),
                "embeddings": getattr(pl_module, "embeddings", None),
            },
            "model": model_description(pl_module.source),
            "pair_ids": [p["pair_id"] for p in selected],
            "alphas": list(pl_module.alphas),
            "layers": (getattr(pl_module.source, "hparams", None) or {}).get("layers"),
        }

    def _prepare(self, folder: Path, manifest: dict[str, Any], stage: str) -> list[str]:
        """Check the folder against this run (rank 0); returns the pair ids already done."""
        old = read_manifest(folder)
        has_predictions = any(folder.glob(PREDICTION_FILES))
        if not self.overwrite and has_predictions and old is None:
            raise OutputError(
                f"{folder}: holds predictions but no {MANIFEST} (not an sdcorr run folder of this version); "
                "use another output folder, or --output.overwrite true to discard them"
            )
        if not self.overwrite and old is not None:
            changed = differences(old["fingerprint"], manifest["fingerprint"])
            if changed:
                raise OutputError(
                    f"{folder}: was made by a different run, so its predictions cannot be resumed:\n  "
                    + "\n  ".join(changed[:12])
                    + "\nuse another --trainer.default_root_dir (or --output.dir), or --output.overwrite true "
                    "to discard the old predictions"
                )
        if self.overwrite:
            for path in folder.glob(PREDICTION_FILES):
                path.unlink()
            shutil.rmtree(folder / EMBEDDINGS, ignore_errors=True)
        if stage == "test" or self.overwrite:  # a test run rewrites it; until then it would be stale
            (folder / RESULTS).unlink(missing_ok=True)
        write_json(folder / MANIFEST, manifest)
        selected = set(manifest["pair_ids"])
        return [r["pair_id"] for r in read_predictions(folder, repair=True) if r["pair_id"] in selected]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = self.folder(trainer)
        decision: Any = None
        if trainer.is_global_zero:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                decision = self._prepare(folder, self.manifest(trainer, pl_module), stage)
            except SdcorrError as error:
                decision = error
            except OSError as error:
                decision = OutputError(f"{folder}: cannot write the output folder ({error}); set --output.dir")
        decision = trainer.strategy.broadcast(decision, src=0)
        if isinstance(decision, Exception):  # every process stops with the same message
            raise decision
        self._done = decision
        if self._done:
            rank_zero_info(f"resuming {folder}: {len(self._done)} pairs already done are skipped")
            if hasattr(trainer.datamodule, "exclude"):
                trainer.datamodule.exclude(set(self._done))
            # nothing left: Lightning runs no test loop (and calls no on_test_end), so score now
            if stage == "test" and len(self._done) == len(getattr(trainer.datamodule, "selected", None) or [None]):
                if trainer.is_global_zero:
                    self.write_results(trainer, pl_module)
        name = "predictions.jsonl" if trainer.world_size == 1 else f"predictions.rank{trainer.global_rank}.jsonl"
        try:
            self._file = open(folder / name, "a")
        except OSError as error:
            raise OutputError(f"{folder / name}: cannot write ({error}); set --output.dir") from error

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # pairs done before a resume count in the metrics this run logs (once: on rank 0)
        if self._done and trainer.is_global_zero and hasattr(pl_module, "pck"):
            done = set(self._done)
            records = [r for r in read_predictions(self.folder(trainer)) if r["pair_id"] in done]
            accumulate(records, pl_module.pck, pl_module.pck_groups)

    def _write(self, trainer: Trainer, outputs: Any) -> None:
        if self._file is None or not outputs:
            return
        results = outputs.get("results") or [None] * len(outputs["records"])
        for record, result in zip(outputs["records"], results):
            if self.save_embeddings and result is not None and result.embeddings is not None:
                path = embedding_file(self.folder(trainer), record["pair_id"])
                path.parent.mkdir(exist_ok=True)
                torch.save(result.embeddings.detach().cpu(), path)
            self._file.write(json.dumps(record, allow_nan=False) + "\n")  # NaN and Infinity are not JSON
        self._file.flush()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._file is not None:
            self._file.flush()
        trainer.strategy.barrier()  # every process has written its last pair
        if trainer.is_global_zero:
            self.write_results(trainer, pl_module)

    def write_results(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score every pair of the folder and write results.json (rank 0, at the end of a test run)."""
        folder = self.folder(trainer)
        manifest = read_manifest(folder)
        records = read_predictions(folder)
        missing = sorted(set(manifest["pair_ids"]) - {r["pair_id"] for r in records})
        if missing:
            raise OutputError(f"{folder}: {len(missing)} pairs have no prediction, e.g. {missing[:5]}")
        payload = results_payload(records, manifest)
        write_json(folder / RESULTS, payload)
        self._results_written = True
        skipped = (payload["data"] or {}).get("skipped")
        note = f"\nskipped pairs (not scored): {skipped}" if skipped else ""
        # the run's result, on stdout (progress, warnings and notes go to stderr)
        print(f"\n{format_table(payload, payload['alphas'])}{note}\nresults: {folder / RESULTS}", flush=True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
