"""The ``sdcorr`` command end to end, in subprocesses, as a user runs it."""

import html
import json
import logging
import re
import sys

import pytest
import torch
import yaml

from sdcorr.cli.main import main
from sdcorr.cli.quiet import NoTips
from sdcorr.stats.pck import pck
from tests.conftest import QUICK, REPO, sdcorr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    # a logger, as configs/demo.yaml has: its save_dir follows the run folder (linked to default_root_dir)
    result = sdcorr("test", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(out),
                    "--trainer.logger", "lightning.pytorch.loggers.CSVLogger")  # fmt: skip
    return out, result, out / "lightning_logs"


@pytest.mark.slow
def test_smoke_writes_results_and_predictions_that_agree(smoke_run):
    out, result, _ = smoke_run
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(line["pair_id"] for line in lines) == ["0_chelsea", "1_astronaut", "2_astronaut"]
    assert results["overall"]["num_pairs"] == 3 and results["overall"]["num_keypoints"] == 16
    # the table printed for the user
    assert "overall" in result.stderr + result.stdout and "PCK@0.1" in result.stderr + result.stdout
    # quiet: no third-party advertisement or deprecation notice, our own lines still there
    assert "Tip:" not in result.stderr and "LeafSpec" not in result.stderr and "to do:" in result.stderr
    # recompute PCK from the per-pair lines; it must equal results.json, and each line's flags must agree
    for alpha in ("0.05", "0.1"):
        per_image = [sum(line["correct"][alpha]) / len(line["correct"][alpha]) for line in lines]
        assert results["overall"][f"pck@{alpha}"]["per_image"] == pytest.approx(sum(per_image) / len(per_image))
    for line in lines:
        preds, target = torch.tensor([line["predicted_keypoints"]]), torch.tensor([line["target_keypoints"]])
        again = pck(preds, target, torch.tensor([line["threshold"]]), alphas=[0.05, 0.1])["per_image"]
        assert again.tolist() == pytest.approx(
            [sum(line["correct"][a]) / len(line["correct"][a]) for a in ("0.05", "0.1")]
        )
        assert len(line["predicted_keypoints"]) == len(line["source_keypoints"])


@pytest.mark.slow
def test_outputs_name_the_tiny_model_truthfully_and_in_full(smoke_run):
    out, result, logs = smoke_run
    for name in ("run.json", "results.json", "index.html"):
        text = (out / name).read_text().split("<details>")[0]  # the page's folded config.yaml lists every argument
        assert (
            "random weights of the &#x27;tiny&#x27; architecture" in text
            if name.endswith(".html")
            else ("random weights of the 'tiny' architecture" in text)
        ), name
        assert "CompVis" not in text, name  # the hub id of a model that was not used
    results = json.loads((out / "results.json").read_text())
    page = (out / "index.html").read_text()
    assert html.escape(json.dumps(results["source"])) in page and html.escape(json.dumps(results["matcher"])) in page
    # the resolved config beside results.json, not in the logger's version folder; shown in the page
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["source"]["init_args"]["architecture"] == "tiny"
    assert list(logs.rglob("metrics.csv")) and not list(logs.rglob("config.yaml")) and "config.yaml</summary>" in page
    # one results table, ours, on stdout; no Lightning "Test metric" table
    assert "overall" in result.stdout and "PCK@0.1 img" in result.stdout
    assert "Test metric" not in result.stdout + result.stderr


