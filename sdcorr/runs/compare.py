"""``sdcorr compare``: is the difference between two runs real, and how far is a run from the paper?

Runs against runs (``sdcorr compare RUN_A RUN_B [RUN_C ...]``): each further run is compared with the
first on the pairs both scored: per-image PCK of each, and the difference (B - A) with a paired bootstrap
interval and p-value (:func:`sdcorr.stats.intervals.paired_difference`), overall and per category, at each alpha.
The bootstrap draws source images, each with all its pairs (they share its fitted embeddings, so their
errors are correlated); a pair whose lines in both runs record no source image (an older sdcorr) is drawn alone.

What counts as the same data. Pairs are matched by ``pair_id``; runs are compared when

* their manifests (``run.json`` ``fingerprint.data``) record the same dataset (``datamodule``) and
  ``split``, and score with the same threshold mode (the recorded ``threshold_mode``, or ``--threshold``
  for both);
* every shared pair has the same ground truth in both (source and target keypoints, and the threshold
  and scale of the mode compared): a run on another copy or version of the dataset is refused.

What only chooses pairs may differ: ``root``, ``categories``, ``classes``, ``layout``, ``subsample``,
``shard``, and how far a run got. The comparison then uses the shared scored pairs, with a warning when
they are not all of either run's. The model, matcher, seed and precision are what is being compared;
compare.json lists where they differ.

Against a published method (``sdcorr compare RUN --paper dift``; ``--paper list`` lists them): the run's
PCK, averaged by the method's rule, with a bootstrap interval beside the method's published figures on the
run's benchmark (:mod:`sdcorr.stats.paper`), flagging those outside the interval. A run scored in another
threshold mode than the figures is refused (``--threshold MODE`` rescores it). The figures are comparable
only for a run that follows the method's recipe: its recorded source and matcher (class and init
arguments, ``run.json``) equal those of the entry's shipped config, read when comparing, but for where the
weights come from (``pretrained``); otherwise the figures are printed marked not comparable, with the
differing settings. ``spair``, ``pfwillow`` and ``cub`` still name ``hedlin`` on that benchmark.

Outputs: ``compare.json``, ``compare.png`` (each row's difference with its interval) and a
self-contained ``compare.html``, in ``--output_dir``, by default the folder ``compare/`` of the second
run (of the run, with ``--paper``); an earlier comparison there is replaced.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from sdcorr.errors import DataError, OutputError, UsageError
from sdcorr.paths import bundled
from sdcorr.runs.fingerprint import class_path
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.stats.intervals import MIN_PAIRS, RESAMPLES, interval_method, paired_difference
from sdcorr.stats.paper import (
    BENCHMARK_ALIASES,
    METHODS,
    POINT_CATEGORY_MEAN,
    PaperFigures,
    beside_paper,
    published,
    published_table,
)


def signed(value: float) -> str:
    """``+1.2`` / ``-0.3``: a difference in percentage points, with its sign."""
    return f"{value:+.1f}"


#: the alphas compared when the runs share none
DEFAULT_ALPHAS = (0.05, 0.1)
#: ``data`` entries of run.json that must agree (besides the threshold mode): they change what a pair is
SAME_DATA = ("datamodule", "split")


@dataclass(frozen=True)
class PairScore:
    """One scored pair: its category, correct keypoints ``[A]`` at each alpha, keypoints, its ground
    truth (to check that two runs scored the same pair) and its source image (None: not recorded)."""

    category: str
    correct: torch.Tensor
    total: int
    truth: tuple
    source_group: Optional[str] = None


@dataclass(frozen=True)
class Run:
    """A run folder's manifest and predictions."""

    folder: str
    manifest: Manifest
    predictions: list[Prediction]

    @classmethod
    def read(cls, folder: str | Path) -> Run:
        run = RunFolder(folder)
        if not run.path.is_dir():
            raise OutputError(f"{folder}: no such run folder")
        return cls(str(folder), run.manifest(), run.predictions())

    @property
    def data(self) -> dict[str, Any]:
        return self.manifest.fingerprint.data


def threshold_mode(run: Run, threshold: Optional[str] = None) -> Optional[str]:
    """The threshold mode the run is scored in: ``threshold``, else the one it ran with."""
    return threshold or run.manifest.fingerprint.threshold_mode


def common_alphas(runs: Sequence[Run]) -> list[float]:
    """The alphas every run scored (the first's order), else :data:`DEFAULT_ALPHAS`."""
    shared = [a for a in runs[0].manifest.alphas if all(a in r.manifest.alphas for r in runs)]
    return shared or list(DEFAULT_ALPHAS)


