"""The pictures (sdcorr.pages.plots) and the report (sdcorr.pages.index) on hand-made inputs with known pixels."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr.pages.index import histogram_of, write_report
from sdcorr.pages.plots import CORRECT, STAR, UNSCORED, WRONG, correspondence_plot, heatmap_plot, histogram_plot
from sdcorr.runs.folder import RunFolder, picture_name
from sdcorr.runs.records import FORMAT
from sdcorr.runs.results import Histogram, Results, summary_rows

GREY = (128, 128, 128)


def grey(height, width):
    return torch.full((3, height, width), 128 / 255)


def near(image, x, y, colour, rows=(0, 1)):
    """Whether pixel (x, y + r) has ``colour`` for some r in ``rows`` (a 2 px line covers y and y + 1)."""
    return any(image.getpixel((x, y + r)) == colour for r in rows)


def test_correspondence_lines_are_blue_when_correct_and_orange_when_wrong():
    source, target = grey(40, 60), grey(40, 60)
    points = torch.tensor([[10.0, 10.0], [10.0, 30.0]])
    predictions = torch.tensor([[10.0, 10.0], [50.0, 30.0]])  # drawn at x + 60 + 8 in the picture
    picture = correspondence_plot(source, target, points, predictions, correct=[True, False], gap=8)
    assert picture.size == (128, 40)
    assert near(picture, 44, 10, CORRECT) and not near(picture, 44, 10, WRONG)
    assert near(picture, 90, 30, WRONG) and near(picture, 64, 30, WRONG)  # in the target and in the gap
    assert picture.getpixel((30, 20)) == GREY and picture.getpixel((100, 20)) == GREY
    swapped = correspondence_plot(source, target, points, predictions, correct=[False, True], gap=8)
    assert near(swapped, 44, 10, WRONG) and near(swapped, 90, 30, CORRECT)
    unscored = correspondence_plot(source, target, points, predictions, correct=None, gap=8)
    assert near(unscored, 44, 10, UNSCORED) and near(unscored, 90, 30, UNSCORED)


def test_correspondence_scales_both_images_to_one_height():
    source, target = grey(40, 60), grey(80, 40)  # at height 40 the target is halved: 20 columns
    picture = correspondence_plot(
        source, target, [[30.0, 20.0]], [[20.0, 40.0]], correct=[True], height=40, gap=8, caption="pair"
    )
    assert picture.size == (60 + 8 + 20, 40 + 20)
    # the line from (30, 20) to (68 + 10, 20) is horizontal at row 20
    assert near(picture, 50, 20, CORRECT)
    with pytest.raises(ValueError, match="as many predictions"):
        correspondence_plot(source, target, [[1.0, 1.0]], [[1.0, 1.0], [2.0, 2.0]])


def test_heatmap_star_at_the_ground_truth_and_hot_colours_at_the_peak():
    image = grey(60, 90)
    maps = torch.zeros(2, 12, 12)
    maps[0, 8:11, 8:11] = 1.0  # map 0 peaks around column 9.5 of 12 -> x ~ 75, row 9.5 -> y ~ 50
    maps[1, 1:4, 1:4] = 1.0  # map 1 peaks near the top left: x ~ 19, y ~ 12
    points = torch.tensor([[30.0, 20.0], [60.0, 40.0]])
    picture = heatmap_plot(image, maps, points=points, panel_size=90, columns=4, gap=4, opacity=0.5)
    assert picture.size == (90 + 4 + 90, 60 + 16)
    assert picture.getpixel((30, 20)) == STAR
    assert picture.getpixel((94 + 60, 40)) == STAR
    assert picture.getpixel((94 + 30, 20)) != STAR  # no star of keypoint 0 in panel 1
    r, g, b = picture.getpixel((75, 50))  # the peak of map 0: red
    assert r > g + 40 and r > b + 40
    r, g, b = picture.getpixel((10, 55))  # far from the peak: blue over grey
    assert b > r + 30 and b > g + 30
    r, g, b = picture.getpixel((94 + 19, 12))  # map 1's own peak, in panel 1
    assert r > g + 40 and r > b + 40


def test_heatmap_grid_wraps_and_rejects_empty_maps():
    picture = heatmap_plot(grey(30, 30), torch.rand(5, 8, 8), panel_size=30, columns=2, gap=4)
    assert picture.size == (2 * 34 - 4, 3 * (30 + 16 + 4) - 4)
    with pytest.raises(ValueError, match=r"\[N, h, w\] with N >= 1"):
        heatmap_plot(grey(30, 30), torch.zeros(0, 8, 8))


def bar_runs(picture):
    """``[(first column, height)]`` of each run of columns holding bar-coloured pixels."""
    pixels = np.asarray(picture)
    mask = (pixels == np.array(CORRECT, dtype=np.uint8)).all(axis=-1)
    heights = mask.sum(axis=0)
    runs, start = [], None
    for x, h in enumerate(list(heights) + [0]):
        if h and start is None:
            start = x
        elif not h and start is not None:
            runs.append((start, int(heights[start:x].max())))
            start = None
    return runs


def test_histogram_bars_are_proportional_to_counts():
    bins = ["0%"] + [f"({10 * i},{10 * (i + 1)}%]" for i in range(10)]
    counts = [1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3]
    picture = histogram_plot(bins, counts, title="t", slot=40, plot_height=90)
    runs = bar_runs(picture)
    assert [h for _, h in runs] == [30, 60, 90]
    assert [(x - 10 - 8) // 40 for x, _ in runs] == [0, 3, 10]  # bars sit in the slots of their bins
    with pytest.raises(ValueError, match="one count per bin"):
        histogram_plot(bins, counts[:-1])


def record(pair_id, errors, category="cat", target=True):
    """A prediction line with one keypoint per error (offset in pixels along x; threshold 10)."""
    points = [[20.0, 20.0]] * len(errors)
    return {
        "format": FORMAT,
        "pair_id": pair_id,
        "category": category,
        "source_keypoints": points,
        "predicted_keypoints": [[20.0 + e, 20.0] for e in errors],
        "target_keypoints": points if target else None,
        "threshold": 10.0 if target else None,
        "pck_scale": [1.0, 1.0],
    }


@pytest.fixture
def folder(tmp_path):
    records = [
        record("a", [5, 5]),  # 0 of 2 correct at alpha 0.1 (distance <= 1)
        record("b", [0, 0, 0] + [5] * 7),  # 3 of 10: the bin (20,30%], not (30,40%]
        record("c", [0.5]),  # 1 of 1
        record("d", [0, 0], target=False),  # no ground truth: not in the histogram
    ]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_histogram_counts_add_up_to_the_scored_pairs(folder):
    predictions = RunFolder(folder).predictions()
    counts = histogram_of(predictions, alpha=0.1)
    assert sum(counts.counts) == 3
    assert counts.counts[0] == 1 and counts.bins[3] == "(20,30%]" and counts.counts[3] == 1
    assert counts.counts[10] == 1
    at_005 = histogram_of(predictions, alpha=0.05)  # 0.5 px <= 0.5: still correct
    assert sum(at_005.counts) == 3 and at_005.counts[10] == 1


def test_histogram_of_prefers_the_results_for_its_alpha(folder):
    stored = Histogram(0.1, ["x"], [7])
    results = Results([0.1], 0, {}, {}, "32-true", {}, {}, {}, histogram=stored)
    predictions = RunFolder(folder).predictions()
    assert histogram_of(predictions, 0.1, results) is stored
    assert sum(histogram_of(predictions, 0.05, results).counts) == 3  # other alpha: from the predictions


def test_report_tables_and_pictures(folder):
    results = {
        "format": FORMAT, "seed": 0, "source": {}, "matcher": {}, "precision": "32-true", "data": {},
        "alphas": [0.05, 0.1],
        "overall": {"num_pairs": 3, "num_keypoints": 13, "pck@0.05": {"per_image": 0.25, "per_point": 0.5},
                    "pck@0.1": {"per_image": 0.5, "per_point": 0.75}},
        "per_category": {"cat": {"num_pairs": 3, "num_keypoints": 13, "pck@0.05": {"per_image": 0.25, "per_point": 0.5},
                                 "pck@0.1": {"per_image": 0.5, "per_point": 0.75}}},
        "per_layer": {"7": {"pck@0.05": {"per_image": 0.125, "per_point": 0.1},
                            "pck@0.1": {"per_image": 0.375, "per_point": 0.3}}},
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    columns, rows = summary_rows(Results.from_json(results))
    assert columns[:3] == ["category", "pairs", "keypoints"] and [r[0] for r in rows] == ["cat", "overall"]
    assert rows[-1][3:] == [0.25, 0.5, 0.5, 0.75]
    (folder / "pictures").mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "pictures" / picture_name("b", "correspondence"))
    page = write_report(folder).read_text()
    assert "<td>cat</td>" in page and ">12.5<" in page and ">37.5<" in page  # a category row, the layer row
    assert page.count('src="data:image/png;base64,') == 2  # the histogram and the one picture
    assert "b (cat): PCK@" not in page  # no ``correct`` field in these records: no score line
    assert ">b (cat)<" in page


def test_report_of_a_folder_without_results(tmp_path):
    page = write_report(tmp_path).read_text()
    assert "No results.json" in page and "<img" not in page


def test_picture_names_are_file_safe():
    # a plain id is the name; any other is made file-safe plus a checksum of the id (unique per id)
    assert picture_name("000001-2008_002719", "target-heatmaps") == "000001-2008_002719.target-heatmaps.png"
    assert re.fullmatch(
        r"000001-2008_002719-2008_004100_aeroplane~[0-9a-f]{8}\.target-heatmaps\.png",
        picture_name("000001-2008_002719-2008_004100:aeroplane", "target-heatmaps"),
    )
    with pytest.raises(ValueError, match="picture kind"):
        picture_name("a", "nope")
