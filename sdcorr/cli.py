"""The ``sdcorr`` command: LightningCLI with ``test``, ``predict`` and ``match``; ``plan`` prices a run;
``merge``, ``evaluate`` and ``report`` work on folders.

``sdcorr test --config configs/demo.yaml`` builds the Trainer, the datamodule (``data:``, any
``PairDataModule`` subclass by class_path) and :class:`~sdcorr.module.CorrespondenceModule` from
layered YAML files and command-line overrides; ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentError, ArgumentParser, Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from callbacks.pictures import PictureCallback
from callbacks.predictions import PredictionWriter
from callbacks.progress import RunProgress
from datamodules.base import PairDataModule
from sdcorr import commands
from sdcorr.engine import Matcher
from sdcorr.errors import OutputError, SdcorrError
from sdcorr.module import CorrespondenceModule
from sdcorr.plan import make_plan
from sdcorr.prompt import PromptMatcher
from sdcorr.runfolder import CONFIG_FILE
from sdcorr.trainer import SdcorrTrainer


class SdcorrCLI(LightningCLI):
    """LightningCLI restricted to evaluation; ``fit`` and ``validate`` have no meaning here."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
            "match": {"model", "datamodule"},
        }

    def add_arguments_to_parser(self, parser) -> None:
        """Callbacks configured in their own config sections (``output:``, ...), always present."""
        parser.add_lightning_class_args(PredictionWriter, "output")
        parser.add_lightning_class_args(PictureCallback, "pictures")
        parser.add_lightning_class_args(RunProgress, "progress")


class PlanCLI(SdcorrCLI):
    """``sdcorr plan``: the options and config files of ``sdcorr test``, but only the datamodule and the
    matcher are built (no model is loaded, no Trainer started); prints the run's :class:`~sdcorr.plan.Plan`."""

    def instantiate_classes(self) -> None:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(PairDataModule, "data")
        parser.add_argument("--matcher", type=Optional[Matcher])
        config = Namespace(data=self.config["data"], matcher=self.config["model"]["matcher"])
        built = getattr(parser, "instantiate", parser.instantiate_classes)(config)
        self.datamodule, self.matcher = built.data, built.matcher or PromptMatcher()

    def plan(self) -> str:
        """The line ``to do:`` of a run with these options, for all its pairs (every process together)."""
        self.datamodule.setup("test")
        return str(make_plan(self.datamodule.dataset.pairs, self.matcher))


class RunFolderConfig(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder, beside results.json.

    Lightning's callback writes into ``trainer.log_dir``: the logger's version folder (a new
    ``lightning_logs/version_N`` per run with a CSV logger) or ``default_root_dir`` without one. This one
    writes where the run's files go: the :class:`PredictionWriter`'s folder (``--output.dir`` or
    ``default_root_dir``), or ``match``'s output folder. A rerun (a resume) rewrites it; a run refused
    by the folder check never reaches it (it is the last callback).
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            writer = next((c for c in trainer.callbacks if isinstance(c, PredictionWriter)), None)
            folder = getattr(trainer, "output_folder", None)
            if folder is None:
                folder = writer.folder(trainer) if writer is not None else Path(trainer.default_root_dir)
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                path = Path(folder) / CONFIG_FILE
                self.parser.save(self.config, str(path), overwrite=True, multifile=self.multifile)
            except OSError as error:
                raise OutputError(f"{folder}: cannot write {CONFIG_FILE} ({error})") from error
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


#: subcommands on finished run folders, outside LightningCLI (no model, no Trainer)
FOLDER_COMMANDS = ("merge", "evaluate", "report")


def _known_error(error: BaseException) -> Optional[SdcorrError]:
    """The :class:`SdcorrError` behind ``error`` (itself or a cause), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SdcorrError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``sdcorr`` console script. Known errors print one message and exit with 1."""
    from_command_line = args is None
    args = sys.argv[1:] if from_command_line else list(args)
    if len(args) >= 3 and args[0] == "match" and not args[1].startswith("-") and not args[2].startswith("-"):
        args = ["match", "--source", args[1], "--target", args[2], *args[3:]]  # SOURCE TARGET as positionals
    try:
        if args and args[0] in FOLDER_COMMANDS:
            commands.main(args)
        elif args and args[0] == "plan":
            if from_command_line:  # LightningCLI reads sys.argv itself (and warns when given both)
                sys.argv[1:] = args[1:]
            print(f"to do: {_cli(None if from_command_line else args[1:], run=False, cls=PlanCLI).plan()}")
        elif from_command_line:  # LightningCLI reads sys.argv itself (and warns when given both)
            sys.argv[1:] = args
            _cli(None)
        else:
            _cli(args)
    except ArgumentError as error:
        command = args[0] if args and args[0] in (*SdcorrCLI.subcommands(), "plan") else ""
        print(f"sdcorr: error: {error}\n(options: sdcorr {command} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:  # known errors may arrive wrapped (jsonargparse instantiation)
        known = _known_error(error)
        if known is None:
            raise
        print(f"sdcorr: error: {known}", file=sys.stderr)
        raise SystemExit(1) from None


def _cli(args: Optional[list[str]], run: bool = True, cls: type[SdcorrCLI] = SdcorrCLI) -> SdcorrCLI:
    return cls(
        CorrespondenceModule,
        PairDataModule,
        subclass_mode_data=True,
        trainer_class=SdcorrTrainer,
        # the inner optimisation needs autograd: never run test/predict under inference_mode
        # progress bars only on a terminal: in a pipe or a log file they are noise
        trainer_defaults={"inference_mode": False, "enable_progress_bar": sys.stdout.isatty()},
        save_config_callback=RunFolderConfig,
        save_config_kwargs={"overwrite": True},
        # a bad option or config key raises (main prints one message) instead of printing the whole usage
        parser_kwargs={name: {"exit_on_error": False} for name in ("test", "predict", "match")}
        | {"exit_on_error": False},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
