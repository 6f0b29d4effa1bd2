"""Sources: the models that map (image, embedding) to attention maps, or images to dense descriptors."""

from typing import Any

from sdcorr.sources import base
from sdcorr.sources.base import AttentionSource, Source
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.dift import DiftSource
from sdcorr.sources.dinov2 import Dinov2Source
from sdcorr.sources.stable_diffusion import StableDiffusionSource

__all__ = ["AttentionSource", "DenseSource", "DiftSource", "Dinov2Source", "Source", "StableDiffusionSource"]


def __getattr__(name: str) -> Any:
    """Deprecated names (``FeatureSource``), resolved with a warning by :mod:`sdcorr.sources.base`."""
    if name == "FeatureSource":
        return base.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
