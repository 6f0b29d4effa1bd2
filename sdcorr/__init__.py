"""sdcorr: semantic correspondence from Stable Diffusion attention (Hedlin et al., NeurIPS 2023)."""

from sdcorr.engine import Matcher, MatchResult, PromptMatcher, match
from sdcorr.metrics import PCK, pck
from sdcorr.module import CorrespondenceModule
from sdcorr.sources import FeatureSource, Source, StableDiffusionSource

__all__ = [
    "PCK",
    "CorrespondenceModule",
    "FeatureSource",
    "MatchResult",
    "Matcher",
    "PromptMatcher",
    "Source",
    "StableDiffusionSource",
    "match",
    "pck",
]
