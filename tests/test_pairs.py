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
        (pair(source_keypoints=[[1, "a"]]), "source_keypoints: expected a list of"),
        (pair(target_bbox=[10, 10, 5, 50]), "target_bbox: expected"),
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
