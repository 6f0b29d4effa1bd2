"""THE ONE PLACE where the command line names sdcorr's callbacks (package ``callbacks``).

Everything else in :mod:`sdcorr.cli` reaches them through the functions here: a change to the callbacks
(a class renamed, a section added) is a change to this file only.

* :func:`run_folder_callbacks`: the callbacks every Trainer command has, each configured in its own
  section of the config (``output:``, ``pictures:``, ``progress:``, ``wandb:``), and the links between them.
* :func:`hand_over_config`: the resolved config, for the run folder's writer to save as ``config.yaml``.
"""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from callbacks.pictures import PictureCallback
from callbacks.progress import RunProgress
from callbacks.run_folder import RunFolderWriter
from callbacks.wandb_tables import WandbTables

#: the callbacks of a Trainer command, by config section
SECTIONS: dict[str, type] = {
    "output": RunFolderWriter,
    "pictures": PictureCallback,
    "progress": RunProgress,
    "wandb": WandbTables,
}


def run_folder_callbacks(parser: LightningArgumentParser) -> dict[str, type]:
    """Add the callbacks to ``parser``, each in its config section, always present. Settings that must
    agree are linked, so no callback has to ask another: the pictures' colours use one of the model's PCK
    alphas, the page's and W&B's histogram the pictures' alpha, W&B's intervals the run folder's resamples,
    the pictures go into the run folder's ``--output.dir`` and ``--output.overwrite`` discards them too.

    Returns:
        Their classes by section (:data:`SECTIONS`): an error of a callback's constructor is named by its
        option in that section.
    """
    for key, callback in SECTIONS.items():
        parser.add_lightning_class_args(callback, key)
    parser.link_arguments("model.alphas", "pictures.alphas", apply_on="parse")
    parser.link_arguments("pictures.alpha", "output.alpha", apply_on="parse")
    parser.link_arguments("pictures.alpha", "wandb.alpha", apply_on="parse")
    parser.link_arguments("output.dir", "pictures.dir", apply_on="parse")
    parser.link_arguments("output.overwrite", "pictures.overwrite", apply_on="parse")
    parser.link_arguments("output.resamples", "wandb.resamples", apply_on="parse")
    return dict(SECTIONS)


def hand_over_config(trainer: Trainer, text: str) -> None:
    """Give the resolved config (YAML ``text``) to the run folder's writer, which saves it as ``config.yaml``
    once the folder has taken the run (a run refused by the folder check leaves the old one)."""
    for callback in trainer.callbacks:
        if isinstance(callback, RunFolderWriter):
            callback.keep_config(text)
