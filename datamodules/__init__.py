"""One LightningDataModule per benchmark, plus one for the user's own image pairs."""

from datamodules.base import PairDataModule
from datamodules.cub import CUBDataModule
from datamodules.pairs import PairsDataModule, PairsDataset
from datamodules.pfwillow import PFWillowDataModule
from datamodules.spair import SPairDataModule

__all__ = [
    "CUBDataModule",
    "PFWillowDataModule",
    "PairDataModule",
    "PairsDataModule",
    "PairsDataset",
    "SPairDataModule",
]
