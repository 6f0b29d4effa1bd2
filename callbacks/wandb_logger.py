"""A WandbLogger that logs offline unless you are logged in to W&B, so benchmark runs never stop at a login prompt.

Decided once, when the logger is built (see :func:`resolve_offline`):

1. ``offline`` given: as given;
2. ``WANDB_MODE`` set (``online``, ``offline``, ``disabled``): W&B follows it;
3. credentials found (``WANDB_API_KEY``, or a ``.netrc`` entry for the W&B host written by
   ``wandb login``): online;
4. otherwise offline: the run goes to ``<save_dir>/wandb/offline-run-*``; upload it later with
   ``wandb sync <save_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["AutoWandbLogger", "finish_wandb", "logged_in", "resolve_offline"]

DEFAULT_HOST = "https://api.wandb.ai"


def logged_in(environ: Mapping[str, str] = os.environ, netrc_file: Optional[Path] = None) -> bool:
    """Whether W&B credentials are available without a prompt.

    Args:
        environ: the environment (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, ``WANDB_BASE_URL``, ``NETRC``).
        netrc_file: the ``.netrc`` to read; default ``$NETRC`` or ``~/.netrc``.
    """
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    path = netrc_file or Path(environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_offline(
    offline: Optional[bool] = None, environ: Mapping[str, str] = os.environ, netrc_file: Optional[Path] = None
) -> bool:
    """``offline`` when given; False when ``WANDB_MODE`` is set (W&B follows it); else not :func:`logged_in`."""
    if offline is not None:
        return offline
    if environ.get("WANDB_MODE"):
        return False
    return not logged_in(environ, netrc_file)


class AutoWandbLogger(WandbLogger):
    """Lightning's WandbLogger, offline unless W&B credentials are found or ``WANDB_MODE`` is set.

    Args:
        project: W&B project; ``WANDB_PROJECT``, when set (e.g. by a sweep agent), wins.
        save_dir: folder under which W&B writes its ``wandb/`` run folders; the ``sdcorr`` command links it to
            ``trainer.default_root_dir``, so they are in the run folder.
        name: display name of the run; default: W&B picks one.
        offline: force offline (true) or online (false); default: decided as in :mod:`callbacks.wandb_logger`.
        tags: W&B tags of the run.
        group: W&B group of the run.
    """

    def __init__(
        self,
        project: str = "sdcorr",
        save_dir: str = ".",
        name: Optional[str] = None,
        offline: Optional[bool] = None,
        tags: Optional[list[str]] = None,
        group: Optional[str] = None,
    ) -> None:
        resolved = resolve_offline(offline)
        extra = {key: value for key, value in (("tags", tags), ("group", group)) if value is not None}
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=os.environ.get("WANDB_PROJECT") or project,
            offline=resolved,
            **extra,
        )
        if resolved:
            rank_zero_info(
                f"W&B: no credentials and no WANDB_MODE, logging offline under {save_dir}/wandb; "
                f"upload with `wandb sync {save_dir}/wandb/offline-run-*` (or `wandb login` first)"
            )


def finish_wandb(loggers: Sequence[Logger], failed: bool = False) -> None:
    """End the W&B run of the WandbLoggers among ``loggers`` now, at the end of the command: W&B's closing
    lines (where the run is, how to sync it) then go to stderr as plain text when it is not a terminal,
    instead of coming out at interpreter exit on stdout with terminal colour codes.

    Args:
        loggers: the Trainer's loggers.
        failed: the command failed (W&B marks the run as failed).
    """
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
