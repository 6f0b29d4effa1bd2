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
    """Why a remembered result is bit-identical to a recomputed one on any device: under reuse, without the
    image's keypoints (``group_keypoints``), a keypoint's restarts are never batched with another keypoint's
    (with them, see below), and every crop is encoded alone."""
    a, b, _, _ = images
    matcher = PromptMatcher(**dict(OPTIONS, max_batch=10))  # room for all 3 keypoints x 2 restarts in one call
    chunks, batches = [], []
    fit_chunk, encode = matcher._fit_chunk, source.encode
    monkeypatch.setattr(matcher, "_fit_chunk", lambda *args: chunks.append(args[3]) or fit_chunk(*args))
    monkeypatch.setattr(source, "encode", lambda crops: batches.append(len(crops)) or encode(crops))
    matcher.match(source, a, b, POINTS, fit_seed=0)
    assert sorted({k for k, _ in chunk} for chunk in chunks) == [{0}, {1}, {2}]
    assert batches and set(batches) == {1}


# ---------------------------------------------------------------- fits batched by source image

#: image a's keypoints over a run's pairs (the group), and three pairs of a that need some of them
GROUP_POINTS = torch.tensor([[80.0, 70.0], [120.0, 90.0], [160.0, 150.0], [100.0, 140.0], [150.0, 80.0]])
GROUP_PAIRS = [[1, 3], [0, 1, 4], [2, 3]]
BATCHED = dict(OPTIONS, steps=2, locate_crops=1, max_batch=4)  # 2 restarts: chunks of 2 whole keypoints


def spy_chunks(matcher, monkeypatch) -> list[list[tuple[float, float]]]:
    """Record each fitting call's keypoints (working pixels), one per item."""
    calls, fit_chunk = [], matcher._fit_chunk
    monkeypatch.setattr(
        matcher,
        "_fit_chunk",
        lambda source, encoder, points, items, *rest: (
            calls.append([tuple(points[u].tolist()) for u, _ in items])
            or fit_chunk(source, encoder, points, items, *rest)
        ),
    )
    return calls


def run_pairs(matcher, source, images, order, **kwargs):
    a, b, c, _ = images
    return {
        i: matcher.match(source, a, (b, c)[i % 2], GROUP_POINTS[GROUP_PAIRS[i]], seed=(0, i), fit_seed=0, **kwargs)
        for i in order
    }


def test_batching_by_source_image_agrees_with_batching_by_keypoint(source, images, monkeypatch):
    by_image = PromptMatcher(**BATCHED)  # fit_batching="source_image", the default
    by_keypoint = PromptMatcher(**BATCHED, fit_batching="keypoint")
    calls = [spy_chunks(m, monkeypatch) for m in (by_image, by_keypoint)]
    image_results = run_pairs(by_image, source, images, range(3), group_keypoints=GROUP_POINTS)
    keypoint_results = run_pairs(by_keypoint, source, images, range(3), group_keypoints=GROUP_POINTS)
    # the same fits up to float rounding (items are independent), so the same predictions here
    for i in range(3):
        torch.testing.assert_close(image_results[i].embeddings, keypoint_results[i].embeddings, rtol=0, atol=1e-3)
        assert torch.equal(image_results[i].keypoints, keypoint_results[i].keypoints)
    # each of the 5 distinct keypoints fitted once either way, in 3 calls of whole keypoints instead of 5;
    # by image, the first pair's chunks hold 2 keypoints that later pairs find remembered
    assert by_image.counts == {"fits": 5, "reused_fits": 4} and by_keypoint.counts == {"fits": 5, "reused_fits": 2}
    scale = 48 / 200  # working pixels of the tiny model
    sorted_points = sorted(tuple((p * scale).tolist()) for p in GROUP_POINTS)
    expected = [[p, p, q, q] for p, q in zip(sorted_points[::2], sorted_points[1::2])] + [[sorted_points[4]] * 2]
    assert sorted(calls[0]) == sorted(expected)  # sorted by fit key (x, y), 2 keypoints x 2 restarts a call
    assert sorted(calls[1]) == sorted([[p, p] for p in sorted_points])


def test_chunks_of_a_source_image_do_not_depend_on_the_pairs_asked(source, images, monkeypatch):
    """A run of some of an image's pairs (a resumed run, a shard, other order) forms the same chunks and
    so the same fits bit for bit; without group_keypoints each keypoint goes alone."""
    whole = PromptMatcher(**BATCHED)
    whole_calls = spy_chunks(whole, monkeypatch)
    reference = run_pairs(whole, source, images, range(3), group_keypoints=GROUP_POINTS)
    order = [2, 0]  # pair 1 left out (done before a resume, or on another process), the others reversed
    part = PromptMatcher(**BATCHED, fit_cache=0)  # nothing remembered: each pair computes its chunks again
    part_calls = spy_chunks(part, monkeypatch)
    results = run_pairs(part, source, images, order, group_keypoints=GROUP_POINTS[[4, 3, 2, 1, 0]])
    assert part_calls and all(call in whole_calls for call in part_calls)
    for i in order:
        assert torch.equal(results[i].embeddings, reference[i].embeddings)
    alone = PromptMatcher(**BATCHED)
    alone_calls = spy_chunks(alone, monkeypatch)
    run_pairs(alone, source, images, [2])
    assert len(alone_calls) == 2 and all(len(set(call)) == 1 for call in alone_calls)


def test_progress_counts_the_passes_of_the_plan_with_fits_batched_by_image(source, images):
    """A pair's pass count includes the fits of its chunks that later pairs of the image will reuse; over
    the image's pairs they add up to the plan's passes, exactly as with fits batched by keypoint."""
    from sdcorr.runs.plan import make_plan

    matcher = PromptMatcher(**BATCHED)
    totals, done = [], []

    def progress(passes, total, phase):
        if phase == "start":
            totals.append(total)
            done.append(0)
        done[-1] = passes

    run_pairs(matcher, source, images, range(3), group_keypoints=GROUP_POINTS, progress=progress)
    records = [
        {"pair_id": str(i), "source_group": "a", "source_keypoints": GROUP_POINTS[p]} for i, p in enumerate(GROUP_PAIRS)
    ]
    plan = make_plan(records, matcher)
    r, steps, crops = BATCHED["restarts"], BATCHED["steps"], BATCHED["locate_crops"]
    assert done == totals and sum(totals) == plan.passes == r * (5 * steps + 7 * crops)
    assert totals[0] == r * (4 * steps + 2 * crops)  # pair 0 needs 2 keypoints: their 2 chunks hold 4
