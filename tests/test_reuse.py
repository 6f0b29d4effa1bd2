"""Fit reuse: each distinct (source image, keypoint) is fitted once, from draws that ignore the pair."""

import pytest
import torch

from sdcorr.matchers.prompt import PromptMatcher
from tests.conftest import FAST

OPTIONS = dict(FAST, steps=3, locate_crops=4)


@pytest.fixture(scope="module")
def images(photo):
    """Three different 200 px windows of a photo and a copy of the first (same content, new tensor)."""
    a, b, c = photo[:, 0:200, 0:200], photo[:, 40:240, 60:260], photo[:, 70:270, 100:300]
    return a, b, c, a.clone()


POINTS = torch.tensor([[80.0, 70.0], [120.0, 90.0], [160.0, 150.0]])


def test_a_keypoints_fit_ignores_the_pair_it_came_with(source, images):
    a, b, c, _ = images
    matcher = PromptMatcher(**OPTIONS, fit_cache=0)  # nothing remembered: both pairs compute the fit
    first = matcher.match(source, a, b, POINTS[[0, 1]], seed=(0, "pair-1"), fit_seed=0)
    second = matcher.match(source, a, c, POINTS[[1, 2]], seed=(0, "pair-2"), fit_seed=0)
    # keypoint (120, 90) of image a: bit for bit the same fit, whatever the target and the other keypoints
    assert torch.equal(first.embeddings[1], second.embeddings[0])
    assert not torch.equal(first.embeddings[0], first.embeddings[1])
    other_seed = matcher.match(source, a, b, POINTS[[1]], seed=(0, "pair-1"), fit_seed=1)
    assert not torch.equal(other_seed.embeddings[0], first.embeddings[1])
    # without reuse each pair fits its own, from draws keyed by the pair (the paper code's behaviour)
    off = PromptMatcher(**OPTIONS, reuse_fits=False)
    one = off.match(source, a, b, POINTS[[0, 1]], seed=(0, "pair-1"), fit_seed=0)
    two = off.match(source, a, c, POINTS[[1, 2]], seed=(0, "pair-2"), fit_seed=0)
    assert not torch.equal(one.embeddings[1], two.embeddings[0])


def test_reuse_fits_each_distinct_keypoint_once_and_changes_nothing_else(source, images):
    a, b, c, a_copy = images
    pairs = [  # (source, target, keypoints): 8 keypoints, 5 distinct (image a: 3, image b: 2)
        (a, b, POINTS[[0, 1]]),
        (a, c, POINTS[[1, 2]]),
        (a_copy, b, POINTS[[0]]),  # same content as a: fitted already
        (b, a, POINTS[[0, 1]]),
        (b, c, POINTS[[1]]),
    ]
    remembered, refitted = PromptMatcher(**OPTIONS), PromptMatcher(**OPTIONS, fit_cache=0)
    for i, (src, trg, points) in enumerate(pairs):
        kept = remembered.match(source, src, trg, points, seed=(0, i), fit_seed=0)
        fresh = refitted.match(source, src, trg, points, seed=(0, i), fit_seed=0)
        assert torch.equal(kept.embeddings, fresh.embeddings)
        assert torch.equal(kept.heatmaps, fresh.heatmaps) and torch.equal(kept.keypoints, fresh.keypoints)
    assert remembered.counts == {"fits": 5, "reused_fits": 3}
    assert refitted.counts == {"fits": 8, "reused_fits": 0}


def test_a_keypoint_repeated_in_one_pair_is_fitted_once(source, images):
    a, b, _, _ = images
    matcher = PromptMatcher(**OPTIONS)
    result = matcher.match(source, a, b, POINTS[[0, 0, 1]], fit_seed=0)
    assert matcher.counts == {"fits": 2, "reused_fits": 1}
    assert torch.equal(result.embeddings[0], result.embeddings[1])


def test_the_fit_store_forgets_the_least_recently_used(source, images):
    a, b, _, _ = images
    matcher = PromptMatcher(**OPTIONS, fit_cache=2)
    for points in (POINTS[[0]], POINTS[[1]], POINTS[[2]], POINTS[[0]]):  # (80, 70) was pushed out by the third
        matcher.match(source, a, b, points, fit_seed=0)
    assert matcher.counts == {"fits": 4, "reused_fits": 0}
    matcher.match(source, a, b, POINTS[[0, 2]], fit_seed=0)
    assert matcher.counts == {"fits": 4, "reused_fits": 2}


def test_remembered_crop_latents_are_exactly_fresh_ones(source, images):
    """Crops are encoded one at a time, so a latent remembered from another pair is the fresh latent."""
    a, b, _, _ = images
    warm = PromptMatcher(**OPTIONS)
    warm.match(source, a, b, POINTS[[2]], fit_seed=0)  # fills the crop store with crops of a and b
    cold = PromptMatcher(**OPTIONS)
    misses = warm._latents.misses
    after_warm = warm.match(source, a, b, POINTS[[0]], seed="p", fit_seed=0)
    after_nothing = cold.match(source, a, b, POINTS[[0]], seed="p", fit_seed=0)
    assert warm._latents.misses - misses < cold._latents.misses  # fewer encodes: latents of the first pair served
    assert torch.equal(after_warm.embeddings, after_nothing.embeddings)
    assert torch.equal(after_warm.heatmaps, after_nothing.heatmaps)


def test_a_fit_and_a_latent_are_computed_the_same_way_whatever_else_is_pending(source, images, monkeypatch):
    """Why a remembered result is bit-identical to a recomputed one on any device: under reuse a keypoint's
    restarts are never batched with another keypoint's, and every crop is encoded alone."""
    a, b, _, _ = images
    matcher = PromptMatcher(**dict(OPTIONS, max_batch=10))  # room for all 3 keypoints x 2 restarts in one call
    chunks, batches = [], []
    fit_chunk, encode = matcher._fit_chunk, source.encode
    monkeypatch.setattr(matcher, "_fit_chunk", lambda *args: chunks.append(args[3]) or fit_chunk(*args))
    monkeypatch.setattr(source, "encode", lambda crops: batches.append(len(crops)) or encode(crops))
    matcher.match(source, a, b, POINTS, fit_seed=0)
    assert sorted({k for k, _ in chunk} for chunk in chunks) == [{0}, {1}, {2}]
    assert batches and set(batches) == {1}
