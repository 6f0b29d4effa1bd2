"""Shared fixtures: a tiny random Stable Diffusion source and the bundled demo photos."""

from __future__ import annotations

from pathlib import Path

import pytest

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
