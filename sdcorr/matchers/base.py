"""What every matcher shares: the :class:`Matcher` interface, its :class:`MatchResult`, progress
counting. The one-call :func:`~sdcorr.matchers.one_call.match` builds on it.

The paper's method is :class:`sdcorr.matchers.prompt.PromptMatcher`; nearest-neighbour matching of dense
descriptors is :class:`sdcorr.matchers.nearest.NearestNeighbourMatcher`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from sdcorr.sources.base import Source


@dataclass
class MatchResult:
    """What a matcher returns for one pair.

    Attributes:
        keypoints: ``[N, 2] (x, y)`` predicted points in target-image pixels (the convention of
            :mod:`sdcorr.geometry`: a pixel's centre is at ``+ 0.5``).
        heatmaps: ``[N, S, S]`` the score map behind each prediction, at the working size.
        layer_keypoints: ``[L, N, 2] (x, y)`` in target-image pixels: the prediction of each read
            layer alone (argmax of that layer's map), for per-layer PCK; None if not applicable.
        embeddings: what was fitted on the source, e.g. ``[N, R, T, D]`` prompt embeddings; None if
            the method has none.
        layer_heatmaps: ``[L, N, S, S]`` each read layer's own map (``layer_keypoints`` are their
            argmaxes), for pictures; None if the method has no per-layer maps.
    """

    keypoints: Tensor
    heatmaps: Tensor
    layer_keypoints: Optional[Tensor] = None
    embeddings: Optional[Tensor] = None
    layer_heatmaps: Optional[Tensor] = None


@dataclass(frozen=True)
class PairContext:
    """What a matcher may know of a pair besides its pixels (from the sample dict, see :mod:`datamodules.base`).

    Attributes:
        source_id: identity of the source image (its file's digest), for work shared by every pair that
            shows it (a dense source's feature map, its random draws); None: the matcher keys it by the
            pixels.
        target_id: the same for the target image.
        class_name: the object's class in words (``"cat"``), for sources that prompt with it; None: unknown.
    """

    source_id: Optional[str] = None
    target_id: Optional[str] = None
    class_name: Optional[str] = None

    @classmethod
    def of_sample(cls, sample: dict) -> PairContext:
        """The context of a sample dict; fields it lacks are None."""
        return cls(sample.get("source_image_id"), sample.get("target_image_id"), sample.get("class_name"))


#: ``progress(done, total, phase)``: ``done`` of ``total`` item-passes through the model, ``phase`` "fit"/"locate"
Progress = Callable[[int, int, str], None]


class WorkCounter:
    """Counts the item-passes of one :meth:`Matcher.match` call and tells a :data:`Progress` callback.

    Created per call, it reports ``(0, total, "start")`` at once; the matcher then calls
    :meth:`advance` where the passes happen.

    Args:
        total: item-passes this call will make (the matcher's :meth:`~Matcher.cost`).
        progress: told of every advance; None: only counted.
    """

    def __init__(self, total: int, progress: Optional[Progress] = None) -> None:
        self.done, self.total, self.progress = 0, total, progress
        self.advance(0, "start")

    def advance(self, passes: int, phase: str) -> None:
        """Count ``passes`` more item-passes as done (at most :attr:`total`) and tell ``progress``."""
        self.done = min(self.done + passes, self.total)
        if self.progress is not None:
            self.progress(self.done, self.total, phase)


class Matcher(ABC):
    """Given a pair and source keypoints, predict target keypoints. Subclass for other methods."""

    #: attributes that change only speed or memory, not results (left out of the run fingerprint)
    speed_options: tuple[str, ...] = ()
    #: whether the work on a source keypoint is shared by every pair with the same source image and
    #: keypoint (see :attr:`sdcorr.matchers.prompt.PromptMatcher.reuse_fits`); then a plan counts distinct
    #: source keypoints; such a matcher's ``match`` also takes ``group_keypoints`` ``[M, 2]``, every distinct
    #: source keypoint of the run's pairs with the source image (the module passes the sample's
    #: ``source_group_keypoints``), to batch that work by source image
    reuse_fits: bool = False

    def cost(self, num_keypoints: int, source: Optional[Source] = None, fits: Optional[int] = None) -> int:
        """Item-passes through the model for a pair with ``num_keypoints`` keypoints (for estimates).

        ``fits``: how many of them still need the source-side work (default all); matchers that
        reuse it across pairs (:attr:`reuse_fits`) count only those.
        """
        return num_keypoints

    @abstractmethod
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
            source_image: ``[3, H_s, W_s]`` in [0, 1], any size.
            target_image: ``[3, H_t, W_t]`` in [0, 1], any size.
            source_keypoints: ``[N, 2] (x, y)`` in source-image pixels.
            seed: any printable key, naming the pair; the same seed gives the same result.
            fit_seed: the run's seed, for draws that depend only on the source image and keypoint
                (a matcher that reuses source-side work across pairs keys them by it instead of
                ``seed``); None: ``seed``. Matchers without such work ignore it.
            progress: told as model passes are done (see :data:`Progress`); count them with a
                :class:`WorkCounter` of :meth:`cost` passes made for this call.
            context: the images' identities and the object's class (:class:`PairContext`); None: unknown.
                Matchers that need none of it ignore it.
        """
