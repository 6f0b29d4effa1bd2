"""Encoding crops of an image, remembering each crop's latent across pairs.

Crops repeat a lot: at 512 px the paper's 477 px crops have only 36 x 36 possible corners, and for
every keypoint at least 106 px from the border the margin rule allows all of them. A pair with 10
keypoints draws 6,450 fitting crops from those 1,296 corners, and in a benchmark every image comes
back in many pairs (SPair-71k test: each image is a source in 13 to 29 pairs and a target in as
many), so most VAE encodes can be looked up instead of recomputed.

This is exact, bit for bit: every crop is encoded alone (a batch of one), so a remembered latent is
the very tensor a fresh encode would give, whatever was encoded before it. Results therefore do not
depend on which pairs a process saw earlier (resumed runs, DDP ranks and shards agree exactly).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from sdcorr import geometry
from sdcorr.matchers.lru import LRU
from sdcorr.rng import content_key
from sdcorr.sources.base import AttentionSource


def autocast_state(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype in force on ``device``'s type, or None outside autocast."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class CropEncoder:
    """Latents of square crops of ``image``, each computed once while ``cache`` remembers it.

    Args:
        source: encodes ``[1, 3, S, S]`` crops.
        image: ``[3, S, S]`` working image.
        side: crop side in pixels; crops are resized back to ``source.image_size``.
        cache: latents shared across images, calls and sources, keyed by (source identity, image
            content, autocast dtype, side, corner); None: remember nothing (encode every crop of every call).
    """

    def __init__(self, source: AttentionSource, image: Tensor, side: int, cache: LRU[Tensor] | None = None) -> None:
        self.source, self.image, self.side, self.cache = source, image, side, cache
        # another model (weights, dtype, settings) encodes other latents (see Source.identity), and a
        # latent encoded under autocast has another dtype and rounding than a float32 one
        self.key = (source.identity, content_key(image), autocast_state(image.device)) if cache is not None else None
        self.encoded = 0  # crops sent through the encoder, for benchmarks and tests

    def _encode(self, corner: tuple[int, int]) -> Tensor:
        crop = geometry.crop_resize(self.image, torch.tensor([corner]), self.side, self.source.image_size)
        self.encoded += 1
        return self.source.encode(crop)[0]

    @torch.no_grad()
    def __call__(self, corners: Tensor) -> Tensor:
        """``[B, 2]`` integer corners ``(x, y)`` -> latents ``[B, C, h, w]``."""
        keys = [tuple(c) for c in corners.tolist()]
        if self.cache is None:
            return torch.stack([self._encode(k) for k in keys])
        latents = []
        for corner in keys:
            key = (self.key, self.side, corner)
            latent = self.cache.get(key)
            if latent is None:
                latent = self._encode(corner)
                self.cache.put(key, latent)
            latents.append(latent)
        return torch.stack(latents)
