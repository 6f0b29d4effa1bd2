"""sdcorr: semantic correspondence from Stable Diffusion attention (Hedlin et al., NeurIPS 2023)."""

from typing import Any

from sdcorr.engine import Matcher, MatchResult, match
from sdcorr.images import load_image
from sdcorr.metrics import PCK, pck
from sdcorr.module import CorrespondenceModule
from sdcorr.nearest import NearestNeighbourMatcher
from sdcorr.prediction import Prediction
from sdcorr.prompt import PromptMatcher
from sdcorr.runfolder import RunFolder
from sdcorr.sources import AttentionSource, DenseSource, DiftSource, Dinov2Source, Source, StableDiffusionSource

__all__ = [
    "PCK",
    "AttentionSource",
    "CorrespondenceModule",
    "DenseSource",
    "DiftSource",
    "Dinov2Source",
    "MatchResult",
    "Matcher",
    "NearestNeighbourMatcher",
    "Prediction",
    "PromptMatcher",
    "RunFolder",
    "Source",
    "StableDiffusionSource",
    "load_image",
    "match",
    "pck",
]


def __getattr__(name: str) -> Any:
    """Deprecated names (``FeatureSource``), resolved with a warning by :mod:`sdcorr.sources.base`."""
    if name == "FeatureSource":
        from sdcorr.sources import base

        return base.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
