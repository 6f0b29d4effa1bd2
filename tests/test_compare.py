"""``sdcorr compare`` (sdcorr.runs.compare, sdcorr.stats.paper) on hand-made run folders: no model needed."""

import dataclasses
import inspect
import json

import pytest
import torch
import yaml

from sdcorr.cli import commands
from sdcorr.cli.main import main
from sdcorr.errors import DataError, UsageError
from sdcorr.paths import INSTALL_ROOT
from sdcorr.runs.compare import Run, compare_paper, compare_runs, format_comparison
from sdcorr.runs.folder import COMPARE, COMPARE_FILES, RunFolder
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import FORMAT, Prediction
from sdcorr.runs.scoring import results_of
from sdcorr.sources.dift import DiftSource
from sdcorr.stats.intervals import RESAMPLES, paired_difference, stratified_mean_intervals
from tests.conftest import sdcorr

#: keypoint offsets in pixels against a threshold of 100: correct at 0.05 and 0.1, at 0.1 only, at neither
RIGHT, NEAR, WRONG = 0.0, 7.0, 50.0
SPAIR = {"datamodule": "SPairDataModule", "root": "/data/SPair-71k", "categories": None, "subsample": None,
         "shard": [0, 1], "num_pairs": None, "skipped": {}, "split": "test", "layout": "large",
         "threshold_mode": "bbox-src-512"}  # fmt: skip


def prediction(pair_id, category, offsets, truth_shift=0.0):
    """A scored pair whose keypoint ``j`` is predicted ``offsets[j]`` pixels right of its ground truth."""
    target = [[10.0 * j + truth_shift, 20.0] for j in range(len(offsets))]
    return Prediction(
        pair_id=pair_id,
        category=category,
        source_keypoints=[[5.0 * j, 8.0] for j in range(len(offsets))],
        predicted_keypoints=[[x + offset, y] for (x, y), offset in zip(target, offsets)],
        target_keypoints=target,
        threshold=100.0,
        references={"bbox-src-512": {"threshold": 100.0, "pck_scale": [1.0, 1.0]},
                    "bbox-trg": {"threshold": 600.0, "pck_scale": [1.0, 1.0]}},
    )  # fmt: skip


