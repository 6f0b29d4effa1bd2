"""``sdcorr match`` on a bundled pair, and progress output on a terminal and in a pipe."""

import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DEMO, QUICK, REPO, sdcorr, sdcorr_here

pytestmark = pytest.mark.slow  # `sdcorr match` and `sdcorr test` in subprocesses

SOURCE, TARGET = str(DEMO / "0_chelsea_source.jpg"), str(DEMO / "0_chelsea_target.jpg")  # 300 x 200


def translated_windows(folder):
    """The window pair of tests/conftest.py as PNG files: 200 px windows of a photo, the target shifted by
    (40, 30). Returns the two paths, the source points and where they truly are in the target."""
    photo = Image.open(DEMO / "0_chelsea_target.jpg").convert("RGB")  # 320 x 240
    photo.crop((0, 0, 200, 200)).save(folder / "window_a.png")
    photo.crop((40, 30, 240, 230)).save(folder / "window_b.png")
    points = np.array([[80, 70], [120, 90], [160, 150], [100, 140], [150, 80], [130, 160]], dtype=np.float32)
    return folder / "window_a.png", folder / "window_b.png", points, points - np.array([40, 30])


def test_match_writes_points_and_a_picture(tmp_path):
    source, target, points, truth = translated_windows(tmp_path)
    text = " ".join(f"{x:g},{y:g}" for x, y in points)
    out = tmp_path / "out"
    result = sdcorr("match", str(source), str(target), "--points", text, "--config", "configs/smoke.yaml",
                    "--output_dir", str(out))  # fmt: skip
    payload = json.loads((out / "match.json").read_text())
    assert payload["source_keypoints"] == points.tolist()
    predicted = np.array(payload["predicted_keypoints"])
    for x, y in predicted:
        assert 0 <= x <= 200 and 0 <= y <= 200
        assert f"{x:8.1f}, {y:8.1f}" in result.stdout  # printed for the user
    # the matched points, not a constant: most land within PCK@0.1 of the truth (the centre would be 0/6)
    within = np.linalg.norm(predicted - truth, axis=1) <= 0.1 * 200
    assert within.sum() >= 4, np.linalg.norm(predicted - truth, axis=1).round()
    picture = np.asarray(Image.open(out / "match.png").convert("RGB"), dtype=np.float32)
    assert picture.shape[0] > 200 and picture.shape[1] > 2 * 200
    assert picture.std() > 20  # not blank: photos and heatmaps
    # provenance: the tiny random model says so, and the config that made the points is beside them
    assert "random weights of the 'tiny' architecture" in payload["model"]
    assert "CompVis" not in (out / "match.json").read_text()
    assert payload["config"]["source"]["architecture"] == "tiny" and payload["config"]["matcher"]["steps"] == 30
    assert payload["config"]["file"] == "config.yaml" and "architecture: tiny" in (out / "config.yaml").read_text()


def test_match_needs_only_a_model_config(tmp_path):
    """A model config alone (no data section, no trainer section) is enough to match one pair."""
    result = sdcorr("match", SOURCE, TARGET, "--points", "100,80 150,90", "--config", "configs/model/tiny.yaml",
                    "--model.matcher.init_args.steps", "3", "--model.matcher.init_args.locate_crops", "4",
                    "--output_dir", str(tmp_path))  # fmt: skip
    payload = json.loads((tmp_path / "match.json").read_text())
    assert len(payload["predicted_keypoints"]) == 2 and "wrote" in result.stdout
    assert "datamodules." not in (tmp_path / "config.yaml").read_text()  # no datamodule was configured


def test_bad_points_are_refused(tmp_path):
    for points, message in [
        ("114,75 311,90", "point 2 (311, 90) is outside"),
        ("114;75", "cannot read '114'"),
        ("", "no point given"),
    ]:
        result = sdcorr_here("match", SOURCE, TARGET, "--points", points, *QUICK, "--output_dir", str(tmp_path),
                             check=False)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, result.stderr  # a bad option
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "match.json").exists() and not (tmp_path / "config.yaml").exists()  # nothing partial


def run_on_terminal(args, cwd):
    """Run a command with stdout and stderr on a pseudo-terminal; returns everything it printed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, cwd=cwd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=600) == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_quiet_in_a_pipe(tmp_path):
    args = ["test", *QUICK, "--data.init_args.subsample", "2"]
    piped = sdcorr(*args, "--trainer.default_root_dir", str(tmp_path / "piped"), "--progress.warn_hours", "1e-9")
    text = piped.stdout + piped.stderr
    # 11 x 2 restarts x (8 + 4); the demo pairs share no source image, so nothing is reused
    assert "to do: 2 pairs, 11 keypoints, 11 distinct fits, 264 model passes (264 without reuse)" in text
    assert "estimated time for the run" in text
    assert "this run would take about" in text and "--data.init_args.num_shards" in text  # the long-run hint
    assert "passes in pair" not in text and "Testing" not in text  # no bars in a pipe
    shown = run_on_terminal(
        [sys.executable, "-m", "sdcorr.cli.main", *args, "--trainer.default_root_dir", str(tmp_path / "tty")], REPO
    )
    assert "passes in pair" in shown and "Testing" in shown
    assert "estimated time for the run" in shown


def test_the_estimate_weighs_the_passes_the_first_pair_made(monkeypatch):
    """With fits batched by source image the first pair may fit keypoints of later pairs too: the estimate
    divides its time by the passes the matcher reported (a fitting pass counts 3: forward and backward)."""
    from types import SimpleNamespace

    import callbacks.progress as progress

    said, clock = [], iter([100.0, 110.0])
    monkeypatch.setattr(progress, "rank_zero_info", said.append)
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    callback = progress.RunProgress()
    callback._total_work = 1000
    trainer = SimpleNamespace(is_global_zero=True, world_size=1)
    module = SimpleNamespace(device="cpu")  # no matcher: the plan is not asked
    callback.on_test_batch_start(trainer, module, [], 0)  # at 100 s
    for done, total, phase in [(0, 50, "start"), (20, 50, "fit"), (30, 50, "fit"), (50, 50, "locate")]:
        callback.on_match_progress(trainer, module, done, total, phase)
    callback.on_test_batch_end(trainer, module, None, [], 0)  # at 110 s: 10 s for 30 x 3 + 20 = 110 work
    assert said == [
        "estimated time for the run: 1 min 31 s on 1 process(es) "
        "(91 ms per forward model pass on cpu, from the first pair)"
    ]
