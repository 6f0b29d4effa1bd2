"""From predictions to the metric tables: the one path every score takes.

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

from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.results import Histogram, Results
from sdcorr.stats import intervals
from sdcorr.stats.pck import PCK

#: bins of the per-pair histogram: the fraction of a pair's keypoints that are correct
HISTOGRAM_BINS = ["0%"] + [f"({10 * i},{10 * (i + 1)}%]" for i in range(10)]


def accumulate(
    predictions: Iterable[Prediction], pck: PCK, groups: Optional[PCK] = None, threshold_mode: Optional[str] = None
) -> None:
    """Add predictions to a :class:`PCK` (per category) and, by their ``groups``, to a second one.

    Predictions without ground truth or threshold are counted as unscored. Each pair is labelled with its
    ``source_group``: the intervals resample the pairs of one source image together.
    """
    for prediction in predictions:
        args = prediction.tensors(prediction.predicted_keypoints, threshold_mode, pck.device)
        if args is None:
            pck.skip()
            continue
        *scored, scale = args
        clusters = [prediction.source_group]
        pck.update(*scored, categories=[prediction.category], scale=scale, clusters=clusters)
        if groups is not None:
            for key, value in prediction.groups.items():
                groups.update(*scored, categories=[f"{key}={value}"], scale=scale, clusters=clusters)


def histogram(predictions: Iterable[Prediction], alpha: float = 0.1, threshold_mode: Optional[str] = None) -> Histogram:
    """Pairs binned by the fraction of their keypoints correct at PCK@``alpha`` (see :data:`HISTOGRAM_BINS`);
    unscored pairs are not counted."""
    counts = [0] * len(HISTOGRAM_BINS)
    for prediction in predictions:
        flags = prediction.correct([alpha], threshold_mode)
        if flags is None:
            continue
        fraction = float(flags[:, 0].float().mean())
        counts[min(10, math.ceil(round(fraction * 10, 6)))] += 1  # rounding: 0.3 * 10 is 3.0000000000000004
    return Histogram(alpha, list(HISTOGRAM_BINS), counts)


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
            metric.update(*args, categories=[prediction.category], scale=scale, clusters=[prediction.source_group])
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
    the run was processed. They draw source images, each with all its pairs (pairs that share a source image
    share its fitted embeddings, so their errors are correlated); a pair whose line records no source image
    (an older sdcorr's) is drawn alone. ``intervals`` says which it was.

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
    results["histogram"] = histogram(predictions, 0.1, threshold_mode).to_json()
    results["threshold_mode"] = threshold_mode
    results["unscored_pair_ids"] = [p.pair_id for p in predictions if not p.scored(threshold_mode)]
    scored = [p.source_group for p in predictions if p.scored(threshold_mode)]
    results["intervals"] = intervals.interval_method(resamples, scored)
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


def results_of(
    predictions: Iterable[Prediction],
    manifest: Manifest,
    alphas: Optional[Sequence[float]] = None,
    threshold_mode: Optional[str] = None,
    resamples: int = intervals.RESAMPLES,
) -> Results:
    """The content of results.json (and evaluation.json): what was run (from the run's manifest) and
    :func:`score` at ``alphas`` (default: the run's) with ``resamples`` for the intervals."""
    fingerprint = manifest.fingerprint
    alphas = list(alphas or manifest.alphas)
    tables = score(predictions, alphas, threshold_mode, manifest.layers, resamples)
    return Results(
        model=manifest.model,
        alphas=alphas,
        seed=fingerprint.seed,
        source=fingerprint.source,
        matcher=fingerprint.matcher,
        precision=fingerprint.precision,
        data=fingerprint.data,
        overall=tables.pop("overall"),
        per_category=tables.pop("per_category"),
        histogram=Histogram.from_json(tables.pop("histogram")),
        **tables,
    )
