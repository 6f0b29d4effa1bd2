"""Sources: the models that map (image, embedding) to attention maps, or images to dense descriptors."""

from sdcorr.sources.base import AttentionSource, Source
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.dift import DiftSource
from sdcorr.sources.dinov2 import Dinov2Source
from sdcorr.sources.sd_dino import SdDinoSource
from sdcorr.sources.stable_diffusion import StableDiffusionSource

__all__ = [
    "AttentionSource",
    "DenseSource",
    "DiftSource",
    "Dinov2Source",
    "SdDinoSource",
    "Source",
    "StableDiffusionSource",
]
