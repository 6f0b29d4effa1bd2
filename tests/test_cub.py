import pytest
import torch

from datamodules.base import DataError
from datamodules.cub import CUBDataModule
from sdcorr.stats.pck import pck
from tests.fixtures_cub import write_cub

# write_cub defaults: class 1 = ids 1, 2 (train), 3, 4; class 2 = 5, 6 (train), 7, 8; class 4 = 9, 10 (train), 11, 12.


def setup_module_(root, **kwargs):
    module = CUBDataModule(root=str(root), **kwargs)
    module.setup("test")
    return module


@pytest.fixture
def cub(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_pairs_from_chosen_classes_and_test_split_in_order(cub):
    module = setup_module_(cub, classes=[1, 2])
    # unordered test pairs (i < j) per class; 1-3 shares no visible part and is skipped
    assert [p["pair_id"] for p in module.dataset.pairs] == ["1-4", "3-4", "5-7", "5-8", "7-8"]
    assert module.skipped == {"no_keypoints": 1}
    assert [p["category"] for p in module.dataset.pairs] == ["001.Black_footed_Albatross"] * 2 + [
        "002.Laysan_Albatross"
    ] * 3
    assert module.describe()["skipped"] == {"no_keypoints": 1}
    assert module.describe()["classes"] == [1, 2] and module.describe()["split"] == "test"
    assert module.describe()["threshold_mode"] == "bbox-trg-512"


def test_other_class_and_splits(cub):
    assert [p["pair_id"] for p in setup_module_(cub, classes=[4]).dataset.pairs] == ["9-11", "9-12", "11-12"]
    everything = setup_module_(cub, classes=[1], split="all")
    assert [p["pair_id"] for p in everything.dataset.pairs] == ["1-2", "1-4", "2-3", "2-4", "3-4"]
    assert everything.skipped == {"no_keypoints": 1}
    assert len(setup_module_(cub, classes=[1, 2, 4], split="train").dataset) == 0  # one train image per class


def test_keypoints_are_the_parts_visible_in_both(cub):
    pairs = {p["pair_id"]: p for p in setup_module_(cub, classes=[1, 2]).dataset.pairs}
    # image 1 shows parts {1..5}, image 4 shows {1, 3, 6, 9, 15}; part p of image i is at (2p + i, p + i)
    assert pairs["1-4"]["part_ids"] == [1, 3] and pairs["1-4"]["num_keypoints"] == 2
    assert pairs["1-4"]["source_keypoints"].tolist() == [[3, 2], [7, 4]]
    assert pairs["1-4"]["target_keypoints"].tolist() == [[6, 5], [10, 7]]
    assert pairs["3-4"]["part_ids"] == [6]
    assert pairs["3-4"]["target_keypoints"].tolist() == [[16, 10]]
    # class 2: test image k hides part k + 1
    assert pairs["5-8"]["part_ids"] == [2] + list(range(4, 16))
    assert pairs["7-8"]["part_ids"] == [1] + list(range(4, 16))
    assert pairs["5-8"]["source_keypoints"][0].tolist() == [9, 7]


def test_sample_threshold_and_pck_scale(cub):
    module = setup_module_(cub, classes=[1, 2])
    first = module.dataset[0]  # 1-4: target image 4 is 76 x 58, box w = 22, h = 30
    assert first["source_image"].shape == (3, 52, 64) and first["target_image"].shape == (3, 58, 76)
    assert first["source_keypoints"].shape == (2, 2) and first["target_keypoints"].shape == (2, 2)
    assert float(first["threshold"]) == pytest.approx(30 * 512 / 76)  # 202.105
    assert first["pck_scale"].tolist() == pytest.approx([6.736842, 8.827586])
    fourth = module.dataset[3]  # 5-8: target image 8 is 92 x 66, box w = 34, h = 30
    assert fourth["pair_id"] == "5-8" and fourth["target_keypoints"].shape == (13, 2)
    assert float(fourth["threshold"]) == pytest.approx(34 * 512 / 92)  # 189.217
    assert fourth["pck_scale"].tolist() == pytest.approx([5.565217, 7.757576])
    # 2 target pixels along y = 17.66 at 512 scale: 0.05 * 202.1 = 10.1 < 17.66 <= 20.2 = 0.1 * 202.1
    gt = first["target_keypoints"][None]
    out = pck(
        gt + torch.tensor([0.0, 2.0]), gt, first["threshold"][None], alphas=[0.05, 0.1], scale=first["pck_scale"][None]
    )
    assert out["per_image"].tolist() == [0.0, 1.0]


def test_category_filter_and_shards(cub):
    module = setup_module_(cub, classes=[1, 2], categories=["002.Laysan_Albatross"])
    assert [p["pair_id"] for p in module.dataset.pairs] == ["5-7", "5-8", "7-8"] and module.skipped == {}
    everything = [p["pair_id"] for p in setup_module_(cub, classes=[1, 2, 4]).dataset.pairs]
    shards = [
        [p["pair_id"] for p in setup_module_(cub, classes=[1, 2, 4], shard_index=i, num_shards=3).dataset.pairs]
        for i in range(3)
    ]
    assert len(everything) == 8 and sorted(sum(shards, [])) == sorted(everything)
    assert len(set(sum(shards, []))) == 8 and all(shards)


def test_missing_root_and_files_say_where_to_get_cub(tmp_path, cub):
    with pytest.raises(DataError, match=r"nowhere.*CUB_200_2011\.tgz"):
        setup_module_(tmp_path / "nowhere")
    (cub / "bounding_boxes.txt").unlink()
    with pytest.raises(DataError, match=r"bounding_boxes\.txt: file not found.*Caltech"):
        setup_module_(cub, classes=[1])


def test_class_without_images(cub):
    with pytest.raises(DataError, match=r"image_class_labels\.txt: no image of class 3"):
        setup_module_(cub, classes=[1, 2, 3])
    with pytest.raises(ValueError, match="1..200"):
        CUBDataModule(root=str(cub), classes=[0])


def test_malformed_line_names_file_and_line(cub):
    lines = (cub / "parts" / "part_locs.txt").read_text().splitlines()
    lines[16] = "2 2 4.0 oops 1"
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"part_locs\.txt: line 17: .*oops"):
        setup_module_(cub, classes=[1])
    lines[16] = "2 2 4.0"
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"part_locs\.txt: line 17: expected 5 fields, got 3"):
        setup_module_(cub, classes=[1])


def test_part_outside_the_image(cub):
    lines = (cub / "parts" / "part_locs.txt").read_text().splitlines()
    assert lines[45] == "4 1 6.0 5.0 1"  # image 4 (76 x 58), part 1
    lines[45] = "4 1 76.5 5.0 1"
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"part_locs\.txt: line 46: part 1 .* outside the 76x58 image"):
        setup_module_(cub, classes=[1])
    lines[45] = "4 1 76.5 5.0 0"  # invisible parts are not checked
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines) + "\n")
    pairs = setup_module_(cub, classes=[1]).dataset.pairs
    assert [(p["pair_id"], p["part_ids"]) for p in pairs] == [("1-4", [3]), ("3-4", [6])]


def test_missing_image(cub):
    image = next((cub / "images" / "002.Laysan_Albatross").glob("*_0007_*.jpg"))
    image.unlink()
    with pytest.raises(DataError, match=image.name):
        setup_module_(cub, classes=[2])
    assert len(setup_module_(cub, classes=[1]).dataset) == 2
