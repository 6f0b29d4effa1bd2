"""Shared fixtures: a tiny random Stable Diffusion source and the bundled demo photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.base import load_image
from sdcorr.sources.stable_diffusion import StableDiffusionSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datamodules" / "demo_pairs"


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