@pytest.mark.slow
def test_mixed_precision_run(tmp_path):
    result = sdcorr("test", *QUICK, "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(tmp_path))
    assert json.loads((tmp_path / "results.json").read_text())["overall"]["num_pairs"] == 3
    assert "was called before the ``update``" not in result.stderr


@pytest.mark.slow
def test_layered_configs_and_overrides_resolve():
    result = sdcorr(
        "test",
        "--config",
        "configs/demo.yaml",
        "--config",
        "configs/model/tiny.yaml",
        "--model.matcher.init_args.steps",
        "7",
        "--data.root",
        "/somewhere",
        "--print_config",
    )
    config = yaml.safe_load(result.stdout)
    source, matcher = config["model"]["source"]["init_args"], config["model"]["matcher"]["init_args"]
    assert source["architecture"] == "tiny" and source["pretrained"] == "CompVis/stable-diffusion-v1-4"
    assert matcher["steps"] == 7 and matcher["lr"] == 1.0 and matcher["restarts"] == 5
    assert config["data"]["init_args"]["root"] == "/somewhere"
    assert config["trainer"]["inference_mode"] is False


@pytest.mark.slow
def test_forcing_inference_mode_fails_with_a_clear_message(tmp_path):
    result = sdcorr(
        "test",
        "--config",
        "configs/smoke.yaml",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.inference_mode",
        "true",
        check=False,
    )
    assert result.returncode != 0
    assert "inference_mode" in result.stderr and "--trainer.inference_mode false" in result.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_predict_needs_no_ground_truth(tmp_path):
    pairs = json.loads((REPO / "datamodules/demo_pairs/pairs.json").read_text())["pairs"][:1]
    pairs[0] = {k: v for k, v in pairs[0].items() if k != "target_keypoints"}
    pairs[0]["source"] = str(REPO / "datamodules/demo_pairs" / pairs[0]["source"])
    pairs[0]["target"] = str(REPO / "datamodules/demo_pairs" / pairs[0]["target"])
    (tmp_path / "pairs.json").write_text(json.dumps({"pairs": pairs}))
    sdcorr(
        "predict",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        str(tmp_path),
        "--trainer.default_root_dir",
        str(tmp_path / "out"),
    )
    (line,) = [json.loads(x) for x in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    assert line["target_keypoints"] is None and len(line["predicted_keypoints"]) == 5


@pytest.mark.parametrize("name", ["spair", "pfwillow", "cub", "pfpascal", "ap10k", "demo"])
def test_benchmark_configs_share_the_base(name, capsys, monkeypatch):
    """Each benchmark config is the shared base (one device, float32, seed 0, the SD 1.4 paper preset)
    plus its own data, run folder and logger; pictures.alpha is checked against model.alphas as the
    callback is built, through the CLI's argument link."""
    with pytest.raises(SystemExit):
        main(["test", "--config", f"configs/{name}.yaml", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    trainer, model = config["trainer"], config["model"]
    assert (trainer["devices"], trainer["precision"], config["seed_everything"]) == (1, "32-true", 0)
    assert trainer["default_root_dir"] == f"runs/{name}"
    assert "save_dir" not in trainer["logger"]["init_args"]  # linked from default_root_dir: logs in the run folder
    assert model["source"]["init_args"]["pretrained"] == "CompVis/stable-diffusion-v1-4"
    assert model["matcher"]["init_args"]["steps"] == 129 and model["alphas"] == [0.05, 0.1]
    assert "alphas" not in config["pictures"]  # linked from model.alphas, not an option of its own
    expected = {"spair": "SPairDataModule", "pfwillow": "PFWillowDataModule", "cub": "CUBDataModule",
                "pfpascal": "PFPascalDataModule", "ap10k": "AP10KDataModule"}  # fmt: skip
    assert config["data"]["class_path"] == f"datamodules.{expected.get(name, 'PairsDataModule')}"


@pytest.mark.slow
def test_help_lists_every_command():
    text = sdcorr("--help").stdout
    for name in ("test", "predict", "plan", "match", "merge", "evaluate", "report", "compare"):
        assert f"\n    {name} " in text, name


def test_main_takes_its_arguments_and_leaves_sys_argv_alone(capsys, monkeypatch, recwarn):
    """main(args) parses args, not the command line: sys.argv (here pytest's) is neither read nor written,
    and Lightning has no reason to warn about getting both."""
    monkeypatch.chdir(REPO)
    argv = list(sys.argv)
    main(["plan", "--config", "configs/demo.yaml"])
    assert "to do: 3 pairs, 16 keypoints" in capsys.readouterr().out
    assert sys.argv == argv and not [w for w in recwarn if "args parameter" in str(w.message)]


def test_the_cli_uses_public_names_only():
    """No private name of Lightning, jsonargparse or argparse (a leading underscore after a dot): any minor
    release may rename them. Our own private helpers would show here too: the CLI has none."""
    for path in sorted((REPO / "sdcorr" / "cli").glob("*.py")):
        private = [line.strip() for line in path.read_text().splitlines() if re.search(r"\._[a-z]", line)]
        assert not private, (path.name, private)


def test_only_lightnings_tips_are_filtered():
    hide = NoTips()

    def record(message):
        return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0, message, None, None)

    assert not hide.filter(record("💡 Tip: For seamless cloud logging, try installing litlogger"))
    assert hide.filter(record("GPU available: False, used: False")) and hide.filter(record("to do: 3 pairs"))
