import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.base import DataError
from datamodules.pairs import PairsDataModule, PairsDataset
from tests.conftest import DEMO


def write_pairs(folder, pairs):
    for name in ("0_chelsea_source.jpg", "0_chelsea_target.jpg"):
        shutil.copy(DEMO / name, folder / name)
    (folder / "pairs.json").write_text(json.dumps({"pairs": pairs}))
    return folder / "pairs.json"


def pair(**overrides):
    entry = {
        "source": "0_chelsea_source.jpg",
        "target": "0_chelsea_target.jpg",
        "source_keypoints": [[10, 20], [100, 50]],
    }
    entry.update(overrides)
    return entry


def test_demo_pairs_load_with_thresholds_from_target_keypoints():
    module = PairsDataModule(root=str(DEMO))
    module.setup("test")
    assert len(module.dataset) == 3
    sample = module.dataset[0]
    assert sample["source_image"].shape == (3, 200, 300) and sample["target_image"].shape == (3, 240, 320)
    extent = sample["target_keypoints"].max(0).values - sample["target_keypoints"].min(0).values
    assert float(sample["threshold"]) == pytest.approx(float(extent.max()))
    batch = next(iter(module.test_dataloader()))
    assert isinstance(batch, list) and batch[0]["pair_id"] == "0_chelsea"


def test_bbox_threshold_defaults_and_unscored_pairs(tmp_path):
    file = write_pairs(
        tmp_path,
        [pair(target_keypoints=[[5, 5], [50, 30]], target_bbox=[0, 0, 40, 90], id="a", category="cat"), pair()],
    )
    data = PairsDataset(file)
    assert float(data[0]["threshold"]) == 90.0 and data[0]["category"] == "cat"
    assert data[1]["target_keypoints"] is None and data[1]["threshold"] is None and data[1]["pair_id"] == "1"


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            pair(source_keypoints=[[10, 20], [400, 50]]),
            r"pairs\[0\]\.source_keypoints\[1\] = \[400\.0, 50\.0\] lies outside the 300x200",
        ),
        (pair(target_keypoints=[[1, 1]]), "2 source_keypoints but 1 target_keypoints"),
        ({"source": "0_chelsea_source.jpg", "source_keypoints": [[1, 1]]}, "missing field 'target'"),
        (pair(source="missing.jpg"), "missing.jpg: image file not found"),
        (pair(source_keypoints=[[1, "a"]]), r"source_keypoints\[0\]: expected \[x, y\] with two finite numbers"),
        (pair(target_bbox=[10, 10, 5, 50]), "target_bbox: expected"),
        # thresholds: finite, positive, consistent with the image (these gave 100% PCK)
        (pair(target_bbox=[0, 0, float("inf"), 10]), r"target_bbox: expected \[x1, y1, x2, y2\] numbers"),
        (pair(target_bbox=[0, 0, 1e9, 10]), r"target_bbox: \[0, 0, 1000000000.0, 10\] is not inside the 320x240"),
        (pair(target_bbox=["0", "0", "5", "5"]), "target_bbox: expected"),
        (pair(target_bbox=[[0], [0], [5], [5]]), "target_bbox: expected"),
        # misspelt optional fields: refused, with the nearest known name
        (pair(target_keypoint=[[1, 1], [2, 2]]), "unknown field 'target_keypoint' .did you mean 'target_keypoints'"),
        (pair(target_bbx=[0, 0, 5, 5]), "unknown field 'target_bbx' .did you mean 'target_bbox'"),
        # types: every field, with file, pair and field named
        (pair(source=5), r"pair '0', pairs\[0\]\.source: expected an image path \(string\), got 5"),
        (pair(id=True), r"pairs\[0\]\.id: expected a string or integer"),
        (pair(category=["cat"]), r"\.category: expected a string"),
        (pair(source_keypoints=[[True, 5], [1, 2]]), r"source_keypoints\[0\]: expected \[x, y\] with two finite"),
        (pair(target_keypoints=[[1, 1], [2, float("nan")]]), r"target_keypoints\[1\]: expected \[x, y\]"),
    ],
)
def test_bad_entries_name_the_file_and_field(tmp_path, entry, message):
    file = write_pairs(tmp_path, [entry])
    with pytest.raises(DataError, match=message) as info:
        PairsDataset(file)
    assert str(tmp_path) in str(info.value)


def test_bad_json_and_undecodable_image(tmp_path):
    (tmp_path / "pairs.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        PairsDataset(tmp_path / "pairs.json")
    file = write_pairs(tmp_path, [pair()])
    (tmp_path / "0_chelsea_target.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="0_chelsea_target.jpg: cannot decode image"):
        PairsDataset(file)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        PairsDataModule(root=str(tmp_path / "nope")).setup("test")


def test_images_are_rgb_in_unit_range():
    image = PairsDataset(DEMO / "pairs.json")[1]["source_image"]
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    # the file's pixels, not a constant or a gray image: PIL's 8-bit RGB decode divided by 255, exactly
    decoded = np.asarray(Image.open(DEMO / "1_astronaut_source.jpg").convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(image, torch.from_numpy(decoded).permute(2, 0, 1))
    assert image.std() > 0.1 and (image[0] - image[2]).abs().mean() > 0.02


def test_unknown_top_level_key_and_duplicate_ids_are_named(tmp_path):
    file = write_pairs(tmp_path, [pair(id="a"), pair(id="a")])
    with pytest.raises(DataError, match=r"pairs\[1\] and pairs\[0\] have the same id 'a'"):
        PairsDataset(file)
    file.write_text(json.dumps({"pair": [pair()]}))
    with pytest.raises(DataError, match="unknown field 'pair' .did you mean 'pairs'"):
        PairsDataset(file)


def test_unscorable_pairs_are_counted_and_named_never_nan(tmp_path):
    from sdcorr.runs.records import FORMAT, Prediction
    from sdcorr.runs.results import Results, format_table
    from sdcorr.runs.scoring import score

    record = {"format": FORMAT, "pair_id": "lonely", "category": "cat", "source_keypoints": [[1.0, 1.0]],
              "predicted_keypoints": [[2.0, 2.0]], "target_keypoints": None, "threshold": None}  # fmt: skip
    results = score([Prediction.from_json(record)])
    assert results["unscored_pairs"] == 1 and results["unscored_pair_ids"] == ["lonely"]
    assert results["overall"]["pck@0.1"] == {"per_image": None, "per_point": None}
    json.dumps(results, allow_nan=False)  # strict JSON: no NaN token
    record = Results([0.05, 0.1], 0, {}, {}, "32-true", {}, results["overall"], results["per_category"], **{
        key: results[key] for key in ("unscored_pairs", "unscored_pair_ids")})  # fmt: skip
    table = format_table(record)
    assert "n/a" in table and "'lonely'" in table and "nan" not in table


@pytest.mark.parametrize(
    "option, message",
    [
        ({"batch_size": 0}, "batch_size: expected a number of pairs >= 1; got 0"),
        ({"num_workers": -1}, "num_workers: expected a number of processes >= 0; got -1"),
    ],
)
def test_loader_options_are_checked_when_built(option, message):
    from sdcorr.errors import OptionError

    with pytest.raises(OptionError, match=message):
        PairsDataModule(root=str(DEMO), **option)
