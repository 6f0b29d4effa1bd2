"""PF-Pascal in the public layout, checked against the loaders named in :mod:`datamodules.pfpascal`: the pair
lists and ``;``-separated keypoint columns as GeoAware-SC's ``load_pascal_data`` and weakalign's
``PFPascalDataset`` read them, the class index order of hpf's ``PFPascalDataset``, and hpf's ``img`` and
``bbox`` thresholds (``get_pckthres``: the target's longer side; the target's ``.mat`` bbox). Expected
values come from the fixture's formulas (tests/fixtures_pfpascal.py), not from the module."""

import csv

import numpy as np
import pytest
import torch

from datamodules.base import DataError
from datamodules.pfpascal import PFPascalDataModule, read_annotation
from sdcorr.cli.main import main
from sdcorr.errors import OptionError
from sdcorr.stats.pck import pck
from tests.conftest import REPO
from tests.fixtures_pfpascal import (
    pfpascal_keypoints,
    pfpascal_sizes,
    pfpascal_target_bbox,
    write_pfpascal,
)


def setup_module_(root, **kwargs):
    module = PFPascalDataModule(root=str(root), download=False, **kwargs)
    module.setup("test")
    return module


def edit_csv(root, row, column, value, split="test"):
    """Set one field of ``<split>_pairs_pf_pascal.csv`` (``row`` counts from 1 = header); ``column`` None drops
    the row's last field."""
    path = root / f"{split}_pairs_pf_pascal.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if column is None:
        rows[row - 1] = rows[row - 1][:-1]
    else:
        rows[row - 1][column] = value
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    """Two test pairs per class (aeroplane: rows 0, 1; cat: rows 2, 3), and the val list (rows 4..7)."""
    return write_pfpascal(tmp_path_factory.mktemp("pfpascal"), pairs_per_class=2)


def test_pairs_keypoints_and_both_thresholds(pascal):
    module = setup_module_(pascal)
    pairs = module.dataset.pairs
    assert [p["pair_id"] for p in pairs] == [f"{r:04d}:2010_{r:06d}a-2010_{r:06d}b" for r in range(4)]
    assert [p["category"] for p in pairs] == ["aeroplane", "aeroplane", "cat", "cat"]  # class index 1 and 8
    for r, pair in enumerate(pairs):
        source, target = pfpascal_keypoints(r)
        assert pair["source_keypoints"].tolist() == [list(p) for p in source]  # 3 + r % 3 keypoints, in order
        assert pair["target_keypoints"].tolist() == [list(p) for p in target]
        x1, y1, x2, y2 = pfpascal_target_bbox(r)
        expected = {"img-trg": max(pfpascal_sizes(r)[1]), "bbox-trg": max(x2 - x1, y2 - y1)}
        assert {m: e["threshold"] for m, e in pair["references"].items()} == expected
        assert pair["threshold"] == expected["img-trg"]  # the default
    sample = module.dataset[1]
    assert sample["source_image"].shape == (3, 54, 68) and sample["target_image"].shape == (3, 92, 76)
    assert float(sample["threshold"]) == 92.0 and sample["pck_scale"].tolist() == [1.0, 1.0]
    assert sample["references"]["bbox-trg"] == {"threshold": 43.0, "pck_scale": [1.0, 1.0]}
    assert module.describe()["threshold_mode"] == "img-trg" and module.describe()["split"] == "test"


def test_bbox_threshold_scores_against_the_target_box(pascal):
    module = setup_module_(pascal, threshold="bbox-trg")
    sample = module.dataset[0]
    assert float(sample["threshold"]) == 40.0  # max(45 - 5, 36 - 6)
    # 3 px off: within 0.1 * 40 = 4, not within 0.05 * 40 = 2; against the image (90) both would pass
    preds = sample["target_keypoints"][None] + torch.tensor([3.0, 0.0])
    out = pck(preds, sample["target_keypoints"][None], sample["threshold"][None], alphas=[0.05, 0.1])
    assert out["per_image"].tolist() == [0.0, 1.0]
    assert module.describe()["threshold_mode"] == "bbox-trg"