def data_problem(first: Run, other: Run, threshold: Optional[str] = None) -> Optional[str]:
    """Why two runs are not on the same data (see the module docstring), or None."""
    for key in SAME_DATA:
        if first.data.get(key) != other.data.get(key):
            return (
                f"{other.folder}: not on the same data as {first.folder}: {key} {other.data.get(key)!r} "
                f"against {first.data.get(key)!r}"
            )
    modes = threshold_mode(first, threshold), threshold_mode(other, threshold)
    if modes[0] != modes[1]:
        return (
            f"{other.folder}: scored with threshold {modes[1]!r}, {first.folder} with {modes[0]!r}; pass "
            "--threshold MODE to score both in one mode"
        )
    return None


def pair_scores(
    predictions: Sequence[Prediction], alphas: Sequence[float], mode: Optional[str]
) -> dict[str, PairScore]:
    """``{pair_id: PairScore}`` of the pairs with ground truth and at least one keypoint, scored in threshold
    mode ``mode`` (None: as run; a dataset with one mode records no others in its predictions)."""
    out = {}
    for prediction in predictions:
        flags = prediction.correct(alphas, mode)
        if flags is None or not len(flags):
            continue
        truth = (prediction.source_keypoints, prediction.target_keypoints, prediction.reference(mode))
        score = PairScore(prediction.category, flags.sum(0).double(), len(flags), truth, prediction.source_group)
        out[prediction.pair_id] = score
    return out


def shared_pairs(
    first: dict[str, PairScore], other: dict[str, PairScore], names: tuple[str, str]
) -> tuple[list[str], Optional[str]]:
    """The pair ids both runs scored (sorted), and a warning when that is not all of either's.

    Raises:
        DataError: no shared scored pair, or a shared pair whose ground truth differs.
    """
    shared = sorted(set(first) & set(other))
    if not shared:
        raise DataError(
            f"{names[1]}: shares no scored pair with {names[0]} ({len(other)} and {len(first)} "
            "scored pairs); compare runs of the same benchmark"
        )
    for pair_id in shared:
        if first[pair_id].truth != other[pair_id].truth:
            raise DataError(
                f"{names[1]}: pair {pair_id!r} has other ground truth than in {names[0]} (another "
                "copy or version of the dataset?); compare runs on the same data"
            )
    if len(shared) == len(first) == len(other):
        return shared, None
    return shared, (
        f"{names[1]} shares {len(shared)} of its {len(other)} scored pairs with {names[0]} (which has "
        f"{len(first)}); comparing the {len(shared)} shared pairs"
    )


def source_of(first: dict[str, PairScore], second: dict[str, PairScore], pair_id: str) -> Optional[str]:
    """The source image of a shared pair as either run recorded it (None: neither did)."""
    return first[pair_id].source_group or second[pair_id].source_group


def difference_rows(
    first: dict[str, PairScore],
    second: dict[str, PairScore],
    shared: Sequence[str],
    alphas: Sequence[float],
    resamples: int = RESAMPLES,
) -> dict[str, list[dict[str, Any]]]:
    """Per alpha, one row per category then ``overall``: ``{"category", "pairs", "a", "b", "difference",
    "low", "high", "p_value"}``, PCK per image in percent (``p_value`` a fraction); a row of fewer than
    :data:`~sdcorr.stats.intervals.MIN_PAIRS` pairs or source images has no interval or p-value (None). The
    resamples draw source images with all their pairs (:func:`source_of`; a pair with none recorded is drawn
    alone)."""
    clusters = {p: source_of(first, second, p) or f"pair:{p}" for p in shared}
    groups: dict[str, list[str]] = {}
    for pair_id in shared:
        groups.setdefault(first[pair_id].category, []).append(pair_id)
    groups = dict(sorted(groups.items())) | {"overall": list(shared)}
    out = {}
    for i, alpha in enumerate(alphas):
        rows = []
        for category, ids in groups.items():
            a = torch.stack([first[p].correct[i] / first[p].total for p in ids])
            b = torch.stack([second[p].correct[i] / second[p].total for p in ids])
            test = paired_difference(a, b, resamples, f"compare/{category}/{alpha:g}", [clusters[p] for p in ids])
            rows.append(
                {
                    "category": category,
                    "pairs": len(ids),
                    "a": 100 * float(a.mean()),
                    "b": 100 * float(b.mean()),
                    "difference": 100 * test["difference"],
                    **_uncertainty(test, len({clusters[p] for p in ids})),
                }
            )
        out[f"{alpha:g}"] = rows
    return out


