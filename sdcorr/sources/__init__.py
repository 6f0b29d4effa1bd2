"""Feature sources: what maps (image, embedding) to attention maps, or images to dense descriptors."""

from sdcorr.sources.base import FeatureSource, Source
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.dift import DiftSource
from sdcorr.sources.dinov2 import Dinov2Source
from sdcorr.sources.stable_diffusion import StableDiffusionSource

__all__ = ["DenseSource", "DiftSource", "Dinov2Source", "FeatureSource", "Source", "StableDiffusionSource"]
