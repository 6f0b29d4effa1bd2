"""How sure a PCK figure is: percentile bootstrap intervals over pairs, and paired differences of two runs.

Pairs are the unit resampled. Per-image PCK (the mean over pairs of each pair's fraction correct) and
per-point PCK (all correct keypoints over all keypoints) are computed on the same resamples of pairs, so
a pair's keypoints always move together: the per-point interval is a cluster bootstrap, as keypoints of
one pair are not independent. Pairs that share a source image share its fitted embeddings (fit reuse:
SPair's 12,234 test pairs have 481 source images), so their errors are correlated too: given each pair's
cluster (its source image), whole clusters are resampled. Resamples are drawn from a generator seeded
by ``(seed, name)`` (see :mod:`sdcorr.rng`): the same table of the same run always gets the same interval.

>>> import torch
>>> correct, total = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([4.0, 4.0, 4.0])
>>> low, high = pck_intervals(correct, total, resamples=200, name="demo")["per_image"][0].tolist()
>>> low <= 0.5 <= high
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from sdcorr.rng import generator

#: resamples of every interval unless an option says otherwise
RESAMPLES = 1000
#: the confidence level of every interval
LEVEL = 0.95
#: the seed of every interval's resamples (mixed with the name of the table row)
SEED = 0
#: resamples drawn at once (bounds memory to ``CHUNK x pairs`` counts)
CHUNK = 200


def interval_method(resamples: int = RESAMPLES, sources: Optional[Sequence[Optional[object]]] = None) -> dict[str, Any]:
    """How the intervals were made, for results.json (``{}`` with ``resamples`` 0: none were made).

    ``sources``: the source image of each pair the intervals resampled (None where a pair records none: it
    was drawn alone); given, the block says what was resampled: ``clusters`` (``"source image"`` or
    ``"pair"``), ``num_clusters`` and ``num_pairs``, and how many pairs had no source image.

    >>> block = interval_method(1000, ["a", "a", "b", None])
    >>> block["clusters"], block["num_clusters"], block["num_pairs"], block["pairs_without_source_image"]
    ('source image', 3, 4, 1)
    """
    if resamples < 1:
        return {}
    out = {
        "method": "percentile bootstrap over pairs (per point: each pair's keypoints resampled together)",
        "resamples": resamples,
        "level": LEVEL,
        "seed": SEED,
    }
    if sources is None:
        return out
    known = [source for source in sources if source is not None]
    if not known:
        out["clusters"], out["num_clusters"], out["num_pairs"] = "pair", len(sources), len(sources)
        out["note"] = (
            "the predictions record no source image (written by an older sdcorr): pairs were resampled one by "
            "one, which understates the uncertainty where pairs share a source image and its fitted embeddings"
        )
        return out
    out["method"] = (
        "percentile bootstrap over source images (each drawn image brings all its pairs, which share its "
        "fitted embeddings; per point: each pair's keypoints resampled together)"
    )
    alone = len(sources) - len(known)
    out.update({"clusters": "source image", "num_clusters": len(set(known)) + alone, "num_pairs": len(sources)})
    if alone:
        out["pairs_without_source_image"] = alone  # each drawn alone
    return out


def cluster_index(clusters: Sequence[object]) -> tuple[Tensor, int]:
    """``[P]`` the index of each pair's cluster, numbered in order of first appearance, and how many clusters.

    >>> cluster_index(["b", "a", "b", "c"])
    (tensor([0, 1, 0, 2]), 3)
    """
    number: dict[object, int] = {}
    return torch.tensor([number.setdefault(c, len(number)) for c in clusters], dtype=torch.long), len(number)


def resample_counts(
    num_pairs: int, resamples: int, name: object, clusters: Optional[Sequence[object]] = None
) -> Iterator[Tensor]:
    """How often each pair is drawn in each resample, ``[B, P]`` float64 chunks (B <= :data:`CHUNK`).

    Drawn with replacement from the generator of ``(SEED, name)``: ``num_pairs`` pairs per resample, or,
    with ``clusters`` (``[P]`` labels, e.g. each pair's source image), as many clusters as there are, each
    drawn cluster bringing all its pairs (a cluster bootstrap: pairs that share a source image share its
    fitted embeddings, so their errors are not independent). Every pair its own cluster, in order, draws
    exactly what ``clusters=None`` draws.
    """
    index, units = cluster_index(clusters) if clusters is not None else (None, num_pairs)
    if index is not None and len(index) != num_pairs:
        raise ValueError(f"Expected {num_pairs} cluster labels, one per pair, but got {len(index)}")
    rng = generator(SEED, "bootstrap", name)
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        picks = torch.randint(units, (rows, units), generator=rng)
        counts = torch.zeros(rows, units, dtype=torch.float64)
        counts.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
        yield counts if index is None else counts[:, index]


def _percentiles(values: Tensor) -> Tensor:
    """``[B, K]`` -> ``[K, 2]``: the (1 - LEVEL) / 2 and (1 + LEVEL) / 2 percentiles of each column."""
    quantiles = torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=values.dtype)
    return torch.quantile(values, quantiles, dim=0).T


def pck_intervals(
    correct: Tensor,
    total: Tensor,
    resamples: int = RESAMPLES,
    name: object = "",
    clusters: Optional[Sequence[object]] = None,
) -> dict[str, Tensor]:
    """Bootstrap intervals of per-image and per-point PCK.

    Args:
        correct: ``[P, A]`` correct keypoints of each pair at each alpha.
        total: ``[P]`` keypoints of each pair (pairs with none are left out).
        resamples: how many resamples.
        name: names the row (category, ``overall``...): part of the seed.
        clusters: ``[P]`` a label per pair; given, whole clusters are resampled (:func:`resample_counts`).

    Returns:
        ``{"per_image": [A, 2], "per_point": [A, 2]}`` (low, high) fractions; NaN when no pair has keypoints.
    """
    keep = total > 0
    if clusters is not None:
        clusters = [label for label, kept in zip(clusters, keep.tolist()) if kept]
    correct, total = correct[keep].double(), total[keep].double()
    if not len(total) or resamples < 1:
        nan = torch.full((correct.shape[1], 2), float("nan"), dtype=torch.float64)
        return {"per_image": nan, "per_point": nan.clone()}
    fractions = correct / total[:, None]
    per_image, per_point = [], []
    for counts in resample_counts(len(total), resamples, name, clusters):
        # pairs drawn: P without clusters (this division then is the one by len(total)), varying with them
        per_image.append(counts @ fractions / counts.sum(1, keepdim=True))
        per_point.append((counts @ correct) / (counts @ total)[:, None])
    return {"per_image": _percentiles(torch.cat(per_image)), "per_point": _percentiles(torch.cat(per_point))}


def paired_difference(
    first: Tensor,
    second: Tensor,
    resamples: int = RESAMPLES,
    name: object = "",
    clusters: Optional[Sequence[object]] = None,
) -> dict[str, float]:
    """The mean difference ``second - first`` over the same pairs, with a bootstrap interval and p-value.

    Args:
        first: ``[P]`` a per-pair score (e.g. each pair's fraction of keypoints correct) of one run.
        second: ``[P]`` the same pairs' scores in another run, in the same order.
        resamples: how many resamples of pairs (the same resample for both runs: a paired bootstrap).
        name: names the comparison: part of the seed.
        clusters: ``[P]`` a label per pair; given, whole clusters are resampled (:func:`resample_counts`).

    Returns:
        ``{"difference", "low", "high", "p_value"}``. ``p_value``: two-sided, from the resampled
        differences centred on the observed one (how often a difference at least as large as the
        observed one arises if the true difference is 0), at least ``1 / (resamples + 1)``.
    """
    if first.shape != second.shape or first.dim() != 1 or not len(first):
        raise ValueError(f"Expected two [P] scores of the same P >= 1 pairs but got {list(first.shape)} and "
                         f"{list(second.shape)}")  # fmt: skip
    differences = second.double() - first.double()
    observed = float(differences.mean())
    means = torch.cat([counts @ differences / counts.sum(1) for counts in resample_counts(
        len(differences), resamples, name, clusters)])  # fmt: skip
    low, high = _percentiles(means[:, None])[0].tolist()
    extreme = int(((means - observed).abs() >= abs(observed) - 1e-12).sum())
    return {"difference": observed, "low": low, "high": high, "p_value": (extreme + 1) / (resamples + 1)}


def stratified_mean_intervals(
    scores: Tensor,
    strata: Sequence[object],
    resamples: int = RESAMPLES,
    name: object = "",
    clusters: Optional[Sequence[object]] = None,
) -> Tensor:
    """Bootstrap interval of the mean over strata of each stratum's mean score (the paper's SPair overall:
    the mean of the 18 category means).

    Stratified: each resample draws, within every stratum, as many pairs as it has (with replacement), so
    every stratum keeps its weight ``1 / K``, as in the figure itself. Each stratum's draws come from the
    generator of ``(SEED, name, stratum)``.

    Args:
        scores: ``[P, A]`` a per-pair score at each alpha (e.g. each pair's fraction of keypoints correct).
        strata: ``[P]`` the stratum (category) of each pair.
        resamples: how many resamples.
        name: names the row: part of the seed.
        clusters: ``[P]`` a label per pair; given, whole clusters are resampled within each stratum
            (:func:`resample_counts`; a cluster that spans strata is split by them).

    Returns:
        ``[A, 2]`` (low, high); NaN when there is no pair.

    >>> scores = torch.tensor([[1.0], [1.0], [0.0], [0.5]])
    >>> stratified_mean_intervals(scores, ["a", "a", "b", "b"], resamples=100, name="demo")[0].tolist()[0] >= 0.5
    True
    """
    if scores.dim() != 2 or scores.shape[0] != len(strata):
        raise ValueError(f"Expected scores [P, A] with P = {len(strata)} strata labels but got {list(scores.shape)}")
    scores = scores.double()
    names = sorted(set(map(str, strata)))
    if not names or resamples < 1:
        return torch.full((scores.shape[1], 2), float("nan"), dtype=torch.float64)
    labels = [str(s) for s in strata]
    total = torch.zeros(resamples, scores.shape[1], dtype=torch.float64)
    for stratum in names:
        inside = [label == stratum for label in labels]
        members = scores[torch.tensor(inside)]
        within = None if clusters is None else [c for c, kept in zip(clusters, inside) if kept]
        draws = resample_counts(len(members), resamples, (name, stratum), within)
        total += torch.cat([counts @ members / counts.sum(1, keepdim=True) for counts in draws])
    return _percentiles(total / len(names))


#: fewer pairs than this, or fewer source images where those are drawn, get no interval (results.json) or
#: p-value (``sdcorr compare``): a bootstrap over a handful of units has too few distinct resamples (one:
#: none) and claims far too much certainty
MIN_PAIRS = 10


def stratified_point_intervals(
    correct: Tensor, total: Tensor, strata: Sequence[object], resamples: int = RESAMPLES, name: object = ""
) -> Tensor:
    """Bootstrap interval of the mean over strata of each stratum's per-point PCK (correct keypoints over
    keypoints within the stratum), e.g. SD+DINO's SPair "Average PCK": the mean of 18 category figures,
    each pooled over the category's keypoints.

    Stratified as :func:`stratified_mean_intervals` (pairs drawn within each stratum, every stratum weighing
    ``1 / K``); a drawn pair brings all its keypoints.

    Args:
        correct: ``[P, A]`` correct keypoints of each pair at each alpha.
        total: ``[P]`` keypoints of each pair (> 0).
        strata: ``[P]`` the stratum (category) of each pair.
        resamples: how many resamples.
        name: names the row: part of the seed.

    Returns:
        ``[A, 2]`` (low, high) fractions; NaN when there is no pair.
    """
    if correct.dim() != 2 or correct.shape[0] != len(strata) or total.shape != (len(strata),):
        raise ValueError(f"Expected correct [P, A] and total [P] with P = {len(strata)} strata labels but got "
                         f"{list(correct.shape)} and {list(total.shape)}")  # fmt: skip
    correct, total = correct.double(), total.double()
    labels = [str(s) for s in strata]
    names = sorted(set(labels))
    if not names or resamples < 1:
        return torch.full((correct.shape[1], 2), float("nan"), dtype=torch.float64)
    summed = torch.zeros(resamples, correct.shape[1], dtype=torch.float64)
    for stratum in names:
        inside = torch.tensor([label == stratum for label in labels])
        hits, points = correct[inside], total[inside]
        draws = resample_counts(len(points), resamples, (name, stratum))
        summed += torch.cat([(counts @ hits) / (counts @ points)[:, None] for counts in draws])
    return _percentiles(summed / len(names))
