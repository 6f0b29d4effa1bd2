"""From ``predictions.jsonl`` lines to the metric tables: the one path every score takes.

A prediction record (one JSON line per pair, written by :class:`callbacks.predictions.PredictionWriter`)
holds everything PCK needs, stored exactly (float32 values survive JSON). The live metric of a run,
``results.json``, a resumed run, merged shards and ``sdcorr evaluate`` all score records through
:func:`accumulate`, so they cannot disagree. Records are scored in ``pair_id`` order, which makes the
floating-point sums, and so the numbers, independent of the order pairs were processed in.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from sdcorr.errors import OutputError
from sdcorr.metrics import PCK, pck_correct

#: the files of one run folder that hold prediction records (one per process under DDP)
PREDICTION_FILES = "predictions*.jsonl"
#: bins of the per-pair histogram: the fraction of a pair's keypoints that are correct
HISTOGRAM_BINS = ["0%"] + [f"({10 * i},{10 * (i + 1)}%]" for i in range(10)]


def _read_file(path: Path, repair: bool) -> list[dict[str, Any]]:
    text = path.read_text()
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # ``tail`` is "" when the file ends with a newline
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise OutputError(f"{path}:{number}: not a JSON prediction record ({error.msg})") from error
    if tail.strip() and repair:  # a line cut short by a crash: that pair is simply not done
        with open(path, "r+") as handle:
            handle.truncate(len(text.encode()) - len(tail.encode()))
    elif tail.strip():
        raise OutputError(f"{path}:{len(lines)}: last line is incomplete (interrupted run?); rerun to resume")
    return records


def read_predictions(folder: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """All prediction records of a run folder (every ``predictions*.jsonl``), sorted by ``pair_id``.

    Args:
        folder: the run folder.
        repair: cut a final line left incomplete by a crash instead of refusing the file.

    Raises:
        OutputError: a line is not JSON, or one pair has two different predictions.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob(PREDICTION_FILES)):
        for record in _read_file(path, repair):
            pair_id = record.get("pair_id")
            if pair_id is None:
                raise OutputError(f"{path}: a record has no pair_id")
            if pair_id in by_id and by_id[pair_id]["predicted_keypoints"] != record["predicted_keypoints"]:
                raise OutputError(f"{folder}: pair {pair_id!r} has two different predictions")
            by_id[pair_id] = record
    return [by_id[key] for key in sorted(by_id)]


def reference(record: dict[str, Any], threshold_mode: Optional[str] = None) -> tuple[Optional[float], list[float]]:
    """``(threshold, pck_scale)`` of a record: as run, or for another of the dataset's threshold modes."""
    if threshold_mode is None:
        return record.get("threshold"), record.get("pck_scale", [1.0, 1.0])
    references = record.get("references") or {}
    if threshold_mode not in references:
        raise OutputError(
            f"pair {record['pair_id']!r}: no threshold {threshold_mode!r} recorded; "
            f"this dataset's predictions have {sorted(references) or 'only the threshold they ran with'}"
        )
    entry = references[threshold_mode]
    return entry["threshold"], entry["pck_scale"]


def _scoring_args(record: dict[str, Any], points: list, threshold_mode: Optional[str], device) -> Optional[tuple]:
    threshold, scale = reference(record, threshold_mode)
    if record.get("target_keypoints") is None or threshold is None:
        return None
    return (
        torch.tensor([points], dtype=torch.float32, device=device),
        torch.tensor([record["target_keypoints"]], dtype=torch.float32, device=device),
        torch.tensor([threshold], dtype=torch.float32, device=device),
        torch.tensor([scale], dtype=torch.float32, device=device),
    )


def accumulate(
    records: Iterable[dict[str, Any]], pck: PCK, groups: Optional[PCK] = None, threshold_mode: Optional[str] = None
) -> None:
    """Add records to a :class:`PCK` (per category) and, by their ``groups``, to a second one.

    Records without ground truth or threshold are counted as unscored.
    """
    for record in records:
        args = _scoring_args(record, record["predicted_keypoints"], threshold_mode, pck.device)
        if args is None:
            pck.skip()
            continue
        *scored, scale = args
        pck.update(*scored, categories=[record["category"]], scale=scale)
        if groups is not None:
            for key, value in (record.get("groups") or {}).items():
                groups.update(*scored, categories=[f"{key}={value}"], scale=scale)


