"""Nearest-neighbour matching of dense descriptors (DIFT, DINOv2 + NN): no optimisation, one model pass per image.

For a pair: resize both images to the source's working size ``S``, compute descriptors of both (or find
them computed for an earlier pair that showed the same image), read the source descriptor at each
keypoint, take its cosine similarity with every target descriptor and pick the most similar target point.
Two ways to do the last two steps (``resolution``):

* ``working``: on the descriptor grid, the similarity maps upsampled to ``S x S``, the prediction the
  centre of the argmax pixel scaled to the target image. Coordinates follow :mod:`sdcorr.geometry`
  (pixel ``(i, j)`` centred at ``(i + 0.5, j + 0.5)``), like the prompt matcher's.
* ``image``: DIFT's evaluation (``eval_spair.py`` of Tsingularity/dift): both descriptor maps upsampled
  (bilinear, ``align_corners=False``, no antialiasing) to their own image's ``H x W``, the source
  descriptor read at the keypoint's integer pixel ``[y, x]``, each target pixel's vector L2-normalised
  *after* upsampling, the prediction the integer ``(column, row)`` of the first maximum (no ``+ 0.5``).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from sdcorr import geometry
from sdcorr.errors import OptionError
from sdcorr.images import pil_resize
from sdcorr.matchers.base import Matcher, MatchResult, PairContext, Progress, WorkCounter
from sdcorr.matchers.lru import LRU
from sdcorr.rng import content_key, generator
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


def image_descriptors(features: Tensor, keypoints: Tensor, size: tuple[int, int]) -> Tensor:
    """The descriptors DIFT reads: the map upsampled to the image's ``H x W``, at integer pixels.

    The value of ``F.interpolate(features, (H, W), mode="bilinear", align_corners=False)`` at pixel
    ``[y, x]``, computed without the ``C x H x W`` map: bilinear sampling at that pixel's centre
    ``(x + 0.5, y + 0.5)`` of the ``[0, W] x [0, H]`` image (the same weights, up to float rounding).

    Args:
        features: ``[C, h, w]`` descriptors of the whole image.
        keypoints: ``[N, 2] (x, y)`` integer pixel indices, inside the image.
        size: ``(W, H)`` of the image.

    Returns:
        ``[N, C]``.
    """
    scale = keypoints.new_tensor([float(size[0]), float(size[1])])
    grid = 2 * (keypoints.to(features) + 0.5) / scale.to(features) - 1
    sampled = F.grid_sample(
        features[None], grid[None, :, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0, :, :, 0].T


def image_cosine_maps(descriptors: Tensor, features: Tensor, size: tuple[int, int], chunk: int) -> Tensor:
    """Cosine of each descriptor with every pixel of the map upsampled to the image's own size.

    ``features`` ``[C, h, w]`` is upsampled to ``H x W`` (bilinear, ``align_corners=False``, no
    antialiasing) ``chunk`` channels at a time; each pixel's vector is normalised *after* upsampling (its
    norm summed over the chunks), so memory stays at ``chunk x H x W`` plus the ``N`` maps.

    Args:
        descriptors: ``[N, C]``.
        features: ``[C, h, w]``.
        size: ``(W, H)``.
        chunk: channels upsampled at once.

    Returns:
        ``[N, H, W]`` cosines.
    """
    w, h = size
    dots = features.new_zeros(len(descriptors), h, w)
    squares = features.new_zeros(h, w)
    for start in range(0, features.shape[0], chunk):
        part = F.interpolate(features[None, start : start + chunk], size=(h, w), mode="bilinear", align_corners=False)
        dots += torch.einsum("nc,chw->nhw", descriptors[:, start : start + chunk], part[0])
        squares += part[0].square().sum(dim=0)
        del part
    norms = descriptors.norm(dim=-1).clamp_min(1e-12)[:, None, None] * squares.sqrt().clamp_min(1e-12)
    return dots / norms


class NearestNeighbourMatcher(Matcher):
    """Each source keypoint goes to the target pixel whose descriptor is most similar (cosine).

    Works with any :class:`~sdcorr.sources.dense.DenseSource` (DIFT, DINOv2); see the module docstring
    for the two ``resolution`` modes. With ``working``, the prediction is the centre of the argmax pixel
    of the similarity upsampled to ``S x S`` (``(column, row) + 0.5``, as the prompt matcher predicts),
    or with ``soft_argmax`` the expected pixel centre under ``softmax(similarity / temperature)``, scaled
    to the target image. With ``image`` (DIFT's recipe), it is the integer argmax pixel of the target
    image itself.

    Each image's descriptors are computed once per run: a map is kept (``cache_maps`` most recent maps,
    on the source's device) and reused by the later pairs that show the same image, found by its
    identity (:class:`~sdcorr.matchers.base.PairContext`: the file's digest; else the pixels' digest),
    its class and the source's :attr:`~sdcorr.sources.base.Source.identity`. Random draws (DIFT's
    noise) are keyed by the run seed and the image, not the pair, so a map is the same whoever computes
    it: results do not depend on the cache, the order of pairs, shards, resume or processes.

    Returned heatmaps are ``softmax(similarity / temperature)`` over the pixels of the similarity map
    (``[N, S, S]`` with ``working``, ``[N, H_t, W_t]`` with ``image``), a distribution per keypoint with
    the same argmax as the similarity.

    Args:
        resolution: ``working`` (similarity on the descriptor grid, upsampled to the working size) or
            ``image`` (DIFT's: descriptors upsampled to each image's own size, normalised after).
        resize: how images reach the working size: ``bilinear`` (float, antialiased, as the prompt
            matcher) or ``pil-bicubic`` (DIFT's: 8-bit pixels resized by Pillow's bicubic filter).
        soft_argmax: predict the softmax-weighted mean position instead of the argmax pixel (``working`` only).
        temperature: softmax temperature on cosine similarities (in [-1, 1]), for the heatmaps and ``soft_argmax``.
        window: with ``soft_argmax``, only pixels at most this many working pixels from the argmax
            count (Chebyshev distance); None: the whole map.
        cache_maps: most descriptor maps kept for later pairs (only speed and memory: results do not
            depend on it). SD 2.1's DIFT map (1280 x 48 x 48 float32) is 11.8 MB, DINOv2-B's at 448 px
            3.1 MB. ``sdcorr plan`` counts the maps this store will compute (distinct images when it is
            large enough for the pair order).
        upsample_chunk: with ``image``, channels upsampled at once (only speed and memory): peak memory
            per pair about ``upsample_chunk x H_t x W_t + 2 N x H_t x W_t`` floats beyond the maps
            (128 channels, 10 keypoints, a 500 x 375 target: 96 + 15 MB).
    """

    speed_options = ("cache_maps", "upsample_chunk")

    def __init__(
        self,
        resolution: Literal["working", "image"] = "working",
        resize: Literal["bilinear", "pil-bicubic"] = "bilinear",
        soft_argmax: bool = False,
        temperature: float = 0.02,
        window: Optional[int] = None,
        cache_maps: int = 64,
        upsample_chunk: int = 128,
    ) -> None:
        if resolution not in ("working", "image"):
            raise OptionError(self, "resolution", f"expected 'working' or 'image'; got {resolution!r}")
        if resize not in ("bilinear", "pil-bicubic"):
            raise OptionError(self, "resize", f"expected 'bilinear' or 'pil-bicubic'; got {resize!r}")
        if soft_argmax and resolution == "image":
            raise OptionError(self, "soft_argmax", "expected false with resolution 'image' (DIFT predicts the argmax)")
        if temperature <= 0:
            raise OptionError(self, "temperature", f"expected a number > 0; got {temperature}")
        if window is not None and window < 0:
            raise OptionError(self, "window", f"expected an integer >= 0 or null; got {window}")
        if cache_maps < 0:
            raise OptionError(self, "cache_maps", f"expected an integer >= 0; got {cache_maps}")
        if upsample_chunk < 1:
            raise OptionError(self, "upsample_chunk", f"expected an integer >= 1; got {upsample_chunk}")
        self.resolution = resolution
        self.resize = resize
        self.soft_argmax = soft_argmax
        self.temperature = temperature
        self.window = window
        self.cache_maps = cache_maps
        self.upsample_chunk = upsample_chunk
        #: descriptor maps of recent images, ``{key: [C, h, w]}`` (see :meth:`map_key`)
        self.maps: LRU[Tensor] = LRU(cache_maps)

    #: pairs that show an image share its map; a plan counts distinct images (see ``sdcorr.runs.plan``)
    reuse_images = True

    def cost(self, num_keypoints: int, source: Optional[DenseSource] = None, fits: Optional[int] = None) -> int:
        """Model passes of a pair: ``fits`` images still to compute (default both) x ``source.passes_per_image``
        (1 without a source), whatever ``N``."""
        return (2 if fits is None else fits) * (source.passes_per_image if source is not None else 1)

    def map_key(self, source: DenseSource, image_id: str, category: Optional[str], draws: object) -> tuple:
        """What a descriptor map depends on: the source, the image, its class, the resize, the draws' key."""
        return (source.identity, image_id, category, self.resize, repr(draws))

    def working_image(self, image: Tensor, size: int, device: torch.device) -> Tensor:
        """``[3, H, W]`` in [0, 1] -> ``[3, S, S]`` on ``device``, resized as ``resize`` says."""
        if self.resize == "pil-bicubic":
            return pil_resize(image, size).to(device)
        return geometry.resize_image(image.float().to(device), size)

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
        context: Optional[PairContext] = None,
    ) -> MatchResult:
        """Predict where ``source_keypoints`` ``[N, 2]`` land in ``target_image``.

        Args:
            source: a :class:`~sdcorr.sources.dense.DenseSource`.
            source_image: ``[3, H_s, W_s]`` in [0, 1], any size.
            target_image: ``[3, H_t, W_t]`` in [0, 1], any size.
            source_keypoints: ``[N, 2] (x, y)`` in source-image pixels.
            seed: any printable key naming the pair; keys the source's random draws (DIFT's noise) only
                when ``fit_seed`` is None.
            fit_seed: the run's seed: each image's draws come from the stream of ``(fit_seed, image)``.
            progress: told after each image's model passes (see :data:`~sdcorr.matchers.base.Progress`).
            context: the images' identities (keys of the stored maps and of the draws; default the
                pixels' digests) and the object's class (for sources that prompt with it).

        Returns:
            keypoints ``[N, 2]`` in target pixels and heatmaps (see the class docstring); no per-layer
            points or embeddings.
        """
        if not isinstance(source, DenseSource):
            raise TypeError(
                f"NearestNeighbourMatcher needs a DenseSource (dense descriptors, e.g. DiftSource or Dinov2Source) "
                f"but got {type(source).__name__}; a StableDiffusionSource goes with PromptMatcher"
            )
        context = context or PairContext()
        draws = seed if fit_seed is None else fit_seed
        images = (
            (source_image, context.source_id or content_key(source_image)),
            (target_image, context.target_id or content_key(target_image)),
        )
        keys = [self.map_key(source, image_id, context.class_name, draws) for _, image_id in images]
        missing = len(keys) if self.cache_maps == 0 else len({key for key in keys if key not in self.maps})
        counter = WorkCounter(self.cost(len(source_keypoints), source, fits=missing), progress)
        features = []
        for (image, image_id), key in zip(images, keys):
            found = self.maps.get(key)
            if found is None:
                work = self.working_image(image, source.image_size, source.device)
                found = source.features(work[None], [generator(draws, "features", image_id)], [context.class_name])[0]
                self.maps.put(key, found)
                counter.advance(source.passes_per_image, "features")
            features.append(found)
        # descriptors that depend on both images (SD+DINO's PCA of the pair); default: the features
        features = list(source.pair_descriptors(features[0], features[1], generator(seed, "pair")))
        if self.resolution == "image":
            return self._match_images(features, source_image, target_image, source_keypoints)
        return self._match_working(source, features, source_image, target_image, source_keypoints)

    def _match_working(
        self, source: DenseSource, features: list[Tensor], source_image: Tensor, target_image: Tensor, points: Tensor
    ) -> MatchResult:
        """``resolution="working"``: similarity on the descriptor grid, upsampled to ``S x S``."""
        size = source.image_size
        src_hw, trg_hw = source_image.shape[-2:], target_image.shape[-2:]
        keypoints = geometry.scale_keypoints(points.float(), (src_hw[1], src_hw[0]), (size, size))
        descriptors = sample_descriptors(features[0], keypoints.to(features[0].device), size)
        similarity = geometry.upsample_maps(cosine_maps(descriptors, features[1])[None], size)[0]  # [N, S, S]
        if self.soft_argmax:
            predicted = soft_argmax_xy(similarity, self.temperature, self.window)
        else:
            predicted = geometry.argmax_xy(similarity, offset=0.5)
        heatmaps = (similarity / self.temperature).flatten(1).softmax(dim=-1).reshape_as(similarity)
        predicted = geometry.scale_keypoints(predicted.to(points.device), (size, size), (trg_hw[1], trg_hw[0]))
        return MatchResult(keypoints=predicted, heatmaps=heatmaps)

    def _match_images(
        self, features: list[Tensor], source_image: Tensor, target_image: Tensor, points: Tensor
    ) -> MatchResult:
        """``resolution="image"``: DIFT's matching at each image's own size (see the module docstring).

        A keypoint's pixel is its coordinates truncated to integers (SPair's are integers already),
        clamped into the image.
        """
        (h_s, w_s), (h_t, w_t) = source_image.shape[-2:], target_image.shape[-2:]
        pixels = points.float().floor().clamp_min(0)
        pixels = torch.minimum(pixels, points.new_tensor([w_s - 1.0, h_s - 1.0]))
        descriptors = image_descriptors(features[0], pixels.to(features[0].device), (w_s, h_s))
        similarity = image_cosine_maps(descriptors, features[1], (w_t, h_t), self.upsample_chunk)  # [N, H_t, W_t]
        predicted = geometry.argmax_xy(similarity)  # first maximum in row-major order, as NumPy's argmax
        heatmaps = (similarity / self.temperature).flatten(1).softmax(dim=-1).reshape_as(similarity)
        return MatchResult(keypoints=predicted.to(points.device), heatmaps=heatmaps)
