"""Lightning callbacks: per-pair predictions and the results file."""

from callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
