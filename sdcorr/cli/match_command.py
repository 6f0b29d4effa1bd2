"""The command line of ``sdcorr match``: the points of one image found in another (see :mod:`sdcorr.cli.match`).

It takes the config files and options of ``sdcorr test`` without needing a ``data`` section (a model
config is enough; a benchmark config's data section is ignored), plus the two images, ``--points`` and
``--output_dir``. It builds the model only, and runs it with Lightning Fabric on the Trainer's accelerator
and precision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from lightning.fabric import Fabric
from lightning.pytorch.cli import LightningArgumentParser

from sdcorr.cli.configured import ConfiguredCLI, build_sections
from sdcorr.cli.errors import trainer_options
from sdcorr.cli.match import match_files
from sdcorr.paths import bundled


class MatchCLI(ConfiguredCLI):
    """The options of ``sdcorr test`` (``data`` optional) and match's own; builds the model, nothing else."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("source", type=str, help="the image the points are on")
        parser.add_argument("target", type=str, help="the image to find them in")
        parser.add_argument("--points", type=str, required=True, help='source pixel coordinates, "x1,y1 x2,y2 ..."')
        parser.add_argument("--output_dir", type=Optional[str], default=None, help="default: <default_root_dir>/match")

    def build(self) -> None:
        self.model = build_sections(self.config, model=True).model


def points_attached(args: Sequence[str]) -> list[str]:
    """``args`` with a ``--points`` value that starts with a minus sign attached to it (``--points=-1,5``),
    so that it is read as the value (and checked as a point) rather than as an unknown option.

    >>> points_attached(["a.jpg", "b.jpg", "--points", "-1,5 3,4"])
    ['a.jpg', 'b.jpg', '--points=-1,5 3,4']
    """
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--points" and re.match(r"-[\d.]", out[i + 1]):
            out[i : i + 2] = [f"--points={out[i + 1]}"]
            break
    return out


def match(prog: str, description: str, args: Sequence[str]) -> dict[str, Any]:
    """Find the points of the command line ``args`` (after ``match``); returns what match.json holds."""
    cli = MatchCLI(prog, description, points_attached(args), needs_data=False)
    options, trainer = cli.config, cli.config.trainer
    folder = options.output_dir or Path(trainer.default_root_dir or ".") / "match"
    with trainer_options(trainer.accelerator):
        fabric = Fabric(accelerator=trainer.accelerator, devices=1, precision=trainer.precision)
    source, target = str(bundled(options.source)), str(bundled(options.target))  # the demo images from anywhere
    return match_files(cli.model, source, target, options.points, folder, fabric, cli.save_config)
