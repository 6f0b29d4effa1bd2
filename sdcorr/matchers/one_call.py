"""``match``: where do the points of one image land in another, in one call (for notebooks)."""

from __future__ import annotations

from torch import Tensor

from sdcorr.matchers.base import Matcher
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.sources.base import Source
from sdcorr.sources.stable_diffusion import StableDiffusionSource


def match(
    source_image: Tensor,
    target_image: Tensor,
    source_keypoints: Tensor,
    source: Source | None = None,
    matcher: Matcher | None = None,
    seed: object = 0,
) -> Tensor:
    """Where do ``source_keypoints`` land in ``target_image``? The one-call API for notebooks.

    Args:
        source_image: ``[3, H_s, W_s]`` RGB in [0, 1].
        target_image: ``[3, H_t, W_t]`` RGB in [0, 1].
        source_keypoints: ``[N, 2] (x, y)`` in source pixels.
        source: default: Stable Diffusion 1.4 from the hub (move it to a GPU first for speed).
        matcher: default: the paper preset.

    Returns:
        ``[N, 2] (x, y)`` in target pixels.
    """
    if source is None:
        source = StableDiffusionSource()
    if matcher is None:
        matcher = PromptMatcher()
    return matcher.match(source, source_image, target_image, source_keypoints, seed).keypoints
