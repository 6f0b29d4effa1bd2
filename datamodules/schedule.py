"""Which process handles which pairs, and in which order: whole source images, balanced by keypoints.

A matcher that reuses fits (``PromptMatcher.reuse_fits``) fits each distinct (source image, keypoint)
once per process and remembers it for a while. So that every fit is done exactly once overall, all
pairs of one source image go to the same shard and the same DDP process, and they come one after the
other. A source image is identified by the bytes of its file, so byte-identical copies under two
names (PF-Willow ships 30) count as one image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sdcorr.errors import DataError

#: the record field that names a pair's source-image group (set by ``PairDataModule.select``)
GROUP = "source_group"
#: the record and sample field: every distinct source keypoint of the group (see :func:`add_group_keypoints`)
GROUP_KEYPOINTS = "source_group_keypoints"
#: the record field that names its target image the same way (the digest of the file's bytes)
TARGET_GROUP = "target_group"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex, first 20 digits): equal for byte-identical files."""
    path = Path(path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    except FileNotFoundError as error:
        raise DataError(f"{path}: image file not found") from error
    except OSError as error:
        raise DataError(f"{path}: cannot read image file ({error})") from error


def group_key(pair: dict[str, Any]) -> str:
    """The source-image group of a record: its ``source_group``, else the pair alone."""
    return pair.get(GROUP) or f"pair:{pair['pair_id']}"


def add_group_keypoints(pairs: Sequence[dict[str, Any]]) -> None:
    """Give each record :data:`GROUP_KEYPOINTS`: ``[M, 2] (x, y)`` float32, the distinct ``source_keypoints``
    of all ``pairs`` of its source-image group, in order of first appearance (one tensor per group).

    A matcher that reuses fits batches them by source image from this (``PromptMatcher.fit_batching``);
    given the whole selection before sharding, it depends on neither the shard, the DDP process nor the
    pairs a resumed run has left. Records without ``source_keypoints`` add none.

    >>> pairs = [{"pair_id": "0", GROUP: "a", "source_keypoints": [[1, 2], [3, 4]]},
    ...          {"pair_id": "1", GROUP: "a", "source_keypoints": [[3, 4], [5, 6]]}]
    >>> add_group_keypoints(pairs); pairs[1][GROUP_KEYPOINTS].tolist()
    [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    """
    points: dict[str, dict[tuple[float, float], None]] = {}
    for pair in pairs:
        if pair.get("source_keypoints") is not None:
            found = torch.as_tensor(pair["source_keypoints"], dtype=torch.float32).reshape(-1, 2).tolist()
            points.setdefault(group_key(pair), {}).update(dict.fromkeys(map(tuple, found)))
    tensors = {group: torch.tensor(list(found), dtype=torch.float32) for group, found in points.items()}
    for pair in pairs:
        if group_key(pair) in tensors:
            pair[GROUP_KEYPOINTS] = tensors[group_key(pair)]


def image_keys(pair: dict[str, Any]) -> tuple[str, str]:
    """``(source, target)`` identities of a record's (or a sample's) images: the digests of their files
    (``source_group``/``target_group``, or a sample's ``source_image_id``/``target_image_id``), else the
    pair's own name for each side."""
    source = pair.get(GROUP) or pair.get("source_image_id") or f"pair:{pair['pair_id']}:source"
    target = pair.get(TARGET_GROUP) or pair.get("target_image_id") or f"pair:{pair['pair_id']}:target"
    return source, target


def groups(pairs: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of ``pairs`` grouped by source image; groups in order of first appearance, pairs in order."""
    out: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        out.setdefault(group_key(pair), []).append(index)
    return list(out.values())


def split(pairs: Sequence[dict[str, Any]], parts: int) -> list[list[int]]:
    """Split ``pairs`` into ``parts`` lists of indices: whole source-image groups, balanced by keypoints.

    Groups go, heaviest first (by their pairs' ``num_keypoints``), to the part with the fewest
    keypoints so far (ties: the lowest part). Within a part, groups keep their order of first
    appearance and pairs their order. Deterministic; ``split(pairs, 1)[0]`` is the grouped order.
    With fewer source images than parts, pairs are split one by one instead, so that no part is
    empty while there are enough pairs (a keypoint may then be fitted in two parts, with the same
    result). With fewer pairs than parts, the last parts are empty: such a DDP process matches
    nothing but still joins the others' collective steps (see :class:`datamodules.base.PairDataModule`).

    >>> pairs = [{"pair_id": str(i), "source_group": g, "num_keypoints": n}
    ...          for i, (g, n) in enumerate([("a", 3), ("b", 5), ("a", 4), ("c", 2)])]
    >>> split(pairs, 2)
    [[0, 2], [1, 3]]
    >>> split(pairs, 1)
    [[0, 2, 1, 3]]
    >>> split(pairs, 4)  # 3 source images for 4 parts: pair by pair
    [[1], [2], [0], [3]]
    """
    if parts < 1:
        raise ValueError(f"Expected parts >= 1 but got {parts}")
    grouped = groups(pairs)
    if len(grouped) < parts:
        grouped = [[i] for group in grouped for i in group]
    weight = [sum(int(pairs[i]["num_keypoints"]) for i in group) for group in grouped]
    loads, chosen = [0] * parts, [[] for _ in range(parts)]
    for g in sorted(range(len(grouped)), key=lambda g: (-weight[g], g)):
        part = min(range(parts), key=lambda p: (loads[p], p))
        chosen[part].append(g)
        loads[part] += weight[g]
    return [[i for g in sorted(part) for i in grouped[g]] for part in chosen]
