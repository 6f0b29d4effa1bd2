"""The benchmark scripts keep running (figures are printed, never asserted) and their parity checks hold."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the benchmark scripts in subprocesses


def test_speed_benchmark_runs_on_the_tiny_model():
    result = subprocess.run(
        [sys.executable, "benchmarks/speed.py", "--architecture", "tiny", "--keypoints", "1", "--steps", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("| reference |") for line in lines) and any(
        line.startswith("| fast |") for line in lines
    )
    assert "identical predictions: True" in result.stdout


def test_reuse_benchmark_counts_passes_on_the_spair_shaped_list():
    result = subprocess.run(
        [sys.executable, "benchmarks/reuse.py", "--skip-run"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "481 images, 18 categories" in result.stdout and "fewer with reuse" in result.stdout


def test_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    """The CPU path of benchmarks/gpu_check.py (tiny model): every section's rows and JSON keys, parity, no litter."""
    cwd, output = tmp_path / "cwd", tmp_path / "out" / "check.json"
    cwd.mkdir()
    # compile is left out here (inductor takes 30-50 s on 2 cores): tests/test_source.py compares compiled and
    # plain maps, and off CUDA gpu_check runs compile only when named
    sections = "modes,memory,chunking,end_to_end"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--sections", sections,
         "--budget", "600", "--output", str(output)],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []  # the JSON went where --output said, the stand-in to a temporary folder
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in sections.split(","):
            rows[cells[0], cells[1]] = cells[2:]
    expected = [
        ("modes", "reference, float32: keypoints/s"),
        *[("modes", f"fast, {name}: keypoints/s") for name in ("float32", "bf16", "fp16")],
        *[("memory", f"{phase}, {name}: {what}") for phase in ("fit", "locate") for name in ("float32", "bf16")
          for what in ("GiB per item", "largest batch")],
        ("memory", "max_batch auto: starting batch"),
        ("chunking", "per-keypoint chunks (reuse_fits): fitting passes/s"),
        ("chunking", "mixed chunks (reuse_fits=False): fitting passes/s"),
        ("chunking", "mixed / per-keypoint"),
        ("end_to_end", "s per pair (stand-in, after the first)"),
        ("end_to_end", "ms per model pass"),
        ("end_to_end", "PROJECTION: SPair-71k test, hours"),
    ]  # fmt: skip
    assert sorted(rows) == sorted(expected), result.stdout
    # the same draws in float32: the fast mode predicts exactly what the reference predicts
    assert rows["modes", "fast, float32: keypoints/s"][1] == "identical"
    assert {rows["modes", f"fast, {name}: keypoints/s"][1] for name in ("bf16", "fp16")} <= {
        "identical", "agree", "differ"
    }  # fmt: skip
    assert rows["memory", "fit, float32: largest batch"][0] == "n/a (off CUDA)"

    report = json.loads(output.read_text())
    assert report["machine"]["architecture"] == "tiny" and report["machine"]["image_size"] == 48
    sections = report["sections"]
    assert list(sections) == ["modes", "memory", "chunking", "end_to_end", "compile"]
    assert "not among --sections" in sections.pop("compile")["skipped"]  # recorded as not measured, never dropped
    assert not [name for name, section in sections.items() if "error" in section or "skipped" in section]
    assert [(row["mode"], row["precision"]) for row in sections["modes"]["rows"]] == [
        ("reference", "32"), ("fast", "32"), ("fast", "bf16"), ("fast", "fp16")
    ]  # fmt: skip
    assert sections["modes"]["rows"][1]["parity"] == "identical"
    assert {"assumed_bytes_per_item", "auto_start", "rows"} <= set(sections["memory"])
    assert {"bytes_per_item", "fixed_bytes", "largest_batch_extrapolated"} <= set(sections["memory"]["rows"][0])
    assert sections["memory"]["assumed_bytes_per_item"] == 2 * 2**30 * (48 / 512) ** 2
    # chunking: per keypoint, a call holds one keypoint's restarts (2); mixed, all 4 keypoints x 2 restarts at once
    assert sections["chunking"]["per_keypoint"]["chunks"] == [2, 2, 2, 2]
    assert sections["chunking"]["mixed"]["chunks"] == [8]
    e2e = sections["end_to_end"]
    assert e2e["pairs"] == 4 and sum(e2e["passes"]) == 160  # what `sdcorr plan` counts for the stand-in
    assert {"seconds_per_pass", "seconds_per_pair", "projection_spair_hours"} <= set(e2e)
    assert e2e["spair"]["passes"] == 12.1e6


def test_doc_times_finds_every_promise_and_times_a_command(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import doc_times
    finally:
        sys.path.pop(0)
    assert doc_times.missing_promises() == []
    moved = [doc_times.Promise("x", [], "README.md", "a promise nobody wrote", 1)]
    assert doc_times.missing_promises(moved) == ["README.md: 'a promise nobody wrote'"]
    assert doc_times.main(["--only", "plan, smoke", "--json", str(tmp_path / "times.json")]) == 0
    (row,) = json.loads((tmp_path / "times.json").read_text())["rows"]
    assert row["name"] == "plan, smoke" and row["exit_code"] == 0 and row["measured_seconds"] > 0
