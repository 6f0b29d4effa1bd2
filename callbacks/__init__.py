"""Lightning callbacks, each independent of the others: the run folder, pictures, progress, W&B tables and logger."""

from callbacks.pictures import PictureCallback
from callbacks.progress import RunProgress
from callbacks.run_folder import RunFolderWriter
from callbacks.wandb_logger import AutoWandbLogger
from callbacks.wandb_tables import WandbTables

__all__ = ["AutoWandbLogger", "PictureCallback", "RunFolderWriter", "RunProgress", "WandbTables"]
