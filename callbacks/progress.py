"""How long: the cost of a run up front, an estimate after the first pair, and progress inside each pair."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from datamodules.base import PairDataModule
from sdcorr.runs.plan import make_plan


def format_duration(seconds: float) -> str:
    """``93784`` -> ``"1 d 2 h"``; ``125`` -> ``"2 min 5 s"``."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class RunProgress(Callback):
    """Tell the user what a run costs and how it advances.

    * At the start (rank 0): pairs, keypoints, distinct fits and model passes the protocol implies
      (:func:`sdcorr.runs.plan.make_plan`, the line ``sdcorr plan`` prints).
    * After the first pair: a time estimate for the rest, and a warning with the sharding and
      multi-GPU hint when it exceeds ``warn_hours``.
    * During each pair: a bar counting the matcher's model passes (fit steps, then locate crops) with
      an ETA, under Lightning's bar over pairs. Shown only when stdout is a terminal and the Trainer's
      progress bar is on (``--trainer.enable_progress_bar false`` silences it).

    Args:
        estimate: print the cost up front and the estimate after the first pair.
        inner_bar: show the bar inside each pair.
        warn_hours: warn when the estimated run time is longer than this many hours.
    """

    def __init__(self, estimate: bool = True, inner_bar: bool = True, warn_hours: float = 24.0) -> None:
        self.estimate = estimate
        self.inner_bar = inner_bar
        self.warn_hours = warn_hours
        self._bar: Optional[tqdm] = None
        self._task: Optional[Any] = None  # the row in Lightning's rich progress bar
        self._trainer: Optional[Trainer] = None
        self._total_work = 0
        self._first_pair_start: Optional[float] = None
        self._estimated = False
        self._passes: dict[str, int] = {}  # model passes of the first batch by phase, as the matcher reports them
        self._pair_done = 0

    def _work(self, pl_module: LightningModule, pairs: list[dict[str, Any]]) -> int:
        """Forward-pass equivalents of ``pairs`` (records or samples), see :class:`sdcorr.runs.plan.Plan`."""
        return make_plan(pairs, pl_module.matcher, pl_module.source).work

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._estimated = False
        self._first_pair_start = None
        self._passes = {}
        if self.inner_bar and trainer.progress_bar_callback is not None and sys.stdout.isatty():
            self._trainer = trainer
        if not isinstance(trainer.datamodule, PairDataModule):  # no pair list to estimate from (e.g. dataloaders)
            return
        pairs = trainer.datamodule.pending()
        if not self.estimate or not pairs or not trainer.is_global_zero:
            return
        plan = make_plan(pairs, pl_module.matcher, pl_module.source)
        self._total_work = plan.work
        rank_zero_info(f"to do: {plan} ({type(pl_module.matcher).__name__}); a time estimate follows the first pair")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_match_progress(self, trainer: Trainer, pl_module: LightningModule, done: int, total: int, phase: str):
        """The module's :class:`~sdcorr.module.MatchProgressHook`: counts the first batch's passes (for the
        estimate) and shows the bar inside the pair, when shown."""
        if phase == "start":
            self._pair_done = 0
        elif not self._estimated:
            self._passes[phase] = self._passes.get(phase, 0) + done - self._pair_done
        self._pair_done = done
        if self._trainer is None:  # no inner bar (off, not a terminal, or no Trainer bar)
            return
        bar = self._trainer.progress_bar_callback
        if isinstance(bar, RichProgressBar):  # a row under Lightning's rich bar
            if bar.progress is None:
                return
            if self._task is None:
                self._task = bar.progress.add_task("  passes in pair", total=total)
            bar.progress.update(self._task, total=total, completed=done, description=f"  {phase} passes in pair")
            return
        if self._bar is None:
            position = 2 * getattr(bar, "process_position", 0) + 1  # under Lightning's tqdm bar
            self._bar = tqdm(total=total, desc="  passes in pair", leave=False, position=position, unit="pass")
        self._bar.set_postfix_str(phase, refresh=False)
        self._bar.update(done - self._bar.n)

    def _close_bars(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        bar = self._trainer.progress_bar_callback if self._trainer is not None else None
        if self._task is not None and isinstance(bar, RichProgressBar) and bar.progress is not None:
            bar.progress.remove_task(self._task)
        self._task = None

    def _batch_start(self, trainer: Trainer) -> None:
        if self._first_pair_start is None:
            self._first_pair_start = time.perf_counter()

    def _batch_end(self, trainer: Trainer, pl_module: LightningModule, batch: list[dict[str, Any]]) -> None:
        self._close_bars()
        if self._estimated or not self.estimate or not self._total_work or not trainer.is_global_zero:
            return
        self._estimated = True
        # the first pair fits all its keypoints (with fits batched by source image, also others of its
        # image that later pairs reuse); later pairs mostly reuse fits: weigh passes by their work, as
        # the matcher reported them, else as the plan counts them
        if self._passes:
            work = sum(self._passes.values()) + 2 * self._passes.get("fit", 0)
        else:
            work = self._work(pl_module, batch)
        seconds_per_pass = (time.perf_counter() - self._first_pair_start) / max(1, work)
        # every process works through its share at the same pace
        seconds = seconds_per_pass * self._total_work / trainer.world_size
        rank_zero_info(
            f"estimated time for the run: {format_duration(seconds)} on {trainer.world_size} process(es) "
            f"({1000 * seconds_per_pass:.0f} ms per forward model pass on {pl_module.device}, from the first pair)"
        )
        if seconds > 3600 * self.warn_hours:
            rank_zero_warn(
                f"this run would take about {format_duration(seconds)}: split it over GPUs "
                "(--trainer.devices N, --trainer.num_nodes M) or over jobs with --data.init_args.shard_index "
                "and --data.init_args.num_shards, then `sdcorr merge` (see README, Long runs)"
            )

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_start(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_start(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end(trainer, pl_module, batch)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end(trainer, pl_module, batch)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._close_bars()
        self._trainer = None
