"""What every datamodule yields, and the behaviour they share.

A sample is one image pair, a dict:

==================  ==========================  ==============================================
key                 value                       meaning
==================  ==========================  ==============================================
pair_id             str                         unique within the dataset
category            str                         used for the per-category PCK table
source_image        ``[3, H_s, W_s]`` float     RGB in [0, 1], original size
target_image        ``[3, H_t, W_t]`` float     RGB in [0, 1], original size
source_keypoints    ``[N, 2]`` float            ``(x, y)`` in source pixels
target_keypoints    ``[N, 2]`` float or None    ``(x, y)`` in target pixels; None: no ground truth
threshold           scalar float or None        PCK reference length (see ``pck_scale``)
pck_scale           ``[2]`` float               per-axis factor from target pixels to the
                                                threshold's space; ones when the threshold is in
                                                target pixels
==================  ==========================  ==============================================

Batches are lists of samples (images differ in size), see :func:`collate_pairs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sdcorr.errors import DataError

__all__ = ["DataError", "PairDataModule", "collate_pairs", "image_size", "load_image"]


def load_image(path: str | Path) -> Tensor:
    """Read an image file as ``[3, H, W]`` float RGB in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot decode image ({error})") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def image_size(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of an image file, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot decode image ({error})") from error


def collate_pairs(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list of sample dicts (pairs have different image sizes and keypoint counts)."""
    return batch


class PairDataModule(LightningDataModule):
    """Shared behaviour: builds the dataset in ``setup`` and serves it for ``test`` and ``predict``.

    Subclasses implement :meth:`build_dataset`.

    Args:
        root: dataset folder.
        batch_size: pairs per ``test_step`` call.
        num_workers: DataLoader worker processes that read images.
    """

    def __init__(self, root: str, batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset: Dataset | None = None

    def build_dataset(self) -> Dataset:
        """The dataset of sample dicts; may raise :class:`DataError`."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            if not Path(self.root).exists():
                raise DataError(f"{self.root}: dataset folder not found (set --data.root)")
            self.dataset = self.build_dataset()

    def _loader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
