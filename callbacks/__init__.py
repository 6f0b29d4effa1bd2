"""Lightning callbacks: per-pair predictions and the results file, pictures, and a W&B logger default."""

from callbacks.pictures import PictureCallback
from callbacks.predictions import PredictionWriter
from callbacks.wandb_logger import AutoWandbLogger

__all__ = ["AutoWandbLogger", "PictureCallback", "PredictionWriter"]
