"""sdcorr: semantic correspondence from Stable Diffusion attention (Hedlin et al., NeurIPS 2023)."""

from sdcorr.images import load_image
from sdcorr.matchers.base import Matcher, MatchResult
from sdcorr.matchers.nearest import NearestNeighbourMatcher
from sdcorr.matchers.one_call import match
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.module import CorrespondenceModule
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.records import Prediction
from sdcorr.sources import (
    AttentionSource,
    DenseSource,
    DiftSource,
    Dinov2Source,
    SdDinoSource,
    Source,
    StableDiffusionSource,
)
from sdcorr.stats.pck import PCK, pck

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
    "SdDinoSource",
    "Source",
    "StableDiffusionSource",
    "load_image",
    "match",
    "pck",
]
