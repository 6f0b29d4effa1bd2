"""configs/sweep.yaml: the paper's search ranges, and the command a W&B agent builds parses with the CLI."""

import math
import random

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from sdcorr.cli.main import main
from tests.conftest import REPO

SWEEP = yaml.safe_load((REPO / "configs" / "sweep.yaml").read_text())
PARAMETERS = SWEEP["parameters"]


def sample(spec, rng, how):
    """One value of a W&B parameter spec: its lowest, highest or a random value (``how``)."""
    if "values" in spec:
        return {"low": spec["values"][0], "high": spec["values"][-1]}.get(how) or rng.choice(spec["values"])
    low, high = spec["min"], spec["max"]
    if how in ("low", "high"):
        return low if how == "low" else high
    kind = spec["distribution"]
    if kind == "int_uniform":
        return rng.randint(low, high)
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    raise AssertionError(f"sample() does not know the distribution {kind!r}: extend this test")


def agent_command(values):
    """The command line a W&B agent runs for these parameter values (its own formatting of ``${args}``)."""
    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]
    command = []
    for part in SWEEP["command"]:
        command += flags if part == "${args}" else [] if part == "${env}" else [part]
    return command


def test_sweep_is_the_papers_search():
    assert SWEEP["method"] == "random" and SWEEP["run_cap"] == 50
    assert SWEEP["metric"] == {"name": "pck@0.1/per_image", "goal": "maximize"}
    matcher = {k.rsplit(".", 1)[1]: v for k, v in PARAMETERS.items() if k.startswith("model.matcher.")}
    assert (matcher["lr"]["min"], matcher["lr"]["max"]) == (5e-4, 1e-2)
    assert (matcher["sigma"]["min"], matcher["sigma"]["max"]) == (8, 32)
    assert (matcher["steps"]["min"], matcher["steps"]["max"]) == (100, 300)
    assert (matcher["crop_fraction"]["min"], matcher["crop_fraction"]["max"]) == (0.5, 1.0)
    # t index 1..10 of 50, counted from the end: timesteps[-10] ... timesteps[-1]
    assert (matcher["fit_timestep_index"]["min"], matcher["fit_timestep_index"]["max"]) == (-10, -1)
    windows = PARAMETERS["model.source.init_args.layers"]["values"]
    assert sorted(windows) == sorted([list(range(a, b + 1)) for a in range(7, 16) for b in range(a, 16)])
    assert [7, 8, 9, 10] in windows
    assert SWEEP["command"][1:5] == ["sdcorr", "test", "--config", "configs/spair.yaml"]


@pytest.mark.parametrize("how", ["low", "high", "random"])
def test_agent_command_parses_with_the_cli(how, capsys, monkeypatch):
    rng = random.Random(0)
    values = {name: sample(spec, rng, how) for name, spec in PARAMETERS.items()}
    command = agent_command(values)
    assert command[0] == "sdcorr"
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit:
        main([*command[1:], "--print_config"])
    assert exit.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    for name, value in values.items():
        node = config
        for key in name.split("."):
            node = node[key]
        assert node == pytest.approx(value), name
    data = config["data"]["init_args"]
    assert config["data"]["class_path"].endswith("SPairDataModule")
    assert (data["split"], data["subsample"], data["subsample_seed"]) == ("val", 10, 0)
    assert config["trainer"]["logger"]["class_path"] == "callbacks.AutoWandbLogger"
    assert config["output"]["dir"] == "runs/sweep/$WANDB_RUN_ID"  # expanded by RunFolder.of