def _uncertainty(test: dict[str, float], units: int) -> dict[str, Optional[float]]:
    """The interval (percent) and p-value of a paired test, or None for each below :data:`MIN_PAIRS` units
    drawn (pairs, or source images)."""
    if units < MIN_PAIRS:
        return {"low": None, "high": None, "p_value": None}
    return {"low": 100 * test["low"], "high": 100 * test["high"], "p_value": test["p_value"]}


def compare_runs(
    runs: Sequence[Run],
    alphas: Optional[Sequence[float]] = None,
    threshold: Optional[str] = None,
    resamples: int = RESAMPLES,
) -> tuple[dict[str, Any], list[str]]:
    """Compare each run after the first with the first; returns the compare.json payload and warnings.

    Raises:
        DataError: runs on different data, or sharing no scored pair (see the module docstring).
    """
    if len(runs) < 2:
        raise UsageError("compare: give at least two run folders (or one with --paper)")
    for other in runs[1:]:
        problem = data_problem(runs[0], other, threshold)
        if problem:
            raise DataError(problem)
    alphas = list(alphas or common_alphas(runs))
    mode = threshold_mode(runs[0], threshold)
    baseline = pair_scores(runs[0].predictions, alphas, threshold)
    comparisons, warnings, sources = [], [], {}
    for other in runs[1:]:
        scores = pair_scores(other.predictions, alphas, threshold)
        shared, warning = shared_pairs(baseline, scores, (runs[0].folder, other.folder))
        warnings += [warning] if warning else []
        changed = runs[0].manifest.fingerprint.differences(other.manifest.fingerprint)
        sources.update({p: source_of(baseline, scores, p) for p in shared})
        comparisons.append(
            {
                "a": runs[0].folder,
                "b": other.folder,
                "model_a": runs[0].manifest.model,
                "model_b": other.manifest.model,
                "shared_pairs": len(shared),
                "pairs_a": len(baseline),
                "pairs_b": len(scores),
                "run_differences": changed,
                "rows": difference_rows(baseline, scores, shared, alphas, resamples),
            }
        )
    payload = {
        "kind": "runs",
        "alphas": alphas,
        "threshold_mode": mode,
        "data": runs[0].data,
        "intervals": interval_method(resamples, [sources[p] for p in sorted(sources)]),
        "warnings": warnings,
        "comparisons": comparisons,
    }
    return payload, warnings


def paper_warnings(run: Run, figures: PaperFigures, scored: int) -> list[str]:
    """What keeps a run's numbers from being the published ones' selection: part of it, another split, fewer pairs."""
    partial = [
        f"{key} {run.data.get(key)!r} (published: {value!r})"
        for key, value in figures.selection.items()
        if run.data.get(key) != value
    ]
    partial += [f"{key} {run.data[key]!r}" for key in ("categories", "subsample") if run.data.get(key)]
    shard = run.data.get("shard")
    if shard and list(shard) != [0, 1]:
        partial.append(f"shard {shard[0]} of {shard[1]}")
    if figures.num_pairs and scored != figures.num_pairs:
        partial.append(f"{scored} scored pairs (published: {figures.num_pairs})")
    if partial:
        return [f"{run.folder}: not the published selection ({figures.title}): " + ", ".join(partial)]
    return []


#: init arguments that only say where the weights come from: a run may load the recipe's model from anywhere
WEIGHTS_LOCATION = ("pretrained", "dino_pretrained")


def recipe_settings(config: str | Path) -> dict[str, dict[str, Any]]:
    """``{"source": ..., "matcher": ...}`` as ``run.json`` records a model built from ``config``'s ``model``
    section: the class (as :func:`~sdcorr.runs.fingerprint.class_path` names it) and every init argument,
    the config's or else the class's default, less the class's ``speed_options``.

    Raises:
        OSError: the config cannot be read. KeyError, ValueError, ImportError: it has no such section or class.
    """
    model = yaml.safe_load(Path(bundled(config)).read_text())["model"]
    out = {}
    for part in ("source", "matcher"):
        spec = model[part]
        module, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        defaults = {
            p.name: p.default
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        }
        args = {k: v for k, v in (defaults | (spec.get("init_args") or {})).items()}
        args = {k: v for k, v in args.items() if k not in getattr(cls, "speed_options", ())}
        out[part] = {"class": class_path(cls), **json.loads(json.dumps(args, default=repr))}
    return out


