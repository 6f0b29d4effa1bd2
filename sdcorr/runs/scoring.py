"""From predictions to the metric tables: the one path every score takes, and the tables as text and rows.

Pure functions, no file access (reading and writing the run folder is :mod:`sdcorr.runs.folder`'s). The
live metric of a run, ``results.json``, a resumed run, merged shards and ``sdcorr evaluate`` all score
:class:`~sdcorr.runs.records.Prediction` lines through :func:`accumulate`, so they cannot disagree.
:func:`score` takes them in ``pair_id`` order, which makes the floating-point sums, and so the numbers,
independent of the order pairs were processed in.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from sdcorr.runs.records import Prediction
from sdcorr.stats import intervals
from sdcorr.stats.pck import PCK

#: bins of the per-pair histogram: the fraction of a pair's keypoints that are correct
HISTOGRAM_BINS = ["0%"] + [f"({10 * i},{10 * (i + 1)}%]" for i in range(10)]


def accumulate(
    predictions: Iterable[Prediction], pck: PCK, groups: Optional[PCK] = None, threshold_mode: Optional[str] = None
) -> None:
    """Add predictions to a :class:`PCK` (per category) and, by their ``groups``, to a second one.

    Predictions without ground truth or threshold are counted as unscored.
    """
    for prediction in predictions:
        args = prediction.tensors(prediction.predicted_keypoints, threshold_mode, pck.device)
        if args is None:
            pck.skip()
            continue
        *scored, scale = args
        pck.update(*scored, categories=[prediction.category], scale=scale)
        if groups is not None:
            for key, value in prediction.groups.items():
                groups.update(*scored, categories=[f"{key}={value}"], scale=scale)


def histogram(
    predictions: Iterable[Prediction], alpha: float = 0.1, threshold_mode: Optional[str] = None
) -> dict[str, Any]:
    """Pairs binned by the fraction of their keypoints correct at PCK@``alpha`` (see :data:`HISTOGRAM_BINS`).

    Returns:
        ``{"alpha", "bins", "counts"}``; unscored pairs are not counted.
    """
    counts = [0] * len(HISTOGRAM_BINS)
    for prediction in predictions:
        flags = prediction.correct([alpha], threshold_mode)
        if flags is None:
            continue
        fraction = float(flags[:, 0].float().mean())
        counts[min(10, math.ceil(round(fraction * 10, 6)))] += 1  # rounding: 0.3 * 10 is 3.0000000000000004
    return {"alpha": alpha, "bins": list(HISTOGRAM_BINS), "counts": counts}


def per_layer(
    predictions: Sequence[Prediction],
    alphas: Sequence[float],
    layer_names: Optional[Sequence[Any]] = None,
    threshold_mode: Optional[str] = None,
    resamples: int = 0,
) -> dict[str, dict]:
    """PCK of each read layer's own prediction (``layer_predictions``), keyed by layer name; {} if absent.
    With ``resamples``, each with its interval (every layer on the same resamples of pairs)."""
    scored = [p for p in predictions if p.scored(threshold_mode)]
    if not scored or any(p.layer_predictions is None for p in scored):
        return {}
    num_layers = len(scored[0].layer_predictions)
    names = [str(n) for n in layer_names] if layer_names and len(layer_names) == num_layers else None
    out = {}
    for index in range(num_layers):
        metric = PCK(alphas, resamples, sync_on_compute=False)
        for prediction in scored:
            *args, scale = prediction.tensors(prediction.layer_predictions[index], threshold_mode)
            metric.update(*args, categories=[prediction.category], scale=scale)
        overall = metric.compute()["overall"]
        out[names[index] if names else str(index)] = {k: v for k, v in overall.items() if k.startswith("pck@")}
    return out


def score(
    predictions: Iterable[Prediction],
    alphas: Sequence[float] = (0.05, 0.1),
    threshold_mode: Optional[str] = None,
    layer_names: Optional[Sequence[Any]] = None,
    resamples: int = intervals.RESAMPLES,
) -> dict[str, Any]:
    """Every metric table of results.json.

    ``resamples``: bootstrap resamples of the 95% interval of every PCK figure (0: no intervals; see
    :mod:`sdcorr.stats.intervals`); the resamples are drawn in ``pair_id`` order, so they are the same however
    the run was processed.

    Returns:
        ``{"overall", "per_category", "unscored_pairs"}`` as :meth:`sdcorr.stats.pck.PCK.compute`, plus
        ``per_group`` (e.g. SPair difficulty, ``"occlusion=1"``), ``per_layer`` (see :func:`per_layer`),
        ``histogram`` (see :func:`histogram`), ``threshold_mode`` (None: as each pair was run) and
        ``unscored_pair_ids`` (the pairs counted in ``unscored_pairs``: no ground truth or threshold).
        A PCK over no scored pair is None, never NaN.
    """
    predictions = sorted(predictions, key=lambda p: p.pair_id)
    # local: these see every prediction already (under DDP, rank 0 scores the files of all ranks)
    pck, groups = PCK(alphas, resamples, sync_on_compute=False), PCK(alphas, resamples, sync_on_compute=False)
    accumulate(predictions, pck, groups, threshold_mode)
    with warnings.catch_warnings():  # no scored pair: every PCK is None (see ``finite``)
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        results = pck.compute()
    results["per_group"] = groups.compute()["per_category"] if groups.total else {}
    results["per_layer"] = per_layer(predictions, alphas, layer_names, threshold_mode, resamples)
    results["histogram"] = histogram(predictions, 0.1, threshold_mode)
    results["threshold_mode"] = threshold_mode
    results["unscored_pair_ids"] = [p.pair_id for p in predictions if not p.scored(threshold_mode)]
    results["intervals"] = intervals.describe(resamples)
    return finite(results)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN; a PCK over no pair is
    undefined, not a number)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def results_payload(
    predictions: Iterable[Prediction],
    manifest: dict[str, Any],
    alphas: Optional[Sequence[float]] = None,
    threshold_mode: Optional[str] = None,
    resamples: int = intervals.RESAMPLES,
) -> dict[str, Any]:
    """The content of results.json (and evaluation.json): what was run (from the run's manifest) and
    :func:`score` at ``alphas`` (default: the run's) with ``resamples`` for the intervals."""
    fingerprint = manifest["fingerprint"]
    alphas = list(alphas or manifest["alphas"])
    return {
        "model": manifest.get("model"),
        "alphas": alphas,
        "seed": fingerprint["seed"],
        "source": fingerprint["source"],
        "matcher": fingerprint["matcher"],
        "precision": fingerprint["precision"],
        "data": fingerprint["data"],
        **score(predictions, alphas, threshold_mode, manifest.get("layers"), resamples),
    }


# the tables, for people (text) and for pages and W&B (rows)
def format_table(results: dict[str, Any], alphas: list[float]) -> str:
    """A per-category table of PCK in percent, per image and per point, with the overall row last.

    With intervals in ``results`` a cell reads ``45.4 +- 0.9``: the figure and half the width of its 95%
    interval (the interval itself, which need not be symmetric, is in results.json). Unscored pairs are
    counted and named below the table; a PCK over no scored pair shows as ``n/a``.
    """
    columns = [f"PCK@{a:g} {kind}" for a in alphas for kind in ("img", "pt")]
    rows = list(results["per_category"].items()) + [("overall", results["overall"])]
    width = max([len("category")] + [len(name) for name, _ in rows])
    cell = 14 if results.get("intervals") else 12
    lines = [f"{'category':<{width}}  {'pairs':>6}  {'kps':>6}  " + "  ".join(f"{c:>{cell}}" for c in columns)]
    for name, values in rows:
        cells = []
        for a in alphas:
            entry = values[f"pck@{a:g}"]
            cells += [_percent(entry, kind, cell) for kind in ("per_image", "per_point")]
        lines.append(f"{name:<{width}}  {values['num_pairs']:>6}  {values['num_keypoints']:>6}  " + "  ".join(cells))
    if results.get("unscored_pairs"):
        ids = results.get("unscored_pair_ids") or []
        named = ": " + ", ".join(map(repr, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        named = named if ids else ""
        lines.append(f"({results['unscored_pairs']} pairs without ground truth were predicted but not scored{named})")
    return "\n".join(lines)


def _percent(entry: dict[str, Any], kind: str, width: int) -> str:
    """``entry[kind]`` (a fraction) as a percent cell, ``+-`` half its interval's width when it has one;
    ``n/a`` when undefined (no scored pair)."""
    value, interval = entry[kind], entry.get(f"{kind}_interval")
    if value is None:
        return f"{'n/a':>{width}}"
    if interval is None or None in interval:
        return f"{100 * value:{width}.1f}"
    return f"{f'{100 * value:.1f} +- {50 * (interval[1] - interval[0]):.1f}':>{width}}"


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


def summary_rows(
    results: dict[str, Any], groups: bool = True, intervals: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the PCK table: one row per category, (per group,) then ``overall``.

    Values are fractions in [0, 1] as in ``results.json``; a group row is named ``key=value``. With
    ``intervals``, each figure is followed by its interval's bounds (None where results.json has none).
    """
    alphas = list(results.get("alphas") or [])
    columns = ["category", "pairs", "keypoints", *pck_columns(alphas, intervals)]
    entries = list((results.get("per_category") or {}).items())
    if groups:
        entries += list((results.get("per_group") or {}).items())
    entries.append(("overall", results.get("overall") or {}))
    rows = [[name, e.get("num_pairs"), e.get("num_keypoints"), *_values(e, alphas, intervals)] for name, e in entries]
    return columns, rows


def layer_rows(results: dict[str, Any], intervals: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-layer table (each read layer's own prediction); no rows if absent."""
    alphas = list(results.get("alphas") or [])
    entries = (results.get("per_layer") or {}).items()
    return ["layer", *pck_columns(alphas, intervals)], [[str(n), *_values(e, alphas, intervals)] for n, e in entries]
