"""``sdcorr test`` and ``sdcorr predict``: the Trainer's methods on the benchmark's pairs, into a run folder.

Both build the Trainer, the datamodule and the module from the config files and options (see
:mod:`sdcorr.cli.configured`), take the Trainer method's own arguments (``test --verbose true``, which
also prints Lightning's metric table; ``--ckpt_path``) and save the resolved config as ``config.yaml`` in
the run folder (its writer saves it, see :func:`~sdcorr.cli.run_folder.hand_over_config`). ``test``
resumes an interrupted run. :func:`redraw` runs a finished run's own test again to draw pairs
(``sdcorr report RUN --draw PAIR...``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from callbacks.wandb_logger import finish_wandb
from sdcorr.cli.configured import ConfiguredCLI
from sdcorr.cli.run_folder import hand_over_config
from sdcorr.errors import OutputError, UsageError
from sdcorr.runs.folder import RunFolder

#: the Trainer's methods that are commands
METHODS = ("test", "predict")
#: the Trainer method's arguments that the CLI does not take: it gives them itself
GIVEN = {"model", "dataloaders", "datamodule"}


class TrainerCLI(ConfiguredCLI):
    """The options of a Trainer method (``test`` or ``predict``): the shared sections and the method's own.

    Args:
        method: ``test`` or ``predict``.
        prog, description, args: as :class:`~sdcorr.cli.configured.ConfiguredCLI`.
    """

    def __init__(self, method: str, prog: str, description: str, args: Sequence[str]) -> None:
        if method not in METHODS:
            raise ValueError(f"Expected a Trainer method in {METHODS} but got {method!r}")
        self.method = method
        self.method_arguments: list[str] = []
        super().__init__(prog, description, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The shared sections, then the method's arguments; sdcorr prints its own PCK table, so Lightning's
        metric table only on request (``--verbose true``)."""
        super().add_arguments_to_parser(parser)
        self.method_arguments = parser.add_method_arguments(Trainer, self.method, skip=set(GIVEN))
        if "verbose" in self.method_arguments:
            parser.set_defaults(verbose=False)

    def build(self) -> None:
        """Everything, as :class:`~sdcorr.cli.configured.ConfiguredCLI`; then the resolved config goes to the
        run folder's writer."""
        super().build()
        hand_over_config(self.trainer, self.parser.dump(self.config))

    def run(self) -> Any:
        """Run the Trainer method on the model and datamodule built, with the method's arguments given; a W&B
        run ends with it (see :func:`~callbacks.wandb_logger.finish_wandb`)."""
        arguments = {key: self.config[key] for key in self.method_arguments}
        try:
            result = getattr(self.trainer, self.method)(self.model, datamodule=self.datamodule, **arguments)
        except BaseException:
            finish_wandb(self.trainer.loggers, failed=True)
            raise
        finish_wandb(self.trainer.loggers)
        return result


def run_trainer(method: str, prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr test`` or ``sdcorr predict`` (``method``) with the command line ``args`` after its name."""
    TrainerCLI(method, prog, description, args).run()


def redraw(prog: str, folder: str | Path, pair_ids: Sequence[str]) -> None:
    """Draw pairs of a finished test run (again): ``sdcorr report RUN --draw PAIR...``.

    The run's own ``sdcorr test`` runs again in its folder: its ``config.yaml`` (model, data, seed,
    pictures options), with ``pair_ids`` added to the pairs it draws (``--pictures.pair_ids``: the folder's
    chosen pairs, then these), on one device, no logger and no page (the report command writes it). Every pair is done,
    so the test loop matches only the chosen pairs without pictures (see
    :meth:`~datamodules.base.PairDataModule.rematch`; these pairs' pictures are deleted first), with the
    same random draws, and the pictures callback draws them; nothing is scored or recorded twice, and
    results.json and config.yaml are written again as they were.

    Raises:
        OutputError: the folder has no config.yaml or is not a finished run.
        UsageError: a pair id is not one of the run's.
    """
    run = RunFolder(folder)
    if not run.config_file.is_file():
        raise OutputError(f"{run.config_file}: not found; --draw runs the config.yaml a `sdcorr test` run writes")
    manifest = run.manifest()
    unknown = [pair_id for pair_id in pair_ids if pair_id not in set(manifest.pair_ids)]
    if unknown:
        raise UsageError(f"--draw: {', '.join(map(repr, unknown[:5]))}: not a pair of the run in {run.path}")
    missing = run.missing_pairs(manifest)
    if missing or not run.results_file.is_file():
        problem = f"{len(missing)} pairs have no prediction" if missing else f"no {run.results_file.name}"
        raise OutputError(f"{run.path}: {problem}; --draw draws pairs of a finished test run (rerun its command)")
    chosen = run.chosen()
    where = str(run.path)
    args = ["--config", str(run.config_file), "--trainer.default_root_dir", where, "--output.dir", where,
            "--output.overwrite", "false", "--output.report", "false", "--trainer.logger", "false",
            # one process: under DDP a pair could go to another process than 0, which draws nothing
            "--trainer.strategy", "auto", "--trainer.devices", "1", "--trainer.num_nodes", "1",
            "--pictures.enabled", "true", "--pictures.files", "always",
            "--pictures.pair_ids", json.dumps(chosen + [i for i in pair_ids if i not in chosen])]  # fmt: skip
    cli = TrainerCLI("test", prog, "draw pairs of a finished run", args)
    hand_over_config(cli.trainer, run.config_file.read_text())  # config.yaml stays the run's
    for pair_id in pair_ids:  # once the model is built: their pictures are drawn again
        run.delete_pictures(pair_id)
    cli.run()
