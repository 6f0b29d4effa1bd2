"""The times the README and docs promise, measured again: each documented command run, its time beside the
documented one, and the machine it ran on.

Every entry of :data:`TIMES` names the command, the file that promises a time for it and the words of
that promise. The script first checks that each promise is still written where it says (so this list
and the docs cannot drift apart silently), then runs the commands one after another in a scratch folder
and prints a table::

    python benchmarks/doc_times.py                      # the sdcorr commands (about a minute on our CPU)
    python benchmarks/doc_times.py --suites             # also both test commands (about 15 minutes)
    python benchmarks/doc_times.py --only smoke --json times.json
    python benchmarks/doc_times.py --check-docs         # only check that the promises are still written

Refresh a promise by editing the doc with the measured figure and the machine this prints; the
figures of ``benchmarks/reuse.py``, ``speed.py`` and ``gpu_check.py`` are refreshed by running those
(see docs/method.md, "Measured where"). Times depend on the load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SDCORR = [sys.executable, "-m", "sdcorr.cli.main"]
DEMO = "datamodules/demo_pairs"


@dataclass(frozen=True)
class Promise:
    """A documented time.

    Attributes:
        name: short name (``--only``).
        command: the command, run from a scratch folder; ``{out}`` is replaced by a fresh folder in it.
        file: the doc that promises the time (relative to the repository).
        words: the promise as written there (checked to be present, verbatim).
        seconds: the promised time in seconds, for the table's ratio (the upper end of a range).
        suite: a test command (run only with ``--suites``), run from the repository.
    """

    name: str
    command: list[str]
    file: str
    words: str
    seconds: float
    suite: bool = False


TIMES = [
    Promise("smoke", [*SDCORR, "test", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", "{out}"],
            "docs/getting-started.md", "about 18 s on our 2-core CPU", 18),
    Promise("first-hour demo, tiny", [*SDCORR, "test", "--config", "configs/demo.yaml", "--config",
            "configs/model/tiny.yaml", "--config", "configs/protocol/quick.yaml",
            "--trainer.default_root_dir", "{out}"],
            "docs/getting-started.md", "the demo then takes about 12 s on our 2-core CPU", 12),
    Promise("match, tiny", [*SDCORR, "match", f"{DEMO}/0_chelsea_source.jpg", f"{DEMO}/0_chelsea_target.jpg",
            "--points", "120,85 200,90", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", "{out}"],
            "README.md", "10 to 20 s per command on our 2-core CPU", 20),
    Promise("plan, smoke", [*SDCORR, "plan", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", "{out}"],
            "README.md", "10 to 20 s per command on our 2-core CPU", 20),
    Promise("tests, quick loop", [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"],
            "README.md", "(about 2.5 minutes", 150, suite=True),
    Promise("tests, all", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            "README.md", "about 13 minutes on our 2-core machine", 13 * 60, suite=True),
]  # fmt: skip


def machine() -> str:
    """This machine in words: CPU model and cores, torch's threads, and the GPU if torch sees one."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    words = f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        words += f", GPU {torch.cuda.get_device_name(0)}"
    return words


def missing_promises(times: list[Promise] = TIMES) -> list[str]:
    """The promises no longer written where :data:`TIMES` says (``file: words``); empty when all are."""
    return [f"{p.file}: {p.words!r}" for p in times if p.words not in (REPO / p.file).read_text()]


def measure(promise: Promise, scratch: Path) -> dict:
    """Run one documented command and time it; returns the table row as a dict."""
    out = scratch / promise.name.replace(" ", "_").replace(",", "")
    command = [part.replace("{out}", str(out)) for part in promise.command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO if promise.suite else scratch, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] if result.returncode else []
    return {
        "name": promise.name,
        "file": promise.file,
        "documented": promise.words,
        "documented_seconds": promise.seconds,
        "measured_seconds": round(seconds, 1),
        "exit_code": result.returncode,
        "error": tail[0] if tail else None,
    }


def table(rows: list[dict], where: str) -> str:
    """The rows as a markdown table, with the machine below it."""
    lines = ["| command | documented | where | measured | ratio |", "|---|---|---|---|---|"]
    for row in rows:
        ratio = row["measured_seconds"] / row["documented_seconds"]
        failed = f" (exit {row['exit_code']}: {row['error']})" if row["exit_code"] else ""
        lines.append(
            f"| {row['name']} | {row['documented']} | {row['file']} | {row['measured_seconds']:.1f} s{failed} "
            f"| {ratio:.2f}x |"
        )
    return "\n".join(lines) + f"\n\nmeasured on: {where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", action="append", default=[], help="run only this entry (repeatable)")
    parser.add_argument("--suites", action="store_true", help="also time both test commands (about 15 minutes)")
    parser.add_argument("--check-docs", action="store_true", help="only check that every promise is still written")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    options = parser.parse_args(argv)
    missing = missing_promises()
    if missing:
        print("doc_times: these promises are no longer in their docs; update TIMES:\n  " + "\n  ".join(missing))
        return 1
    if options.check_docs:
        print(f"doc_times: all {len(TIMES)} promises are written where TIMES says")
        return 0
    unknown = set(options.only) - {p.name for p in TIMES}
    if unknown:
        parser.error(f"unknown entries {sorted(unknown)}; known: {[p.name for p in TIMES]}")
    if options.only:
        chosen = [p for p in TIMES if p.name in options.only]
    else:
        chosen = [p for p in TIMES if options.suites or not p.suite]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdcorr-doc-times-") as scratch:
        for promise in chosen:
            print(f"doc_times: running {promise.name} ...", file=sys.stderr, flush=True)
            rows.append(measure(promise, Path(scratch)))
    where = machine()
    print(table(rows, where))
    if options.json is not None:
        options.json.write_text(json.dumps({"machine": where, "rows": rows}, indent=2) + "\n")
    return 1 if any(row["exit_code"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
