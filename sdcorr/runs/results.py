"""``results.json`` (and ``evaluation.json``): the metric tables of a run, and those tables as text and rows.

A :class:`Results` is made by :func:`sdcorr.runs.scoring.results_of` from predictions and the run's
:class:`~sdcorr.runs.manifest.Manifest`, written and read by :class:`~sdcorr.runs.folder.RunFolder`, and
shown by :func:`format_table` (the printed table), :func:`summary_rows` and :func:`layer_rows` (pages
and W&B). The PCK tables inside (``overall``, ``per_category``, ``per_group``, ``per_layer``) keep the
shape :meth:`sdcorr.stats.pck.PCK.compute` gives them; only this module reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

from sdcorr.runs.records import FORMAT, check_format


@dataclasses.dataclass
class Histogram:
    """Pairs binned by the fraction of their keypoints correct at PCK@``alpha`` (see
    :func:`sdcorr.runs.scoring.histogram`): ``counts[i]`` pairs in bin ``bins[i]``."""

    alpha: float
    bins: list[str]
    counts: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "bins": self.bins, "counts": self.counts}

    @classmethod
    def from_json(cls, payload: Any) -> Histogram:
        if not isinstance(payload, dict) or not {"alpha", "bins", "counts"} <= set(payload):
            raise ValueError(f"expected a histogram with alpha, bins and counts but got {payload!r}")
        return cls(float(payload["alpha"]), list(payload["bins"]), list(payload["counts"]))

    def title(self) -> str:
        """The one title of its picture, on the page and on W&B."""
        return f"pairs by fraction of keypoints correct at PCK@{self.alpha:g}"


#: the keys of results.json after ``format``, in the order written since the first version
_ORDER = (
    "model", "alphas", "seed", "source", "matcher", "precision", "data", "overall", "per_category",
    "unscored_pairs", "per_group", "per_layer", "histogram", "threshold_mode", "unscored_pair_ids", "intervals",
)  # fmt: skip
#: keys written only when set: an incomplete evaluation or merge
_OPTIONAL = ("incomplete", "missing", "missing_pairs", "missing_shards")


@dataclasses.dataclass
class Results:
    """The content of ``results.json``: what was run (from the manifest) and every metric table.

    Attributes:
        alphas: the PCK thresholds of the tables.
        seed, source, matcher, precision, data: the run's fingerprint (see :class:`~sdcorr.runs.manifest.Fingerprint`).
        overall: ``{"num_pairs", "num_keypoints", "pck@<a>": {"per_image", "per_point", ...}}``.
        per_category: ``{category: <as overall>}``.
        unscored_pairs: pairs predicted without ground truth or threshold.
        per_group: ``{"key=value": <as overall>}`` (e.g. SPair difficulty).
        per_layer: ``{layer: {"pck@<a>": ...}}``, each read layer's own prediction.
        histogram: pairs by fraction of keypoints correct (at 0.1).
        threshold_mode: None: as each pair was run.
        unscored_pair_ids: the pairs counted in ``unscored_pairs``.
        intervals: how the 95% intervals were made (:func:`sdcorr.stats.intervals.interval_method`).
        model: the model in words.
        incomplete, missing, missing_pairs, missing_shards: what an unfinished evaluation or merge lacks.
        extra: keys this version does not know, kept.
    """

    alphas: list[float]
    seed: Any
    source: dict[str, Any]
    matcher: dict[str, Any]
    precision: Any
    data: dict[str, Any]
    overall: dict[str, Any]
    per_category: dict[str, Any]
    unscored_pairs: int = 0
    per_group: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_layer: dict[str, Any] = dataclasses.field(default_factory=dict)
    histogram: Optional[Histogram] = None
    threshold_mode: Optional[str] = None
    unscored_pair_ids: list[str] = dataclasses.field(default_factory=list)
    intervals: Optional[dict[str, Any]] = None
    model: Optional[str] = None
    incomplete: Optional[bool] = None
    missing: Optional[str] = None
    missing_pairs: Optional[list[str]] = None
    missing_shards: Optional[list[int]] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``format`` first, then the keys in the order written since the first version."""
        payload: dict[str, Any] = {"format": FORMAT}
        for key in _ORDER:
            value = getattr(self, key)
            payload[key] = value.to_json() if isinstance(value, Histogram) else value
        payload.update({key: getattr(self, key) for key in _OPTIONAL if getattr(self, key) is not None})
        return {**payload, **self.extra}

    @classmethod
    def from_json(cls, payload: Any) -> Results:
        """Raises ``ValueError`` (:class:`~sdcorr.runs.records.FormatError` for another format); the caller
        names the file."""
        check_format(payload, "a results file")
        required = ("alphas", "seed", "source", "matcher", "precision", "data", "overall", "per_category")
        missing = [key for key in required if key not in payload]
        if missing:
            raise ValueError(f"expected the keys {list(required)} in a results file but {missing} are missing")
        known = set(_ORDER) | set(_OPTIONAL)
        fields = {key: value for key, value in payload.items() if key in known}
        if fields.get("histogram") is not None:
            fields["histogram"] = Histogram.from_json(fields["histogram"])
        extra = {key: value for key, value in payload.items() if key not in known and key != "format"}
        return cls(**fields, extra=extra)

    @property
    def num_pairs(self) -> int:
        """Scored pairs."""
        return int(self.overall.get("num_pairs") or 0)

    @property
    def skipped(self) -> dict[str, int]:
        """Pairs the datamodule left out, by reason (e.g. ``{"no_keypoints": 2}``)."""
        return dict(self.data.get("skipped") or {})

    def histogram_at(self, alpha: float) -> Optional[Histogram]:
        """The stored histogram if it is at ``alpha``, else None."""
        if self.histogram is not None and abs(self.histogram.alpha - alpha) < 1e-9:
            return self.histogram
        return None

    def layer_names(self) -> Optional[list[str]]:
        """The read layers' names as the source recorded them, None if it did not."""
        layers = self.source.get("layers") if isinstance(self.source, dict) else None
        return [str(layer) for layer in layers] if isinstance(layers, list) and layers else None

    def data_summary(self) -> str:
        """The data in words: ``"SPairDataModule, split test, threshold_mode bbox"``."""
        data = self.data or {}
        return f"{data.get('datamodule', '?')}" + "".join(
            f", {k} {data[k]}" for k in ("split", "threshold_mode") if data.get(k)
        )


