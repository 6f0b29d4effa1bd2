"""Dense descriptors: the interface of sources for nearest-neighbour matching."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from sdcorr.sources.base import Source


class DenseSource(Source, ABC):
    """Maps images to a grid of descriptors; all the nearest-neighbour matcher needs of a model.

    Contract, for a batch of ``B`` images:

    * :meth:`features`: images ``[B, 3, S, S]`` in ``[0, 1]`` (``S`` = :attr:`image_size`) and
      optionally one generator per image -> float32 descriptors ``[B, C, h, w]`` on the source's
      device. The grid ``h x w`` covers the whole image (any resolution); cell ``(i, j)`` describes
      the image around the point ``((j + 0.5) S / w, (i + 0.5) S / h)`` (coordinates of
      :mod:`sdcorr.geometry`: the image covers ``[0, S] x [0, S]``).
    * Sources with random draws (diffusion noise) take every draw from the image's generator, so
      the result does not depend on batching; without generators they use a fixed stream per image.
    * ``categories``: each image's class in words (None: unknown), for sources whose descriptors
      depend on it (DIFT's prompt); the others ignore it.

    * :meth:`pair_descriptors`: the two images' features of a pair ``[C, h, w]`` each -> the descriptors
      the matcher compares, ``[C', h', w']`` each, on the grid contract above. By default the features
      themselves; a source whose descriptors depend on both images (SD+DINO reduces each layer by a PCA
      fitted on the pair) overrides it, so :meth:`features` stays per image (and can be computed once per
      image) while the pair step stays the source's.

    The model is frozen (no parameter needs a gradient) and :meth:`features` runs without autograd.
    """

    #: forward passes through the model per image, for progress and cost estimates
    passes_per_image: int = 1

    @abstractmethod
    def features(
        self,
        images: Tensor,
        generators: Optional[Sequence[torch.Generator]] = None,
        categories: Optional[Sequence[Optional[str]]] = None,
    ) -> Tensor:
        """``[B, 3, S, S]`` in ``[0, 1]`` -> float32 descriptors ``[B, C, h, w]``."""

    def pair_descriptors(
        self, source: Tensor, target: Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[Tensor, Tensor]:
        """Features ``[C, h, w]`` of a pair's source and target image -> their descriptors for matching
        (``[C', h', w']`` each); ``generator`` seeds any random draw of the pair step. Default: unchanged."""
        return source, target
