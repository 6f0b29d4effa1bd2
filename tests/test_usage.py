"""Every bad option, value or command line gives one ``sdcorr: error: <option>: <problem>`` line, the right
exit code and no traceback (``--debug`` or ``SDCORR_DEBUG=1`` show it)."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import Namespace

from callbacks.pictures import PictureCallback
from sdcorr.cli.errors import option_name, parse_problem, trainer_problem
from sdcorr.cli.main import main
from sdcorr.errors import OptionError
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.module import CorrespondenceModule
from tests.conftest import DEMO, sdcorr

SMOKE = ["--config", "configs/smoke.yaml"]
MATCHER = "--model.matcher.init_args."
SOURCE = "--model.source.init_args."
DATA = "--data.init_args."
PAIR = [str(DEMO / "0_chelsea_source.jpg"), str(DEMO / "0_chelsea_target.jpg")]
MATCH = ["match", *PAIR, "--config", "configs/model/tiny.yaml"]

#: name -> (arguments after the command, exit code, the option the line must start with, a fragment of it)
CASES = {
    # the command line itself
    "unknown command": (["tset"], 2, "tset", "unknown command"),
    "unknown option": (["test", *SMOKE, "--nope", "1"], 2, "--nope", "unknown option"),
    "misspelt option": (["test", *SMOKE, "--trainer.max_epochz", "1"], 2, "--trainer.max_epochz",
                        "did you mean --trainer.max_epochs?"),
    "unknown class argument": (["test", *SMOKE, f"{MATCHER}stepz", "3"], 2, f"{MATCHER}stepz",
                               "not an argument of sdcorr.PromptMatcher"),
    "no data section": (["test", "--config", "configs/model/tiny.yaml"], 2, "data", "required"),
    "merge without shards": (["merge", "{tmp}/merged"], 2, "folders", "required"),
    # config files
    "missing config file": (["test", "--config", "no_such.yaml"], 2, "--config no_such.yaml", "file not found"),
    "YAML syntax error": (["test", "--config", "{tmp}/broken.yaml"], 2, "--config {tmp}/broken.yaml",
                          "not valid YAML (line 3, column 1"),
    "config not a mapping": (["test", "--config", "{tmp}/list.yaml"], 2, "--config {tmp}/list.yaml", "not a list"),
    "unknown key in a config": (["test", *SMOKE, "--config", "{tmp}/unknown_key.yaml"], 2, f"{MATCHER}stepz",
                                "not an argument"),
    # types, checked by jsonargparse
    "bad type": (["test", *SMOKE, f"{MATCHER}steps", "abc"], 2, f"{MATCHER}steps", "expected an integer; got 'abc'"),
    "bad trainer type": (["test", *SMOKE, "--trainer.max_epochs", "x"], 2, "--trainer.max_epochs", "got 'x'"),
    "bad choice": (["test", *SMOKE, f"{DATA}empty_pairs", "nope"], 2, f"{DATA}empty_pairs",
                   "expected one of 'skip', 'error'; got 'nope'"),
    "bad precision": (["test", *SMOKE, "--trainer.precision", "17"], 2, "--trainer.precision", "'bf16-mixed'"),
    "max_batch word": (["test", *SMOKE, f"{MATCHER}max_batch", "lots"], 2, f"{MATCHER}max_batch", "'auto'"),
    "layers not a list": (["test", *SMOKE, f"{SOURCE}layers", "abc"], 2, f"{SOURCE}layers", "expected a list"),
    "unknown class": (["test", *SMOKE, "--model.source.class_path", "nope.Nope"], 2, "--model.source.class_path",
                      "cannot import 'nope.Nope'"),
    "unknown datamodule": (["test", *SMOKE, "--data.class_path", "nope.Nope"], 2, "--data.class_path",
                           "No module named 'nope'"),
    # values, checked by the constructors
    "negative layer": (["test", *SMOKE, f"{SOURCE}layers", "[-1]"], 2, f"{SOURCE}layers",
                       "expected indices in 0..6 (this UNet has 7 cross-attention layers); got [-1]"),
    "layer out of range": (["test", *SMOKE, f"{SOURCE}layers", "[7]"], 2, f"{SOURCE}layers", "in 0..6"),
    "no layers": (["test", *SMOKE, f"{SOURCE}layers", "[]"], 2, f"{SOURCE}layers", "at least one; got []"),
    "repeated layer": (["test", *SMOKE, f"{SOURCE}layers", "[0, 0]"], 2, f"{SOURCE}layers", "distinct"),
    "zero image size": (["test", *SMOKE, f"{SOURCE}image_size", "0"], 2, f"{SOURCE}image_size",
                        "expected a multiple of 4"),
    "odd image size": (["test", *SMOKE, f"{SOURCE}image_size", "50"], 2, f"{SOURCE}image_size", "got 50"),
    "huge image size": (["test", *SMOKE, f"{SOURCE}image_size", "100000"], 2, f"{SOURCE}image_size",
                        "at most 2048 pixels"),
    "no text tokens": (["test", *SMOKE, f"{SOURCE}num_tokens", "0", f"{SOURCE}token_index", "0"], 2,
                       f"{SOURCE}num_tokens", "text length >= 1; got 0"),
    "negative alpha": (["test", *SMOKE, "--model.alphas", "[-0.1]"], 2, "--model.alphas", "fractions in (0, 1]"),
    "alpha above 1": (["test", *SMOKE, "--model.alphas", "[1.5]"], 2, "--model.alphas", "got [1.5]"),
    "no alphas": (["test", *SMOKE, "--model.alphas", "[]"], 2, "--model.alphas", "non-empty"),
    "picture alpha not among alphas": (["test", *SMOKE, "--pictures.alpha", "0.2"], 2, "--pictures.alpha",
                                       "one of the model's alphas ['0.05', '0.1']"),
    "negative pictures": (["test", *SMOKE, "--pictures.num_pairs", "-1"], 2, "--pictures.num_pairs", ">= 0"),
    "zero steps": (["test", *SMOKE, f"{MATCHER}steps", "0"], 2, f"{MATCHER}steps", ">= 1; got 0"),
    "zero restarts": (["test", *SMOKE, f"{MATCHER}restarts", "0"], 2, f"{MATCHER}restarts", ">= 1"),
    "negative learning rate": (["test", *SMOKE, f"{MATCHER}lr", "-1"], 2, f"{MATCHER}lr", "> 0; got -1.0"),
    "crop fraction above 1": (["test", *SMOKE, f"{MATCHER}crop_fraction", "2"], 2, f"{MATCHER}crop_fraction",
                              "(0, 1]"),
    "negative fit cache": (["test", *SMOKE, f"{MATCHER}fit_cache", "-1"], 2, f"{MATCHER}fit_cache", ">= 0"),
    "zero max_batch": (["test", *SMOKE, f"{MATCHER}max_batch", "0"], 2, f"{MATCHER}max_batch", "got 0"),
    "zero subsample": (["test", *SMOKE, f"{DATA}subsample", "0"], 2, f"{DATA}subsample", ">= 1; got 0"),
    "zero batch size": (["test", *SMOKE, f"{DATA}batch_size", "0"], 2, f"{DATA}batch_size", ">= 1; got 0"),
    "negative workers": (["test", *SMOKE, f"{DATA}num_workers", "-1"], 2, f"{DATA}num_workers", ">= 0; got -1"),
    "missing local model": (["match", *PAIR, "--config", "configs/model/tiny.yaml", "--points", "1,2",
                             f"{SOURCE}architecture", "null", f"{SOURCE}pretrained", "{tmp}/no/such/weights"], 2,
                            f"{SOURCE}pretrained", "no/such/weights': folder not found"),
    "shard past the last": (["test", *SMOKE, f"{DATA}shard_index", "3", f"{DATA}num_shards", "3"], 2,
                            f"{DATA}shard_index", "got 3 with num_shards 3"),
    "negative resamples": (["test", *SMOKE, "--output.resamples", "-1"], 2, "--output.resamples", ">= 0; got -1"),
    "evaluate, negative resamples": (["evaluate", "{tmp}", "--resamples", "-5"], 2, "--resamples", "got -5"),
    # the Trainer's settings, checked by Lightning
    "GPU without one": (["test", *SMOKE, "--trainer.accelerator", "gpu"], 2, "--trainer.accelerator",
                        "torch sees no GPU here"),
    "empty run folder": (["test", *SMOKE, "--trainer.default_root_dir", ""], 2, "--trainer.default_root_dir",
                         "written into the working directory"),
    "logger folder elsewhere": (["test", *SMOKE, "--trainer.logger", "callbacks.AutoWandbLogger",
                                 "--trainer.logger.init_args.save_dir", "{tmp}/elsewhere"], 2,
                                "--trainer.logger.init_args.save_dir", "is not the run folder"),
    "float64": (["test", *SMOKE, "--trainer.precision", "64-true"], 2, "--trainer.precision", "float32 or lower"),
    "zero devices": (["test", *SMOKE, "--trainer.devices", "0"], 2, "--trainer.devices", "not a valid input"),
    # other commands
    "plan, layer out of range": (["plan", *SMOKE, f"{SOURCE}layers", "[99]"], 2, f"{SOURCE}layers", "in 0..6"),
    "plan, huge image size": (["plan", *SMOKE, f"{SOURCE}image_size", "100000"], 2, f"{SOURCE}image_size",
                              "at most 2048"),
    "plan, bad pictures option": (["plan", *SMOKE, "--pictures.num_pairs", "-1"], 2, "--pictures.num_pairs", ">= 0"),
    "plan, GPU without one": (["plan", *SMOKE, "--trainer.accelerator", "gpu"], 2, "--trainer.accelerator", "no GPU"),
    "plan with a bad value": (["plan", *SMOKE, f"{MATCHER}locate_crops", "0"], 2, f"{MATCHER}locate_crops", ">= 1"),
    "match, unreadable points": ([*MATCH, "--points", "1,2,3"], 2, "--points", "cannot read '1,2,3'"),
    "match, negative point": ([*MATCH, "--points", "-1,5"], 2, "--points", "(-1, 5) is outside"),
    "match, bad layer": ([*MATCH, "--points", "1,2", f"{SOURCE}layers", "[9]"], 2, f"{SOURCE}layers", "0..6"),
    "match, GPU without one": ([*MATCH, "--points", "1,2", "--trainer.accelerator", "cuda"], 2,
                               "--trainer.accelerator", "no GPU"),
    "match, missing image": (["match", "nope.jpg", PAIR[1], "--config", "configs/model/tiny.yaml", "--points",
                              "1,2"], 1, "nope.jpg", "image file not found"),
    "report, no such folder": (["report", "{tmp}/nothing"], 1, "{tmp}/nothing", "no such run folder"),
    "report, not a run folder": (["report", "{tmp}"], 1, "{tmp}", "not a run folder"),
    "report, alpha above 1": (["report", "{tmp}", "--alpha", "2"], 2, "--alpha", "reference length; got 2"),
    "evaluate, not a run folder": (["evaluate", "{tmp}"], 1, "{tmp}", "not a run folder"),
    "compare, one run": (["compare", "{tmp}"], 2, "compare", "give at least two run folders"),
    "compare, a run with itself": (["compare", "{tmp}", "{tmp}/"], 2, "compare", "same run folder"),
    "compare, negative resamples": (["compare", "{tmp}", "{tmp}/b", "--resamples", "-1"], 2, "--resamples", "got -1"),
    "compare, no such run": (["compare", "{tmp}/a", "{tmp}/b"], 1, "{tmp}/a", "no such run folder"),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_every_bad_option_is_one_line_naming_it(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    (tmp_path / "broken.yaml").write_text("trainer:\n  devices: [1\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "unknown_key.yaml").write_text("model:\n  matcher:\n    init_args:\n      stepz: 3\n")
    if "GPU" in name and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args, code, option, fragment = CASES[name]
    run, here = tmp_path / "run", tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # the working directory: nothing may be written there either
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if args[0] in ("test", "plan", "match") and "--trainer.default_root_dir" not in args:
        args += ["--trainer.default_root_dir", str(run)]
    with pytest.raises(SystemExit) as exit:  # any other exception would have printed a traceback
        main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sdcorr: error:")]
    assert exit.value.code == code and len(lines) == 1, lines
    line = lines[0].removeprefix("sdcorr: error: ")
    assert line.startswith(f"{option.replace('{tmp}', str(tmp_path))}: ") and fragment in line, line
    assert not run.exists() and not any(here.iterdir())  # refused before anything was written


def test_debug_shows_the_traceback(tmp_path):
    bad = ["test", *SMOKE, f"{MATCHER}steps", "0", "--trainer.default_root_dir", str(tmp_path)]
    quiet = sdcorr(*bad, check=False)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1] == f"sdcorr: error: {MATCHER}steps: expected an integer >= 1; got 0"
    loud = sdcorr(*bad, "--debug", check=False)
    assert loud.returncode == 1 and "Traceback" in loud.stderr
    assert f"OptionError: {MATCHER}steps: expected" in loud.stderr


def test_an_unforeseen_error_says_so(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("sdcorr.cli.main.cli", broken)
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["report", "."])
    assert exit.value.code == 1
    assert capsys.readouterr().err == (
        "sdcorr: error: unexpected KeyError: 'a bug' (rerun with --debug for the traceback; please report it if "
        "sdcorr is at fault)\n"
    )
    monkeypatch.setenv("SDCORR_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["report", "."])


def test_out_of_memory_names_the_option(monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("sdcorr.cli.main.cli", out_of_memory)
    monkeypatch.delenv("SDCORR_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["test"])
    assert exit.value.code == 1 and "--model.matcher.init_args.max_batch" in capsys.readouterr().err


def test_jsonargparse_dumps_become_one_line():
    dump = """Parser key "model.matcher":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'sdcorr.matchers.base.Matcher'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'sdcorr.PromptMatcher':
        Parser key "max_batch":
          Does not validate against any of the Union subtypes
          Subtypes: [<class 'int'>, typing.Literal['auto']]
          Errors:
            - Expected a <class 'int'>
            - Expected a typing.Literal['auto']
          Given value type: <class 'str'>
          Given value: lots
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='max_batch', val='lots')"""
    expected = "--model.matcher.init_args.max_batch: expected an integer or one of 'auto'; got 'lots'"
    assert parse_problem(dump) == expected
    assert parse_problem("unrecognized arguments: --seed_everythin 3", ["--seed_everything"]) == (
        "--seed_everythin: unknown option (did you mean --seed_everything?)"
    )
    assert parse_problem("something new\n  on two lines") == "something new on two lines"  # unknown shapes: joined


def test_an_argument_is_named_by_its_option():
    config = dict(Namespace(model=Namespace(alphas=[0.1], matcher=Namespace(class_path="my.Matcher",
        init_args=Namespace(steps=0))), pictures=Namespace(alphas=[0.1], alpha=0.2)).items())  # fmt: skip

    class Matcher(PromptMatcher):
        pass

    sections = {"model": CorrespondenceModule, "pictures": PictureCallback}
    assert option_name(config, OptionError(Matcher, "steps", "p"), sections) == "--model.matcher.init_args.steps"
    assert option_name(config, OptionError(CorrespondenceModule, "alphas", "p"), sections) == "--model.alphas"
    assert option_name(config, OptionError(PictureCallback, "alphas", "p"), sections) == "--pictures.alphas"
    assert option_name(config, OptionError(PromptMatcher, "alphas", "p"), sections) is None  # two: ambiguous
    error = OptionError(PromptMatcher(), "steps", "expected an integer >= 1; got 0")
    assert str(error) == "steps: expected an integer >= 1; got 0"  # in Python: the argument's name
    error.option = "--model.matcher.init_args.steps"
    assert str(error) == "--model.matcher.init_args.steps: expected an integer >= 1; got 0"


def test_lightning_settings_are_named():
    assert trainer_problem("`Trainer(devices='0')` value is not a valid input", "cpu").startswith("--trainer.devices")
    assert trainer_problem("Unknown strategy `dpp`", "cpu").startswith("--trainer.strategy: Unknown")
