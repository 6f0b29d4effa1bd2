"""What a run will cost before it starts: pairs, keypoints, distinct fits and model passes.

Counted from the datamodule's pair records (no image is decoded, no model is loaded), so that
``sdcorr plan`` prices a whole benchmark in seconds and the progress callback can print the same line
when a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from datamodules.schedule import group_key, image_keys
from sdcorr.matchers.base import Matcher
from sdcorr.matchers.lru import LRU
from sdcorr.sources.base import Source


def _amount(count: int) -> str:
    """``65_812_345`` -> ``"65.8M"``; below a million, ``"12,345"``."""
    return f"{count / 1e6:.1f}M" if count >= 1_000_000 else f"{count:,}"


@dataclass(frozen=True)
class Plan:
    """The work of a set of pairs.

    Attributes:
        pairs: pairs to match.
        keypoints: source keypoints over all pairs.
        fits: keypoints the matcher fits: distinct (source image, keypoint) when it reuses fits,
            else every keypoint of every pair.
        passes: model passes (one item through the model once, see ``Matcher.cost``).
        fit_passes: those of them that fit (each with a backward pass).
        passes_without_reuse: model passes if every pair fitted its own keypoints (or computed both
            images' features).
        reuse: whether the matcher reuses fits across pairs.
        images: for a matcher that computes each image's features once (``reuse_images``): the
            feature maps it computes (distinct images, when its store holds what later pairs need);
            else None.
    """

    pairs: int
    keypoints: int
    fits: int
    passes: int
    fit_passes: int
    passes_without_reuse: int
    reuse: bool
    images: Optional[int] = None

    @property
    def work(self) -> int:
        """Forward-pass equivalents, for time estimates: a fitting pass also runs backward (about 2 forwards)."""
        return self.passes + 2 * self.fit_passes

    def __str__(self) -> str:
        """e.g. ``12,234 pairs, 88,328 keypoints, 5,109 distinct fits, 12.1M model passes (65.8M without reuse)``."""
        head = f"{self.pairs:,} pairs, {self.keypoints:,} keypoints"
        if self.images is not None:
            return (
                f"{head}, {self.images:,} image feature maps, {_amount(self.passes)} model passes "
                f"({_amount(self.passes_without_reuse)} without reuse)"
            )
        if not self.reuse:
            return f"{head}, {_amount(self.passes)} model passes"
        return (
            f"{head}, {self.fits:,} distinct fits, {_amount(self.passes)} model passes "
            f"({_amount(self.passes_without_reuse)} without reuse)"
        )


def make_plan(pairs: Sequence[dict[str, Any]], matcher: Matcher, source: Optional[Source] = None) -> Plan:
    """Count the work of ``pairs``: datamodule records (see ``PairDataModule.read_pairs``) or samples.

    A fit is identified as the matcher identifies it, by the source image (the record's
    ``source_group``: its file's bytes) and the keypoint's stored coordinates (``source_keypoints``);
    a record without coordinates counts all its keypoints as distinct.
    """
    if getattr(matcher, "reuse_images", False):
        return _image_plan(pairs, matcher, source)
    seen: set[tuple] = set()
    keypoints = fits = passes = fit_passes = passes_without = 0
    for pair in pairs:
        points = pair.get("source_keypoints")
        count = int(pair["num_keypoints"]) if "num_keypoints" in pair else len(points)
        if points is None:
            keys = [(pair["pair_id"], k) for k in range(count)]
        else:
            coordinates = torch.as_tensor(points, dtype=torch.float32).tolist()
            keys = [(group_key(pair), *map(float, p)) for p in coordinates]
        new = set(keys) - seen if matcher.reuse_fits else set(range(count))
        seen |= set(keys)
        keypoints += count
        fits += len(new)
        passes += matcher.cost(count, source, fits=len(new))
        fit_passes += matcher.cost(count, source, fits=len(new)) - matcher.cost(count, source, fits=0)
        passes_without += matcher.cost(count, source)
    return Plan(len(pairs), keypoints, fits, passes, fit_passes, passes_without, matcher.reuse_fits)


def _image_plan(pairs: Sequence[dict[str, Any]], matcher: Matcher, source: Optional[Source]) -> Plan:
    """The plan of a matcher that computes each image's features once (``reuse_images``, the nearest-neighbour
    matcher): its store of ``cache_maps`` maps replayed over the pairs in order, an image identified as
    the matcher does (its file's digest, see :func:`datamodules.schedule.image_keys`, and its class)."""
    store: LRU[bool] = LRU(int(getattr(matcher, "cache_maps", 0)))
    keypoints = passes = passes_without = images = 0
    for pair in pairs:
        count = int(pair["num_keypoints"]) if "num_keypoints" in pair else len(pair["source_keypoints"])
        keys = [(image, pair.get("class_name")) for image in image_keys(pair)]
        new = 0
        for key in keys:  # as the matcher looks them up: source, then target
            if store.get(key) is None:
                new += 1
                store.put(key, True)
        keypoints += count
        images += new
        passes += matcher.cost(count, source, fits=new)
        passes_without += matcher.cost(count, source)
    return Plan(len(pairs), keypoints, images, passes, 0, passes_without, True, images=images)
