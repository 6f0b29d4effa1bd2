"""Writes ``predictions.jsonl`` (one line per pair, flushed as each pair finishes) and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from sdcorr.errors import OutputError
from sdcorr.results import format_table


class PredictionWriter(Callback):
    """Save what a ``test`` or ``predict`` run produced.

    Files, in ``output_dir`` (default: the Trainer's ``default_root_dir``):

    * ``predictions.jsonl``: one JSON object per pair, written as soon as the pair is done
      (``predictions.rank<R>.jsonl`` per process when running on several processes);
    * ``results.json``: the metric table, written by rank 0 when the test run ends, and only then:
      a crashed run leaves no results file (a stale one from an earlier run is removed at start).

    Args:
        output_dir: folder for both files; default: ``trainer.default_root_dir``.
    """

    def __init__(self, output_dir: Optional[str] = None) -> None:
        self.output_dir = output_dir
        self._file: Optional[IO[str]] = None

    def folder(self, trainer: Trainer) -> Path:
        """Where the files go."""
        return Path(self.output_dir or trainer.default_root_dir)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = self.folder(trainer)
        name = "predictions.jsonl" if trainer.world_size == 1 else f"predictions.rank{trainer.global_rank}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if trainer.is_global_zero:
                (folder / "results.json").unlink(missing_ok=True)
            self._file = open(folder / name, "w")
        except OSError as error:
            raise OutputError(
                f"{folder}: cannot write the output folder ({error}); set --trainer.default_root_dir"
            ) from error

    def _write(self, outputs: Any) -> None:
        if self._file is None or not outputs:
            return
        for record in outputs["records"]:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        results = getattr(pl_module, "results", None)
        if not trainer.is_global_zero or results is None:
            return
        alphas = list(pl_module.alphas)
        payload = {
            "alphas": alphas,
            "seed": pl_module.run_seed,
            "source": type(pl_module.source).__name__,
            "matcher": {"class": type(pl_module.matcher).__name__, **vars(pl_module.matcher)},
            "data": trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else None,
            **results,
        }
        path = self.folder(trainer) / "results.json"
        path.write_text(json.dumps(payload, indent=2) + "\n")
        skipped = (payload["data"] or {}).get("skipped")
        note = f"\nskipped pairs (not scored): {skipped}" if skipped else ""
        rank_zero_info(f"\n{format_table(results, alphas)}{note}\nresults: {path}")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
