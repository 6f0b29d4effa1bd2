import math

import pytest
import torch

from sdcorr import geometry


def test_crop_range_keeps_margin_inside_the_image():
    # S=100, side=50, margin=10: x=30 -> corner in [30+10-50, 30-10] = [-10, 20] -> [0, 20]
    # y=70 -> [30, 60] clamped to the image: [30, 50]
    assert geometry.crop_corner_range((30, 70), side=50, margin=10, image_size=100) == ([0, 30], [20, 50])


def test_crop_range_rounds_both_bounds_down_like_the_paper_code():
    # x=30.5: low = floor(-9.5) -> clamped 0, high = floor(20.5) = 20
    # y=45.2: low = floor(5.2) = 5 (the paper code's int(), not 6), high = floor(35.2) = 35
    assert geometry.crop_corner_range((30.5, 45.2), 50, 10, 100) == ([0, 5], [20, 35])
    # the paper's own formula, per axis: int(min(max(0, k - side + margin), limit))
    for k in (0.0, 3.7, 40.5, 45.2, 71.9, 99.99):
        low, high = geometry.crop_corner_range((k, k), 50, 10, 100)
        assert low[0] == int(min(max(0, k - 50 + 10), 50)) and high[0] == int(min(max(0, k - 10), 50))


def test_paper_crop_geometry_and_corner_anchors():
    side, margin = int(512 * 0.9316549), int(0.15 * int(512 * 0.9316549))
    assert (side, margin) == (477, 71)
    corners = [geometry.crop_corner_range(a, side, margin, 512) for a in geometry.corner_anchors(512)]
    # each anchor pins its crop to one image corner (low == high)
    assert [tuple(lo) for lo, hi in corners] == [(0, 0), (0, 35), (35, 0), (35, 35)]
    assert all(lo == hi for lo, hi in corners)


def test_sampled_corners_cover_the_inclusive_range():
    g = torch.Generator().manual_seed(0)
    draws = {geometry.sample_crop_corner((30, 70), 50, 10, 100, g) for _ in range(600)}
    xs, ys = {x for x, _ in draws}, {y for _, y in draws}
    assert xs == set(range(0, 21)) and ys == set(range(30, 51))


def test_gaussian_is_centred_at_x_column_y_row():
    g = geometry.gaussian_map(torch.tensor([[3.0, 1.0]]), size=6, sigma=2.0)[0]
    assert g[1, 3] == 1.0  # row = y = 1, column = x = 3
    assert torch.isclose(g[1, 4], torch.tensor(math.exp(-1 / 8)))
    assert torch.isclose(g[3, 3], torch.tensor(math.exp(-4 / 8)))
    assert geometry.argmax_xy(g).tolist() == [3.0, 1.0]


def test_argmax_adds_offset_to_column_and_row():
    heat = torch.zeros(2, 4, 7)
    heat[0, 2, 5] = 1
    heat[1, 3, 0] = 1
    assert geometry.argmax_xy(heat, offset=0.5).tolist() == [[5.5, 2.5], [0.5, 3.5]]


def test_canvas_sum_count_and_uncovered_zero():
    canvas, count = torch.zeros(1, 1, 5, 5), torch.zeros(1, 5, 5)
    geometry.paste_into_canvas(canvas, count, torch.full((1, 1, 3, 3), 2.0), torch.tensor([[0, 0]]))
    geometry.paste_into_canvas(canvas, count, torch.full((1, 1, 3, 3), 4.0), torch.tensor([[1, 1]]))
    avg = geometry.canvas_average(canvas, count)[0, 0]
    assert avg[0, 0] == 2.0  # first crop only
    assert avg[1, 1] == 3.0  # both: (2 + 4) / 2
    assert avg[3, 3] == 4.0  # second only
    assert avg[4, 0] == 0.0 and avg[0, 4] == 0.0  # never covered
    assert count[0, 1, 1] == 2 and count[0, 4, 4] == 0


def test_crop_resize_cuts_the_right_window():
    image = torch.arange(3 * 10 * 10, dtype=torch.float32).reshape(3, 10, 10)
    crop = geometry.crop_resize(image, torch.tensor([[2, 5]]), side=4, size=4)
    assert torch.equal(crop[0], image[:, 5:9, 2:6])
    assert geometry.crop_resize(image, torch.tensor([[0, 0]]), side=4, size=8).shape == (1, 3, 8, 8)


def test_keypoint_scaling_round_trip():
    kps = torch.tensor([[10.0, 20.0], [299.0, 0.5]])
    work = geometry.scale_keypoints(kps, (300, 200), (512, 512))
    assert torch.allclose(work, torch.tensor([[10 * 512 / 300, 20 * 512 / 200], [299 * 512 / 300, 0.5 * 512 / 200]]))
    assert torch.allclose(geometry.scale_keypoints(work, (512, 512), (300, 200)), kps)


@pytest.mark.parametrize("shape", [(3, 40, 60), (2, 3, 40, 60)])
def test_resize_image_is_square(shape):
    assert geometry.resize_image(torch.rand(shape), 32).shape[-2:] == (32, 32)
