"""Which pairs a process matches and which a run draws: facts every callback computes alike from the run's pairs.

Callbacks never ask each other; each that needs these calls the functions here with what the Trainer and
its :class:`~datamodules.base.PairDataModule` say (``selected``, ``world_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from datamodules.schedule import split


def process_share(selected: Sequence[dict[str, Any]], rank: int, world_size: int) -> list[dict[str, Any]]:
    """The records of ``selected`` that process ``rank`` of ``world_size`` matches when all are pending:
    the split of :class:`datamodules.base.UnpaddedDistributedSampler` (see :func:`datamodules.schedule.split`).

    >>> pairs = [{"pair_id": str(i), "source_group": g, "num_keypoints": 1} for i, g in enumerate("aab")]
    >>> [p["pair_id"] for p in process_share(pairs, 0, 2)], [p["pair_id"] for p in process_share(pairs, 1, 2)]
    (['0', '1'], ['2'])
    """
    return [selected[i] for i in split(selected, world_size)[rank]]


def pairs_to_draw(
    selected: Optional[Sequence[dict[str, Any]]], world_size: int, num_pairs: int, pair_ids: Optional[Sequence[str]]
) -> Optional[list[str]]:
    """The ids of the pairs a run draws: ``pair_ids``, else the first ``num_pairs`` of process 0's share of
    ``selected`` (rank 0 draws). Decided from the selection, not from what is left to do, so a resumed
    run chooses the pairs an uninterrupted one does. None: no pair list (no datamodule): the first pairs matched.
    """
    if pair_ids is not None:
        return list(pair_ids)
    if selected is None:
        return None
    return [pair["pair_id"] for pair in process_share(selected, 0, world_size)][:num_pairs]
