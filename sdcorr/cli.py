"""The ``sdcorr`` command: LightningCLI with the ``test`` and ``predict`` subcommands.

``sdcorr test --config configs/demo.yaml`` builds the Trainer, the datamodule (``data:``, any
``PairDataModule`` subclass by class_path) and :class:`~sdcorr.module.CorrespondenceModule` from
layered YAML files and command-line overrides; ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

from typing import Optional

from lightning.pytorch.cli import LightningCLI

from callbacks.predictions import PredictionWriter
from datamodules.base import PairDataModule
from sdcorr.module import CorrespondenceModule


class SdcorrCLI(LightningCLI):
    """LightningCLI restricted to evaluation; ``fit`` and ``validate`` have no meaning here."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``sdcorr`` console script."""
    SdcorrCLI(
        CorrespondenceModule,
        PairDataModule,
        subclass_mode_data=True,
        # the inner optimisation needs autograd: never run test/predict under inference_mode
        trainer_defaults={"inference_mode": False, "callbacks": [PredictionWriter()]},
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
