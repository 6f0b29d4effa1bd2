"""One LightningDataModule per benchmark, plus one for the user's own image pairs."""

from datamodules.ap10k import AP10KDataModule
from datamodules.base import PairDataModule
from datamodules.cub import CUBDataModule
from datamodules.pairs import PairsDataModule, PairsDataset
from datamodules.pfpascal import PFPascalDataModule
from datamodules.pfwillow import PFWillowDataModule
from datamodules.spair import SPairDataModule

__all__ = [
    "AP10KDataModule",
    "CUBDataModule",
    "PFPascalDataModule",
    "PFWillowDataModule",
    "PairDataModule",
    "PairsDataModule",
    "PairsDataset",
    "SPairDataModule",
]
