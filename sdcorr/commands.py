"""``sdcorr merge`` and ``sdcorr evaluate``: work on finished run folders, no model needed.

* ``sdcorr merge OUT SHARD_DIR...`` combines the folders of shard runs (``--data.shard_index``) into
  one run folder and scores it; shards must come from the same run, may not overlap, and missing
  shards or pairs are listed (and refused unless ``--allow_missing``).
* ``sdcorr evaluate RUN_DIR`` scores a run folder again, with other alphas or another of the
  dataset's threshold modes, into ``evaluation.json`` (results.json is left as the run wrote it).
* ``sdcorr report RUN_DIR`` (re)writes the folder's ``index.html`` (see :mod:`sdcorr.report`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ArgumentParser

from sdcorr.report import write_report
from sdcorr.runfolder import RunFolder
from sdcorr.scoring import format_table


def merge(out: str | Path, folders: Sequence[str | Path], allow_missing: bool = False) -> dict[str, Any]:
    """Merge shard run folders into ``out`` and print its table; see :meth:`RunFolder.merge`."""
    payload = RunFolder.merge(out, folders, allow_missing)
    if payload.get("incomplete"):
        print(f"merge: incomplete: {payload['missing']}", file=sys.stderr)
    path = RunFolder(out).results_file
    print(f"{format_table(payload, payload['alphas'])}\nmerged {len(folders)} shards: {path}")
    return payload


def evaluate(
    folder: str | Path,
    alphas: Optional[Sequence[float]] = None,
    threshold: Optional[str] = None,
    output: Optional[str | Path] = None,
) -> dict[str, Any]:
    """Score a run folder's predictions again, write ``output`` (default ``<folder>/evaluation.json``) and
    print the table; see :meth:`RunFolder.rescore`.

    Args:
        folder: a run folder (it needs ``run.json`` and predictions).
        alphas: PCK thresholds; default: those of the run.
        threshold: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
        output: where to write the results.
    """
    payload, path = RunFolder(folder).rescore(alphas, threshold, output)
    missing = payload.get("missing_pairs") or []
    note = f"\nincomplete run: {len(missing)} pairs not predicted yet" if missing else ""
    print(f"{format_table(payload, payload['alphas'])}{note}\nresults: {path}")
    return payload


def report(folder: str | Path, alpha: float = 0.1) -> Path:
    """(Re)write a run folder's ``index.html`` and print its path; see :func:`sdcorr.report.write_report`."""
    path = write_report(folder, alpha)
    print(path)
    return path


def main(args: Sequence[str]) -> None:
    """Run ``merge`` or ``evaluate`` with command-line ``args`` (the subcommand first)."""
    parser = ArgumentParser(prog="sdcorr", description=__doc__)
    commands = parser.add_subcommands()
    merging = ArgumentParser(description="Merge shard run folders into one and score it.")
    merging.add_argument("out", type=str, help="new folder for the merged run")
    merging.add_argument("folders", type=str, nargs="+", help="the shard run folders")
    merging.add_argument("--allow_missing", type=bool, default=False, help="merge even if shards or pairs are missing")
    commands.add_subcommand("merge", merging, help="merge shard run folders")
    scoring = ArgumentParser(description="Score a run folder again (other alphas or threshold mode).")
    scoring.add_argument("folder", type=str, help="the run folder")
    scoring.add_argument("--alphas", type=Optional[list[float]], default=None, help="PCK alphas; default: the run's")
    scoring.add_argument("--threshold", type=Optional[str], default=None, help="threshold mode; default: as run")
    scoring.add_argument("--output", type=Optional[str], default=None, help="default: FOLDER/evaluation.json")
    commands.add_subcommand("evaluate", scoring, help="score a run folder again")
    reporting = ArgumentParser(description="Write index.html (tables, histogram, pictures) for a run folder.")
    reporting.add_argument("folder", type=str, help="the run folder")
    reporting.add_argument("--alpha", type=float, default=0.1, help="PCK threshold of the histogram")
    commands.add_subcommand("report", reporting, help="write a run folder's index.html")
    config = parser.parse_args(list(args))
    options = config[config.subcommand]
    if config.subcommand == "merge":
        merge(options.out, options.folders, options.allow_missing)
    elif config.subcommand == "evaluate":
        evaluate(options.folder, options.alphas, options.threshold, options.output)
    else:
        report(options.folder, options.alpha)
