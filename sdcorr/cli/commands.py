"""``sdcorr merge``, ``evaluate`` and ``report``: work on finished run folders, no model needed.

The use cases behind the commands (their parsers are in :mod:`sdcorr.cli.folders`): each asks
:class:`~sdcorr.runs.folder.RunFolder` and prints for the user.

* ``sdcorr merge OUT SHARD_DIR...`` combines the folders of shard runs (``--data.shard_index``) into
  one run folder and scores it; shards must come from the same run, may not overlap, and missing
  shards or pairs are listed (and refused unless ``--allow_missing``).
* ``sdcorr evaluate RUN_DIR`` scores a run folder again, with other alphas or another of the
  dataset's threshold modes, into ``evaluation.json`` (results.json is left as the run wrote it).
* ``sdcorr report RUN_DIR`` (re)writes the folder's ``index.html`` (see :mod:`sdcorr.pages.index`).
* ``sdcorr compare RUN_A RUN_B ...`` compares runs on their shared pairs, or a run with the paper
  (``--paper METHOD``; ``--paper list`` lists the recorded published results), and writes compare.json,
  .png and .html (see :mod:`sdcorr.runs.compare`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from sdcorr.errors import OutputError, UsageError
from sdcorr.pages.compare import write_comparison
from sdcorr.pages.index import write_report
from sdcorr.runs.compare import (
    Run,
    compare_paper,
    compare_runs,
    format_comparison,
    format_published,
    output_folder,
)
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.results import Results, format_table
from sdcorr.stats.intervals import RESAMPLES
from sdcorr.stats.paper import published_table


def merge(out: str | Path, folders: Sequence[str | Path], allow_missing: bool = False) -> Results:
    """Merge shard run folders into ``out`` and print its table; see :meth:`RunFolder.merge`."""
    results = RunFolder.merge(out, folders, allow_missing)
    if results.incomplete:
        print(f"merge: incomplete: {results.missing}", file=sys.stderr)
    path = RunFolder(out).results_file
    print(f"{format_table(results)}\nmerged {len(folders)} shards: {path}")
    return results


def evaluate(
    folder: str | Path,
    alphas: Optional[Sequence[float]] = None,
    threshold: Optional[str] = None,
    output: Optional[str | Path] = None,
    resamples: int = RESAMPLES,
) -> Results:
    """Score a run folder's predictions again, write ``output`` (default ``<folder>/evaluation.json``) and
    print the table; see :meth:`RunFolder.rescore`.

    Args:
        folder: a run folder (it needs ``run.json`` and predictions).
        alphas: PCK thresholds; default: those of the run.
        threshold: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
        output: where to write the results.
        resamples: bootstrap resamples of the 95% intervals (0: none).
    """
    results, path = RunFolder(folder).rescore(alphas, threshold, output, resamples)
    missing = results.missing_pairs or []
    note = f"\nincomplete run: {len(missing)} pairs not predicted yet" if missing else ""
    print(f"{format_table(results)}{note}\nresults: {path}")
    return results


def report(folder: str | Path, alpha: float = 0.1) -> Path:
    """(Re)write a run folder's ``index.html`` and print its path; see :func:`sdcorr.pages.index.write_report`.

    Raises:
        UsageError: ``alpha`` is not a fraction in (0, 1].
        OutputError: ``folder`` is not a run folder (no ``run.json``): no page is written there.
    """
    if not 0 < alpha <= 1:
        raise UsageError(f"--alpha: expected a PCK fraction in (0, 1] of the reference length; got {alpha:g}")
    if not Path(folder).is_dir():
        raise OutputError(f"{folder}: no such run folder")
    RunFolder(folder).manifest()
    path = write_report(folder, alpha)
    print(path)
    return path


def compare(
    folders: Sequence[str | Path],
    alphas: Optional[Sequence[float]] = None,
    threshold: Optional[str] = None,
    paper: Optional[str] = None,
    output_dir: Optional[str | Path] = None,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Compare runs (or, with ``paper``, one run with the paper), print the warnings (one
    ``compare: warning:`` line each, on stderr) and the table, and write the outputs; see :mod:`sdcorr.runs.compare`.

    Args:
        folders: run folders; each after the first is compared with the first (with ``paper``: one).
        alphas: PCK alphas; default: those all runs scored (with ``paper``: the paper's).
        threshold: score every run in this threshold mode of the dataset; default: as run.
        paper: a method of :data:`sdcorr.stats.paper.METHODS` (``hedlin``, ``dift``, ``dinov2``, ``sd-dino``):
            set the run beside its published figures on the run's benchmark; ``list``: print what is
            recorded (no run folder needed). ``spair``, ``pfwillow``, ``cub``: ``hedlin`` on that benchmark.
        output_dir: where compare.json, .png and .html go; default: ``compare/`` in the second run folder
            (with ``paper``: in the run folder).
        resamples: bootstrap resamples of the intervals and p-values (0: none).

    Returns:
        the content of compare.json.
    """
    if paper == "list":
        print(format_published())
        return {"kind": "published", "rows": published_table()}
    if paper and len(folders) != 1:
        raise UsageError(f"compare --paper: give one run folder; got {len(folders)}")
    if not paper and len(folders) < 2:
        raise UsageError("compare: give at least two run folders (or one with --paper)")
    if resamples < 0:
        raise UsageError(f"--resamples: expected an integer >= 0; got {resamples}")
    seen: dict[Path, str | Path] = {}
    for folder in folders:
        first = seen.setdefault(Path(folder).resolve(), folder)
        if first is not folder:
            raise UsageError(f"compare: {folder} is the same run folder as {first}; every difference would be 0")
    runs = [Run.read(folder) for folder in folders]
    if paper:
        payload, warnings = compare_paper(runs[0], paper, threshold, resamples)
    else:
        payload, warnings = compare_runs(runs, alphas, threshold, resamples)
    for warning in warnings:
        print(f"compare: warning: {warning}", file=sys.stderr)
    table = format_comparison(payload)
    paths = write_comparison(payload, table, output_folder(folders, output_dir))
    print(f"{table}\ncompare: {paths['page']}")
    return payload
