"""Quiet by default: the lines a normal run prints that are neither sdcorr's nor about the run are hidden.

``sdcorr test --verbose true`` or ``SDCORR_VERBOSE=1`` (:data:`VERBOSE_VARIABLE`) show them again.
"""

from __future__ import annotations

import logging
import warnings

#: an environment variable that, set to 1, shows what :func:`hide_third_party_noise` hides, in every command
VERBOSE_VARIABLE = "SDCORR_VERBOSE"


class NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip:" advertisements (for its cloud products), nothing else it logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


def hide_third_party_noise() -> None:
    """Hide Lightning's product tips, torch's deprecation notice about Lightning's own pytree code,
    Lightning's warning about an empty test loop (a rerun of a finished run) and torchmetrics' warning that
    PCK scored no pair (no ground truth): sdcorr says both in its own words. Filters match those messages
    exactly; every other warning (sdcorr's included) still shows."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(NoTips())
    pytree = r"`isinstance\(treespec, LeafSpec\)` is deprecated"  # torch 2.10+ on lightning's _pytree.py
    warnings.filterwarnings("ignore", message=pytree, category=FutureWarning)
    # a finished run's rerun has no pair left: the run folder's writer says so in its own words
    warnings.filterwarnings("ignore", message=r"Total length of `DataLoader` across ranks is zero")
    # no pair with ground truth: the PCK table says how many pairs were predicted but not scored
    warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric PCK was called before the ``update``")
