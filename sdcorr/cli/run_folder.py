"""THE ONE PLACE where the command line names sdcorr's callbacks (package ``callbacks``).

Everything else in :mod:`sdcorr.cli` reaches them through the two functions here: a change to the callbacks
(a class renamed, a section added, the run folder found another way) is a change to this file only.

* :func:`run_folder_callbacks`: the callbacks every Trainer command has, each configured in its own
  section of the config (``output:``, ``pictures:``, ``progress:``).
* :func:`run_folder`: where a Trainer's run writes its files (``config.yaml`` goes there too).
"""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from callbacks.pictures import PictureCallback
from callbacks.predictions import PredictionWriter, run_folder_of
from callbacks.progress import RunProgress
from sdcorr.runs.folder import RunFolder


def run_folder_callbacks(parser: LightningArgumentParser) -> dict[str, type]:
    """Add the run-folder callbacks to ``parser``, each in its config section, always present; settings that
    must agree are linked (the pictures' colours use one of the model's PCK alphas).

    Returns:
        Their classes by section (``{"output": PredictionWriter, ...}``): an error of a callback's
        constructor is named by its option in that section.
    """
    sections = {"output": PredictionWriter, "pictures": PictureCallback, "progress": RunProgress}
    for key, callback in sections.items():
        parser.add_lightning_class_args(callback, key)
    parser.link_arguments("model.alphas", "pictures.alphas", apply_on="parse")
    return sections


def run_folder(trainer: Trainer) -> RunFolder:
    """The folder ``trainer``'s run writes to: ``--output.dir``, else ``--trainer.default_root_dir``."""
    return run_folder_of(trainer)
