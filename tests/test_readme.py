"""The README front page is true: every command in it runs, here or in CI.

The set-up and test commands are the ones ``.ci/run`` runs; the main job (SD 1.4, a 4 GB download)
cannot run without the weights, so its config is resolved and its plan printed; every other command
runs as written (outputs redirected to a temporary folder); the Python example runs with the tiny
model its comment names.
"""

from __future__ import annotations

import re
import shlex

import pytest
import torch

from tests.conftest import REPO, sdcorr
from tests.fixtures_spair import write_spair

README = (REPO / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """Every shell command of the README, continuation lines joined, trailing comments dropped."""
    lines = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(" ".join(line.split()))
    return lines


def test_front_page_is_short_and_maps_the_docs():
    assert len(README.splitlines()) < 120
    for page in re.findall(r"\]\((docs/[a-z-]+\.md)\)", README):
        assert (REPO / page).is_file(), page
    assert len(re.findall(r"\]\((docs/[a-z-]+\.md)\)", README)) >= 7


def test_set_up_and_test_commands_are_the_ones_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    install, main_job = commands()[0].split(" && ")
    assert install.startswith("pip install ") and install.removeprefix("pip install ") in ci
    assert main_job == "sdcorr test --config configs/demo.yaml"
    assert "python -m pytest" in commands() and ci.strip().splitlines()[-1] == "python -m pytest"


@pytest.mark.slow
def test_main_job_resolves_and_plans_without_weights():
    config = sdcorr("test", "--config", "configs/demo.yaml", "--print_config").stdout
    assert "CompVis/stable-diffusion-v1-4" in config and "restarts: 5" in config
    assert "to do: 3 pairs, 16 keypoints" in sdcorr("plan", "--config", "configs/demo.yaml").stdout


@pytest.mark.slow
def test_every_sdcorr_command_runs_from_any_folder(tmp_path):
    """Run from an empty folder, not the checkout: bundled configs and demo files are found, and nothing is
    written where the command was started."""
    spair, elsewhere = write_spair(tmp_path / "SPair-71k"), tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = 0
    for line in commands():
        args = shlex.split(line)
        if args[0] != "sdcorr" or line == "sdcorr test --config configs/demo.yaml":
            continue
        args = [a.replace("/path/to/SPair-71k", str(spair)) for a in args[1:]]
        out = tmp_path / f"out{ran}"
        extra = {"test": ["--trainer.default_root_dir", str(out)], "match": ["--output_dir", str(out)]}
        result = sdcorr(*args, *extra.get(args[0], []), cwd=elsewhere)  # fails on a non-zero exit
        wrote = {"test": out / "results.json", "match": out / "match.json"}
        assert wrote[args[0]].is_file() if args[0] in wrote else "to do:" in result.stdout, line
        ran += 1
    assert ran == 3 and not list(elsewhere.iterdir())


@pytest.mark.slow
def test_python_example_runs(monkeypatch, capsys):
    (code,) = code_blocks("python")
    tiny = 'StableDiffusionSource(architecture="tiny", layers=[0, 1], image_size=48)'
    assert tiny in code  # the comment names the stand-in this test runs
    monkeypatch.chdir(REPO)
    exec(code.replace("StableDiffusionSource()", tiny), {})
    found = capsys.readouterr().out
    assert "tensor(" in found
    assert len(code.strip().splitlines()) <= 15
    assert torch.tensor([float(v) for v in re.findall(r"-?\d+\.\d+", found)]).shape == (4,)
