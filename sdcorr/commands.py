"""``sdcorr merge``, ``evaluate`` and ``report``: work on finished run folders, no model needed.

The use cases behind the commands (their parsers are in :mod:`sdcorr.cli`): each asks
:class:`~sdcorr.runfolder.RunFolder` and prints for the user.

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

from sdcorr.errors import OutputError
from sdcorr.intervals import RESAMPLES
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
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Score a run folder's predictions again, write ``output`` (default ``<folder>/evaluation.json``) and
    print the table; see :meth:`RunFolder.rescore`.

    Args:
        folder: a run folder (it needs ``run.json`` and predictions).
        alphas: PCK thresholds; default: those of the run.
        threshold: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
        output: where to write the results.
        resamples: bootstrap resamples of the 95% intervals (0: none).
    """
    payload, path = RunFolder(folder).rescore(alphas, threshold, output, resamples)
    missing = payload.get("missing_pairs") or []
    note = f"\nincomplete run: {len(missing)} pairs not predicted yet" if missing else ""
    print(f"{format_table(payload, payload['alphas'])}{note}\nresults: {path}")
    return payload


def report(folder: str | Path, alpha: float = 0.1) -> Path:
    """(Re)write a run folder's ``index.html`` and print its path; see :func:`sdcorr.report.write_report`."""
    if not Path(folder).is_dir():
        raise OutputError(f"{folder}: no such run folder")
    path = write_report(folder, alpha)
    print(path)
    return path
