import csv
import shutil

import pytest
import torch

from datamodules.base import DataError
from datamodules.pfwillow import PFWillowDataModule, read_pfwillow_csv
from sdcorr.stats.pck import pck
from tests.fixtures_pfwillow import LAYOUTS, write_pfwillow


def setup_module_(root, **kwargs):
    module = PFWillowDataModule(root=str(root), download=False, **kwargs)
    module.setup("test")
    return module


def edit_csv(root, row, column, value):
    """Set one field of ``test_pairs.csv`` (``row`` counts from 1 = header)."""
    path = root / "test_pairs.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if column is None:
        rows[row - 1] = rows[row - 1][:-1]
    else:
        rows[row - 1][column] = value
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_pairs_keypoints_and_sample_shapes(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW", pairs_per_category=2)
    module = setup_module_(root)
    pairs = module.dataset.pairs
    assert len(module.dataset) == 4
    assert [p["pair_id"] for p in pairs] == [
        "0000:img_000a-img_000b",
        "0001:img_001a-img_001b",
        "0002:img_002a-img_002b",
        "0003:img_003a-img_003b",
    ]
    assert [p["category"] for p in pairs] == ["car(G)", "car(G)", "duck(S)", "duck(S)"]
    sample = module.dataset[1]
    assert sample["pair_id"] == "0001:img_001a-img_001b" and sample["category"] == "car(G)"
    assert sample["source_image"].shape == (3, 52, 72)  # (64 + 8) x (48 + 4)
    assert sample["target_image"].shape == (3, 72, 88)  # (80 + 8) x (60 + 12)
    assert sample["source_keypoints"].shape == (10, 2) and sample["target_keypoints"].shape == (10, 2)
    # row 1: source x = 5 + 4i + 1, y = 4 + 3i; target x = 11 + 6i, y = 8 + 7i
    assert sample["source_keypoints"][:3].tolist() == [[6, 4], [10, 7], [14, 10]]
    assert sample["target_keypoints"][[0, 9]].tolist() == [[11, 8], [65, 71]]
    assert 0 <= float(sample["source_image"].min()) and float(sample["source_image"].max()) <= 1
    assert module.describe()["threshold_mode"] == "kps-trg"
    assert module.describe()["num_pairs"] == 4


def test_threshold_kps_trg_is_max_side_of_target_keypoint_box(tmp_path):
    module = setup_module_(write_pfwillow(tmp_path / "PF-WILLOW"))
    first, second = module.dataset[0], module.dataset[1]
    # row 0: target x 10..55, y 8..26 -> max(45, 18); row 1: x 11..65, y 8..71 -> max(54, 63)
    assert float(first["threshold"]) == pytest.approx(45.0)
    assert float(second["threshold"]) == pytest.approx(63.0)
    assert first["pck_scale"].tolist() == [1.0, 1.0] and second["pck_scale"].tolist() == [1.0, 1.0]


def test_threshold_paper_quirk_at_512_scale(tmp_path):
    module = setup_module_(write_pfwillow(tmp_path / "PF-WILLOW"), threshold="kps-trg-paper")
    first, second = module.dataset[0], module.dataset[1]
    # row 0: target 80 x 60, x_max 55 -> 352.0, y_max 26 -> 221.87; threshold 352 + 1
    assert float(first["threshold"]) == pytest.approx(353.0)
    assert first["pck_scale"].tolist() == pytest.approx([6.4, 8.533333])
    # row 1: target 88 x 72, x_max 65 -> 378.18, y_max 71 -> 504.89; threshold 504.89 + 1
    assert float(second["threshold"]) == pytest.approx(505.888889)
    assert second["pck_scale"].tolist() == pytest.approx([5.818182, 7.111111])
    assert module.describe()["threshold_mode"] == "kps-trg-paper"


def test_pck_scale_measures_distances_at_512(tmp_path):
    sample = setup_module_(write_pfwillow(tmp_path / "PF-WILLOW"), threshold="kps-trg-paper").dataset[0]
    gt = sample["target_keypoints"][None]
    # 4 target pixels along x = 25.6 at 512 scale: 0.05 * 353 = 17.65 < 25.6 <= 35.3 = 0.1 * 353
    preds = gt + torch.tensor([4.0, 0.0])
    out = pck(preds, gt, sample["threshold"][None], alphas=[0.05, 0.1], scale=sample["pck_scale"][None])
    assert out["per_image"].tolist() == [0.0, 1.0]


def test_category_filter_and_shards_partition_pairs(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW", pairs_per_category=3)
    ducks = setup_module_(root, categories=["duck(S)"])
    assert [p["pair_id"][:4] for p in ducks.dataset.pairs] == ["0003", "0004", "0005"]
    everything = [p["pair_id"] for p in setup_module_(root).dataset.pairs]
    shards = [[p["pair_id"] for p in setup_module_(root, shard_index=i, num_shards=4).dataset.pairs] for i in range(4)]
    assert sorted(sum(shards, [])) == sorted(everything) and len(everything) == 6
    assert all(shards) and len(set(sum(shards, []))) == 6
    with pytest.raises(DataError, match="unknown categories"):
        setup_module_(root, categories=["cat"])


def test_missing_csv(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    (root / "test_pairs.csv").unlink()
    with pytest.raises(DataError, match=r"test_pairs\.csv: pairs file not found \(nor test_pairs_pf\.csv\).*900 pairs"):
        setup_module_(root)


def test_a_pairs_file_of_another_name_is_named_with_what_to_rename(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW", layout="sd4match")
    (root / "test_pairs.csv").rename(root / "PF-dataset" / "pf_willow.csv")
    with pytest.raises(DataError) as error:
        setup_module_(root)
    assert str(error.value) == (
        f"{root}: no PF-Willow pairs file (test_pairs.csv or test_pairs_pf.csv); found "
        f"{root / 'PF-dataset' / 'pf_willow.csv'}: if it is the PF-Willow test pairs, rename it to "
        f"{root / 'test_pairs.csv'}"
    )


def test_images_in_neither_place_are_named_with_both_places(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    shutil.rmtree(root / "car(G)")
    with pytest.raises(
        DataError, match=r"car\(G\): image folder not found; the images go in .*/PF-dataset/<sub-class>/"
    ):
        setup_module_(root)


def test_the_three_layouts_give_the_same_pairs_and_samples(tmp_path):
    modules = {layout: setup_module_(write_pfwillow(tmp_path / layout, 2, layout=layout)) for layout in LAYOUTS}
    assert (tmp_path / "geometric" / "PF-dataset" / "car(G)" / "img_000a.png").is_file()
    reference = modules["hpf"]
    for layout, module in modules.items():
        assert len(module.dataset) == 4, layout
        for pair, expected in zip(module.dataset.pairs, reference.dataset.pairs):
            assert pair.keys() == expected.keys()
            for key in pair.keys() - {"source_path", "target_path"}:  # the images' folder is the layout's
                same = torch.equal if isinstance(pair[key], torch.Tensor) else (lambda a, b: a == b)
                assert same(pair[key], expected[key]), (layout, key)
            assert pair["source_path"].read_bytes() == expected["source_path"].read_bytes()
        for index in range(4):
            sample, expected = module.dataset[index], reference.dataset[index]
            for key, value in expected.items():
                assert torch.equal(sample[key], value) if isinstance(value, torch.Tensor) else sample[key] == value
        assert module.describe()["num_pairs"] == 4


def test_a_byte_identical_image_in_two_class_folders_is_two_pairs_of_one_source(tmp_path):
    """30 of the real PNGs are copies in two class folders, some under the same file name."""
    root = write_pfwillow(tmp_path / "PF-WILLOW", pairs_per_category=2)
    shutil.copyfile(root / "car(G)" / "img_000a.png", root / "duck(S)" / "img_000a.png")
    edit_csv(root, 4, 0, "PF-dataset/duck(S)/img_000a.png")  # row 4 = pair 2, duck(S)
    rows = read_pfwillow_csv(root)
    assert rows[2]["source_path"] != rows[0]["source_path"]
    module = setup_module_(root)
    pairs = sorted(module.dataset.pairs, key=lambda p: p["pair_id"])
    assert [p["pair_id"] for p in pairs] == [
        "0000:img_000a-img_000b",
        "0001:img_001a-img_001b",
        "0002:img_000a-img_002b",
        "0003:img_003a-img_003b",
    ]
    order = [p["pair_id"] for p in module.dataset.pairs]
    assert order.index(pairs[2]["pair_id"]) == order.index(pairs[0]["pair_id"]) + 1  # grouped by source image
    first, copy = (module.dataset[order.index(pairs[i]["pair_id"])] for i in (0, 2))
    assert torch.equal(first["source_image"], copy["source_image"])  # one image, two paths
    assert (first["category"], copy["category"]) == ("car(G)", "duck(S)")
    assert not torch.equal(first["source_keypoints"], copy["source_keypoints"])  # each pair keeps its own
    assert module.source_group(pairs[0]) == module.source_group(pairs[2]) != module.source_group(pairs[1])
    # the scheduler keeps pairs of one source image together: both copies land in one shard
    shards = [[p["pair_id"] for p in setup_module_(root, shard_index=i, num_shards=2).dataset.pairs] for i in range(2)]
    assert sorted(sum(shards, [])) == [p["pair_id"] for p in pairs]
    assert any({"0000:img_000a-img_000b", "0002:img_000a-img_002b"} <= set(shard) for shard in shards)


def test_row_with_wrong_number_of_columns(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    edit_csv(root, 3, None, None)
    with pytest.raises(DataError, match=r"test_pairs\.csv: row 3: expected 42 columns, got 41"):
        setup_module_(root)


def test_non_number_names_row_and_column(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    edit_csv(root, 2, 27, "n/a")
    with pytest.raises(DataError, match=r"test_pairs\.csv: row 2, column 27: expected a finite number, got 'n/a'"):
        setup_module_(root)


def test_missing_image(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    (root / "duck(S)" / "img_001b.png").unlink()
    with pytest.raises(DataError, match=r"img_001b\.png: image file not found"):
        setup_module_(root)


def test_keypoint_outside_the_image(tmp_path):
    root = write_pfwillow(tmp_path / "PF-WILLOW")
    edit_csv(root, 3, 22 + 10 + 4, "72.5")  # row 3 = pair 1, target y5; its target is 72 px high
    with pytest.raises(DataError, match=r"test_pairs\.csv: row 3, target keypoints of img_001b\.png: keypoint 5"):
        setup_module_(root)
    edit_csv(root, 3, 22 + 10 + 4, "72")  # on the border is inside
    assert len(setup_module_(root).dataset) == 2
