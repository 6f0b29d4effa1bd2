import json

import pytest
import torch
from PIL import Image

from datamodules.base import DataError
from datamodules.spair import SPairDataModule
from tests.fixtures_spair import pair_file, write_spair

FIRST_TEST_PAIR = "002001-2008_000001-2008_000002:aeroplane"


def module(root, **kwargs) -> SPairDataModule:
    """A set-up module on ``root`` (never downloads)."""
    data = SPairDataModule(root=str(root), download=False, **kwargs)
    data.setup("test")
    return data


def ids(data: SPairDataModule) -> list[str]:
    return [pair["pair_id"] for pair in data.dataset.pairs]


def first_two(root, threshold: str) -> tuple[dict, dict]:
    """Samples of the first two test pairs (A -> B, then B -> A) under a threshold mode."""
    data = module(root, threshold=threshold)
    return data.dataset[0], data.dataset[1]


@pytest.fixture
def spair(tmp_path):
    return write_spair(tmp_path / "SPair-71k")


def edit_pair(root, index, **changes):
    """Rewrite the ``index``-th test pair JSON with ``changes`` (None deletes a field); returns its path."""
    file = pair_file(root, "test", index)
    content = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            del content[key]
        else:
            content[key] = value
    file.write_text(json.dumps(content))
    return file


@pytest.mark.parametrize(
    "split, layout, expected",
    [
        ("trn", "large", ["000001", "000002", "000003", "000004", "000005", "000006"]),
        ("val", "large", ["001001", "001002", "001003", "001004", "001005", "001006"]),
        ("test", "large", ["002001", "002002", "002003", "002004", "002005", "002006"]),
        ("test", "small", ["002001", "002003", "002004", "002006"]),
    ],
)
def test_pairs_of_each_split_and_layout(tmp_path, split, layout, expected):
    root = write_spair(tmp_path / "SPair-71k", pairs_per_category=3)
    data = module(root, split=split, layout=layout)
    assert sorted(pair_id[:6] for pair_id in ids(data)) == expected  # which pairs; they come grouped by source
    assert len(data.dataset) == len(expected)


def test_sample_keypoints_images_and_groups(spair):
    data = module(spair)
    assert ids(data) == [
        FIRST_TEST_PAIR,
        "002002-2008_000002-2008_000001:aeroplane",
        "002003-2008_000101-2008_000102:cat",
        "002004-2008_000102-2008_000101:cat",
    ]
    first, second = data.dataset[0], data.dataset[1]
    assert first["pair_id"] == FIRST_TEST_PAIR and first["category"] == "aeroplane"
    assert first["source_image"].shape == (3, 90, 120) and first["target_image"].shape == (3, 140, 100)
    assert first["source_image"].dtype == torch.float32 and 0 <= first["source_image"].min() <= 1
    assert first["source_keypoints"].dtype == torch.float32
    assert first["source_keypoints"].tolist() == [[10, 20], [60, 45], [110, 80]]
    assert first["target_keypoints"].tolist() == [[25, 10], [50, 70], [75, 130]]
    assert second["source_image"].shape == (3, 140, 100) and second["target_image"].shape == (3, 90, 120)
    assert second["source_keypoints"].tolist() == [[25, 10], [50, 70]]
    assert second["target_keypoints"].tolist() == [[10, 20], [60, 45]]
    assert first["threshold"].shape == () and first["pck_scale"].shape == (2,)
    assert first["groups"] == {"viewpoint_variation": "0", "scale_variation": "1", "truncation": "0", "occlusion": "2"}
    assert second["groups"] == {"viewpoint_variation": "1", "scale_variation": "2", "truncation": "1", "occlusion": "3"}
    assert [pair["num_keypoints"] for pair in data.dataset.pairs] == [3, 2, 3, 2]


def test_threshold_bbox_src_512(spair):
    # pair 0: source 120x90, bbox 104x70 -> max(104 * 512 / 120, 70 * 512 / 90) = max(443.733, 398.222)
    # pair 1: source 100x140, bbox 60x128 -> max(60 * 512 / 100, 128 * 512 / 140) = max(307.2, 468.114)
    first, second = first_two(spair, "bbox-src-512")
    assert float(first["threshold"]) == pytest.approx(443.73333, abs=1e-3)
    assert float(second["threshold"]) == pytest.approx(468.11429, abs=1e-3)
    # distances at the 512 scale of the target: 512 / 100, 512 / 140 then 512 / 120, 512 / 90
    assert first["pck_scale"].tolist() == pytest.approx([5.12, 3.657143], abs=1e-5)
    assert second["pck_scale"].tolist() == pytest.approx([4.266667, 5.688889], abs=1e-5)


def test_threshold_bbox_trg(spair):
    # pair 0: target bbox [20, 6, 80, 134] -> 128; pair 1: target bbox [8, 15, 112, 85] -> 104
    first, second = first_two(spair, "bbox-trg")
    assert float(first["threshold"]) == 128.0 and float(second["threshold"]) == 104.0
    assert first["pck_scale"].tolist() == [1.0, 1.0] and second["pck_scale"].tolist() == [1.0, 1.0]


def test_describe_names_split_layout_and_threshold(spair):
    description = module(spair, split="val", layout="small", threshold="bbox-trg").describe()
    assert description["datamodule"] == "SPairDataModule" and description["num_pairs"] == 2
    assert (description["split"], description["layout"], description["threshold_mode"]) == ("val", "small", "bbox-trg")