# the tables, for people (text) and for pages and W&B (rows)
def format_table(results: Results, alphas: Optional[list[float]] = None) -> str:
    """A per-category table of PCK in percent, per image and per point, with the overall row last.

    With intervals in ``results`` a cell reads ``45.4 +- 0.9``: the figure and half the width of its 95%
    interval (the interval itself, which need not be symmetric, is in results.json). Unscored pairs are
    counted and named below the table; a PCK over no scored pair shows as ``n/a``.

    Args:
        results: the tables.
        alphas: the columns' alphas; default: the results'.
    """
    alphas = list(results.alphas if alphas is None else alphas)
    columns = [f"PCK@{a:g} {kind}" for a in alphas for kind in ("img", "pt")]
    rows = list(results.per_category.items()) + [("overall", results.overall)]
    width = max([len("category")] + [len(name) for name, _ in rows])
    cell = 14 if results.intervals else 12
    lines = [f"{'category':<{width}}  {'pairs':>6}  {'kps':>6}  " + "  ".join(f"{c:>{cell}}" for c in columns)]
    for name, values in rows:
        cells = []
        for a in alphas:
            entry = values[f"pck@{a:g}"]
            cells += [_percent(entry, kind, cell) for kind in ("per_image", "per_point")]
        lines.append(f"{name:<{width}}  {values['num_pairs']:>6}  {values['num_keypoints']:>6}  " + "  ".join(cells))
    if results.unscored_pairs:
        ids = results.unscored_pair_ids or []
        named = ": " + ", ".join(map(repr, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        named = named if ids else ""
        lines.append(f"({results.unscored_pairs} pairs without ground truth were predicted but not scored{named})")
    return "\n".join(lines)


def percent_text(value: Optional[float], interval: Optional[Sequence[Optional[float]]] = None) -> str:
    """A PCK fraction in percent as the tables show it (the printed one and index.html's): ``+-`` half the
    width of its 95% interval when it has one; ``n/a`` when undefined (no scored pair).

    >>> percent_text(0.454, [0.445, 0.463]), percent_text(0.454, [None, None]), percent_text(None)
    ('45.4 +- 0.9', '45.4', 'n/a')
    """
    if value is None:
        return "n/a"
    if interval is None or None in interval:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} +- {50 * (interval[1] - interval[0]):.1f}"


def _percent(entry: dict[str, Any], kind: str, width: int) -> str:
    """``entry[kind]`` (a fraction) as a percent cell of ``width`` characters (see :func:`percent_text`)."""
    return f"{percent_text(entry[kind], entry.get(f'{kind}_interval')):>{width}}"


#: the bounds of a figure's interval as table columns: ``pck@0.1/per_image/low`` and ``.../high``
BOUNDS = ("low", "high")


def pck_columns(alphas: list[float], intervals: bool = False) -> list[str]:
    """``["pck@0.05/per_image", "pck@0.05/per_point", ...]``: the value columns of the tables; with
    ``intervals``, each followed by its interval's ``/low`` and ``/high``."""
    names = [f"pck@{a:g}/{kind}" for a in alphas for kind in ("per_image", "per_point")]
    return [f"{n}/{b}" if b else n for n in names for b in ((None, *BOUNDS) if intervals else (None,))]


def _values(entry: dict[str, Any], alphas: list[float], intervals: bool = False) -> list[Optional[float]]:
    out = []
    for a in alphas:
        values = entry.get(f"pck@{a:g}") or {}
        for kind in ("per_image", "per_point"):
            out.append(values.get(kind))
            if intervals:
                out += list(values.get(f"{kind}_interval") or (None, None))
    return out


def summary_rows(results: Results, groups: bool = True, intervals: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the PCK table: one row per category, (per group,) then ``overall``.

    Values are fractions in [0, 1] as in ``results.json``; a group row is named ``key=value``. With
    ``intervals``, each figure is followed by its interval's bounds (None where results.json has none).
    """
    alphas = list(results.alphas or [])
    columns = ["category", "pairs", "keypoints", *pck_columns(alphas, intervals)]
    entries = list((results.per_category or {}).items())
    if groups:
        entries += list((results.per_group or {}).items())
    entries.append(("overall", results.overall or {}))
    rows = [[name, e.get("num_pairs"), e.get("num_keypoints"), *_values(e, alphas, intervals)] for name, e in entries]
    return columns, rows


def layer_rows(results: Results, intervals: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-layer table (each read layer's own prediction); no rows if absent."""
    alphas = list(results.alphas or [])
    entries = (results.per_layer or {}).items()
    return ["layer", *pck_columns(alphas, intervals)], [[str(n), *_values(e, alphas, intervals)] for n, e in entries]
