"""The ``sdcorr`` command: LightningCLI with the ``test`` and ``predict`` subcommands.

``sdcorr test --config configs/demo.yaml`` builds the Trainer, the datamodule (``data:``, any
``PairDataModule`` subclass by class_path) and :class:`~sdcorr.module.CorrespondenceModule` from
layered YAML files and command-line overrides; ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

import sys
from typing import Optional

from lightning.pytorch.cli import LightningCLI

from callbacks.pictures import PictureCallback
from callbacks.predictions import PredictionWriter
from datamodules.base import PairDataModule
from sdcorr import commands
from sdcorr.errors import SdcorrError
from sdcorr.module import CorrespondenceModule


class SdcorrCLI(LightningCLI):
    """LightningCLI restricted to evaluation; ``fit`` and ``validate`` have no meaning here."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser) -> None:
        """Callbacks configured in their own config sections (``output:``, ...), always present."""
        parser.add_lightning_class_args(PredictionWriter, "output")
        parser.add_lightning_class_args(PictureCallback, "pictures")


#: subcommands on finished run folders, outside LightningCLI (no model, no Trainer)
FOLDER_COMMANDS = ("merge", "evaluate")


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``sdcorr`` console script. Known errors print one message and exit with 1."""
    args = sys.argv[1:] if args is None else list(args)
    try:
        if args and args[0] in FOLDER_COMMANDS:
            commands.main(args)
        else:
            _run(args)
    except SdcorrError as error:
        print(f"sdcorr: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(args: Optional[list[str]]) -> None:
    SdcorrCLI(
        CorrespondenceModule,
        PairDataModule,
        subclass_mode_data=True,
        # the inner optimisation needs autograd: never run test/predict under inference_mode
        trainer_defaults={"inference_mode": False},
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
