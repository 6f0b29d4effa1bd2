import pytest
import torch

from sdcorr import geometry
from sdcorr.matchers.base import Matcher, WorkCounter
from sdcorr.matchers.one_call import match
from sdcorr.matchers.prompt import CropCorners, PromptMatcher

# the tiny-model protocol of configs/smoke.yaml
from tests.conftest import FAST


def test_translated_window_is_matched_far_above_identity(source, window_pair):
    src, trg, kps, truth = window_pair
    predicted = PromptMatcher(**FAST).match(source, src, trg, kps, seed=0).keypoints
    threshold = 0.1 * 200
    pck = ((predicted - truth).norm(dim=-1) <= threshold).float().mean()
    identity = ((kps - truth).norm(dim=-1) <= threshold).float().mean()
    assert identity == 0.0
    assert pck >= 0.6, f"PCK@0.1 {pck:.2f}; errors {(predicted - truth).norm(dim=-1).round().tolist()}"


def test_batching_does_not_change_results(source, window_pair):
    """Same draws per item whatever the batch; batched fp32 kernels only round differently (~1e-5)."""
    src, _, kps, _ = window_pair
    image = geometry.resize_image(src, source.image_size)
    points = geometry.scale_keypoints(kps[:3], (200, 200), (source.image_size,) * 2)
    options = dict(FAST, steps=2, locate_crops=5, lr=2.3755632e-3)
    one = PromptMatcher(**options, max_batch=1)
    many = PromptMatcher(**options, max_batch=4)
    emb_one, emb_many = one.fit(source, image, points, seed=3), many.fit(source, image, points, seed=3)
    assert emb_one.shape == (3, 2, 77, 32)
    assert torch.allclose(emb_one, emb_many, atol=1e-5)
    loc_one, loc_many = one.locate(source, image, emb_one, seed=3), many.locate(source, image, emb_one, seed=3)
    assert torch.allclose(loc_one.heatmaps, loc_many.heatmaps, atol=1e-6)
    assert torch.equal(loc_one.keypoints, loc_many.keypoints)


def test_same_seed_same_result_other_seed_other_draws(source, window_pair):
    src, trg, kps, _ = window_pair
    matcher = PromptMatcher(**dict(FAST, steps=3, locate_crops=5))
    a = matcher.match(source, src, trg, kps[:2], seed=("run", 1))
    b = matcher.match(source, src, trg, kps[:2], seed=("run", 1))
    c = matcher.match(source, src, trg, kps[:2], seed=("run", 2))
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.heatmaps, b.heatmaps)
    assert not torch.equal(a.heatmaps, c.heatmaps)


def test_outputs_are_in_target_pixels_and_heatmaps_are_distributions(source):
    src, trg = torch.rand(3, 90, 120), torch.rand(3, 300, 100)
    result = PromptMatcher(**dict(FAST, steps=2, locate_crops=4)).match(source, src, trg, torch.tensor([[60.0, 45.0]]))
    x, y = result.keypoints[0].tolist()
    assert 0 <= x <= 100 and 0 <= y <= 300
    assert result.heatmaps.shape == (1, 48, 48)
    assert torch.allclose(result.heatmaps.sum(dim=(-2, -1)), torch.ones(1), atol=1e-4)
    # the prediction is the heatmap's argmax pixel + 0.5, scaled to the target size
    expected = geometry.scale_keypoints(geometry.argmax_xy(result.heatmaps, 0.5), (48, 48), (100, 300))
    assert torch.allclose(result.keypoints, expected)


def test_match_api_and_inference_mode_guard(source):
    points = match(
        torch.rand(3, 40, 40),
        torch.rand(3, 40, 40),
        torch.tensor([[20.0, 20.0]]),
        source=source,
        matcher=PromptMatcher(**dict(FAST, steps=1, restarts=1, locate_crops=4)),
    )
    assert points.shape == (1, 2)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=False"):
        PromptMatcher(steps=1).fit(source, torch.rand(3, 48, 48), torch.tensor([[20.0, 20.0]]))


def test_paper_defaults():
    m = PromptMatcher()
    # the paper code's exact defaults, not rounded
    assert (m.restarts, m.steps, m.lr, m.locate_crops) == (5, 129, 0.0023755632081200314, 20)
    assert (m.fit_timestep_index, m.locate_timestep_index, m.sigma) == (-8, -3, 27.97853316316864)
    assert m.reuse_fits
    assert m.crop_geometry(512) == (477, 71)
    with pytest.raises(ValueError, match="restarts"):
        PromptMatcher(restarts=0)


def test_progress_is_an_argument_of_match_and_counts_every_pass(source):
    calls = []
    matcher = PromptMatcher(**dict(FAST, steps=2, restarts=2, locate_crops=4), max_batch=3)
    progress = lambda done, total, stage: calls.append((done, total, stage))  # noqa: E731
    matcher.match(source, torch.rand(3, 40, 50), torch.rand(3, 30, 30), torch.tensor([[9.0, 9.0], [20.0, 15.0]]),
                  progress=progress)  # fmt: skip
    total = matcher.cost(2)  # 2 restarts x (2 x 2 steps + 2 x 4 crops) = 24
    assert total == 24 and calls[0] == (0, total, "start") and calls[-1] == (total, total, "locate")
    assert [stage for _, _, stage in calls[1:]] == ["fit"] * 4 + ["locate"] * 8  # chunks of 3 and 1 items
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert not hasattr(Matcher, "progress")  # no shared state on the class


def test_work_counter_reports_to_its_callback_and_stops_at_the_total():
    calls = []
    counter = WorkCounter(5, lambda *args: calls.append(args))
    counter.advance(3, "fit")
    counter.advance(4, "locate")
    assert calls == [(0, 5, "start"), (3, 5, "fit"), (5, 5, "locate")] and counter.done == 5
    WorkCounter(2).advance(1, "fit")  # no callback: only counted


def test_crop_corners_draw_as_before_with_and_without_a_pool():
    """The fitting crops: a fresh corner per call from the keypoint's range, or picks from a pool drawn first."""
    side, margin, size = 40, 6, 48
    fresh = CropCorners([20.5, 30.0], side, margin, size, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    assert [fresh() for _ in range(5)] == [geometry.sample_crop_corner([20.5, 30.0], side, margin, size, g)
                                           for _ in range(5)]  # fmt: skip
    pooled = CropCorners([20.5, 30.0], side, margin, size, torch.Generator().manual_seed(0), pool=2)
    g = torch.Generator().manual_seed(0)
    pool = [geometry.sample_crop_corner([20.5, 30.0], side, margin, size, g) for _ in range(2)]
    assert pooled.pool == pool
    assert [pooled() for _ in range(6)] == [pool[int(torch.randint(2, (1,), generator=g))] for _ in range(6)]
