"""The published numbers of the paper, and a run's PCK set beside them (``sdcorr compare RUN --paper spair``).

Where the numbers come from: "Unsupervised Semantic Correspondence Using Stable Diffusion" (Hedlin et
al., NeurIPS 2023, arXiv 2305.15581), its results table (SPair-71k, PF-Willow, CUB-200 at PCK@0.05 and
@0.1, per image) and its per-category SPair-71k table (PCK@0.1), as restated in the project's method
sheet and in ``docs/benchmarks.md``. The thresholds are those of the authors' released code (sdcorr's
``bbox-src-512``, ``kps-trg-paper`` and ``bbox-trg-512`` threshold modes). The paper's SPair overall is
the mean of its 18 category means (45.4 is the mean of the per-category row), not the mean over pairs;
PF-Willow and CUB report the mean over pairs.

Pure functions on tensors; reading run folders and printing is :mod:`sdcorr.runs.compare`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from sdcorr.stats.intervals import MIN_PAIRS, RESAMPLES, pck_intervals, stratified_mean_intervals

#: how the paper's overall figure averages: over pairs, or over categories of their per-category means
PAIR_MEAN, CATEGORY_MEAN = "mean over pairs", "mean of category means"


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for one benchmark, and the selection it reports it on.

    Attributes:
        title: the benchmark in words.
        datamodule: the class name a run of this benchmark records (``run.json`` ``data.datamodule``).
        threshold_mode: sdcorr's threshold mode of the paper's numbers.
        selection: ``data`` entries of ``run.json`` the paper's selection has (e.g. ``{"split": "test"}``).
        num_pairs: pairs of the paper's selection, when known.
        overall: ``{alpha: PCK per image in percent}``.
        overall_rule: :data:`PAIR_MEAN` or :data:`CATEGORY_MEAN`.
        per_category: ``{sdcorr category name: percent}`` at ``category_alpha``; empty when not reported.
        category_alpha: the alpha of ``per_category``.
    """

    title: str
    datamodule: str
    threshold_mode: str
    selection: dict[str, Any]
    num_pairs: Optional[int]
    overall: dict[float, float]
    overall_rule: str = PAIR_MEAN
    per_category: dict[str, float] = field(default_factory=dict)
    category_alpha: float = 0.1


#: the paper's per-category SPair-71k PCK@0.1, keyed by SPair's own category names (the paper abbreviates:
#: aero, bike, motor, plant, tv)
SPAIR_CATEGORIES = {
    "aeroplane": 54.2, "bicycle": 45.1, "bird": 72.9, "boat": 33.6, "bottle": 34.4, "bus": 34.9,
    "car": 42.9, "cat": 66.8, "chair": 25.9, "cow": 56.5, "dog": 49.8, "horse": 48.8,
    "motorbike": 46.6, "person": 48.8, "pottedplant": 30.1, "sheep": 33.0, "train": 49.1, "tvmonitor": 43.9,
}  # fmt: skip

#: the benchmarks ``--paper`` takes
PAPER: dict[str, PaperFigures] = {
    "spair": PaperFigures("SPair-71k test", "SPairDataModule", "bbox-src-512", {"split": "test"}, 12234,
                          {0.05: 28.9, 0.1: 45.4}, CATEGORY_MEAN, SPAIR_CATEGORIES),
    "pfwillow": PaperFigures("PF-Willow", "PFWillowDataModule", "kps-trg-paper", {}, 900, {0.05: 53.0, 0.1: 84.3}),
    "cub": PaperFigures("CUB-200-2011, classes 1-3, test images", "CUBDataModule", "bbox-trg-512",
                        {"classes": [1, 2, 3], "split": "test"}, None, {0.05: 61.6, 0.1: 77.5}),
}  # fmt: skip


def beside_paper(
    figures: PaperFigures,
    categories: Sequence[str],
    correct: Tensor,
    total: Tensor,
    resamples: int = RESAMPLES,
) -> list[dict[str, Any]]:
    """A run's per-image PCK with its bootstrap interval beside each of the paper's figures.

    Args:
        figures: the paper's numbers for the run's benchmark.
        categories: ``[P]`` the category of each scored pair.
        correct: ``[P, A]`` correct keypoints of each pair at the paper's alphas (``sorted(figures.overall)``).
        total: ``[P]`` keypoints of each pair (> 0).
        resamples: bootstrap resamples.

    Returns:
        One row per paper category the run has (category alpha), then ``overall`` at each alpha:
        ``{"category", "alpha", "pairs", "run", "low", "high", "paper", "outside"}`` in percent;
        ``outside``: the paper's figure is not in the run's interval (a row of fewer than
        :data:`~sdcorr.stats.intervals.MIN_PAIRS` pairs has no interval: ``low``/``high`` None, never outside).
        The overall follows ``figures.overall_rule`` (its interval stratified by category for :data:`CATEGORY_MEAN`).
    """
    alphas = sorted(figures.overall)
    if correct.shape != (len(categories), len(alphas)) or total.shape != (len(categories),):
        raise ValueError(f"Expected correct [P, {len(alphas)}] and total [P] for P = {len(categories)} pairs but "
                         f"got {list(correct.shape)} and {list(total.shape)}")  # fmt: skip
    fractions = correct.double() / total.double()[:, None]
    rows = []
    column = alphas.index(figures.category_alpha) if figures.per_category else None
    for category in sorted(set(categories) & set(figures.per_category)):
        keep = torch.tensor([c == category for c in categories])
        value = float(fractions[keep, column].mean())
        low, high = pck_intervals(correct[keep], total[keep], resamples, category)["per_image"][column].tolist()
        rows.append(_row(category, figures.category_alpha, int(keep.sum()), value, low, high,
                         figures.per_category[category]))  # fmt: skip
    if figures.overall_rule == CATEGORY_MEAN:
        names = sorted(set(categories))
        means = torch.stack([fractions[torch.tensor([c == n for c in categories])].mean(0) for n in names])
        values = means.mean(0)
        bounds = stratified_mean_intervals(fractions, categories, resamples, "overall")
    else:
        values = fractions.mean(0)
        bounds = pck_intervals(correct, total, resamples, "overall")["per_image"]
    for i, alpha in enumerate(alphas):
        low, high = bounds[i].tolist()
        rows.append(_row("overall", alpha, len(categories), float(values[i]), low, high, figures.overall[alpha]))
    for row in rows:  # a handful of pairs: the bootstrap claims far too much (see MIN_PAIRS)
        if row["pairs"] < MIN_PAIRS:
            row.update(low=None, high=None, outside=False)
    return rows


def _row(category: str, alpha: float, pairs: int, value: float, low: float, high: float, paper: float) -> dict:
    run, low, high = 100 * value, 100 * low, 100 * high
    return {"category": category, "alpha": alpha, "pairs": pairs, "run": run, "low": low, "high": high,
            "paper": paper, "outside": not low - 1e-9 <= paper <= high + 1e-9}  # fmt: skip
