"""``sdcorr merge`` and ``sdcorr evaluate``: work on finished run folders, no model needed.

* ``sdcorr merge OUT SHARD_DIR...`` combines the folders of shard runs (``--data.shard_index``) into
  one run folder and scores it; shards must come from the same run, may not overlap, and missing
  shards or pairs are listed (and refused unless ``--allow_missing``).
* ``sdcorr evaluate RUN_DIR`` scores a run folder again, with other alphas or another of the
  dataset's threshold modes, into ``evaluation.json`` (results.json is left as the run wrote it).
* ``sdcorr report RUN_DIR`` (re)writes the folder's ``index.html`` (see :mod:`sdcorr.report`).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ArgumentParser

from sdcorr.errors import OutputError
from sdcorr.evaluate import PREDICTION_FILES, read_predictions, results_payload
from sdcorr.report import write_report
from sdcorr.results import format_table
from sdcorr.runfolder import MANIFEST, RESULTS, differences, read_manifest, write_json


def _manifest(folder: Path) -> dict[str, Any]:
    manifest = read_manifest(folder)
    if manifest is None:
        raise OutputError(f"{folder}: no {MANIFEST}; not a run folder written by `sdcorr test` or `sdcorr predict`")
    return manifest


def _shardless(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint without what differs between shards of one run."""
    fingerprint = copy.deepcopy(manifest["fingerprint"])
    for key in ("shard", "num_pairs"):
        (fingerprint.get("data") or {}).pop(key, None)
    return fingerprint


def _listing(ids: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(map(repr, ids[:limit])) + more


def merge(out: str | Path, folders: Sequence[str | Path], allow_missing: bool = False) -> dict[str, Any]:
    """Merge shard run folders into ``out`` (predictions, run.json, results.json); returns the results.

    With ``allow_missing``, results.json says what is missing: ``incomplete: true``, ``missing`` (in
    words), ``missing_shards`` and ``missing_pairs`` (the unfinished pairs of the shards given; the
    pairs of a shard not given are unknown, since only its own run.json lists them).

    Raises:
        OutputError: folders of different runs, a shard given twice, pairs predicted by two shards,
            missing shards or pairs (unless ``allow_missing``), or an ``out`` that already holds a run.
    """
    out, folders = Path(out), [Path(f) for f in folders]
    if not folders:
        raise OutputError("merge: give at least one shard folder")
    manifests = [_manifest(f) for f in folders]
    first = manifests[0]
    shards: dict[int, Path] = {}
    for folder, manifest in zip(folders, manifests):
        changed = differences(_shardless(first), _shardless(manifest))
        if changed:
            raise OutputError(f"{folder}: not a shard of the same run as {folders[0]}:\n  " + "\n  ".join(changed[:12]))
        index, count = manifest["fingerprint"]["data"]["shard"]
        if index in shards:
            raise OutputError(f"{folder}: shard {index}/{count} is also {shards[index]}; give each shard once")
        shards[index] = folder
    count = first["fingerprint"]["data"]["shard"][1]
    records, owner = [], {}
    for folder in folders:
        for record in read_predictions(folder):
            if record["pair_id"] in owner:
                raise OutputError(
                    f"{folder}: pair {record['pair_id']!r} is also predicted in {owner[record['pair_id']]}; "
                    "shards must not overlap"
                )
            owner[record["pair_id"]] = folder
            records.append(record)
    expected = sorted({pair for manifest in manifests for pair in manifest["pair_ids"]})
    missing = sorted(set(expected) - set(owner))
    missing_shards = sorted(set(range(count)) - set(shards))
    problems = []
    if missing_shards:
        problems.append(f"shards {missing_shards} of {count} were not given")
    if missing:
        problems.append(f"{len(missing)} pairs have no prediction: {_listing(missing)}")
    if problems and not allow_missing:
        raise OutputError("merge: " + "; ".join(problems) + " (finish those runs, or pass --allow_missing)")
    if out.exists() and (any(out.glob(PREDICTION_FILES)) or (out / MANIFEST).exists()):
        raise OutputError(f"{out}: already holds a run; merge into a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions.jsonl", "w") as handle:
            for record in sorted(records, key=lambda r: r["pair_id"]):
                handle.write(json.dumps(record, allow_nan=False) + "\n")
    except OSError as error:
        raise OutputError(f"{out}: cannot write ({error})") from error
    manifest = copy.deepcopy(first)
    manifest["fingerprint"]["data"].update(shard=[0, 1], num_pairs=len(expected))
    manifest["pair_ids"] = expected
    manifest["merged_from"] = [str(f) for f in folders]
    write_json(out / MANIFEST, manifest)
    payload = results_payload(records, manifest)
    if problems:
        # a shard's pairs are listed only in its own run.json: those of a shard not given are unknown here
        unknown = f"; the pairs of shards {missing_shards} are not listed (their run.json was not given)"
        summary = "; ".join(problems) + (unknown if missing_shards else "")
        payload.update(incomplete=True, missing=summary, missing_pairs=missing, missing_shards=missing_shards)
        print(f"merge: incomplete: {summary}", file=sys.stderr)
    write_json(out / RESULTS, payload)
    print(f"{format_table(payload, payload['alphas'])}\nmerged {len(folders)} shards: {out / RESULTS}")
    return payload


def evaluate(
    folder: str | Path,
    alphas: Optional[Sequence[float]] = None,
    threshold: Optional[str] = None,
    output: Optional[str | Path] = None,
) -> dict[str, Any]:
    """Score a run folder's predictions again and write ``output`` (default ``<folder>/evaluation.json``).

    Args:
        folder: a run folder (it needs ``run.json`` and predictions).
        alphas: PCK thresholds; default: those of the run.
        threshold: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
        output: where to write the results.
    """
    folder = Path(folder)
    manifest = _manifest(folder)
    records = read_predictions(folder)
    payload = results_payload(records, manifest, alphas, threshold)
    missing = sorted(set(manifest["pair_ids"]) - {r["pair_id"] for r in records})
    if missing:
        payload.update(incomplete=True, missing_pairs=missing)
    path = Path(output) if output else folder / "evaluation.json"
    write_json(path, payload)
    note = f"\nincomplete run: {len(missing)} pairs not predicted yet" if missing else ""
    print(f"{format_table(payload, payload['alphas'])}{note}\nresults: {path}")
    return payload


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
        print(write_report(options.folder, options.alpha))