def recipe_differences(run: Run, figures: PaperFigures) -> list[str]:
    """Where the run's recorded source and matcher differ from the recipe of ``figures`` (empty: it follows
    it), as ``source.timestep 50 (recipe 261)``; where the weights come from (``pretrained``,
    ``dino_pretrained``: :data:`WEIGHTS_LOCATION`) is left out.

    Only init arguments the run records are compared (a matcher without saved arguments records its public
    attributes). With another class, only the class is named.
    """
    if figures.recipe is None:
        return ["no shipped config follows this method's recipe"]
    try:
        recipe = recipe_settings(figures.recipe)
    except (OSError, KeyError, TypeError, ValueError, ImportError, AttributeError, yaml.YAMLError) as error:
        return [f"recipe {figures.recipe} could not be read ({type(error).__name__}: {error})"]
    fingerprint = run.manifest.fingerprint
    out = []
    for part, recorded in (("source", fingerprint.source), ("matcher", fingerprint.matcher)):
        wanted = recipe[part]
        if recorded.get("class") != wanted["class"]:
            out.append(f"{part} {recorded.get('class')} (recipe {wanted['class']})")
            continue
        for key in sorted((set(recorded) & set(wanted)) - {"class", *WEIGHTS_LOCATION}):
            if recorded[key] != wanted[key]:
                out.append(f"{part}.{key} {recorded[key]!r} (recipe {wanted[key]!r})")
    return out


def resolve_paper(run: Run, name: str) -> PaperFigures:
    """The published entry that ``--paper name`` means for ``run`` (a method, or a benchmark alias of ``hedlin``).

    Raises:
        UsageError: an unknown name. DataError: no entry of that method for the run's benchmark.
    """
    datamodule = run.data.get("datamodule")
    if name in BENCHMARK_ALIASES:
        if datamodule != BENCHMARK_ALIASES[name]:
            raise DataError(f"{run.folder}: a {datamodule} run; --paper {name} needs a {BENCHMARK_ALIASES[name]} run")
        name = "hedlin"
    if name not in METHODS:
        raise UsageError(f"--paper: expected one of {sorted(METHODS)} or 'list' (or {sorted(BENCHMARK_ALIASES)}); "
                         f"got {name!r}")  # fmt: skip
    try:
        return published(name, datamodule)
    except KeyError as error:
        raise DataError(f"{run.folder}: {error.args[0]}") from None


def compare_paper(
    run: Run, method: str, threshold: Optional[str] = None, resamples: int = RESAMPLES
) -> tuple[dict[str, Any], list[str]]:
    """A run beside the published figures of ``method`` on its benchmark; returns the compare.json payload
    and warnings (another selection than the published one; figures not comparable: another recipe).

    Raises:
        UsageError: an unknown method, or the run scored in another threshold mode than the figures.
        DataError: no entry of the method for the run's benchmark, or no scored pair.
    """
    figures = resolve_paper(run, method)
    mode = threshold_mode(run, threshold)
    if mode != figures.threshold_mode:
        raise UsageError(
            f"{run.folder}: scored with threshold {mode!r}, {figures.method}'s figures with "
            f"{figures.threshold_mode!r}; pass --threshold {figures.threshold_mode} to score the run in that mode"
        )
    alphas = figures.alphas
    scores = pair_scores(run.predictions, alphas, threshold)
    if not scores:
        raise DataError(f"{run.folder}: no scored pair (a predict run, or nothing done yet)")
    ids = sorted(scores)
    correct = torch.stack([scores[p].correct for p in ids])
    total = torch.tensor([float(scores[p].total) for p in ids])
    rows = beside_paper(figures, [scores[p].category for p in ids], correct, total, resamples)
    warnings = paper_warnings(run, figures, len(ids))
    changed = recipe_differences(run, figures)
    if changed:
        warnings.append(
            f"{run.folder}: {figures.method}'s figures are not comparable: the run does not follow its recipe "
            f"({figures.recipe or 'none shipped'}): " + "; ".join(changed)
        )
    if not figures.overall:
        warnings.append(f"{figures.method}: no published figure on {figures.title} is recorded ({figures.source})")
    payload = {
        "kind": "paper",
        "method": figures.method,
        "benchmark": figures.datamodule,
        "paper": f"{figures.method}, {figures.title}",
        "citation": figures.citation,
        "source": figures.source,
        "recipe": figures.recipe,
        "comparable": not changed,
        "recipe_differences": changed,
        "run": run.folder,
        "model": run.manifest.model,
        "alphas": alphas,
        "threshold_mode": mode,
        "overall_rule": figures.overall_rule,
        "data": run.data,
        "intervals": interval_method(resamples),
        "warnings": warnings,
        "rows": rows,
    }
    return payload, warnings


