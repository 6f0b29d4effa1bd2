"""The files of a run folder, and what makes two runs the same run.

A run folder holds:

* ``run.json``: the manifest: the run's fingerprint (data selection, source, matcher, seed,
  precision), the ids of the pairs it is responsible for, its alphas and read layers;
* ``predictions.jsonl`` (``predictions.rank<R>.jsonl`` per process under DDP): one record per pair;
* ``results.json``: the metric tables, written only when every pair is done;
* ``config.yaml``: the resolved command-line config of the last run in the folder;
* ``embeddings/``: optionally, the fitted embeddings of each pair.

Two runs with equal fingerprints produce the same predictions, so one may resume the other and shards
with equal fingerprints (but for the shard) may be merged. Options that only change speed
(``speed_options`` of a matcher or source, e.g. ``max_batch``) are not part of the fingerprint.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Optional

from sdcorr.errors import OutputError

MANIFEST = "run.json"
RESULTS = "results.json"
#: the resolved command-line config, saved by :class:`sdcorr.cli.RunFolderConfig`
CONFIG_FILE = "config.yaml"
EMBEDDINGS = "embeddings"
_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def describe(obj: Any) -> dict[str, Any]:
    """An object's class and its saved hyper-parameters (else its public, JSON-plain attributes), less its
    ``speed_options`` and ``unused_options`` (arguments that had no effect, e.g. ``pretrained`` of a
    random-weight build)."""
    skip = set(getattr(obj, "speed_options", ())) | set(getattr(obj, "unused_options", ())) | {"training"}
    fields = dict(getattr(obj, "hparams", None) or vars(obj))
    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k not in skip and _is_plain(v)}
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", **json.loads(json.dumps(fields))}


def model_description(source: Any) -> str:
    """The model of a source in words (its ``model_description()``, else its class): the checkpoint it
    was loaded from, or random weights of an architecture."""
    if hasattr(source, "model_description"):
        return source.model_description()
    return f"{type(source).__module__}.{type(source).__qualname__}"


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable ``path: old -> new`` lines where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one.

    Raises ``ValueError`` for a NaN or infinite float: callers replace undefined values by None.
    """
    scratch = path.with_name(f".{path.name}.part")
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"  # NaN and Infinity are not JSON
    try:
        scratch.write_text(text)
        os.replace(scratch, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error})") from error


def read_manifest(folder: str | Path) -> Optional[dict[str, Any]]:
    """The ``run.json`` of a folder, or None if it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise OutputError(f"{path}: unreadable run manifest ({error})") from error


def embedding_file(folder: str | Path, pair_id: str) -> Path:
    """Where the fitted embeddings of a pair are saved: a file-system-safe name, unique per pair id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)[:100]
    return Path(folder) / EMBEDDINGS / f"{safe}-{zlib.crc32(pair_id.encode()):08x}.pt"
