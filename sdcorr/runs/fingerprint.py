"""What makes two runs the same run: the fingerprint a run folder's ``run.json`` records.

Two runs with equal fingerprints produce the same predictions, so one may resume the other, and shards
with equal fingerprints (but for the shard) may be merged. A fingerprint holds the data selection, the
source and matcher (:func:`settings_of`), the seed and the precision. Options that only change speed
(``speed_options`` of a matcher or source, e.g. ``max_batch``) are not part of it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def class_path(cls: type) -> str:
    """The name a config gives ``cls``: its package's public name when the package exports it
    (``sdcorr.PromptMatcher``, as ``class_path:`` lines spell it), else its module's path. Run records use it,
    so moving a class between modules inside a package leaves the records of a run unchanged.

    >>> from sdcorr.matchers.prompt import PromptMatcher
    >>> class_path(PromptMatcher), class_path(dict)
    ('sdcorr.PromptMatcher', 'builtins.dict')
    """
    package = sys.modules.get(cls.__module__.split(".")[0])
    if getattr(package, cls.__qualname__, None) is cls:
        return f"{package.__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def settings_of(obj: Any) -> dict[str, Any]:
    """An object's class and its saved hyper-parameters (else its public, JSON-plain attributes), less its
    ``speed_options`` and ``unused_options`` (arguments that had no effect, e.g. ``pretrained`` of a
    random-weight build)."""
    skip = set(getattr(obj, "speed_options", ())) | set(getattr(obj, "unused_options", ())) | {"training"}
    fields = dict(getattr(obj, "hparams", None) or vars(obj))
    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k not in skip and _is_plain(v)}
    return {"class": class_path(type(obj)), **json.loads(json.dumps(fields))}


def model_description(source: Any) -> str:
    """The model of a source in words (its ``model_description()``, else its class): the checkpoint it
    was loaded from, or random weights of an architecture."""
    if hasattr(source, "model_description"):
        return source.model_description()
    return class_path(type(source))


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable ``path: old -> new`` lines where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