def test_invalid_options_are_rejected_without_io(tmp_path):
    for options in ({"split": "train"}, {"layout": "medium"}, {"threshold": "bbox"}):
        with pytest.raises(ValueError, match=next(iter(options))):
            SPairDataModule(root=str(tmp_path / "absent"), **options)


def test_category_filter_and_unknown_category(spair):
    assert ids(module(spair, categories=["cat"])) == [
        "002003-2008_000101-2008_000102:cat",
        "002004-2008_000102-2008_000101:cat",
    ]
    with pytest.raises(DataError, match=r"unknown categories \['dog'\]"):
        module(spair, categories=["dog"])


def test_subsample_is_seeded_and_shards_partition_it(tmp_path):
    root = write_spair(tmp_path / "SPair-71k", pairs_per_category=4)
    everything = ids(module(root))
    assert len(everything) == 8
    seed0 = ids(module(root, subsample=3, subsample_seed=0))
    assert len(seed0) == 3 and set(seed0) <= set(everything)
    assert ids(module(root, subsample=3, subsample_seed=0)) == seed0
    assert ids(module(root, subsample=3, subsample_seed=1)) != seed0
    shards = [ids(module(root, shard_index=i, num_shards=3)) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(everything)
    assert len(sum(shards, [])) == len(everything) and all(shards)


def test_empty_pair_is_skipped_or_an_error(tmp_path):
    root = write_spair(tmp_path / "SPair-71k", empty_pair=True)
    data = module(root, empty_pairs="skip")
    assert len(data.dataset) == 4 and data.skipped == {"no_keypoints": 1}
    assert data.describe()["skipped"] == {"no_keypoints": 1}
    with pytest.raises(DataError, match="002005-2008_000001-2008_000002:aeroplane has no keypoint"):
        module(root, empty_pairs="error")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trg_bndbox": None}, "missing field 'trg_bndbox'"),
        (
            {"src_kps": [[10, 20], [121, 45], [110, 80]]},
            r"field 'src_kps\[1\]' = \[121\.0, 45\.0\] lies outside the 120x90",
        ),
        (
            {"trg_kps": [[25, 10], [50, 70], [75, 141]]},
            r"field 'trg_kps\[2\]' = \[75\.0, 141\.0\] lies outside the 100x140",
        ),
        ({"trg_kps": [[25, 10], [50, 70]]}, "field 'trg_kps' has 2 points but 'src_kps' has 3"),
        ({"src_kps": [[10, "a"], [60, 45], [110, 80]]}, r"field 'src_kps\[0\]' must be \[x, y\]"),
        ({"src_imsize": [120]}, "field 'src_imsize' must be"),
        ({"src_bndbox": [50, 15, 8, 85]}, "field 'src_bndbox' = .* must have x2 >= x1"),
        ({"occlusion": None}, "missing field 'occlusion'"),
        ({"category": "cat"}, "field 'category' is 'cat' but"),
        ({"kps_ids": ["0"]}, "field 'kps_ids' must list one id per keypoint"),
    ],
)
def test_bad_fields_name_the_file_and_field(spair, changes, message):
    file = edit_pair(spair, 0, **changes)
    with pytest.raises(DataError, match=message) as info:
        module(spair)
    assert str(file) in str(info.value)


def test_malformed_json_names_the_file(spair):
    file = pair_file(spair, "test", 1)
    file.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON") as info:
        module(spair)
    assert str(file) in str(info.value)


def test_missing_pair_file_names_it_and_the_layout(spair):
    file = pair_file(spair, "test", 2)
    file.unlink()
    with pytest.raises(DataError, match="pair annotation not found") as info:
        module(spair)
    assert str(file) in str(info.value) and "Layout/large/test.txt" in str(info.value)


def test_missing_layout_file_says_what_is_expected(spair):
    (spair / "Layout" / "small" / "val.txt").unlink()
    with pytest.raises(DataError, match="layout file not found; expected the official SPair-71k layout") as info:
        module(spair, split="val", layout="small")
    assert "Layout/small/val.txt" in str(info.value)


def test_missing_image_names_the_pair_file_and_field(spair):
    (spair / "JPEGImages" / "aeroplane" / "2008_000002.jpg").unlink()
    with pytest.raises(DataError, match=r"field 'trg_imname': image .*2008_000002\.jpg not found") as info:
        module(spair)
    assert FIRST_TEST_PAIR + ".json" in str(info.value)


def test_image_size_mismatch_names_the_image_and_both_sizes(spair):
    data = module(spair)
    Image.new("RGB", (64, 48)).save(spair / "JPEGImages" / "aeroplane" / "2008_000002.jpg")
    with pytest.raises(DataError, match=r"2008_000002\.jpg: decoded image is 64x48 .* 'trg_imsize' 100x140"):
        data.dataset[0]
    with pytest.raises(DataError, match=r"2008_000002\.jpg: decoded image is 64x48 .* 'src_imsize' 100x140"):
        data.dataset[1]


def test_decoded_size_must_match_the_pair_json(spair):
    file = edit_pair(spair, 0, trg_imsize=[999, 998, 3])
    with pytest.raises(
        DataError, match=rf"decoded image is \d+x\d+ \(W x H\) but .*{file.name} declares 'trg_imsize' 999x998"
    ):
        module(spair).dataset[0]  # the first test pair
