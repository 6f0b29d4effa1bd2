"""One LightningDataModule per benchmark, plus one for the user's own image pairs."""

from datamodules.base import PairDataModule
from datamodules.pairs import PairsDataModule, PairsDataset

__all__ = ["PairDataModule", "PairsDataModule", "PairsDataset"]
