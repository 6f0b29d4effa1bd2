"""The ``sdcorr`` command: every subcommand on one LightningCLI parser, so ``sdcorr --help`` lists them all.

* ``test`` and ``predict`` are the Trainer's: they build the Trainer, the datamodule (``data:``, any
  ``PairDataModule`` subclass by class_path) and :class:`~sdcorr.module.CorrespondenceModule` from
  layered YAML files and command-line overrides (``--print_config`` shows the resolved config).
* ``plan`` and ``match`` take the same config files: ``plan`` builds only the datamodule and the
  matcher, ``match`` only the model (see :mod:`sdcorr.cli.match`).
* ``merge``, ``evaluate``, ``report`` and ``compare`` work on finished run folders (see :mod:`sdcorr.cli.commands`).

Every error prints one ``sdcorr: error: <what>: <problem>`` line, no traceback: exit code 2 for a bad
option, value or config file (found before anything runs), 1 for a problem while running (bad data, an
unwritable folder, ...). ``--debug`` anywhere on the command line, or ``SDCORR_DEBUG=1``, shows the traceback
instead. An error sdcorr did not foresee says so and asks for ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentError, ArgumentParser, Namespace
from lightning.fabric import Fabric
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.pictures import PictureCallback
from callbacks.progress import RunProgress
from callbacks.run_folder import RunFolderWriter
from callbacks.wandb_tables import WandbTables
from datamodules.base import PairDataModule
from sdcorr.cli import commands
from sdcorr.cli.errors import check_config_file, option_name, parse_problem, trainer_options
from sdcorr.cli.match import match_files
from sdcorr.errors import OptionError, OutputError, SdcorrError, UsageError
from sdcorr.matchers.base import Matcher
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.module import CorrespondenceModule
from sdcorr.paths import bundled
from sdcorr.runs.plan import make_plan
from sdcorr.stats.intervals import RESAMPLES


@dataclass(frozen=True)
class Command:
    """A subcommand that is not a Trainer method.

    Attributes:
        help: the one line ``sdcorr --help`` shows.
        add_arguments: adds the command's own arguments to its parser.
        run: runs it, given the CLI (its parsed ``config`` and what ``instantiate_classes`` built).
        configs: also takes the config files and options of ``sdcorr test`` (trainer, model, data, ...).
        builds: what ``instantiate_classes`` builds from them: any of ``data``, ``matcher``, ``model``.
    """

    help: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[SdcorrCLI], Any]
    configs: bool = False
    builds: tuple[str, ...] = ()


def _match_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("source", type=str, help="the image the points are on")
    parser.add_argument("target", type=str, help="the image to find them in")
    parser.add_argument("--points", type=str, required=True, help='source pixel coordinates, "x1,y1 x2,y2 ..."')
    parser.add_argument("--output_dir", type=Optional[str], default=None, help="default: <default_root_dir>/match")


def _merge_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("out", type=str, help="new folder for the merged run")
    parser.add_argument("folders", type=str, nargs="+", help="the shard run folders")
    parser.add_argument("--allow_missing", type=bool, default=False, help="merge even if shards or pairs are missing")


def _evaluate_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("folder", type=str, help="the run folder")
    parser.add_argument("--alphas", type=Optional[list[float]], default=None, help="PCK alphas; default: the run's")
    parser.add_argument("--threshold", type=Optional[str], default=None, help="threshold mode; default: as run")
    parser.add_argument("--output", type=Optional[str], default=None, help="default: FOLDER/evaluation.json")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of the 95%% intervals")


def _report_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("folder", type=str, help="the run folder")
    parser.add_argument("--alpha", type=float, default=0.1, help="PCK threshold of the histogram")


def _compare_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("folders", type=str, nargs="+", help="run folders: each after the first is compared with it")
    parser.add_argument("--alphas", type=Optional[list[float]], default=None, help="PCK alphas; default: the runs'")
    parser.add_argument("--threshold", type=Optional[str], default=None, help="threshold mode; default: as run")
    parser.add_argument("--paper", type=Optional[str], default=None, help="spair, pfwillow or cub: set the run "
                        "beside the paper's numbers")  # fmt: skip
    parser.add_argument("--output_dir", type=Optional[str], default=None, help="default: <second run>/compare")


def _no_arguments(parser: ArgumentParser) -> None:
    pass


def _plan(cli: SdcorrCLI) -> None:
    cli.datamodule.setup("test")
    print(f"to do: {make_plan(cli.datamodule.pending(), cli.matcher)}")


def _match(cli: SdcorrCLI) -> None:
    options = cli.config["match"]
    trainer = options.trainer
    folder = options.output_dir or Path(trainer.default_root_dir or ".") / "match"
    with trainer_options(trainer.accelerator):
        fabric = Fabric(accelerator=trainer.accelerator, devices=1, precision=trainer.precision)
    source, target = str(bundled(options.source)), str(bundled(options.target))  # the demo images from anywhere
    match_files(cli.model, source, target, options.points, folder, fabric, cli.save_config)


def _merge(cli: SdcorrCLI) -> None:
    options = cli.config["merge"]
    commands.merge(options.out, options.folders, options.allow_missing)


def _evaluate(cli: SdcorrCLI) -> None:
    options = cli.config["evaluate"]
    if options.resamples < 0:
        raise UsageError(f"--resamples: expected an integer >= 0; got {options.resamples}")
    commands.evaluate(options.folder, options.alphas, options.threshold, options.output, options.resamples)


def _report(cli: SdcorrCLI) -> None:
    options = cli.config["report"]
    commands.report(options.folder, options.alpha)


def _compare(cli: SdcorrCLI) -> None:
    options = cli.config["compare"]
    commands.compare(options.folders, options.alphas, options.threshold, options.paper, options.output_dir)


#: the Trainer's methods that are subcommands, with their one-line help
TRAINER_COMMANDS = {
    "test": "match and score a benchmark's pairs into a run folder (resumes an interrupted run)",
    "predict": "match pairs without scoring them (no ground truth needed) into a run folder",
}
#: the subcommands besides the Trainer's ``test`` and ``predict``, in ``--help`` order
COMMANDS: dict[str, Command] = {
    "plan": Command("print what a test run would cost (pairs, fits, model passes); loads no model",
                    _no_arguments, _plan, configs=True, builds=("data", "matcher")),
    "match": Command("find points of one image in another; writes match.json and match.png",
                     _match_arguments, _match, configs=True, builds=("model",)),
    "merge": Command("merge the run folders of shards into one run folder and score it", _merge_arguments, _merge),
    "evaluate": Command("score a run folder again (other alphas or threshold mode) into evaluation.json",
                        _evaluate_arguments, _evaluate),
    "report": Command("(re)write a run folder's index.html", _report_arguments, _report),
    "compare": Command("is a difference real? PCK of runs on their shared pairs, with bootstrap intervals; "
                       "or a run beside the paper (--paper)", _compare_arguments, _compare),
}  # fmt: skip


class SdcorrCLI(LightningCLI):
    """LightningCLI with evaluation subcommands only (``fit`` and ``validate`` have no meaning here) plus
    :data:`COMMANDS`."""

    #: whether the parser being built requires a ``data:`` section (not for a command that builds no datamodule)
    _data_required = True

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: {"model", "dataloaders", "datamodule"} for name in TRAINER_COMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Callbacks configured in their own config sections (``output:``, ...), always present; settings
        that must agree are linked (the pictures' colours use one of the model's PCK alphas, and the page's
        and W&B's histogram the pictures' alpha; every callback writes into the one run folder)."""
        parser.add_lightning_class_args(RunFolderWriter, "output")
        parser.add_lightning_class_args(PictureCallback, "pictures")
        parser.add_lightning_class_args(RunProgress, "progress")
        parser.add_lightning_class_args(WandbTables, "wandb")
        parser.link_arguments("model.alphas", "pictures.alphas", apply_on="parse")
        parser.link_arguments("pictures.alpha", "output.alpha", apply_on="parse")
        parser.link_arguments("pictures.alpha", "wandb.alpha", apply_on="parse")
        parser.link_arguments("output.dir", "pictures.dir", apply_on="parse")
        parser.link_arguments("output.resamples", "wandb.resamples", apply_on="parse")
        # the logger's files (W&B's wandb/, CSVLogger's versions) go in the run's folder, wherever that is
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir", apply_on="parse")

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's ``trainer``, ``model`` and ``data`` sections; ``data`` optional for ``match`` (accepted,
        so a benchmark config works, and ignored), as Lightning makes it without a datamodule class."""
        if self._data_required:
            return super().add_core_arguments_to_parser(parser)
        datamodule_class, self.datamodule_class = self.datamodule_class, None
        try:
            super().add_core_arguments_to_parser(parser)
        finally:
            self.datamodule_class = datamodule_class

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """The Trainer's ``test`` and ``predict`` (with their method arguments), then :data:`COMMANDS`."""
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        for name, help in TRAINER_COMMANDS.items():
            options = {"description": help, **kwargs.get(name, {})}
            self._subcommand_parsers[name] = self._prepare_subcommand_parser(self.trainer_class, name, **options)
            subcommands.add_subcommand(name, self._subcommand_parsers[name], help=help)
        # sdcorr prints its own PCK table: Lightning's metric table only on request (--verbose true)
        self._subcommand_parsers["test"].set_defaults(verbose=False)
        for name, command in COMMANDS.items():
            subparser = self.init_parser(description=command.help, exit_on_error=False)
            if command.configs:
                self._data_required = "data" in command.builds
                self._add_arguments(subparser)
                self._data_required = True
            command.add_arguments(subparser)
            self._subcommand_parsers[name] = subparser
            self._subcommand_method_arguments[name] = []
            subcommands.add_subcommand(name, subparser, help=command.help)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as Lightning does; a bad option or value raises :class:`UsageError` with one line naming it."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            given = sys.argv[1:] if args is None else list(args)
            command = next((a for a in given if a in self._subcommand_parsers), None)
            known = self._subcommand_parsers[command]._option_string_actions if command else ()
            usage = f"sdcorr {command} --help" if command else "sdcorr --help"
            raise UsageError(f"{parse_problem(str(error), known)} (options: {usage})") from error

    def before_instantiate_classes(self) -> None:
        """Quiet by default: third-party noise is hidden unless ``test --verbose true`` or ``SDCORR_VERBOSE=1``."""
        verbose = self.subcommand == "test" and self.config["test"].get("verbose")
        if not verbose and os.environ.get(VERBOSE_VARIABLE) != "1":
            hide_third_party_noise()

    def instantiate_classes(self) -> None:
        """Build what the subcommand needs: everything for ``test``/``predict``, less for the others. A
        constructor's :class:`OptionError` gets the full option name of the argument it names."""
        try:
            self._instantiate()
        except Exception as error:  # jsonargparse may wrap it
            known = _known_error(error)
            if isinstance(known, OptionError) and known.option is None:
                sections = {"model": self.model_class, "output": RunFolderWriter, "pictures": PictureCallback,
                            "progress": RunProgress, "wandb": WandbTables}  # fmt: skip
                known.option = option_name(dict(self.config[self.subcommand].items()), known, sections)
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's Trainer; an accelerator, device or precision it cannot provide is a :class:`UsageError`.
        The run folder's writer gets the resolved config, to write as ``config.yaml`` (see
        :meth:`~callbacks.run_folder.RunFolderWriter.keep_config`)."""
        with trainer_options(self.config[self.subcommand].trainer.accelerator):
            trainer = super().instantiate_trainer(**kwargs)
        text = self._subcommand_parsers[self.subcommand].dump(self.config[self.subcommand])
        for callback in trainer.callbacks:
            if isinstance(callback, RunFolderWriter):
                callback.keep_config(text)
        return trainer

    def _instantiate(self) -> None:
        command = COMMANDS.get(self.subcommand)
        if command is None:
            return super().instantiate_classes()
        self.datamodule = self.model = self.matcher = self.trainer = None
        if not command.builds:
            return
        parser = ArgumentParser(exit_on_error=False)
        config = self.config[self.subcommand]
        parts = {}
        if "data" in command.builds:
            parser.add_subclass_arguments(PairDataModule, "data")
            parts["data"] = config["data"]
        if "matcher" in command.builds:
            parser.add_argument("--matcher", type=Optional[Matcher])
            parts["matcher"] = config["model"]["matcher"]
        if "model" in command.builds:
            parser.add_class_arguments(CorrespondenceModule, "model")
            parts["model"] = config["model"]
        built = getattr(parser, "instantiate", parser.instantiate_classes)(Namespace(**parts))  # renamed in 4.49
        self.datamodule, self.model = built.get("data"), built.get("model")
        if "matcher" in command.builds:
            self.matcher = built.matcher or PromptMatcher()

    def _set_seed(self) -> None:
        """Seed as Lightning does, for the commands that take a config (others have no seed to set)."""
        command = COMMANDS.get(self.subcommand)
        if command is None or command.configs:
            super()._set_seed()

    def _run_subcommand(self, subcommand: str) -> None:
        command = COMMANDS.get(subcommand)
        if command is None:
            return super()._run_subcommand(subcommand)
        command.run(self)

    def save_config(self, path: Path) -> None:
        """Write the resolved config of this command to ``path``."""
        try:
            self._subcommand_parsers[self.subcommand].save(self.config[self.subcommand], str(path), overwrite=True)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error})") from error


#: an environment variable that, set to 1, shows what :func:`hide_third_party_noise` hides, in every command
VERBOSE_VARIABLE = "SDCORR_VERBOSE"
#: an environment variable that, set to 1, shows the traceback of an error (as ``--debug`` does)
DEBUG_VARIABLE = "SDCORR_DEBUG"


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip:" advertisements (for its cloud products), nothing else it logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


def hide_third_party_noise() -> None:
    """Hide the lines a normal run prints that are neither sdcorr's nor about the run: Lightning's product
    tips, and torch's deprecation notice about Lightning's own pytree code. Filters match those messages
    exactly; every other warning (sdcorr's included) still shows."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
    pytree = r"`isinstance\(treespec, LeafSpec\)` is deprecated"  # torch 2.10+ on lightning's _pytree.py
    warnings.filterwarnings("ignore", message=pytree, category=FutureWarning)


def _known_error(error: Optional[BaseException]) -> Optional[SdcorrError]:
    """The :class:`SdcorrError` behind ``error`` (itself or a cause), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SdcorrError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def config_files(args: list[str]) -> list[str]:
    """The values of the ``--config`` options in ``args``."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]
    return values + [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]


def bundled_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config`` file that is not found from here taken from the installation
    (see :func:`sdcorr.paths.bundled`): ``--config configs/smoke.yaml`` works from any folder."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(bundled(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = f"--config={bundled(arg.removeprefix('--config='))}"
    return out


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``sdcorr`` console script; ``args`` default to the command line.

    Prints one ``sdcorr: error:`` line for any error (see the module docstring) unless ``--debug`` is among
    ``args`` or ``SDCORR_DEBUG=1``, which re-raise it with its traceback.
    """
    given = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in given or os.environ.get(DEBUG_VARIABLE) == "1"
    given = [arg for arg in given if arg != "--debug"]
    try:
        given = bundled_configs(given)
        for path in config_files(given):
            check_config_file(path)
        if args is None:  # LightningCLI reads sys.argv itself (and warns when also given args)
            sys.argv[1:] = given
            cli(None)
        else:
            cli(given)
    except Exception as error:  # known errors may arrive wrapped (jsonargparse instantiation)
        if debug:
            raise
        known = _known_error(error)
        if known is not None:
            print(f"sdcorr: error: {known}", file=sys.stderr)
            raise SystemExit(2 if isinstance(known, UsageError) else 1) from None
        if isinstance(error, torch.cuda.OutOfMemoryError):  # a fixed max_batch ("auto" halves instead)
            print(
                "sdcorr: error: out of GPU memory; lower --model.matcher.init_args.max_batch or give it auto, "
                "or use --trainer.precision bf16-mixed",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        if isinstance(error, ArgumentError):  # from a parser outside parse_arguments
            print(f"sdcorr: error: {parse_problem(str(error))}", file=sys.stderr)
            raise SystemExit(2) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else "(no message)"
        print(
            f"sdcorr: error: unexpected {type(error).__name__}: {first} "
            f"(rerun with --debug for the traceback; please report it if sdcorr is at fault)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def cli(args: Optional[list[str]] = None, run: bool = True) -> SdcorrCLI:
    """Parse ``args`` (default: the command line), build what the subcommand needs and (``run``) run it."""
    return SdcorrCLI(
        CorrespondenceModule,
        PairDataModule,
        subclass_mode_data=True,
        # the inner optimisation needs autograd: never run test/predict under inference_mode
        # progress bars only on a terminal: in a pipe or a log file they are noise
        trainer_defaults={"inference_mode": False, "enable_progress_bar": sys.stdout.isatty()},
        save_config_callback=None,  # config.yaml is the run folder's, written by its RunFolderWriter
        # a bad option or config key raises (main prints one message) instead of printing the whole usage
        parser_kwargs={name: {"exit_on_error": False} for name in SdcorrCLI.subcommands()} | {"exit_on_error": False},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
