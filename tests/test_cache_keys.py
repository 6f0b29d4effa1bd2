"""The matcher's stores (crop latents, fits) are keyed by the source's identity: its weights and settings.

Never by nothing (one matcher used with two models) and never by ``id()`` (a freed source's id goes to
the next object built).
"""

import gc

import pytest
import torch

from sdcorr.matchers import prompt
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.sources.dinov2 import Dinov2Source
from tests.conftest import FAST, tiny_source

OPTIONS = dict(FAST, steps=3, locate_crops=4)
POINTS = torch.tensor([[80.0, 70.0], [120.0, 90.0]])


@pytest.fixture(scope="module")
def pair(photo):
    """Two different 200 px windows of a photo."""
    return photo[:, 0:200, 0:200], photo[:, 40:240, 60:260]


def alone(source, pair):
    """What ``source`` predicts on ``pair`` with a fresh matcher (nothing remembered), and that matcher."""
    matcher = PromptMatcher(**OPTIONS)
    return matcher.match(source, *pair, POINTS, seed="p", fit_seed=0), matcher


def assert_same(a, b):
    for name in ("keypoints", "heatmaps", "layer_keypoints", "embeddings"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_one_matcher_used_with_two_models_gives_each_its_own_results(pair):
    first, second = tiny_source(init_seed=0), tiny_source(init_seed=1)  # differ only in their weights
    shared = PromptMatcher(**OPTIONS)  # fast mode: crop store and fit store on
    assert shared.mode == "fast" and shared.crop_cache and shared.reuse_fits and shared.fit_cache
    for source in (first, second):
        misses = shared._latents.misses
        result = shared.match(source, *pair, POINTS, seed="p", fit_seed=0)
        reference, fresh = alone(source, pair)
        assert_same(result, reference)
        assert shared._latents.misses - misses == fresh._latents.misses  # encoded all its own crops
    assert shared.counts == {"fits": 4, "reused_fits": 0}


def test_a_rebuilt_source_never_sees_the_fits_of_a_freed_one(pair, monkeypatch):
    # every object gets the same id(), as a freed source's id may go to the next one built: the stores
    # must not care (they keyed fits by id(source) once)
    monkeypatch.setattr(prompt, "id", lambda obj: 1, raising=False)
    matcher = PromptMatcher(**OPTIONS)
    first = tiny_source(init_seed=0)
    matcher.match(first, *pair, POINTS, seed="p", fit_seed=0)
    del first
    gc.collect()
    second = tiny_source(init_seed=1)
    assert matcher.pending_fits(second, matcher.fit_keys(pair[0], POINTS, 0)) == len(POINTS)
    result = matcher.match(second, *pair, POINTS, seed="p", fit_seed=0)
    assert matcher.counts == {"fits": 4, "reused_fits": 0}  # nothing served from the first source's fits
    assert_same(result, alone(second, pair)[0])


def test_a_source_rebuilt_with_the_same_weights_and_settings_reuses_fits_and_crops(pair):
    matcher = PromptMatcher(**OPTIONS)
    first = matcher.match(tiny_source(), *pair, POINTS, seed="p", fit_seed=0)
    misses = matcher._latents.misses
    again = matcher.match(tiny_source(), *pair, POINTS, seed="p", fit_seed=0)
    assert matcher.counts == {"fits": 2, "reused_fits": 2}
    assert matcher._latents.misses == misses  # every crop of the pair was encoded by the first build
    assert_same(first, again)


def test_identity_names_the_weights_the_settings_and_the_dtype():
    base = tiny_source()
    assert base.identity == tiny_source().identity  # same weights and settings, another object
    assert base.identity == base.identity
    for other in (
        tiny_source(init_seed=1),
        tiny_source(layers=[0]),
        tiny_source(noise="gaussian"),
        tiny_source(token_index=2),
        tiny_source(image_size=64),
        tiny_source(early_exit=False),  # only speed, but the key names every argument
    ):
        assert other.identity != base.identity
    moved = tiny_source()
    moved.to(torch.float64)  # float64 weights encode other latents than float32 ones
    assert moved.identity != base.identity
    moved.to(torch.float16).to(torch.float32)  # back to float32, but the weights were rounded on the way
    assert moved.identity != base.identity


def test_dense_sources_have_an_identity_too():
    plain = Dinov2Source(architecture="tiny", image_size=64)
    assert plain.identity == Dinov2Source(architecture="tiny", image_size=64).identity
    assert plain.identity != Dinov2Source(architecture="tiny", image_size=64, init_seed=1).identity
    assert plain.identity != Dinov2Source(architecture="tiny", image_size=64, stride=4).identity
