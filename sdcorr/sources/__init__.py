"""Feature sources: what maps (image, embedding) to attention maps."""

from sdcorr.sources.base import FeatureSource, Source
from sdcorr.sources.stable_diffusion import StableDiffusionSource

__all__ = ["FeatureSource", "Source", "StableDiffusionSource"]
