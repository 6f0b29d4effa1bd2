"""`sdcorr test` on each benchmark config, with the tiny model, a quick protocol and a fixture dataset."""

import json

import pytest

from tests.conftest import sdcorr
from tests.fixtures_ap10k import write_ap10k
from tests.fixtures_cub import write_cub
from tests.fixtures_pfpascal import write_pfpascal
from tests.fixtures_pfwillow import write_pfwillow
from tests.fixtures_spair import write_spair

pytestmark = pytest.mark.slow  # every benchmark config run end to end on its fixture

BENCHMARKS = {
    "spair": (write_spair, "bbox-src-512"),
    "pfwillow": (write_pfwillow, "kps-trg"),
    "cub": (write_cub, "bbox-trg-512"),
    "pfpascal": (write_pfpascal, "img-trg"),
    "ap10k": (write_ap10k, "bbox-trg"),
}


# every benchmark with the prompt method; SPair also with the nearest-neighbour methods (issue 8)
RUNS = [(name, "tiny") for name in sorted(BENCHMARKS)] + [("spair", "tiny_dift"), ("spair", "tiny_dinov2")]


@pytest.mark.parametrize("name, model", RUNS)
def test_benchmark_config_runs_end_to_end(tmp_path, name, model):
    writer, mode = BENCHMARKS[name]
    root = writer(tmp_path / "data")
    out = tmp_path / "out"
    extra = ["--data.classes", "[1, 2]"] if name == "cub" else []
    if model == "tiny":
        extra += ["--config", "configs/protocol/quick.yaml"]
    run = sdcorr(
        "test", "--config", f"configs/{name}.yaml", "--config", f"configs/model/{model}.yaml",
        "--data.root", str(root), "--trainer.default_root_dir", str(out), "--trainer.logger", "false", *extra,
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["data"]["threshold_mode"] == mode
    assert results["overall"]["num_pairs"] == len(lines) == results["data"]["num_pairs"] > 0
    assert sum(c["num_pairs"] for c in results["per_category"].values()) == len(lines)
    assert len(results["per_category"]) >= 2
    assert results["source"]["class"].endswith({"tiny": "StableDiffusionSource", "tiny_dift": "DiftSource",
                                                "tiny_dinov2": "Dinov2Source"}[model])  # fmt: skip
    if name == "spair":
        keys = {group.split("=")[0] for group in results["per_group"]}
        assert keys == {"viewpoint_variation", "scale_variation", "truncation", "occlusion"}
        # the other threshold mode, after the fact: same predictions, other reference lengths
        sdcorr("evaluate", str(out), "--threshold", "bbox-trg")
        again = json.loads((out / "evaluation.json").read_text())
        assert again["threshold_mode"] == "bbox-trg" and again["overall"]["num_pairs"] == len(lines)
    if name == "pfpascal":  # hpf's other threshold, from the target's .mat bounding box
        sdcorr("evaluate", str(out), "--threshold", "bbox-trg")
        again = json.loads((out / "evaluation.json").read_text())
        assert again["threshold_mode"] == "bbox-trg" and again["overall"]["num_pairs"] == len(lines)
    if name == "cub":
        assert results["data"]["skipped"]["no_keypoints"] >= 1
        assert "skipped pairs (not scored): {'no_keypoints'" in run.stdout + run.stderr
