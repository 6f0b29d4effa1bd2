"""``sdcorr plan``: what a ``test`` run would cost (pairs, distinct fits, model passes), without a model.

It takes the config files and options of ``sdcorr test`` and builds the datamodule and the matcher only
(the model's ``source`` is never built: no weights are loaded), then prints the plan of the pairs still to
do (see :func:`sdcorr.runs.plan.make_plan`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sdcorr.cli.configured import ConfiguredCLI, build_sections
from sdcorr.runs.plan import make_plan


class PlanCLI(ConfiguredCLI):
    """The options of ``sdcorr test``; builds the datamodule and the matcher, nothing else."""

    def build(self) -> None:
        built = build_sections(self.config, data=True, matcher=True)
        self.datamodule, self.matcher = built.data, built.matcher


def plan(prog: str, description: str, args: Sequence[str]) -> None:
    """Print the plan of the pairs a ``test`` run with the command line ``args`` would still do."""
    cli = PlanCLI(prog, description, args)
    cli.datamodule.setup("test")
    print(f"to do: {make_plan(cli.datamodule.pending(), cli.matcher)}")
