"""``sdcorr test`` and ``sdcorr predict``: the Trainer's methods on the benchmark's pairs, into a run folder.

Both build the Trainer, the datamodule and the module from the config files and options (see
:mod:`sdcorr.cli.configured`), take the Trainer method's own arguments (``test --verbose true``, which
also prints Lightning's metric table; ``--ckpt_path``) and save the resolved config as ``config.yaml`` in
the run folder (:class:`RunFolderConfig`). ``test`` resumes an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback

from sdcorr.cli.configured import ConfiguredCLI
from sdcorr.cli.run_folder import run_folder
from sdcorr.errors import OutputError

#: the Trainer's methods that are commands
METHODS = ("test", "predict")
#: the Trainer method's arguments that the CLI does not take: it gives them itself
GIVEN = {"model", "dataloaders", "datamodule"}


class RunFolderConfig(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder, beside results.json.

    Lightning's own saving (``save_to_log_dir``) writes into ``trainer.log_dir``: the logger's version
    folder (a new ``lightning_logs/version_N`` per run with a CSV logger). This writes where the run's files
    go (see :func:`sdcorr.cli.run_folder.run_folder`) instead. A rerun (a resume) rewrites it; a run refused
    by the folder check never reaches it (it is the last callback). Give it ``save_to_log_dir=False``.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_folder(trainer)
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder.config_file), overwrite=self.overwrite, multifile=self.multifile)
        except OSError as error:
            raise OutputError(f"{folder.config_file}: cannot write ({error})") from error


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
        save = {"overwrite": True, "save_to_log_dir": False}
        super().__init__(prog, description, args, save_config_callback=RunFolderConfig, save_config_kwargs=save)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The shared sections, then the method's arguments; sdcorr prints its own PCK table, so Lightning's
        metric table only on request (``--verbose true``)."""
        super().add_arguments_to_parser(parser)
        self.method_arguments = parser.add_method_arguments(Trainer, self.method, skip=set(GIVEN))
        if "verbose" in self.method_arguments:
            parser.set_defaults(verbose=False)

    def run(self) -> Any:
        """Run the Trainer method on the model and datamodule built, with the method's arguments given."""
        arguments = {key: self.config[key] for key in self.method_arguments}
        return getattr(self.trainer, self.method)(self.model, datamodule=self.datamodule, **arguments)


def run_trainer(method: str, prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr test`` or ``sdcorr predict`` (``method``) with the command line ``args`` after its name."""
    TrainerCLI(method, prog, description, args).run()
