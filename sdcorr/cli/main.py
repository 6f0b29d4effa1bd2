"""The ``sdcorr`` command: the first argument names the command, which parses the rest itself.

* ``test`` and ``predict`` are the Trainer's (:mod:`sdcorr.cli.run`): they build the Trainer, the
  datamodule (``data:``, any ``PairDataModule`` subclass by class_path) and
  :class:`~sdcorr.module.CorrespondenceModule` from layered YAML files and command-line overrides
  (``--print_config`` shows the resolved config).
* ``plan`` and ``match`` take the same config files: ``plan`` builds only the datamodule and the
  matcher (:mod:`sdcorr.cli.plan`), ``match`` only the model (:mod:`sdcorr.cli.match_command`).
* ``merge``, ``evaluate``, ``report`` and ``compare`` work on finished run folders (:mod:`sdcorr.cli.folders`).

``sdcorr --help`` lists the commands (:data:`COMMANDS`), ``sdcorr COMMAND --help`` the command's options.

Every error prints one ``sdcorr: error: <what>: <problem>`` line, no traceback: exit code 2 for a bad
option, value or config file (found before anything runs), 1 for a problem while running (bad data, an
unwritable folder, ...). ``--debug`` anywhere on the command line, or ``SDCORR_DEBUG=1``, shows the traceback
instead. An error sdcorr did not foresee says so and asks for ``--debug``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import torch
from jsonargparse import ArgumentError, ArgumentParser

from sdcorr.cli import folders
from sdcorr.cli.errors import check_config_file, known_error, parse_command_line, parse_problem
from sdcorr.cli.match_command import match
from sdcorr.cli.plan import plan
from sdcorr.cli.run import run_trainer
from sdcorr.errors import UsageError
from sdcorr.paths import bundled

#: an environment variable that, set to 1, shows the traceback of an error (as ``--debug`` does)
DEBUG_VARIABLE = "SDCORR_DEBUG"


@dataclass(frozen=True)
class Command:
    """One ``sdcorr`` command.

    Attributes:
        help: the line ``sdcorr --help`` shows, and the description ``sdcorr COMMAND --help`` starts with.
        run: parses and runs the command: ``run(prog, description, args)`` with ``prog`` the command as
            messages name it (``sdcorr test``), ``description`` its help and ``args`` the command line
            after its name.
    """

    help: str
    run: Callable[[str, str, Sequence[str]], Any]


#: every command, in ``sdcorr --help`` order
COMMANDS: dict[str, Command] = {
    "test": Command("match and score a benchmark's pairs into a run folder (resumes an interrupted run)",
                    partial(run_trainer, "test")),
    "predict": Command("match pairs without scoring them (no ground truth needed) into a run folder",
                       partial(run_trainer, "predict")),
    "plan": Command("print what a test run would cost (pairs, fits, model passes); loads no model", plan),
    "match": Command("find points of one image in another; writes match.json and match.png", match),
    "merge": Command("merge the run folders of shards into one run folder and score it", folders.merge),
    "evaluate": Command("score a run folder again (other alphas or threshold mode) into evaluation.json",
                        folders.evaluate),
    "report": Command("(re)write a run folder's index.html; --draw PAIR...: draw pairs (again) with the run's model",
                       folders.report),
    "compare": Command("is a difference real? PCK of runs on their shared pairs, with bootstrap intervals; "
                       "or a run beside a method's published figures (--paper)", folders.compare),
}  # fmt: skip


def command_parser() -> ArgumentParser:
    """The parser of the command's name (the first argument): ``sdcorr --help`` lists :data:`COMMANDS`.
    Each command parses the arguments after its name with its own parser."""
    parser = ArgumentParser(
        prog="sdcorr",
        description="Semantic correspondence from Stable Diffusion attention: match, score and compare runs.",
        exit_on_error=False,
    )
    subcommands = parser.add_subcommands(dest="command")
    for name, command in COMMANDS.items():
        subcommands.add_subcommand(name, ArgumentParser(prog=f"sdcorr {name}", description=command.help),
                                   help=command.help)  # fmt: skip
    return parser


def cli(args: Sequence[str]) -> None:
    """Run the command ``args[0]`` with the arguments after it."""
    name = parse_command_line(command_parser(), args[:1]).command
    COMMANDS[name].run(f"sdcorr {name}", COMMANDS[name].help, args[1:])


def config_files(args: Sequence[str]) -> list[str]:
    """The values of the ``--config`` options in ``args``."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]
    return values + [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]


def bundled_configs(args: Sequence[str]) -> list[str]:
    """``args`` with each ``--config`` file that is not found from here taken from the installation
    (see :func:`sdcorr.paths.bundled`): ``--config configs/smoke.yaml`` works from any folder."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(bundled(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = f"--config={bundled(arg.removeprefix('--config='))}"
    return out


def main(args: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``sdcorr`` console script.

    Args:
        args: the command line after ``sdcorr`` (``["test", "--config", "configs/smoke.yaml"]``); default:
            ``sys.argv[1:]``, which is only read, never written.

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
        cli(given)
    except Exception as error:  # known errors may arrive wrapped (jsonargparse instantiation)
        if debug:
            raise
        known = known_error(error)
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
        if isinstance(error, ArgumentError):  # from a parser outside parse_command_line
            print(f"sdcorr: error: {parse_problem(str(error))}", file=sys.stderr)
            raise SystemExit(2) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else "(no message)"
        print(
            f"sdcorr: error: unexpected {type(error).__name__}: {first} "
            f"(rerun with --debug for the traceback; please report it if sdcorr is at fault)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
