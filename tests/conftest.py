"""Shared test helpers: the tiny random Stable Diffusion source, the bundled demo photos, short protocols
and ``sdcorr`` run in a subprocess as a user runs it."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdcorr.images import load_image
from sdcorr.sources.stable_diffusion import StableDiffusionSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datamodules" / "demo_pairs"
#: a short PromptMatcher protocol for the tiny model (the tiny preset of configs/model/tiny.yaml, fewer passes)
FAST = dict(lr=1.0, crop_fraction=0.75, restarts=2, steps=30, locate_crops=6)
#: ``sdcorr test`` options of a short end-to-end run on the demo pairs with the tiny model
QUICK = ["--config", "configs/smoke.yaml", "--model.matcher.init_args.steps", "8",
         "--model.matcher.init_args.locate_crops", "4"]  # fmt: skip


def sdcorr(*args: str, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the ``sdcorr`` command in a subprocess (from the repository root unless ``cwd``); ``check``: fail
    on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "sdcorr.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sdcorr {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def sdcorr_here(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``sdcorr`` command in this process (its ``main``; no interpreter start-up, about 4 s less than
    :func:`sdcorr`), for commands whose every line is printed to stdout or stderr: ``merge``, ``evaluate``,
    ``compare``, ``report`` without ``--draw``, and refusals found before a run starts. Returns what
    :func:`sdcorr` returns; ``check``: fail on a non-zero exit."""
    from sdcorr.cli.main import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit:
            code = exit.code or 0
    result = subprocess.CompletedProcess(["sdcorr", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"sdcorr {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def tiny_source(**kwargs) -> StableDiffusionSource:
    """The tiny random-weight source of ``configs/model/tiny.yaml``; kwargs override."""
    options = dict(architecture="tiny", layers=[0, 1], image_size=48)
    options.update(kwargs)
    return StableDiffusionSource(**options)


@pytest.fixture(scope="session")
def source() -> StableDiffusionSource:
    return tiny_source()


@pytest.fixture(scope="session")
def photo():
    """A real photo, ``[3, 270, 300]`` (the face crop of the demo pairs)."""
    return load_image(DEMO / "2_astronaut_source.jpg")


@pytest.fixture(scope="session")
def window_pair():
    """A 200 px window of a real photo and the same-size window shifted by (40, 30): the translation test.

    Returns ``(source [3, 200, 200], target [3, 200, 200], keypoints [6, 2], their true targets [6, 2])``.
    """
    photo = load_image(DEMO / "0_chelsea_target.jpg")  # [3, 240, 320]
    source, target = photo[:, 0:200, 0:200], photo[:, 30:230, 40:240]
    keypoints = torch.tensor(
        [[80.0, 70.0], [120.0, 90.0], [160.0, 150.0], [100.0, 140.0], [150.0, 80.0], [130.0, 160.0]]
    )
    return source, target, keypoints, keypoints - torch.tensor([40.0, 30.0])