def correct(
    record: dict[str, Any], alphas: Sequence[float], threshold_mode: Optional[str] = None
) -> Optional[torch.Tensor]:
    """``[N, A]`` bool: which predicted keypoints of a record are correct at each alpha; None if unscored."""
    args = _scoring_args(record, record["predicted_keypoints"], threshold_mode, "cpu")
    if args is None:
        return None
    preds, target, threshold, scale = args
    return pck_correct(preds, target, threshold, list(alphas), scale)[0]


def histogram(records: Sequence[dict[str, Any]], alpha: float = 0.1, threshold_mode: Optional[str] = None) -> dict:
    """Pairs binned by the fraction of their keypoints correct at PCK@``alpha`` (see :data:`HISTOGRAM_BINS`)."""
    counts = [0] * len(HISTOGRAM_BINS)
    for record in records:
        flags = correct(record, [alpha], threshold_mode)
        if flags is None:
            continue
        fraction = float(flags[:, 0].float().mean())
        counts[min(10, math.ceil(round(fraction * 10, 6)))] += 1  # rounding: 0.3 * 10 is 3.0000000000000004
    return {"alpha": alpha, "bins": list(HISTOGRAM_BINS), "counts": counts}


def per_layer(
    records: Sequence[dict[str, Any]],
    alphas: Sequence[float],
    layer_names: Optional[Sequence[Any]] = None,
    threshold_mode: Optional[str] = None,
) -> dict[str, dict]:
    """PCK of each read layer's own prediction (``layer_predictions``), keyed by layer name; {} if absent."""
    scored = [r for r in records if _scoring_args(r, r["predicted_keypoints"], threshold_mode, "cpu") is not None]
    if not scored or any(r.get("layer_predictions") is None for r in scored):
        return {}
    num_layers = len(scored[0]["layer_predictions"])
    names = [str(n) for n in layer_names] if layer_names and len(layer_names) == num_layers else None
    out = {}
    for index in range(num_layers):
        metric = PCK(alphas, sync_on_compute=False)
        for record in scored:
            *args, scale = _scoring_args(record, record["layer_predictions"][index], threshold_mode, "cpu")
            metric.update(*args, categories=[record["category"]], scale=scale)
        overall = metric.compute()["overall"]
        out[names[index] if names else str(index)] = {k: v for k, v in overall.items() if k.startswith("pck@")}
    return out


def evaluate(
    records: Sequence[dict[str, Any]],
    alphas: Sequence[float] = (0.05, 0.1),
    threshold_mode: Optional[str] = None,
    layer_names: Optional[Sequence[Any]] = None,
) -> dict[str, Any]:
    """Every table of results.json from prediction records.

    Returns:
        ``{"overall", "per_category", "unscored_pairs"}`` as :meth:`sdcorr.metrics.PCK.compute`, plus
        ``per_group`` (e.g. SPair difficulty, ``"occlusion=1"``), ``per_layer`` (see :func:`per_layer`),
        ``histogram`` (see :func:`histogram`), ``threshold_mode`` (None: as each pair was run) and
        ``unscored_pair_ids`` (the pairs counted in ``unscored_pairs``: no ground truth or threshold).
        A PCK over no scored pair is None, never NaN.
    """
    records = sorted(records, key=lambda r: r["pair_id"])
    # local: these see every record already (under DDP, rank 0 scores the files of all ranks)
    pck, groups = PCK(alphas, sync_on_compute=False), PCK(alphas, sync_on_compute=False)
    accumulate(records, pck, groups, threshold_mode)
    with warnings.catch_warnings():  # no scored pair: every PCK is None (see ``finite``)
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        results = pck.compute()
    results["per_group"] = groups.compute()["per_category"] if groups.total else {}
    results["per_layer"] = per_layer(records, alphas, layer_names, threshold_mode)
    results["histogram"] = histogram(records, 0.1, threshold_mode)
    results["threshold_mode"] = threshold_mode
    results["unscored_pair_ids"] = [
        r["pair_id"] for r in records if _scoring_args(r, r["predicted_keypoints"], threshold_mode, "cpu") is None
    ]
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
    records: Sequence[dict[str, Any]],
    manifest: dict[str, Any],
    alphas: Optional[Sequence[float]] = None,
    threshold_mode: Optional[str] = None,
) -> dict[str, Any]:
    """The content of results.json: what was run (from the run's ``run.json``) and :func:`evaluate`."""
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
        **evaluate(records, alphas, threshold_mode, manifest.get("layers")),
    }
