"""sdcorr: semantic correspondence from Stable Diffusion attention (Hedlin et al., NeurIPS 2023)."""

from sdcorr.engine import Matcher, MatchResult, PromptMatcher, match
from sdcorr.images import load_image
from sdcorr.metrics import PCK, pck
from sdcorr.module import CorrespondenceModule
from sdcorr.nearest import NearestNeighbourMatcher
from sdcorr.sources import DenseSource, DiftSource, Dinov2Source, FeatureSource, Source, StableDiffusionSource

__all__ = [
    "PCK",
    "CorrespondenceModule",
    "DenseSource",
    "DiftSource",
    "Dinov2Source",
    "FeatureSource",
    "MatchResult",
    "Matcher",
    "NearestNeighbourMatcher",
    "PromptMatcher",
    "Source",
    "StableDiffusionSource",
    "load_image",
    "match",
    "pck",
]
