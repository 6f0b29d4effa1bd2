"""`sdcorr test` on each benchmark config, with the tiny model, a quick protocol and a fixture dataset."""

import json

import pytest

from tests.fixtures_cub import write_cub
from tests.fixtures_pfwillow import write_pfwillow
from tests.fixtures_spair import write_spair
from tests.test_cli import sdcorr

BENCHMARKS = {
    "spair": (write_spair, "bbox-src-512"),
    "pfwillow": (write_pfwillow, "kps-trg"),
    "cub": (write_cub, "bbox-trg-512"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_config_runs_end_to_end(tmp_path, name):
    writer, mode = BENCHMARKS[name]
    root = writer(tmp_path / "data")
    out = tmp_path / "out"
    extra = ["--data.classes", "[1, 2]"] if name == "cub" else []
    run = sdcorr(
        "test", "--config", f"configs/{name}.yaml", "--config", "configs/model/tiny.yaml",
        "--config", "configs/protocol/quick.yaml", "--data.root", str(root), "--trainer.default_root_dir", str(out),
        "--trainer.logger", "false", *extra,
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["data"]["threshold_mode"] == mode
    assert results["overall"]["num_pairs"] == len(lines) == results["data"]["num_pairs"] > 0
    assert sum(c["num_pairs"] for c in results["per_category"].values()) == len(lines)
    assert len(results["per_category"]) >= 2
    if name == "spair":
        keys = {group.split("=")[0] for group in results["per_group"]}
        assert keys == {"viewpoint_variation", "scale_variation", "truncation", "occlusion"}
    if name == "cub":
        assert results["data"]["skipped"]["no_keypoints"] >= 1
        assert "skipped pairs (not scored): {'no_keypoints'" in run.stdout + run.stderr
