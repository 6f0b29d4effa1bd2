"""Encoding crops of one image, remembering each crop's latent.

Crops repeat a lot: at 512 px the paper's 477 px crops have only 36 x 36 possible corners, and for
every keypoint at least 106 px from the border the margin rule allows all of them. A pair with 10
keypoints draws 6,450 fitting crops from those 1,296 corners, so most VAE encodes can be looked up
instead of recomputed. This is exact: a crop's latent does not depend on when it is drawn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdcorr import geometry
from sdcorr.sources.base import FeatureSource


class CropEncoder:
    """Latents of square crops of ``image``, computed once per corner (up to ``capacity`` remembered).

    Args:
        source: encodes ``[B, 3, S, S]`` crops.
        image: ``[3, S, S]`` working image.
        side: crop side in pixels; crops are resized back to ``source.image_size``.
        capacity: most latents remembered (0: remember none, encode every call).
        max_batch: most crops per ``encode`` call.
    """

    def __init__(self, source: FeatureSource, image: Tensor, side: int, capacity: int, max_batch: int) -> None:
        self.source, self.image, self.side = source, image, side
        self.capacity, self.max_batch = capacity, max_batch
        self.cache: dict[tuple[int, int], Tensor] = {}
        self.encoded = 0  # crops sent through the encoder, for benchmarks and tests

    def _encode(self, corners: list[tuple[int, int]]) -> Tensor:
        out = []
        for i in range(0, len(corners), self.max_batch):
            chunk = torch.tensor(corners[i : i + self.max_batch], device=self.image.device)
            crops = geometry.crop_resize(self.image, chunk, self.side, self.source.image_size)
            out.append(self.source.encode(crops))
        self.encoded += len(corners)
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, corners: Tensor) -> Tensor:
        """``[B, 2]`` integer corners ``(x, y)`` -> latents ``[B, C, h, w]``."""
        keys = [tuple(c) for c in corners.tolist()]
        if self.capacity == 0:
            return self._encode(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        fresh = dict(zip(missing, self._encode(missing))) if missing else {}
        for key, latent in fresh.items():
            if len(self.cache) >= self.capacity:
                break
            self.cache[key] = latent
        return torch.stack([self.cache[k] if k in self.cache else fresh[k] for k in keys])
