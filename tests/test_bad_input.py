"""Every kind of bad input gives one message (what, where, what was expected), a non-zero exit and no results.json.

Run in this process (the command's own ``main``): a subprocess per case would cost its start-up each time;
``tests/test_usage.py`` checks the message in a subprocess too."""

import json
import shutil

import pytest

from sdcorr.cli.main import main
from tests.conftest import DEMO

QUICK = ["--config", "configs/smoke.yaml", "--model.matcher.init_args.steps", "4",
         "--model.matcher.init_args.locate_crops", "4"]  # fmt: skip


def pairs_folder(folder, **changes):
    """One demo pair in a pairs.json folder of its own; ``changes`` override fields of the pair."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = dict(json.loads((DEMO / "pairs.json").read_text())["pairs"][0])
    for name in (pair["source"], pair["target"]):
        shutil.copy(DEMO / name, folder / name)
    pair.update(changes)
    (folder / "pairs.json").write_text(json.dumps({"pairs": [pair]}))
    return folder


def corrupt_image(folder):
    folder = pairs_folder(folder)
    pair = json.loads((folder / "pairs.json").read_text())["pairs"][0]
    (folder / pair["target"]).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder


def keypoint_outside(folder):
    pair = json.loads((DEMO / "pairs.json").read_text())["pairs"][0]
    return pairs_folder(folder, source_keypoints=[[1.0, 2.0]] + [[5000.0, 10.0]] * (len(pair["source_keypoints"]) - 1))


CASES = {
    # name: (build the input folder, extra arguments, expected exit code, message fragments)
    "missing dataset root": (
        None,
        ["--data.root", "{input}/nowhere"],
        1,
        ["{input}/nowhere: dataset folder not found"],
    ),
    "undecodable image": (corrupt_image, ["--data.root", "{input}"], 1, ["0_chelsea_target.jpg", "cannot decode"]),
    "keypoint out of range": (keypoint_outside, ["--data.root", "{input}"], 1, ["source_keypoints", "outside"]),
    "hub id without network": (
        None,
        ["--model.source.init_args.architecture", "null", "--model.source.init_args.pretrained", "nobody/no-model"],
        1,
        ["nobody/no-model"],
    ),
    "output folder is a file": (None, ["--trainer.default_root_dir", "{input}/a_file"], 1, ["cannot write"]),
    "nan loss": (None, ["--model.matcher.init_args.lr", "1e20"], 1, ["pair '1_astronaut'", "non-finite loss"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_message_and_nothing_partial(tmp_path, name, capsys, monkeypatch):
    build, extra, code, fragments = CASES[name]
    given = tmp_path / "input"
    if build is not None:
        build(given)
    given.mkdir(exist_ok=True)
    (given / "a_file").write_text("a file, not a folder")
    out = tmp_path / "out"
    args = [a.replace("{input}", str(given)) for a in extra]
    if "--trainer.default_root_dir" not in args:
        args += ["--trainer.default_root_dir", str(out)]
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit:  # in this process: any other exception is a traceback
        main(["test", *QUICK, "--data.init_args.subsample", "1", *args])
    stderr = capsys.readouterr().err
    assert exit.value.code == code, stderr[-2000:]
    assert "sdcorr: error: " in stderr and "Traceback" not in stderr, stderr[-2000:]
    for fragment in fragments:
        assert fragment.replace("{input}", str(given)) in stderr, stderr[-2000:]
    assert not list(tmp_path.rglob("results.json"))