def write_run(folder, predictions, data=None, seed=0, model=None):
    """A run folder as `sdcorr test` leaves it: run.json (``model``: its recorded source and matcher) and
    predictions.jsonl."""
    run = RunFolder(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    model = model or {"source": {"class": "tiny"}, "matcher": {"class": "m"}}
    run.write_manifest(Manifest.from_json({
        "format": FORMAT,
        "fingerprint": {"data": SPAIR | (data or {}), **model, "seed": seed, "precision": "32-true",
                        "embeddings": False},
        "model": "a tiny random model", "pair_ids": [p.pair_id for p in predictions], "alphas": [0.05, 0.1],
        "layers": [0, 1],
    }))  # fmt: skip
    appender = run.appender()
    for p in predictions:
        appender.write(p)
    appender.close()
    return str(folder)


def mixed(count=40, categories=("aeroplane", "cat"), seed=0):
    """Pairs of 5 keypoints, each right, near or wrong at random."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        choice = torch.randint(3, (5,), generator=generator).tolist()
        out.append(prediction(f"p{i:03d}", categories[i % len(categories)], [(RIGHT, NEAR, WRONG)[c] for c in choice]))
    return out


def all_wrong(predictions):
    return [prediction(p.pair_id, p.category, [WRONG] * len(p.source_keypoints)) for p in predictions]


def rows(payload, alpha="0.1", comparison=0):
    return {r["category"]: r for r in payload["comparisons"][comparison]["rows"][alpha]}


def test_identical_runs_differ_by_zero_with_p_one(tmp_path):
    pairs = mixed()
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", pairs, seed=1)
    payload, warnings = compare_runs([Run.read(a), Run.read(b)])
    assert warnings == [] and payload["alphas"] == [0.05, 0.1]
    for alpha in ("0.05", "0.1"):
        for row in rows(payload, alpha).values():
            assert row["difference"] == 0 and row["low"] <= 0 <= row["high"] and row["p_value"] == 1
    assert payload["comparisons"][0]["run_differences"] == ["seed: 0 -> 1"]
    # A's figure is the run's own per-image PCK of results.json
    results = results_of(pairs, RunFolder(a).manifest())
    assert rows(payload)["overall"]["a"] == pytest.approx(100 * results.overall["pck@0.1"]["per_image"])
    assert rows(payload)["cat"]["a"] == pytest.approx(100 * results.per_category["cat"]["pck@0.1"]["per_image"])


def test_every_keypoint_wrong_is_a_significant_difference(tmp_path):
    pairs = mixed()
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", all_wrong(pairs))
    payload, _ = compare_runs([Run.read(a), Run.read(b)], alphas=[0.1])
    overall = rows(payload)["overall"]
    assert overall["b"] == 0 and overall["difference"] == pytest.approx(-overall["a"]) and overall["a"] > 30
    assert overall["high"] < 0 and overall["p_value"] < 0.01
    # a third run is compared with the first too
    payload, _ = compare_runs([Run.read(a), Run.read(b), Run.read(a)], alphas=[0.1])
    assert rows(payload, comparison=1)["overall"]["difference"] == 0


@pytest.mark.parametrize(
    "data, message",
    [({"split": "val"}, "not on the same data as .*: split 'val' against 'test'"),
     ({"datamodule": "PFWillowDataModule"}, "datamodule 'PFWillowDataModule' against 'SPairDataModule'"),
     ({"threshold_mode": "bbox-trg"}, "scored with threshold 'bbox-trg', .* with 'bbox-src-512'; pass --threshold")],
)  # fmt: skip
def test_runs_on_other_data_are_refused_with_one_line(tmp_path, data, message):
    a, b = write_run(tmp_path / "a", mixed()), write_run(tmp_path / "b", mixed(), data)
    with pytest.raises(DataError, match=message) as error:
        compare_runs([Run.read(a), Run.read(b)])
    assert "\n" not in str(error.value) and str(tmp_path / "b") in str(error.value)


def test_threshold_option_scores_both_in_one_mode(tmp_path):
    pairs = mixed()
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", all_wrong(pairs), {"threshold_mode": "bbox-trg"})
    payload, _ = compare_runs([Run.read(a), Run.read(b)], threshold="bbox-trg")
    assert payload["threshold_mode"] == "bbox-trg"
    assert rows(payload)["overall"]["b"] == 100  # 50 pixels is within 0.1 x 600


def test_other_ground_truth_or_no_shared_pair_is_refused(tmp_path):
    pairs = mixed(count=6)
    moved = [prediction(p.pair_id, p.category, [RIGHT] * 5, truth_shift=3.0) for p in pairs]
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", moved)
    with pytest.raises(DataError, match="pair 'p000' has other ground truth than in"):
        compare_runs([Run.read(a), Run.read(b)])
    renamed = [prediction("x" + p.pair_id, p.category, [RIGHT] * 5) for p in pairs]
    c = write_run(tmp_path / "c", renamed)
    with pytest.raises(DataError, match="shares no scored pair with"):
        compare_runs([Run.read(a), Run.read(c)])
    with pytest.raises(UsageError, match="at least two run folders"):
        commands.compare([a])


def test_partial_overlap_warns_once_and_compares_the_shared_pairs(tmp_path, capsys):
    pairs = mixed()
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", pairs[:15])  # b is unfinished
    payload = commands.compare([a, b])
    out, err = capsys.readouterr()
    assert err.count("compare: warning:") == 1 and len(err.strip().splitlines()) == 1
    assert "shares 15 of its 15 scored pairs with" in err and "comparing the 15 shared pairs" in err
    assert payload["comparisons"][0]["shared_pairs"] == 15 and rows(payload)["overall"]["pairs"] == 15
    assert "overall" in out and "p=1.000" in out


def test_pairs_of_one_source_image_are_resampled_together(tmp_path):
    # 40 pairs on 10 source images; B gets every keypoint of the even images right, of the odd ones wrong:
    # the difference is correlated within a source image, so the paired bootstrap must draw whole images
    pairs = [dataclasses.replace(p, source_group=f"img{i // 4}") for i, p in enumerate(mixed())]
    better = [prediction(p.pair_id, p.category, [(RIGHT, WRONG)[i // 4 % 2]] * 5) for i, p in enumerate(pairs)]
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", better)  # b: written without source images
    payload, _ = compare_runs([Run.read(a), Run.read(b)], alphas=[0.1])
    first = torch.tensor([sum(o != WRONG for o in offsets(p)) / 5 for p in pairs], dtype=torch.float64)
    second = torch.tensor([1.0 - i // 4 % 2 for i in range(40)], dtype=torch.float64)
    images = [f"img{i // 4}" for i in range(40)]
    clustered = paired_difference(first, second, RESAMPLES, "compare/overall/0.1", images)
    overall = rows(payload)["overall"]
    assert [overall[k] for k in ("low", "high")] == pytest.approx([100 * clustered[k] for k in ("low", "high")])
    assert overall["p_value"] == clustered["p_value"]
    per_pair = paired_difference(first, second, RESAMPLES, "compare/overall/0.1")
    assert clustered["high"] - clustered["low"] > 1.3 * (per_pair["high"] - per_pair["low"])
    block = payload["intervals"]
    assert (block["clusters"], block["num_clusters"], block["num_pairs"]) == ("source image", 10, 40)
    # 40 pairs on 3 source images are too few units for an interval or p-value, and the table says why
    three = write_run(tmp_path / "c", [dataclasses.replace(p, source_group=f"img{i % 3}") for i, p in enumerate(pairs)])
    payload, _ = compare_runs([Run.read(three), Run.read(b)], alphas=[0.1])
    assert rows(payload)["overall"]["p_value"] is None
    assert "(< 10 source images)" in format_comparison(payload)


def offsets(p):
    """The x offsets of a pair's predicted keypoints from their ground truth."""
    return [x - tx for (x, _), (tx, _) in zip(p.predicted_keypoints, p.target_keypoints)]


def test_stratified_interval_is_around_the_mean_of_category_means():
    # category a: 2 pairs at 1.0; category b: 8 pairs at 0 or 0.5: mean of means 0.625, mean over pairs 0.4
    scores = torch.tensor([[1.0], [1.0]] + [[0.0], [0.5]] * 4)
    low, high = stratified_mean_intervals(scores, ["a"] * 2 + ["b"] * 8, resamples=500, name="t")[0].tolist()
    assert low < 0.625 < high and low > 0.4


def spair_paper_run(tmp_path, data=None):
    """aeroplane: every keypoint right (100, far above the paper's 54.2); bicycle: 4 or 5 of 10 keypoints right
    at 0.1 (45, around the paper's 45.1)."""
    pairs = [prediction(f"a{i:02d}", "aeroplane", [RIGHT] * 10) for i in range(10)]
    pairs += [prediction(f"b{i:02d}", "bicycle", [RIGHT] * (4 + i % 2) + [WRONG] * (6 - i % 2)) for i in range(40)]
    return write_run(tmp_path / "run", pairs, data)


def test_paper_flags_a_category_whose_interval_excludes_the_paper(tmp_path):
    payload, warnings = compare_paper(Run.read(spair_paper_run(tmp_path)), "spair")
    by_name = {(r["category"], r["alpha"]): r for r in payload["rows"]}
    assert by_name["aeroplane", 0.1]["outside"] and by_name["aeroplane", 0.1]["paper"] == 54.2
    bicycle = by_name["bicycle", 0.1]
    assert not bicycle["outside"] and bicycle["low"] <= 45.1 <= bicycle["high"] and bicycle["run"] == pytest.approx(45)
    # the overall as the paper computes it: the mean of the category means, not the mean over pairs
    assert by_name["overall", 0.1]["run"] == pytest.approx((100 + 45) / 2) and by_name["overall", 0.1]["paper"] == 45.4
    assert "not the published selection" in warnings[0] and "50 scored pairs" in warnings[0]
    # a tiny model is not the paper's recipe (configs/base.yaml): the figures are shown, marked not comparable
    assert not payload["comparable"] and "source tiny (recipe sdcorr.StableDiffusionSource)" in warnings[1]
    assert payload["method"] == "hedlin" and payload == compare_paper(Run.read(tmp_path / "run"), "hedlin")[0]


def test_paper_refuses_another_threshold_and_another_dataset(tmp_path):
    run = Run.read(spair_paper_run(tmp_path, {"threshold_mode": "bbox-trg", "subsample": 50}))
    with pytest.raises(UsageError, match="pass --threshold bbox-src-512 to score the run in that mode"):
        compare_paper(run, "spair")
    _, warnings = compare_paper(run, "spair", threshold="bbox-src-512")
    assert "subsample 50" in warnings[0]
    with pytest.raises(DataError, match="--paper pfwillow needs a PFWillowDataModule run"):
        compare_paper(run, "pfwillow")
    with pytest.raises(UsageError, match="--paper: expected one of"):
        compare_paper(run, "spiar")


def test_paper_table_stars_only_the_rows_outside(tmp_path, capsys):
    commands.compare([spair_paper_run(tmp_path)], paper="spair")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if line.endswith("*")] == ["aeroplane", "overall", "overall"]
    assert any(line.startswith("* the published figure is outside") for line in lines)
    assert any(line.startswith("published figures NOT comparable: source tiny") for line in lines)
    assert (tmp_path / "run" / COMPARE / COMPARE_FILES["json"]).is_file()


