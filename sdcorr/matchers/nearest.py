"""Nearest-neighbour matching of dense descriptors (DIFT, DINOv2 + NN): no optimisation, two model passes.

For a pair: resize both images to the source's working size ``S``, compute descriptors of both, read
the source descriptor at each keypoint (bilinear), take its cosine similarity with every target
descriptor, upsample each similarity map to ``S x S`` and pick its maximum. Coordinates follow
:mod:`sdcorr.geometry` (pixel ``(i, j)`` centred at ``(i + 0.5, j + 0.5)``), like the prompt matcher's.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from sdcorr import geometry
from sdcorr.errors import OptionError
from sdcorr.matchers.base import Matcher, MatchResult, Progress, WorkCounter
from sdcorr.rng import generator
from sdcorr.sources.base import Source
from sdcorr.sources.dense import DenseSource


def sample_descriptors(features: Tensor, keypoints: Tensor, image_size: int) -> Tensor:
    """Bilinearly read descriptors at keypoints.

    The image covers ``[0, S]`` (pixel ``i`` centred at ``i + 0.5``, see :mod:`sdcorr.geometry`) and the
    feature grid covers the whole image, so the point ``x`` maps to ``2x / S - 1`` in ``grid_sample``'s
    ``align_corners=False`` coordinates whatever the grid's resolution: cell ``j`` of a ``w``-cell grid
    is read exactly at its centre ``(j + 0.5) S / w``. Points outside the outermost cell centres take
    the border value.

    Args:
        features: ``[C, h, w]`` descriptors of an ``S x S`` image.
        keypoints: ``[N, 2] (x, y)`` in pixels of that image.
        image_size: ``S``.

    Returns:
        ``[N, C]``.
    """
    grid = 2 * keypoints.to(features) / image_size - 1
    sampled = F.grid_sample(
        features[None], grid[None, :, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0, :, :, 0].T


def cosine_maps(descriptors: Tensor, features: Tensor) -> Tensor:
    """Cosine similarity of each descriptor ``[N, C]`` with every cell of ``[C, h, w]`` -> ``[N, h, w]``."""
    return torch.einsum("nc,chw->nhw", F.normalize(descriptors, dim=-1), F.normalize(features, dim=0))


def soft_argmax_xy(scores: Tensor, temperature: float, window: Optional[int] = None) -> Tensor:
    """Expected ``(x, y)`` under ``softmax(scores / temperature)`` of each ``[N, H, W]`` map -> ``[N, 2]``.

    Each pixel stands for its centre, ``(column, row) + 0.5`` (see :mod:`sdcorr.geometry`), so a single
    sharp peak gives the same point as ``argmax_xy(scores, offset=0.5)``. With ``window``, only pixels
    within ``window`` pixels (Chebyshev distance) of the map's argmax take part, which keeps a second
    mode far away from pulling the estimate between the two.

    >>> scores = torch.zeros(1, 5, 5)
    >>> scores[0, 1, 3] = scores[0, 3, 3] = 1.0  # two equal peaks: pixels (3, 1) and (3, 3)
    >>> soft_argmax_xy(scores, temperature=1e-3)
    tensor([[3.5000, 2.5000]])
    >>> soft_argmax_xy(scores, temperature=1e-3, window=1)
    tensor([[3.5000, 1.5000]])
    """
    n, h, w = scores.shape
    ys = torch.arange(h, device=scores.device, dtype=scores.dtype)
    xs = torch.arange(w, device=scores.device, dtype=scores.dtype)
    logits = scores / temperature
    if window is not None:
        peak = geometry.argmax_xy(scores).to(scores)
        inside = ((xs[None, None, :] - peak[:, 0, None, None]).abs() <= window) & (
            (ys[None, :, None] - peak[:, 1, None, None]).abs() <= window
        )
        logits = logits.masked_fill(~inside, float("-inf"))
    weights = logits.flatten(1).softmax(dim=-1).reshape(n, h, w)
    indices = torch.stack([(weights.sum(dim=1) * xs).sum(dim=-1), (weights.sum(dim=2) * ys).sum(dim=-1)], dim=-1)
    return indices + 0.5


class NearestNeighbourMatcher(Matcher):
    """Each source keypoint goes to the target pixel whose descriptor is most similar (cosine).

    Works with any :class:`~sdcorr.sources.dense.DenseSource` (DIFT, DINOv2). The similarity of a
    keypoint's descriptor with the target's descriptors is upsampled bilinearly (align_corners=False)
    to ``S x S``; the prediction is the centre of its argmax pixel (``(column, row) + 0.5``, the
    convention of :mod:`sdcorr.geometry`, as the prompt matcher predicts), or with ``soft_argmax`` the
    expected pixel centre under ``softmax(similarity / temperature)``. Predictions are scaled from the
    working size to the target image, and source keypoints to it, by :func:`~sdcorr.geometry.scale_keypoints`.

    Returned heatmaps are ``softmax(similarity / temperature)`` over the ``S x S`` pixels (a
    distribution per keypoint, like the prompt matcher's; same argmax as the similarity itself).

    Args:
        soft_argmax: predict the softmax-weighted mean position instead of the argmax pixel.
        temperature: softmax temperature on cosine similarities (in [-1, 1]), for the heatmaps and ``soft_argmax``.
        window: with ``soft_argmax``, only pixels at most this many working pixels from the argmax
            count (Chebyshev distance); None: the whole map.
    """

    def __init__(self, soft_argmax: bool = False, temperature: float = 0.02, window: Optional[int] = None) -> None:
        if temperature <= 0:
            raise OptionError(self, "temperature", f"expected a number > 0; got {temperature}")
        if window is not None and window < 0:
            raise OptionError(self, "window", f"expected an integer >= 0 or null; got {window}")
        self.soft_argmax = soft_argmax
        self.temperature = temperature
        self.window = window

    def cost(self, num_keypoints: int, source: Optional[DenseSource] = None, fits: Optional[int] = None) -> int:
        """Model passes per pair: two images x ``source.passes_per_image`` (1 without a source), whatever ``N``."""
        return 2 * (source.passes_per_image if source is not None else 1)

    @torch.no_grad()
    def match(
        self,
        source: Source,
        source_image: Tensor,
        target_image: Tensor,
        source_keypoints: Tensor,
        seed: object = 0,
        fit_seed: object = None,
        *,
        progress: Optional[Progress] = None,
    ) -> MatchResult:
        """Predict where ``source_keypoints`` ``[N, 2]`` land in ``target_image``.

        Args:
            source: a :class:`~sdcorr.sources.dense.DenseSource`.
            source_image: ``[3, H_s, W_s]`` in [0, 1], any size.
            target_image: ``[3, H_t, W_t]`` in [0, 1], any size.
            source_keypoints: ``[N, 2] (x, y)`` in source-image pixels.
            seed: any printable key; seeds the source's random draws (DIFT's noise), one stream per image.
            fit_seed: ignored (nothing is fitted).
            progress: told after each image's model passes (see :data:`~sdcorr.matchers.base.Progress`).

        Returns:
            keypoints ``[N, 2]`` in target pixels and heatmaps ``[N, S, S]``; no per-layer points or embeddings.
        """
        if not isinstance(source, DenseSource):
            raise TypeError(
                f"NearestNeighbourMatcher needs a DenseSource (dense descriptors, e.g. DiftSource or Dinov2Source) "
                f"but got {type(source).__name__}; a StableDiffusionSource goes with PromptMatcher"
            )
        size = source.image_size
        src_hw, trg_hw = source_image.shape[-2:], target_image.shape[-2:]
        keypoints = geometry.scale_keypoints(source_keypoints.float(), (src_hw[1], src_hw[0]), (size, size))
        counter = WorkCounter(self.cost(len(keypoints), source), progress)
        features = []
        for name, image in (("source", source_image), ("target", target_image)):
            work = geometry.resize_image(image.float().to(source.device), size)
            features.append(source.features(work[None], [generator(seed, "features", name)])[0])
            counter.advance(source.passes_per_image, "features")
        features = source.pair_descriptors(features[0], features[1], generator(seed, "pair"))
        descriptors = sample_descriptors(features[0], keypoints.to(features[0].device), size)
        similarity = geometry.upsample_maps(cosine_maps(descriptors, features[1])[None], size)[0]  # [N, S, S]
        if self.soft_argmax:
            points = soft_argmax_xy(similarity, self.temperature, self.window)
        else:
            points = geometry.argmax_xy(similarity, offset=0.5)
        heatmaps = (similarity / self.temperature).flatten(1).softmax(dim=-1).reshape_as(similarity)
        predicted = geometry.scale_keypoints(points.to(source_keypoints.device), (size, size), (trg_hw[1], trg_hw[0]))
        return MatchResult(keypoints=predicted, heatmaps=heatmaps)
