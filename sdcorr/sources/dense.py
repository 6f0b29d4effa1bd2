"""Dense descriptors: the interface of sources for nearest-neighbour matching, and their model loading."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, TypeVar

import torch
from huggingface_hub import constants as hf_constants
from torch import Tensor

from sdcorr.errors import ModelLoadError
from sdcorr.sources.base import Source
from sdcorr.sources.stable_diffusion import _hub_reachable

T = TypeVar("T")


class DenseSource(Source, ABC):
    """Maps images to a grid of descriptors; all the nearest-neighbour matcher needs of a model.

    Contract, for a batch of ``B`` images:

    * :meth:`features`: images ``[B, 3, S, S]`` in ``[0, 1]`` (``S`` = :attr:`image_size`) and
      optionally one generator per image -> float32 descriptors ``[B, C, h, w]`` on the source's
      device. The grid ``h x w`` covers the whole image (any resolution); cell ``(i, j)`` describes
      the image around pixel ``((j + 0.5) S / w - 0.5, (i + 0.5) S / h - 0.5)``.
    * Sources with random draws (diffusion noise) take every draw from the image's generator, so
      the result does not depend on batching; without generators they use a fixed stream per image.

    The model is frozen (no parameter needs a gradient) and :meth:`features` runs without autograd.
    """

    #: forward passes through the model per image, for progress and cost estimates
    passes_per_image: int = 1

    @abstractmethod
    def features(self, images: Tensor, generators: Optional[Sequence[torch.Generator]] = None) -> Tensor:
        """``[B, 3, S, S]`` in ``[0, 1]`` -> float32 descriptors ``[B, C, h, w]``."""


def load_from_hub_or_folder(
    load: Callable[[str, bool], T], pretrained: str, what: str, local_files_only: bool = False
) -> T:
    """Run ``load(name, local_files_only)`` on a local folder or a hub id; failures raise :class:`ModelLoadError`.

    Like :func:`sdcorr.sources.stable_diffusion.load_pretrained`: a hub id is first looked up in the
    local cache, and the network is only used when the model is not cached and the hub is reachable.

    Args:
        load: builds the model from a folder or hub id; the flag forbids downloads.
        pretrained: hub id or local folder.
        what: the model's name for messages, e.g. ``"DINOv2"``.
    """
    hint = (
        "Without network access, download the model on another machine (for example "
        f"`hf download {pretrained} --local-dir DIR`), copy DIR here and pass "
        "`--model.source.init_args.pretrained DIR`."
    )
    local = Path(pretrained).expanduser()
    if local.exists():
        try:
            return load(str(local), True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load {what} from the folder {local}: {error}") from error
    try:
        return load(pretrained, True)
    except (OSError, ValueError):
        pass  # not in the cache
    if local_files_only or hf_constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"{what}: {pretrained!r} is not a local folder and not in the Hugging Face cache (offline mode).\n{hint}"
        )
    if not _hub_reachable():
        raise ModelLoadError(f"cannot reach {hf_constants.ENDPOINT} to download {what} {pretrained!r}.\n{hint}")
    try:
        return load(pretrained, False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load {what} from {pretrained!r}: {error}\n{hint}") from error