def dift_record(**changes):
    """What run.json records for a run of configs/model/dift.yaml (read here, independently of the code under
    test, with the defaults of the arguments the file leaves out), with ``changes`` to the source."""
    recipe = yaml.safe_load((INSTALL_ROOT / "configs/model/dift.yaml").read_text())["model"]
    assert recipe["source"]["class_path"] == "sdcorr.DiftSource"
    defaults = {k: p.default for k, p in inspect.signature(DiftSource.__init__).parameters.items() if k != "self"}
    source = defaults | recipe["source"]["init_args"] | changes
    source.pop("local_files_only")  # a speed option: never recorded
    matcher = {"soft_argmax": False, "temperature": 0.02, "window": None} | recipe["matcher"].get("init_args", {})
    return {"source": {"class": "sdcorr.DiftSource", **source},
            "matcher": {"class": "sdcorr.NearestNeighbourMatcher", **matcher}}  # fmt: skip


def test_paper_dift_accepts_a_run_of_its_recipe_and_names_what_differs(tmp_path):
    pairs = mixed(count=30)
    dift = {"threshold_mode": "bbox-trg"}
    run = Run.read(write_run(tmp_path / "a", pairs, dift, model=dift_record(pretrained="/models/sd21")))
    payload, warnings = compare_paper(run, "dift")
    assert payload["comparable"] and payload["recipe_differences"] == [] and payload["alphas"] == [0.1]
    assert not any("not comparable" in w for w in warnings) and payload["threshold_mode"] == "bbox-trg"
    # DIFT's overall: the mean over all pairs of each pair's fraction within 0.1 x its threshold (100 px, as run)
    expected = 100 * sum(sum(o <= 10 for o in (p.predicted_keypoints[j][0] - p.target_keypoints[j][0]
                                                 for j in range(5))) / 5 for p in pairs) / len(pairs)  # fmt: skip
    assert 0 < expected < 100
    (overall,) = [r for r in payload["rows"] if r["category"] == "overall"]
    assert overall["run"] == pytest.approx(expected) and overall["paper"] is None and not overall["outside"]
    other = Run.read(write_run(tmp_path / "b", pairs, dift, model=dift_record(timestep=50, ensemble_size=4)))
    payload, warnings = compare_paper(other, "dift")
    assert payload["recipe_differences"] == ["source.ensemble_size 4 (recipe 8)", "source.timestep 50 (recipe 261)"]
    assert sum("not comparable" in w for w in warnings) == 1


