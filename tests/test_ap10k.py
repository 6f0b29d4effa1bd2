"""AP-10K correspondences in GeoAware-SC's layout, checked against its loader (``prepare_ap10k.ipynb`` for the
files, ``utils/utils_dataset.py`` ``load_ap10k_data`` and ``get_dataset_info`` for the paths, the
subsets' folders and the target-bbox threshold, ``pck_train.py`` for the keypoints visible in both
images). Expected values come from the fixture's formulas (tests/fixtures_ap10k.py), not from the module."""

import json

import pytest

from datamodules.ap10k import AP10KDataModule
from datamodules.base import DataError
from sdcorr.cli.main import main
from sdcorr.errors import OptionError
from tests.conftest import REPO
from tests.fixtures_ap10k import ANIMALS, PAIRS, ap10k_bbox, ap10k_keypoints, ap10k_size, stem, write_ap10k


def setup_module_(root, **kwargs):
    module = AP10KDataModule(root=str(root), **kwargs)
    module.setup("test")
    return module


@pytest.fixture(scope="module")
def ap10k(tmp_path_factory):
    return write_ap10k(tmp_path_factory.mktemp("ap10k"))


def expected_pair(source, target):
    """Ids, source and target points of the keypoints visible in both animals, and the threshold."""
    src, trg = ap10k_keypoints(source), ap10k_keypoints(target)
    ids = [k for k in range(17) if src[k][2] > 0 and trg[k][2] > 0]
    threshold = max(ap10k_bbox(target)[2:])
    return ids, [list(src[k][:2]) for k in ids], [list(trg[k][:2]) for k in ids], threshold


@pytest.mark.parametrize("subset, folder", [("intra-species", "test"), ("cross-species", "test_cross_species"),
                                            ("cross-family", "test_cross_family")])  # fmt: skip
def test_each_test_set_reads_its_folder(ap10k, subset, folder):
    module = setup_module_(ap10k, subset=subset)
    # ordered by (category, file name), as the reference globs each category's sorted files
    chosen = sorted(PAIRS[folder], key=lambda p: (p[2], f"{stem(p[0])}-{stem(p[1])}"))
    assert [p["pair_id"] for p in module.dataset.pairs] == [f"{stem(s)}-{stem(t)}:{c}" for s, t, c in chosen]
    for pair, (source, target, category) in zip(module.dataset.pairs, chosen):
        ids, src, trg, threshold = expected_pair(source, target)
        assert pair["category"] == category
        assert pair["kps_ids"] == [str(k) for k in ids] and pair["num_keypoints"] == len(ids) >= 3
        assert pair["source_keypoints"].tolist() == src and pair["target_keypoints"].tolist() == trg
        assert pair["threshold"] == threshold and pair["references"]["bbox-trg"]["threshold"] == threshold
        family, species, _ = ANIMALS[target]
        assert pair["target_path"] == ap10k / "JPEGImages" / family / species / f"{stem(target)}.jpg"
    assert module.describe()["subset"] == subset and module.describe()["threshold_mode"] == "bbox-trg"


def test_sample_of_a_species_with_a_space(ap10k):
    module = setup_module_(ap10k, categories=["snow leopard"])
    sample = module.dataset[0]
    (w_s, h_s), (w_t, h_t) = ap10k_size(2), ap10k_size(3)
    assert sample["source_image"].shape == (3, h_s, w_s) and sample["target_image"].shape == (3, h_t, w_t)
    assert float(sample["threshold"]) == 53.0  # target animal 3: max(50 + 3, 40 + 6)
    assert sample["pck_scale"].tolist() == [1.0, 1.0]


def test_splits_and_options(ap10k):
    assert [p["pair_id"] for p in setup_module_(ap10k, split="val").dataset.pairs] == [f"{stem(1)}-{stem(0)}:cat"]
    with pytest.raises(DataError, match=r"PairAnnotation/val_cross_family: pair folder not found; expected"):
        setup_module_(ap10k, split="val", subset="cross-family")
    with pytest.raises(OptionError, match="trn split has intra-species pairs only"):
        AP10KDataModule(root=str(ap10k), split="trn", subset="cross-species")
    with pytest.raises(OptionError, match="subset"):
        AP10KDataModule(root=str(ap10k), subset="cross-genus")
    with pytest.raises(DataError, match=r"absent: dataset folder not found; .* not a download: .*prepare_ap10k"):
        AP10KDataModule(root=str(ap10k / "absent")).prepare_data()


def edit_json(path, **changes):
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


def test_pair_paths_are_found_under_root_wherever_the_notebook_ran(tmp_path):
    root = write_ap10k(tmp_path)
    pair = root / "PairAnnotation" / "test" / f"{stem(0)}-{stem(1)}:cat.json"
    edit_json(pair, src_json_path=f"/elsewhere/ap-10k/ImageAnnotation/Felidae/cat/{stem(0)}.json")
    assert setup_module_(root).dataset.pairs[0]["source_path"] == root / "JPEGImages/Felidae/cat" / f"{stem(0)}.jpg"
    edit_json(pair, src_json_path=f"Felidae/cat/{stem(0)}.json")
    with pytest.raises(DataError, match=r"field 'src_json_path' = 'Felidae/cat/000000000101\.json' has no Image"):
        setup_module_(root)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"bbox": [2, 3, 0, 0]}, r"field 'bbox' = \[2, 3, 0, 0\] has no extent"),
        ({"keypoints": [1, 2, 3]}, r"field 'keypoints' must be 51 numbers"),
        ({"keypoints": [5, 4, 3] + [0] * 48}, r"field 'keypoints': visibility flags must be 0, 1 or 2"),
        (
            {"keypoints": [5, 4, 2] + [0] * 45 + [99, 4, 2]},
            r"'keypoints': keypoint 16 = \[99\.0, 4\.0\] lies outside the 84x",
        ),
        ({"width": 0}, r"fields 'width', 'height' must be positive numbers"),
    ],
)
def test_bad_image_annotations_name_the_file_and_field(tmp_path, changes, message):
    root = write_ap10k(tmp_path)
    edit_json(root / "ImageAnnotation" / "Felidae" / "cat" / f"{stem(1)}.json", **changes)
    with pytest.raises(DataError, match=rf"ImageAnnotation/Felidae/cat/{stem(1)}\.json: (field )?{message}"):
        setup_module_(root)


def test_decoded_size_must_match_the_annotation(tmp_path):
    root = write_ap10k(tmp_path)
    edit_json(root / "ImageAnnotation" / "Canidae" / "dog" / f"{stem(5)}.json", width=99)
    module = setup_module_(root, categories=["dog"])
    with pytest.raises(DataError, match=r"decoded image is 100x70 \(W x H\) but its annotation declares width 99"):
        module.dataset[0]
    (root / "JPEGImages" / "Canidae" / "dog" / f"{stem(5)}.jpg").unlink()
    with pytest.raises(DataError, match=r"field 'trg_json_path': image .*000000000202\.jpg not found"):
        setup_module_(root)


def test_plan_gives_the_cost_of_each_test_set(ap10k, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for subset, folder in (("intra-species", "test"), ("cross-family", "test_cross_family")):
        main(["plan", "--config", "configs/ap10k.yaml", "--data.root", str(ap10k), "--data.subset", subset])
        keypoints = sum(len(expected_pair(s, t)[0]) for s, t, _ in PAIRS[folder])
        assert f"to do: {len(PAIRS[folder])} pairs, {keypoints} keypoints" in capsys.readouterr().out
