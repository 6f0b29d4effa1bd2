"""``sdcorr test`` and ``sdcorr predict``: the Trainer's methods on the benchmark's pairs, into a run folder.

Both build the Trainer, the datamodule and the module from the config files and options (see
:mod:`sdcorr.cli.configured`), take the Trainer method's own arguments (``test --verbose true``, which
also prints Lightning's metric table; ``--ckpt_path``) and save the resolved config as ``config.yaml`` in
the run folder (its writer saves it, see :func:`~sdcorr.cli.run_folder.hand_over_config`). ``test``
resumes an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from callbacks.wandb_logger import finish_wandb
from sdcorr.cli.configured import ConfiguredCLI
from sdcorr.cli.run_folder import hand_over_config

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
