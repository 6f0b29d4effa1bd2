"""benchmarks/speed.py keeps running (figures are printed, never asserted) and its parity check holds."""

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
