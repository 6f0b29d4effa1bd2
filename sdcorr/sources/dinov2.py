"""DINOv2 patch tokens as dense descriptors (the DINOv2 + nearest-neighbour baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Dinov2Config, Dinov2Model

from sdcorr.errors import OptionError
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.hub import check_pretrained, load_from_hub_or_folder

#: ImageNet statistics DINOv2 was trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: configurations built with random weights (no download)
DINOV2_ARCHITECTURES: dict[str, dict] = {
    # a random ViT's attention is close to uniform, so each token describes its own patch and nothing
    # around it; with stride 2 (overlapping 8 px patches every 2 px, see Dinov2Source) it localises
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=64),
}


class Dinov2Source(DenseSource):
    """The last layer's patch tokens of a DINOv2 ViT (``transformers.Dinov2Model``), CLS token dropped.

    Images are normalised with the ImageNet mean and standard deviation; a ``S x S`` image gives a
    ``S/p x S/p`` grid of descriptors (``p`` the patch size: 14 for the published models), each the
    layer-normalised last hidden state of its patch.

    Args:
        pretrained: hub id or local folder (``config.json`` and weights, as ``save_pretrained`` writes them).
        architecture: build this configuration with random weights instead of loading (``tiny`` for
            tests and CPU runs); no download.
        init_seed: seed of the random weights when ``architecture`` is set.
        image_size: side of the square working image in pixels; a multiple of the patch size
            (448 = 32 x 14 patches for the published models).
        stride: spacing of the descriptors in pixels, a divisor of the patch size; below the patch size
            the model runs on ``(patch / stride)^2`` shifted copies of the image whose tokens interleave
            into overlapping patches (a denser grid, as Amir et al. 2021 get by a smaller patch stride);
            None: the patch size (one pass, the plain grid).
        final_norm: apply the model's final LayerNorm to the tokens (``last_hidden_state``); False: the
            last block's output tokens before it (the "token" facet of Amir et al. 2021, which SD+DINO reads).
        local_files_only: never contact the hub.
    """

    speed_options = ("local_files_only",)

    def __init__(
        self,
        pretrained: str = "facebook/dinov2-base",
        architecture: Optional[Literal["tiny"]] = None,
        init_seed: int = 0,
        image_size: int = 448,
        stride: Optional[int] = None,
        final_norm: bool = True,
        local_files_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if architecture is not None:
            if architecture not in DINOV2_ARCHITECTURES:
                choices = sorted(DINOV2_ARCHITECTURES)
                raise OptionError(self, "architecture", f"expected one of {choices} or null; got {architecture!r}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                self.model = Dinov2Model(Dinov2Config(**DINOV2_ARCHITECTURES[architecture]))
        else:
            check_pretrained(self, pretrained)
            self.model = load_from_hub_or_folder(
                lambda name, local_only: Dinov2Model.from_pretrained(name, local_files_only=local_only),
                pretrained,
                "DINOv2",
                local_files_only,
            )
        patch = self.model.config.patch_size
        if image_size % patch:
            raise OptionError(self, "image_size", f"expected a multiple of the patch size {patch}; got {image_size}")
        stride = patch if stride is None else stride
        if stride < 1 or patch % stride:
            raise OptionError(self, "stride", f"expected a divisor of the patch size {patch}; got {stride}")
        self.requires_grad_(False)
        self.eval()
        self.image_size = image_size
        self.patch_size = patch
        self.stride = stride
        self.final_norm = final_norm
        self.passes_per_image = (patch // stride) ** 2
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def _tokens(self, x: Tensor) -> Tensor:
        """Normalised ``[B, 3, H, W]`` -> patch tokens ``[B, C, H/p, W/p]``."""
        if self.final_norm:
            tokens = self.model(pixel_values=x.to(self.model.dtype)).last_hidden_state  # [B, 1 + h w, C]
        else:
            tokens = self.model(pixel_values=x.to(self.model.dtype), output_hidden_states=True).hidden_states[-1]
        b, h, w = x.shape[0], x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = tokens[:, tokens.shape[1] - h * w :]  # drop CLS (and register tokens, if a model has them)
        return patches.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def features(
        self,
        images: Tensor,
        generators: Optional[Sequence[torch.Generator]] = None,
        categories: Optional[Sequence[Optional[str]]] = None,
    ) -> Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> patch tokens ``[B, C, S/s, S/s]`` (C = hidden size, s = stride).

        No random draws, no use of ``categories``. With ``stride < patch``, copy ``(m, n)`` is the image
        moved up by ``m s`` and left by ``n s`` pixels (edges replicated, after a margin of ``(p - s) / 2``
        so that cell centres land at ``(k + 0.5) s`` in the coordinates of :mod:`sdcorr.geometry`; half a pixel off when
        ``p - s`` is odd); its token ``(i, j)`` is cell ``(i p/s + m, j p/s + n)``.
        """
        x = (images.to(self.device, self.mean.dtype) - self.mean) / self.std
        if self.stride == self.patch_size:
            return self._tokens(x).float()
        b, size, p, s = x.shape[0], x.shape[-1], self.patch_size, self.stride
        k = p // s
        before = (p - s) // 2
        padded = F.pad(x, (before, p - s - before, before, p - s - before), mode="replicate")
        copies = torch.stack(
            [padded[:, :, m * s : m * s + size, n * s : n * s + size] for m in range(k) for n in range(k)], dim=1
        )  # [B, k*k, 3, S, S]
        tokens = self._tokens(copies.flatten(0, 1))  # [B k k, C, S/p, S/p]
        c, h, w = tokens.shape[1:]
        grid = tokens.reshape(b, k, k, c, h, w).permute(0, 3, 4, 1, 5, 2)  # [B, C, h, m, w, n]
        return grid.reshape(b, c, h * k, w * k).float()