def test_val_split_and_class_filter(pascal):
    val = setup_module_(pascal, split="val")
    assert [p["pair_id"] for p in val.dataset.pairs][0] == "0000:2010_000004a-2010_000004b"
    assert val.dataset.pairs[0]["source_keypoints"].tolist() == [list(p) for p in pfpascal_keypoints(4)[0]]
    cats = setup_module_(pascal, categories=["cat"])
    assert [p["pair_id"][:4] for p in cats.dataset.pairs] == ["0002", "0003"]
    with pytest.raises(DataError, match="unknown categories"):
        setup_module_(pascal, categories=["dog"])
    for name, value in (("split", "train"), ("threshold", "bbox")):
        with pytest.raises(OptionError, match=name):
            PFPascalDataModule(root=str(pascal), **{name: value})


def test_annotation_file_holds_keypoints_with_absent_parts_and_the_box(pascal):
    annotation = read_annotation(pascal / "Annotations" / "cat" / "2010_000002b.mat")
    assert annotation["bbox"].tolist() == pfpascal_target_bbox(2)
    kps = annotation["kps"]
    assert kps.shape == (6, 2) and np.isnan(kps[-1]).all()
    assert kps[:-1].tolist() == [list(p) for p in pfpascal_keypoints(2)[1]]


@pytest.mark.parametrize(
    "edits, message",
    [
        ([(2, None, None)], r"test_pairs_pf_pascal\.csv: row 2: expected 7 columns, got 6"),
        ([(3, 2, "21")], r"row 3, column 2: expected a class index 1\.\.20, got '21'"),
        ([(3, 2, "1.5")], r"row 3, column 2: expected a class index 1\.\.20, got '1\.5'"),
        ([(2, 4, "3;7")], r"row 2: source has 3 x but 2 y coordinates"),
        ([(2, 5, "6;13;20;27"), (2, 6, "5;8;11;14")], r"row 2: 3 source but 4 target keypoints"),
        ([(2, 3, "4;9;n/a")], r"row 2, column 3: expected ';'-separated finite numbers, got '4;9;n/a'"),
        ([(2, 0, "2010_000000a.jpg")], r"row 2, column 0: expected a path like 'PF-dataset-PASCAL/JPEGImages/"),
        ([(2, 5, "6;13;70.5")], r"row 2, target keypoint 3 = \[70\.5, 11\.0\] lies outside the 70x90 image"),
    ],
)
def test_malformed_rows_name_the_row_and_column(tmp_path, edits, message):
    root = write_pfpascal(tmp_path, val=False)
    for row, column, value in edits:
        edit_csv(root, row, column, value)
    with pytest.raises(DataError, match=message):
        setup_module_(root)
    if edits[-1][2] == "6;13;70.5":  # on the border is inside
        edit_csv(root, 2, 5, "6;13;70")
        assert len(setup_module_(root).dataset) == 2


def test_missing_files_are_named(tmp_path):
    root = write_pfpascal(tmp_path, val=False)
    with pytest.raises(DataError, match=r"val_pairs_pf_pascal\.csv: pairs file not found; download .*cnngeometric"):
        setup_module_(root, split="val")
    (root / "Annotations" / "cat" / "2010_000001b.mat").unlink()
    with pytest.raises(DataError, match=r"cat/2010_000001b\.mat: annotation not found"):
        setup_module_(root)
    (root / "Annotations" / "cat" / "2010_000001b.mat").write_text("not a mat file")
    with pytest.raises(DataError, match=r"2010_000001b\.mat: not a readable MATLAB annotation"):
        setup_module_(root)


def test_plan_gives_the_cost_of_the_test_pairs(pascal, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    main(["plan", "--config", "configs/pfpascal.yaml", "--data.root", str(pascal)])
    keypoints = sum(3 + r % 3 for r in range(4))
    assert f"to do: 4 pairs, {keypoints} keypoints" in capsys.readouterr().out
