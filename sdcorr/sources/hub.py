"""Loading a model from a local folder or a hub id, the same way for every source.

A hub id is first looked up in the local Hugging Face cache; the network is used only when the model
is not cached, and an unreachable hub fails at once with instructions instead of minutes of retries.
Every failure is a :class:`~sdcorr.errors.ModelLoadError` naming the model and the id or folder.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from sdcorr.errors import ModelLoadError, OptionError
from sdcorr.sources.weightless import WeightsSkipped, weightless

T = TypeVar("T")
#: what is wrong with a ``pretrained`` that is no existing folder and cannot be a hub id
NOT_FOUND = "folder not found (and it is not a hub id such as 'org/name')"


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Can a TCP connection to the Hugging Face endpoint be opened? (A quick probe instead of minutes of retries.)"""
    url = urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def is_hub_id(name: str) -> bool:
    """Could ``name`` be a hub id (``name`` or ``org/name``)? A path such as ``/models/sd``, ``./sd``,
    ``~/sd`` or ``a/b/c`` cannot, so a missing folder of that form is reported as not found.

    >>> is_hub_id("CompVis/stable-diffusion-v1-4"), is_hub_id("/models/sd14"), is_hub_id("weights/sd/v1")
    (True, False, False)
    """
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_pretrained(owner: object, pretrained: str) -> None:
    """Refuse, before anything loads, a ``pretrained`` that is no existing folder and cannot be a hub id
    (:func:`is_hub_id`): an :class:`~sdcorr.errors.OptionError` of ``owner``'s ``pretrained`` argument, which
    the CLI names by its option, instead of a message about the hub."""
    local = Path(pretrained).expanduser()
    if not local.exists() and not is_hub_id(pretrained):
        raise OptionError(owner, "pretrained", f"{str(local)!r}: {NOT_FOUND}")


def load_from_hub_or_folder(
    load: Callable[[str, bool], T], pretrained: str, what: str, local_files_only: bool = False, hint: str = ""
) -> T:
    """Run ``load(name, local_files_only)`` on a local folder or a hub id; failures raise :class:`ModelLoadError`.

    A ``pretrained`` that is no existing folder and cannot be a hub id (:func:`is_hub_id`) is "not found",
    naming the folder; the hub's messages are only for names that can be hub ids (and, for a name that
    could also be a relative folder, such as ``models/sd``, they say that no such folder exists either).

    Inside :func:`~sdcorr.sources.weightless.without_weights` nothing loads: a name that is found (or
    may be a hub id) raises :class:`~sdcorr.sources.weightless.WeightsSkipped`.

    Args:
        load: builds the model from a folder or hub id; the flag forbids downloads.
        pretrained: hub id or local folder.
        what: the model's name for messages, e.g. ``"DINOv2"``.
        local_files_only: never contact the hub.
        hint: appended to the instructions of the messages.
    """
    hint = (
        "Without network access, download the model on another machine (for example "
        f"`hf download {pretrained} --local-dir DIR`), copy DIR here and pass "
        f"`--model.source.init_args.pretrained DIR`. {hint}"
    ).strip()
    local = Path(pretrained).expanduser()
    if local.exists() and weightless():
        raise WeightsSkipped(f"{what} {pretrained!r} not loaded (checking the options only)")
    if local.exists():
        try:
            return load(str(local), True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load {what} from the folder {local}: {error}") from error
    if not is_hub_id(pretrained):
        raise ModelLoadError(f"{what}: pretrained {str(local)!r}: {NOT_FOUND}")
    if weightless():
        raise WeightsSkipped(f"{what} {pretrained!r} not loaded (checking the options only)")
    if "/" in pretrained:
        hint = f"(There is no folder {local.resolve()} either.) {hint}"
    try:
        return load(pretrained, True)
    except (OSError, ValueError):
        pass  # not in the cache
    if local_files_only or hf_constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"{what}: {pretrained!r} is not a local folder and not in the Hugging Face cache (offline mode).\n{hint}"
        )
    if not _hub_reachable():
        raise ModelLoadError(f"cannot reach {hf_constants.ENDPOINT} to download {what} {pretrained!r}.\n{hint}")
    try:
        return load(pretrained, False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load {what} from {pretrained!r}: {error}\n{hint}") from error