def test_paper_rule_of_category_per_point_means(tmp_path):
    # aeroplane: 2 pairs of 10 keypoints, 10 and 0 right at 0.01 (per point 0.5); cat: 12 pairs of 2, all right
    pairs = [prediction("a0", "aeroplane", [RIGHT] * 10), prediction("a1", "aeroplane", [WRONG] * 10)]
    pairs += [prediction(f"c{i:02d}", "cat", [RIGHT] * 2) for i in range(12)]
    run = Run.read(write_run(tmp_path / "a", pairs, {"threshold_mode": "bbox-trg"}))
    payload, warnings = compare_paper(run, "sd-dino")
    overall = {r["alpha"]: r for r in payload["rows"] if r["category"] == "overall"}
    assert sorted(overall) == [0.01, 0.05, 0.1] and overall[0.01]["run"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert payload["recipe"] == "configs/model/sd_dino.yaml" and not payload["comparable"]


def test_paper_list_names_every_method_with_its_rule(capsys):
    assert main(["compare", "--paper", "list"]) in (None, 0)
    out = capsys.readouterr().out
    for method in ("hedlin", "dift", "dinov2", "sd-dino"):
        assert any(line.startswith(method) for line in out.splitlines()), out
    assert "bbox-trg" in out and "Tsingularity/dift eval_spair.py" in out and "configs/model/dift.yaml" in out


def test_cli_compares_and_writes_into_the_second_run_folder(tmp_path):
    pairs, elsewhere = mixed(), tmp_path / "elsewhere"
    elsewhere.mkdir()
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", all_wrong(pairs))
    result = sdcorr("compare", a, b, "--alphas", "[0.1]", cwd=elsewhere)
    overall = [line for line in result.stdout.splitlines() if line.startswith("overall")]
    assert len(overall) == 1 and "p<0.001" in overall[0], result.stdout
    written = tmp_path / "b" / COMPARE
    assert json.loads((written / COMPARE_FILES["json"]).read_text())["comparisons"][0]["b"] == b
    assert (written / COMPARE_FILES["chart"]).read_bytes()[:4] == b"\x89PNG"
    page = (written / COMPARE_FILES["page"]).read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert not list(elsewhere.iterdir()) and not (tmp_path / "a" / COMPARE).exists()


def test_cli_refusal_is_one_error_line(tmp_path):
    a, b = write_run(tmp_path / "a", mixed()), write_run(tmp_path / "b", mixed(), {"split": "val"})
    result = sdcorr("compare", a, b, check=False, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdcorr: error: ") and "split 'val'" in lines[0], result.stderr
    assert not (tmp_path / "b" / COMPARE).exists()


def test_rows_of_a_handful_of_pairs_get_no_interval(tmp_path, capsys):
    # one wrong pair would otherwise give a zero-width interval and p < 0.001
    pairs = mixed(count=24, categories=("aeroplane",) * 23 + ("cat",))
    a, b = write_run(tmp_path / "a", pairs), write_run(tmp_path / "b", all_wrong(pairs))
    payload = commands.compare([a, b], alphas=[0.1])
    cat, overall = rows(payload)["cat"], rows(payload)["overall"]
    assert cat["pairs"] == 1 and cat["low"] is cat["high"] is cat["p_value"] is None and cat["difference"] < 0
    assert overall["p_value"] < 0.01
    assert any(line.startswith("cat ") and "(< 10 pairs)" in line for line in capsys.readouterr().out.splitlines())
    few = [prediction(f"a{i}", "aeroplane", [RIGHT] * 3) for i in range(3)]
    paper_rows = compare_paper(Run.read(write_run(tmp_path / "few", few)), "spair")[0]["rows"]
    assert paper_rows[0]["run"] == 100 and not any(r["outside"] for r in paper_rows) and paper_rows[0]["low"] is None


def test_a_dataset_with_one_threshold_mode_is_scored_as_run(tmp_path):
    # CUB records its mode in run.json but no references in its predictions
    pairs = [prediction(f"p{i}", "001.Black_footed_Albatross", [RIGHT, NEAR, WRONG]) for i in range(12)]
    for p in pairs:
        p.references = {}
    cub = {"datamodule": "CUBDataModule", "threshold_mode": "bbox-trg-512", "classes": [1, 2, 3], "split": "test"}
    a, b = write_run(tmp_path / "a", pairs, cub), write_run(tmp_path / "b", pairs, cub)
    payload, _ = compare_runs([Run.read(a), Run.read(b)])
    assert payload["threshold_mode"] == "bbox-trg-512" and rows(payload)["overall"]["a"] == pytest.approx(200 / 3)
    paper, warnings = compare_paper(Run.read(a), "cub")
    assert paper["rows"][-1]["run"] == pytest.approx(200 / 3) and "12 scored pairs" not in " ".join(warnings)


@pytest.mark.parametrize(
    "args, code, message",
    [(["{a}"], 2, "compare: give at least two run folders (or one with --paper)"),
     (["{a}", "{a}", "--paper", "spair"], 2, "compare --paper: give one run folder; got 2"),
     (["{a}", "--paper", "spiar"], 2, "--paper: expected one of ['dift', 'dinov2', 'hedlin', 'sd-dino'] or 'list'"),
     (["{a}", "--paper", "dift"], 2, "{a}: scored with threshold 'bbox-src-512', dift's figures with 'bbox-trg'; "
                                     "pass --threshold bbox-trg to score the run in that mode"),
     ([], 2, "compare: give at least two run folders"),
     (["{a}", "{tmp}/nothing"], 1, "{tmp}/nothing: no such run folder"),
     (["{a}", "{tmp}"], 1, "{tmp}: no run.json; not a run folder")],
)  # fmt: skip
def test_bad_compare_command_lines_are_one_line(tmp_path, capsys, monkeypatch, args, code, message):
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    a = write_run(tmp_path / "a", mixed(count=4))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *(arg.format(a=a, tmp=tmp_path) for arg in args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == code and len(err) == 1, err
    assert err[0].startswith("sdcorr: error: ") and message.format(a=a, tmp=tmp_path) in err[0], err


def test_a_folder_of_an_older_sdcorr_is_one_line_naming_it_and_the_remedy(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["sdcorr"])
    a, old = write_run(tmp_path / "a", mixed(count=4)), write_run(tmp_path / "old", mixed(count=4))
    manifest = json.loads(RunFolder(old).manifest_file.read_text())
    del manifest["format"]
    RunFolder(old).manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", a, old])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and err == [
        f"sdcorr: error: {old}: a run manifest written by an older sdcorr (no format version) in run.json; "
        "rerun into a new folder, or pass --output.overwrite true to discard it"
    ]
