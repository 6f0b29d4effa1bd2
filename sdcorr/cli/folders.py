"""The command lines of ``sdcorr merge``, ``evaluate``, ``report`` and ``compare``: finished run folders, no model
(but ``report --draw``, which runs the run's own config again, see :func:`sdcorr.cli.run.redraw`).

Each parses its own options with a plain jsonargparse parser and calls its use case in
:mod:`sdcorr.cli.commands`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from sdcorr.cli import commands
from sdcorr.cli.errors import parse_command_line
from sdcorr.cli.run import redraw
from sdcorr.errors import OutputError, UsageError
from sdcorr.stats.intervals import RESAMPLES


def parser_of(prog: str, description: str) -> ArgumentParser:
    """A parser that raises on a bad option (main prints one line) and takes ``--config`` files too."""
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of options")
    return parser


def merge(prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr merge OUT SHARD_DIR...``: see :func:`sdcorr.cli.commands.merge`."""
    parser = parser_of(prog, description)
    parser.add_argument("out", type=str, help="new folder for the merged run")
    parser.add_argument("folders", type=str, nargs="+", help="the shard run folders")
    parser.add_argument("--allow_missing", type=bool, default=False, help="merge even if shards or pairs are missing")
    options = parse_command_line(parser, args)
    commands.merge(options.out, options.folders, options.allow_missing)


def evaluate(prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr evaluate RUN_DIR``: see :func:`sdcorr.cli.commands.evaluate`."""
    parser = parser_of(prog, description)
    parser.add_argument("folder", type=str, help="the run folder")
    parser.add_argument("--alphas", type=Optional[list[float]], default=None, help="PCK alphas; default: the run's")
    parser.add_argument("--threshold", type=Optional[str], default=None, help="threshold mode; default: as run")
    parser.add_argument("--output", type=Optional[str], default=None, help="default: FOLDER/evaluation.json")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of the 95%% intervals")
    options = parse_command_line(parser, args)
    if options.resamples < 0:
        raise UsageError(f"--resamples: expected an integer >= 0; got {options.resamples}")
    commands.evaluate(options.folder, options.alphas, options.threshold, options.output, options.resamples)


def report(prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr report RUN_DIR [--draw PAIR_ID...]``: see :func:`sdcorr.cli.commands.report`; ``--draw``
    first draws pairs with the run's model (see :func:`sdcorr.cli.run.redraw`)."""
    parser = parser_of(prog, description)
    parser.add_argument("folder", type=str, help="the run folder")
    parser.add_argument("--alpha", type=float, default=0.1, help="PCK threshold of the histogram")
    parser.add_argument("--draw", type=str, default=None, nargs="+",
                        help="pair ids to draw (again) first, with the run's config.yaml: the model runs on "
                        "these pairs as in the run (same random draws); nothing is scored twice")  # fmt: skip
    options = parse_command_line(parser, args)
    if options.draw:
        if not Path(options.folder).is_dir():
            raise OutputError(f"{options.folder}: no such run folder")
        redraw(prog, options.folder, options.draw)
    commands.report(options.folder, options.alpha)


def compare(prog: str, description: str, args: Sequence[str]) -> None:
    """``sdcorr compare RUN_A RUN_B ...`` or ``sdcorr compare RUN --paper NAME``: see
    :func:`sdcorr.cli.commands.compare`."""
    parser = parser_of(prog, description)
    parser.add_argument("folders", type=str, nargs="*", help="run folders: each after the first is compared with it")
    parser.add_argument("--alphas", type=Optional[list[float]], default=None, help="PCK alphas; default: the runs'")
    parser.add_argument("--threshold", type=Optional[str], default=None, help="threshold mode; default: as run")
    parser.add_argument("--paper", type=Optional[str], default=None, help="hedlin, dift, dinov2 or sd-dino: "
                        "set the run beside that method's published figures on its benchmark; list: what is "
                        "recorded")  # fmt: skip
    parser.add_argument("--output_dir", type=Optional[str], default=None, help="default: <second run>/compare")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of the intervals "
                        "and p-values (0: none)")  # fmt: skip
    options = parse_command_line(parser, args)
    commands.compare(options.folders, options.alphas, options.threshold, options.paper, options.output_dir,
                     options.resamples)  # fmt: skip