def format_published() -> str:
    """The table ``sdcorr compare --paper list`` prints: every recorded published result, one per line block."""
    lines = [f"{'method':<9} {'benchmark':<18} {'threshold':<13} {'averaging':<31} figures (recipe)"]
    for row in published_table():
        figures = ", ".join(f"@{a} {v}" for a, v in row["figures"].items()) or "not recorded"
        lines.append(
            f"{row['method']:<9} {row['datamodule']:<18} {row['threshold_mode']:<13} {row['overall_rule']:<31} "
            f"{figures} ({row['recipe'] or 'no shipped config follows the recipe'})"
        )
        lines.append(f"          {row['citation']}; {row['source']}")
    return "\n".join(lines)


# the outputs, for people
def _interval(row: dict[str, Any], with_sign: bool = False) -> str:
    """``[low, high]`` of a row, or why it has none."""
    if row["low"] is None:  # too few pairs, or enough pairs on too few source images
        return f"(< {MIN_PAIRS} {'source images' if row['pairs'] >= MIN_PAIRS else 'pairs'})"
    low, high = (signed(row["low"]), signed(row["high"])) if with_sign else (f"{row['low']:.1f}", f"{row['high']:.1f}")
    return f"[{low}, {high}]"


def _p_value(p: float) -> str:
    """``p=0.123``, or ``p<0.001`` (1000 resamples cannot resolve less)."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def format_comparison(payload: dict[str, Any]) -> str:
    """The printed table(s) of a compare.json payload: ``category pairs A B B-A [interval] p`` per alpha,
    or, against the paper, ``category alpha pairs run [interval] paper`` with ``*`` on a row outside."""
    if payload["kind"] == "paper":
        return _format_paper(payload)
    blocks = []
    for comparison in payload["comparisons"]:
        for alpha, rows in comparison["rows"].items():
            width = max(len("category"), *(len(r["category"]) for r in rows))
            head = (
                f"PCK@{alpha} per image (%): A = {comparison['a']}, B = {comparison['b']}, "
                f"{comparison['shared_pairs']} shared pairs, {payload['threshold_mode'] or 'threshold as run'}"
            )
            lines = [head, f"{'category':<{width}}  {'pairs':>5}  {'A':>5}  {'B':>5}  B-A [95% interval]"]
            for r in rows:
                interval = f"{signed(r['difference'])} " + _interval(r, with_sign=True)
                lines.append(
                    f"{r['category']:<{width}}  {r['pairs']:>5}  {r['a']:5.1f}  {r['b']:5.1f}  "
                    f"{interval:<22}  {_p_value(r['p_value']) if r['p_value'] is not None else ''}".rstrip()
                )
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _format_paper(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    width = max(len("category"), *(len(r["category"]) for r in rows))
    kind = "per point" if payload["overall_rule"] == POINT_CATEGORY_MEAN else "per image"
    lines = [
        f"{payload['run']} beside {payload['paper']} ({payload['citation']}), PCK {kind} (%), threshold "
        f"{payload['threshold_mode']}; overall: {payload['overall_rule']}"
    ]
    if not payload.get("comparable", True):
        lines.append("published figures NOT comparable: " + "; ".join(payload["recipe_differences"]))
    lines.append(f"{'category':<{width}}  {'alpha':>5}  {'pairs':>5}  {'run':>5}  {'95% interval':<14}  published")
    for r in rows:
        flag, interval = "  *" if r["outside"] else "", _interval(r)
        figure = "    -" if r["paper"] is None else f"{r['paper']:5.1f}"
        lines.append(
            f"{r['category']:<{width}}  {r['alpha']:>5g}  {r['pairs']:>5}  {r['run']:5.1f}  "
            f"{interval:<14}  {figure}{flag}"
        )
    if any(r["paper"] is not None for r in rows):
        lines.append("* the published figure is outside the run's 95% interval")
    else:
        lines.append("- no published figure recorded")
    return "\n".join(lines)


def output_folder(folders: Sequence[str | Path], output_dir: Optional[str | Path] = None) -> Path:
    """Where a comparison goes: ``output_dir``, else ``compare/`` in the second run folder (the only one)."""
    return Path(output_dir) if output_dir else RunFolder(folders[min(1, len(folders) - 1)]).compare_folder
