"""Published results of each method, and a run's PCK set beside them (``sdcorr compare RUN --paper METHOD``).

A :class:`PaperFigures` entry is one method's published result on one benchmark: its figures, the
threshold rule and the averaging rule they use (in sdcorr's threshold-mode names), the selection of
pairs, the paper and table they come from, where each number was checked, and the shipped config whose
settings are the method's recipe. :data:`PUBLISHED` holds every entry; :func:`published` finds one.

What is recorded, and where each fact comes from:

* ``hedlin`` (Hedlin et al., "Unsupervised Semantic Correspondence Using Stable Diffusion", NeurIPS 2023,
  arXiv 2305.15581; the method sdcorr reproduces): its results table (SPair-71k, PF-Willow, CUB-200 at
  PCK@0.05 and @0.1, per image) and its per-category SPair-71k table (PCK@0.1), as restated in the
  project's method sheet (``shared/METHOD.md``). The thresholds are those of the authors' released code
  (``bbox-src-512``, ``kps-trg-paper``, ``bbox-trg-512``). The SPair overall is the mean of the 18
  category means (45.4 is the mean of the per-category row); PF-Willow and CUB: the mean over pairs.
* ``dift`` (Tang et al., "Emergent Correspondence from Image Diffusion", NeurIPS 2023, arXiv 2306.03881):
  the rule is read from the authors' ``eval_spair.py`` (Tsingularity/dift): threshold the max side of the
  target bbox in original pixels (``bbox-trg``), correct when ``distance / threshold <= 0.1``, the
  overall "per image PCK@0.1" the mean over all 12,234 test pairs.
* ``dinov2`` (DINOv2 ViT-B/14 patch tokens + nearest neighbour, as evaluated by Zhang et al., "A Tale of
  Two Features", NeurIPS 2023, arXiv 2305.15347) and ``sd-dino`` (that paper's fusion): the rule is read
  from the authors' ``pck_spair_pascal.py`` (Junyi42/sd-dino): threshold the max side of the target bbox,
  scaled with the image (the ratio of ``bbox-trg``), correct when ``distance < alpha * threshold``
  (strict; sdcorr counts ``<=``, which differs only on exact ties), PCK per point within each category,
  the overall the mean of the 18 category figures ("Average PCK"; the script also prints them weighted
  by each category's pairs, which of the two the paper's table gives was not checked).

The published figures of DIFT, DINOv2 and SD+DINO are **not recorded**: the stored copies of those papers
available while this table was written hold only their abstracts, so no number could be checked against
its table (the figures once quoted in ``docs/benchmarks.md``, 52.9 and 53.9, were never sourced). Their
entries still carry the rule and the recipe, so a run is scored as those papers score and checked against
their recipe; add ``overall={alpha: figure}`` with its table and source once checked.

Pure functions on tensors; reading run folders, configs and printing is :mod:`sdcorr.runs.compare`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from sdcorr.stats.intervals import (
    MIN_PAIRS,
    RESAMPLES,
    pck_intervals,
    stratified_mean_intervals,
    stratified_point_intervals,
)

#: how an overall figure averages: per-image PCK over pairs; per-image PCK per category, then over
#: categories; per-point PCK per category (pooled keypoints), then over categories
PAIR_MEAN, CATEGORY_MEAN, POINT_CATEGORY_MEAN = (
    "mean over pairs",
    "mean of category means",
    "mean of category per-point PCK",
)
RULES = (PAIR_MEAN, CATEGORY_MEAN, POINT_CATEGORY_MEAN)


@dataclass(frozen=True)
class PaperFigures:
    """What one method publishes for one benchmark, how it scores, and on which selection.

    Attributes:
        method: the method's key for ``--paper`` (:data:`METHODS`).
        title: the benchmark in words.
        datamodule: the class name a run of this benchmark records (``run.json`` ``data.datamodule``).
        threshold_mode: sdcorr's threshold mode of the method's numbers.
        selection: ``data`` entries of ``run.json`` the published selection has (e.g. ``{"split": "test"}``).
        num_pairs: pairs of the published selection, when known.
        overall: ``{alpha: PCK in percent}``; empty when no figure could be checked (see the module docstring).
        overall_rule: one of :data:`RULES`; per-category figures follow it too (per image, or per point).
        per_category: ``{sdcorr category name: percent}`` at ``category_alpha``; empty when not recorded.
        category_alpha: the alpha of ``per_category``.
        reported_alphas: the alphas the method's evaluation reports (used when ``overall`` is empty).
        recipe: the shipped config (relative to the checkout) whose ``model`` section is the method's
            recipe; None: no shipped config follows it.
        citation: the paper and table of the figures.
        source: where the figures and the rule were checked.
    """

    method: str
    title: str
    datamodule: str
    threshold_mode: str
    selection: dict[str, Any]
    num_pairs: Optional[int]
    overall: dict[float, float]
    overall_rule: str = PAIR_MEAN
    per_category: dict[str, float] = field(default_factory=dict)
    category_alpha: float = 0.1
    reported_alphas: tuple[float, ...] = (0.05, 0.1)
    recipe: Optional[str] = None
    citation: str = ""
    source: str = ""

    @property
    def alphas(self) -> list[float]:
        """The alphas compared: those of the figures, else those the method reports."""
        return sorted(self.overall) or sorted(self.reported_alphas)


#: the methods ``--paper`` knows, in words
METHODS = {
    "hedlin": "Hedlin et al. 2023, prompt optimisation on SD 1.4 cross-attention (the method sdcorr reproduces)",
    "dift": "DIFT (Tang et al. 2023), SD 2.1 up-block features + nearest neighbour",
    "dinov2": "DINOv2 ViT-B/14 patch tokens + nearest neighbour, as evaluated by Zhang et al. 2023",
    "sd-dino": "SD+DINO fusion (Zhang et al. 2023, 'A Tale of Two Features') + nearest neighbour",
}

#: the paper's per-category SPair-71k PCK@0.1, keyed by SPair's own category names (the paper abbreviates:
#: aero, bike, motor, plant, tv)
SPAIR_CATEGORIES = {
    "aeroplane": 54.2, "bicycle": 45.1, "bird": 72.9, "boat": 33.6, "bottle": 34.4, "bus": 34.9,
    "car": 42.9, "cat": 66.8, "chair": 25.9, "cow": 56.5, "dog": 49.8, "horse": 48.8,
    "motorbike": 46.6, "person": 48.8, "pottedplant": 30.1, "sheep": 33.0, "train": 49.1, "tvmonitor": 43.9,
}  # fmt: skip

_HEDLIN = "Hedlin et al., NeurIPS 2023 (arXiv 2305.15581)"
_HEDLIN_SOURCE = "the paper's tables as restated in shared/METHOD.md; thresholds from the authors' code"
_SD_DINO = "Zhang et al., 'A Tale of Two Features', NeurIPS 2023 (arXiv 2305.15347)"
_SD_DINO_RULE = ("rule: Junyi42/sd-dino pck_spair_pascal.py (target bbox, per-point PCK per category, mean over "
                 "categories); figure not recorded: not checked against the paper's table")  # fmt: skip

#: every recorded published result
PUBLISHED: tuple[PaperFigures, ...] = (
    PaperFigures("hedlin", "SPair-71k test", "SPairDataModule", "bbox-src-512", {"split": "test"}, 12234,
                 {0.05: 28.9, 0.1: 45.4}, CATEGORY_MEAN, SPAIR_CATEGORIES, recipe="configs/base.yaml",
                 citation=f"{_HEDLIN}, results table and per-category SPair table", source=_HEDLIN_SOURCE),
    PaperFigures("hedlin", "PF-Willow", "PFWillowDataModule", "kps-trg-paper", {}, 900, {0.05: 53.0, 0.1: 84.3},
                 recipe="configs/base.yaml", citation=f"{_HEDLIN}, results table", source=_HEDLIN_SOURCE),
    PaperFigures("hedlin", "CUB-200-2011, classes 1-3, test images", "CUBDataModule", "bbox-trg-512",
                 {"classes": [1, 2, 3], "split": "test"}, None, {0.05: 61.6, 0.1: 77.5},
                 recipe="configs/base.yaml", citation=f"{_HEDLIN}, results table", source=_HEDLIN_SOURCE),
    PaperFigures("dift", "SPair-71k test", "SPairDataModule", "bbox-trg", {"split": "test"}, 12234, {},
                 PAIR_MEAN, reported_alphas=(0.1,), recipe="configs/model/dift.yaml",
                 citation="Tang et al., NeurIPS 2023 (arXiv 2306.03881), SPair-71k table",
                 source="rule: Tsingularity/dift eval_spair.py ('All per image PCK@0.1'); figure not recorded: "
                        "not checked against the paper's table"),
    PaperFigures("dinov2", "SPair-71k test", "SPairDataModule", "bbox-trg", {"split": "test"}, 12234, {},
                 POINT_CATEGORY_MEAN, reported_alphas=(0.01, 0.05, 0.1), recipe="configs/model/dinov2_sd_dino.yaml",
                 citation=f"{_SD_DINO}, SPair-71k table, DINOv2 row", source=_SD_DINO_RULE),
    PaperFigures("sd-dino", "SPair-71k test", "SPairDataModule", "bbox-trg", {"split": "test"}, 12234, {},
                 POINT_CATEGORY_MEAN, reported_alphas=(0.01, 0.05, 0.1), recipe="configs/model/sd_dino.yaml",
                 citation=f"{_SD_DINO}, SPair-71k table, fused row", source=_SD_DINO_RULE),
)  # fmt: skip

#: what ``--paper`` took before it named methods: this paper on one benchmark
BENCHMARK_ALIASES = {"spair": "SPairDataModule", "pfwillow": "PFWillowDataModule", "cub": "CUBDataModule"}


def published(method: str, datamodule: Optional[str]) -> PaperFigures:
    """The entry of ``method`` (a key of :data:`METHODS`) on the benchmark of ``datamodule``.

    Raises:
        KeyError: an unknown method, or one with no entry for that benchmark (the message says which exist).
    """
    if method not in METHODS:
        raise KeyError(f"expected one of {sorted(METHODS)} (or 'list'); got {method!r}")
    for entry in PUBLISHED:
        if entry.method == method and entry.datamodule == datamodule:
            return entry
    known = sorted(e.datamodule for e in PUBLISHED if e.method == method)
    raise KeyError(f"{method} has no published result on {datamodule} recorded; it has {known}")


def published_table() -> list[dict[str, Any]]:
    """One row per entry of :data:`PUBLISHED`: method, benchmark, threshold, rule, figures, recipe, citation, source."""
    return [
        {
            "method": e.method,
            "benchmark": e.title,
            "datamodule": e.datamodule,
            "threshold_mode": e.threshold_mode,
            "overall_rule": e.overall_rule,
            "figures": {f"{a:g}": v for a, v in sorted(e.overall.items())},
            "recipe": e.recipe,
            "citation": e.citation,
            "source": e.source,
        }
        for e in PUBLISHED
    ]


def beside_paper(
    figures: PaperFigures,
    categories: Sequence[str],
    correct: Tensor,
    total: Tensor,
    resamples: int = RESAMPLES,
) -> list[dict[str, Any]]:
    """A run's PCK, averaged by the published rule, with its bootstrap interval beside each published figure.

    Args:
        figures: the published entry for the run's benchmark.
        categories: ``[P]`` the category of each scored pair.
        correct: ``[P, A]`` correct keypoints of each pair at the alphas ``figures.alphas``.
        total: ``[P]`` keypoints of each pair (> 0).
        resamples: bootstrap resamples.

    Returns:
        One row per published category the run has (category alpha), then ``overall`` at each alpha:
        ``{"category", "alpha", "pairs", "run", "low", "high", "paper", "outside"}`` in percent; ``paper``
        None where no figure is recorded. ``outside``: the figure is not in the run's interval (a row of
        fewer than :data:`~sdcorr.stats.intervals.MIN_PAIRS` pairs has no interval: ``low``/``high`` None,
        never outside). Per-category rows are per image, or per point under :data:`POINT_CATEGORY_MEAN`;
        the overall follows ``figures.overall_rule`` (its interval stratified by category for the two
        category rules).
    """
    alphas = figures.alphas
    if correct.shape != (len(categories), len(alphas)) or total.shape != (len(categories),):
        raise ValueError(f"Expected correct [P, {len(alphas)}] and total [P] for P = {len(categories)} pairs but "
                         f"got {list(correct.shape)} and {list(total.shape)}")  # fmt: skip
    if figures.overall_rule not in RULES:
        raise ValueError(f"Expected an overall rule in {RULES} but got {figures.overall_rule!r}")
    per_point = figures.overall_rule == POINT_CATEGORY_MEAN
    kind = "per_point" if per_point else "per_image"
    correct, total = correct.double(), total.double()
    fractions = correct / total[:, None]
    rows = []
    if figures.per_category and figures.category_alpha in alphas:
        column = alphas.index(figures.category_alpha)
        for category in sorted(set(categories) & set(figures.per_category)):
            keep = torch.tensor([c == category for c in categories])
            value = _pooled(correct[keep], total[keep]) if per_point else fractions[keep].mean(0)
            low, high = pck_intervals(correct[keep], total[keep], resamples, category)[kind][column].tolist()
            rows.append(_row(category, figures.category_alpha, int(keep.sum()), float(value[column]), low, high,
                             figures.per_category[category]))  # fmt: skip
    names = sorted(set(categories))
    masks = [torch.tensor([c == n for c in categories]) for n in names]
    if figures.overall_rule == PAIR_MEAN:
        values = fractions.mean(0)
        bounds = pck_intervals(correct, total, resamples, "overall")["per_image"]
    elif figures.overall_rule == CATEGORY_MEAN:
        values = torch.stack([fractions[m].mean(0) for m in masks]).mean(0)
        bounds = stratified_mean_intervals(fractions, categories, resamples, "overall")
    else:
        values = torch.stack([_pooled(correct[m], total[m]) for m in masks]).mean(0)
        bounds = stratified_point_intervals(correct, total, categories, resamples, "overall")
    for i, alpha in enumerate(alphas):
        low, high = bounds[i].tolist()
        rows.append(_row("overall", alpha, len(categories), float(values[i]), low, high, figures.overall.get(alpha)))
    for row in rows:  # a handful of pairs: the bootstrap claims far too much (see MIN_PAIRS)
        if row["pairs"] < MIN_PAIRS:
            row.update(low=None, high=None, outside=False)
    return rows


def _pooled(correct: Tensor, total: Tensor) -> Tensor:
    """Per-point PCK ``[A]``: all correct keypoints over all keypoints of ``[P, A]`` and ``[P]``."""
    return correct.sum(0) / total.sum()


def _row(
    category: str, alpha: float, pairs: int, value: float, low: float, high: float, paper: Optional[float]
) -> dict:
    run, low, high = 100 * value, 100 * low, 100 * high
    outside = paper is not None and not low - 1e-9 <= paper <= high + 1e-9
    return {"category": category, "alpha": alpha, "pairs": pairs, "run": run, "low": low, "high": high,
            "paper": paper, "outside": outside}  # fmt: skip
