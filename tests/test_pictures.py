"""PictureCallback: which pairs it draws and what it costs, its files; index.html; W&B offline (WandbTables);
every callback independent of the others' order (the viewer in Chromium: tests/test_viewer.py)."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from callbacks.pictures import PictureCallback
from callbacks.wandb_logger import logged_in, resolve_offline
from callbacks.wandb_tables import WandbTables
from sdcorr.cli.main import main
from sdcorr.pages.index import write_report
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.scoring import results_of
from tests.conftest import FAST, REPO
from tests.fakes import FakeModule, fake_pair, fake_trainer, selection, viewer_json

QUICK = ["--config", "configs/smoke.yaml", "--config", "configs/protocol/quick.yaml"]


def run_batches(callback, trainer, module, pair_ids):
    if trainer.datamodule is None:
        trainer.datamodule = selection(pair_ids)
    callback.setup(trainer, module, "test")
    for index, pair_id in enumerate(pair_ids):
        sample, prediction, match = fake_pair(pair_id)
        callback.on_test_batch_end(trainer, module, module.outputs(sample, prediction, match), [sample], index)
    callback.on_test_end(trainer, module)


def test_draws_the_first_pairs_and_source_maps_only_for_them(tmp_path):
    module = FakeModule()
    run_batches(PictureCallback(num_pairs=1, keypoints=3), fake_trainer(tmp_path), module, ["p0", "p1"])
    assert module.calls == [("p0", 3)]  # one pair, only the 3 drawn keypoints' embeddings
    names = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert names == [
        "chosen.json", "p0.correspondence.png", "p0.source-heatmaps.png", "p0.target-heatmaps.png",
        "p0.viewer-maps.png", "p0.viewer-source.jpg", "p0.viewer-target.jpg", "p0.viewer.json",
    ]  # fmt: skip
    assert not (tmp_path / "index.html").exists()  # the page is the RunFolderWriter's


def test_pair_ids_choose_the_pairs(tmp_path):
    module = FakeModule()
    callback = PictureCallback(pair_ids=["p2"], source_maps=False)
    run_batches(callback, fake_trainer(tmp_path), module, ["p0", "p1", "p2"])
    assert module.calls == []
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == [
        "chosen.json", "p2.correspondence.png", "p2.target-heatmaps.png",
        "p2.viewer-maps.png", "p2.viewer-source.jpg", "p2.viewer-target.jpg", "p2.viewer.json",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "callback, rank_zero",
    [(PictureCallback(enabled=False), True), (PictureCallback(), False), (PictureCallback(files="never"), True)],
)
def test_no_files_when_disabled_on_other_ranks_or_never(tmp_path, callback, rank_zero):
    module = FakeModule()
    run_batches(callback, fake_trainer(tmp_path, rank_zero), module, ["p0"])
    assert not (tmp_path / "pictures").exists() and not (tmp_path / "index.html").exists()
    assert module.calls == []  # nothing drawn: zero cost


def test_files_also_with_a_wandb_logger_unless_auto(tmp_path, monkeypatch):
    trainer = fake_trainer(tmp_path)
    trainer.loggers = [WandbLogger(save_dir=str(tmp_path))]  # lazy: no W&B run is started here
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert PictureCallback().writes_files(trainer) and PictureCallback().wandb_logger(trainer) is not None
    assert not PictureCallback(files="auto").writes_files(trainer)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert PictureCallback(files="auto").writes_files(trainer) and PictureCallback().wandb_logger(trainer) is None


def test_overwrite_discards_the_pictures_of_the_run_the_folder_held(tmp_path):
    old = tmp_path / "pictures" / "old.correspondence.png"
    old.parent.mkdir()
    old.write_bytes(b"png")
    run_batches(PictureCallback(num_pairs=0), fake_trainer(tmp_path), FakeModule(), ["p0"])
    assert old.exists()  # a resume keeps them
    run_batches(PictureCallback(num_pairs=0, overwrite=True), fake_trainer(tmp_path), FakeModule(), ["p0"])
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["chosen.json"]


def test_chosen_pairs_without_pictures_are_matched_again_in_any_callback_order():
    """The pictures callback asks the datamodule to match its undrawn chosen pairs again; the writer leaves out
    the pairs done: whichever asks first, the pending pairs are the same, and only done ones are flagged."""
    for order in ("exclude first", "rematch first"):
        datamodule = selection(["p0", "p1", "p2", "p3"])
        datamodule.load_sample = lambda record: {"pair_id": record["pair_id"]}
        calls = [lambda: datamodule.exclude({"p0", "p1", "p2"}), lambda: datamodule.rematch({"p1", "p3"})]
        for call in calls if order == "exclude first" else reversed(calls):
            call()
        samples = [datamodule.dataset[i] for i in range(len(datamodule.dataset))]
        assert samples == [{"pair_id": "p1", "rematch": True}, {"pair_id": "p3"}], order
        assert [p["pair_id"] for p in datamodule.pending()] == ["p1", "p3"]


def test_alpha_must_be_one_of_the_models():
    with pytest.raises(ValueError, match=r"alpha: expected one of the model's alphas \['0.05', '0.1'\]"):
        PictureCallback(alpha=0.2).setup(fake_trainer("."), FakeModule(), "test")


@pytest.fixture(scope="module")
def smoke_folder(tmp_path_factory):
    """A smoke run through the CLI without W&B, drawing 2 of the 3 pairs, 3 keypoints each."""
    out = tmp_path_factory.mktemp("pictures")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        main(["test", *QUICK, "--trainer.default_root_dir", str(out), "--pictures.num_pairs", "2",
              "--pictures.keypoints", "3"])  # fmt: skip
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.slow
def test_smoke_run_writes_pngs_and_index_html(smoke_folder):
    names = sorted(p.name for p in (smoke_folder / "pictures").iterdir())
    kinds = ["correspondence", "source-heatmaps", "target-heatmaps", "viewer-maps", "viewer-source", "viewer-target"]
    expected = [f"{pair}.{kind}.{'jpg' if kind.endswith(('source', 'target')) else 'png'}"
                for pair in ("0_chelsea", "1_astronaut") for kind in kinds]  # fmt: skip
    expected += ["0_chelsea.viewer.json", "1_astronaut.viewer.json", "chosen.json"]
    assert names == sorted(expected)
    heatmaps = Image.open(smoke_folder / "pictures" / "0_chelsea.target-heatmaps.png")
    assert heatmaps.size == (3 * (192 + 4) - 4, 144 + 16)  # 3 panels of the 320x240 target
    maps = Image.open(smoke_folder / "pictures" / "0_chelsea.viewer-maps.png")
    assert maps.size == (6 * 64, 3 * 64)  # 2 layers + mean on target and source, 3 keypoints
    page = (smoke_folder / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1  # the histogram; the pairs are in the viewer
    data = viewer_json(smoke_folder / "index.html")
    assert [p["id"] for p in data["pairs"]] == ["0_chelsea", "1_astronaut", "2_astronaut"]
    assert sorted(data["drawn"]) == ["0_chelsea", "1_astronaut"] and data["layers"] == ["0", "1"]
    results = json.loads((smoke_folder / "results.json").read_text())
    for category in results["per_category"]:
        assert f"<td>{category}</td>" in page


def offline_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for name in ("DIR", "DATA_DIR", "CACHE_DIR", "CONFIG_DIR", "ARTIFACT_DIR"):
        (tmp_path / name.lower()).mkdir()
        env[f"WANDB_{name}"] = str(tmp_path / name.lower())
    env.update(WANDB_MODE="offline")
    return env


@pytest.mark.slow
def test_wandb_offline_run_logs_images_and_tables(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "sdcorr.cli.main", "test", *QUICK, "--data.subsample", "2",
         "--trainer.default_root_dir", str(out), "--trainer.logger", "callbacks.AutoWandbLogger",
         "--pictures.keypoints", "2"],
        cwd=REPO, env=offline_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # W&B's lines are plain text off a terminal (its run ends with the command, not at exit on stdout)
    assert "\x1b" not in run.stdout + run.stderr and "wandb sync" in run.stderr
    (files,) = out.glob("wandb/offline-run-*/files")  # the logger's save_dir is the run folder (linked)
    media = files / "media"
    for kind in ("correspondence", "target-heatmaps", "source-heatmaps"):
        assert len(list(media.glob(f"images/pictures/{kind}_*.png"))) == 2, kind
    assert len(list(media.glob("images/pck/histogram_image_*.png"))) == 1

    def table(key):  # W&B names a table file <key>_<step>_<hash>.table.json
        folder, leaf = key.rsplit("/", 1)
        pattern = rf"{leaf}_\d+_[0-9a-f]+\.table\.json"
        (path,) = [p for p in (media / "table" / folder).iterdir() if re.fullmatch(pattern, p.name)]
        return json.loads(path.read_text())

    results = json.loads((out / "results.json").read_text())
    categories = table("pck/per_category")
    assert [row[0] for row in categories["data"]] == [*results["per_category"], "overall"]
    overall = results["overall"]["pck@0.1"]
    column = categories["columns"].index("pck@0.1/per_image")
    # 2 pairs are too few for an interval: the bounds are empty (see the test below for their values)
    assert categories["data"][-1][column : column + 3] == [pytest.approx(overall["per_image"]), None, None]
    assert categories["columns"][column + 1 : column + 3] == ["pck@0.1/per_image/low", "pck@0.1/per_image/high"]
    assert [row[0] for row in table("pck/per_layer")["data"]] == list(results["per_layer"])
    assert sum(row[1] for row in table("pck/histogram")["data"]) == results["overall"]["num_pairs"] == 2
    pairs = table("pictures/pairs")
    assert pairs["columns"][3:] == ["correspondence", "target-heatmaps", "source-heatmaps"]
    assert len(pairs["data"]) == 2
    viewer_pairs = table("viewer/pairs")
    assert viewer_pairs["columns"] == ["pair_id", "category", "groups", "pck@0.1"] and len(viewer_pairs["data"]) == 2
    keypoints = table("viewer/keypoints")
    assert keypoints["columns"] == ["pair_id", "keypoint", "correct@0.1", "mean of layers", "layer 0", "layer 1"]
    assert len(keypoints["data"]) == 2 * 2  # 2 drawn pairs, 2 keypoints each
    # W&B is an addition: the run folder has the pictures too, and its page lists every pair and draws them
    page = viewer_json(out / "index.html")
    assert len(page["pairs"]) == 2 and len(page["drawn"]) == 2 and len(list(out.glob("pictures/*.viewer.json"))) == 2
    assert "<h2>PCK</h2>" in (out / "index.html").read_text()


class RecordingLogger:
    """Stands in for a WandbLogger: keeps what is logged."""

    def __init__(self):
        self.tables, self.metrics = {}, {}

    def log_table(self, key, columns, data, step=None):
        self.tables[key] = (columns, data)

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_image(self, key, images, step=None, **kwargs):
        pass


def twelve_pairs():
    """12 scored pairs of 4 keypoints (pair i: i % 4 wrong at PCK@0.1) and their results, with intervals."""
    points = [[10.0 * i, 5.0] for i in range(4)]
    predictions = [
        Prediction(f"p{i}", "cat", points, [[x, y + 3 * (k < i % 4)] for k, (x, y) in enumerate(points)], points, 10.0)
        for i in range(12)
    ]
    manifest = Manifest.new(
        {}, SimpleNamespace(), SimpleNamespace(), 0, "32-true", [p.pair_id for p in predictions], [0.1, 0.5]
    )
    return predictions, results_of(predictions, manifest, resamples=200)


def test_the_pages_tables_show_the_intervals_of_the_printed_table(tmp_path):
    from sdcorr.runs.results import format_table

    predictions, results = twelve_pairs()
    page = write_report(tmp_path, results=results, predictions=predictions).read_text()
    overall = results.overall["pck@0.1"]
    (row,) = re.findall(r'<tr class="overall">(.*?)</tr>', page)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    low, high = overall["per_image_interval"]
    assert low < overall["per_image"] < high
    figure = f"{100 * overall['per_image']:.1f} ± {50 * (high - low):.1f}"
    assert cells[:4] == ["overall", "12", "48", figure]  # category, pairs, keypoints, PCK@0.1 per image
    assert f'title="95% interval {100 * low:.1f} to {100 * high:.1f}">{figure}</td>' in row
    printed = format_table(results).splitlines()[-1]
    assert figure.replace("±", "+-") in printed
    assert "± half the width of the 95% interval (percentile bootstrap" in page


def test_wandb_gets_the_intervals_of_results_json(tmp_path):
    predictions, results = twelve_pairs()
    logger = RecordingLogger()
    WandbTables().log_summary(logger, 0, results, predictions)
    overall = results.overall["pck@0.1"]
    assert overall["per_image_interval"][0] < overall["per_image"] < overall["per_image_interval"][1]
    assert logger.metrics["pck@0.1/per_image/low"] == overall["per_image_interval"][0]
    assert logger.metrics["pck@0.1/per_point/high"] == overall["per_point_interval"][1]
    columns, rows = logger.tables["pck/per_category"]
    row = dict(zip(columns, rows[-1]))
    assert row["category"] == "overall" and row["pck@0.1/per_image/high"] == overall["per_image_interval"][1]


def test_offline_unless_logged_in_or_wandb_mode(tmp_path):
    netrc = tmp_path / "netrc"
    assert resolve_offline(environ={}, netrc_file=netrc) is True  # no file, no key
    assert resolve_offline(environ={"WANDB_API_KEY": "k"}, netrc_file=netrc) is False
    assert resolve_offline(environ={"WANDB_MODE": "offline"}, netrc_file=netrc) is False  # W&B follows WANDB_MODE
    assert resolve_offline(True, environ={"WANDB_API_KEY": "k"}) is True
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert logged_in(environ={}, netrc_file=netrc) and resolve_offline(environ={}, netrc_file=netrc) is False
    assert not logged_in(environ={"WANDB_BASE_URL": "https://wandb.example.org"}, netrc_file=netrc)
    assert logged_in(environ={"NETRC": str(netrc)})
    assert not logged_in(environ={"NETRC": str(Path(tmp_path / "missing"))})


def test_pair_ids_that_differ_in_special_characters_get_their_own_files(tmp_path):
    from sdcorr.runs.folder import picture_name

    ids = ["cat 1", "cat_1", "Cat_1", "cat/1", "p0"]
    names = {picture_name(pair_id, "correspondence") for pair_id in ids}
    assert len(names) == len(ids) and picture_name("p0", "correspondence") == "p0.correspondence.png"
    run_batches(PictureCallback(source_maps=False), fake_trainer(tmp_path), FakeModule(), ["cat 1", "cat_1"])
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 2 * 3  # 2 pictures and the viewer's maps each
    drawn = viewer_json(write_report(tmp_path))["drawn"]  # the page shows what pictures/ holds
    assert sorted(drawn) == ["cat 1", "cat_1"] and drawn["cat 1"]["maps"] != drawn["cat_1"]["maps"]


#: every callback of a test run, by name
CALLBACKS = ("writer", "pictures", "progress", "wandb")


def python_run(folder, order):
    """A test run built in Python (no CLI): the tiny model on two demo pairs, the callbacks in ``order``."""
    from lightning.pytorch import Trainer

    from callbacks.progress import RunProgress
    from callbacks.run_folder import RunFolderWriter
    from datamodules.pairs import PairsDataModule
    from sdcorr.matchers.prompt import PromptMatcher
    from sdcorr.module import CorrespondenceModule
    from tests.conftest import DEMO, tiny_source

    callbacks = {
        "writer": RunFolderWriter(resamples=50),
        "pictures": PictureCallback(num_pairs=1, keypoints=2, source_maps=False),
        "progress": RunProgress(),
        "wandb": WandbTables(),
    }
    module = CorrespondenceModule(tiny_source(), PromptMatcher(**{**FAST, "restarts": 1, "steps": 4}), seed=0)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
        callbacks=[callbacks[name] for name in order],
    )
    trainer.test(module, datamodule=PairsDataModule(root=str(DEMO), subsample=2))
    return (folder / "index.html").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run of :func:`python_run`, callbacks in the order of :data:`CALLBACKS`, that nothing interrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "-".join(CALLBACKS)
    python_run(folder, CALLBACKS)
    return folder


def test_the_run_folder_is_the_same_whatever_the_callback_order(uninterrupted, tmp_path):
    orders = [CALLBACKS, tuple(reversed(CALLBACKS))]
    folders = [uninterrupted, tmp_path / "-".join(orders[1])]
    pages = [uninterrupted.joinpath("index.html").read_text(), python_run(folders[1], orders[1])]
    for page in pages:
        assert "<h2>PCK</h2>" in page and "<td>overall</td>" in page  # the tables
        assert "Pairs by fraction of keypoints correct" in page  # the histogram
        assert len(viewer_json_of(page)["drawn"]) == 1  # the drawn pair, whoever wrote its files first
    # the same content (the title is the folder's name)
    first, second = (re.sub(r"<h1>.*?</h1>|<title>.*?</title>", "", page) for page in pages)
    assert first == second
    # the records and the pictures, byte for byte
    names = sorted(p.relative_to(folders[0]).as_posix() for p in folders[0].rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(folders[1]).as_posix() for p in folders[1].rglob("*") if p.is_file())
    assert {"run.json", "predictions.jsonl", "results.json", "pictures/chosen.json"} <= set(names)
    for name in names:
        if name != "index.html":
            assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name


def viewer_json_of(page: str) -> dict:
    (blob,) = re.findall(r'<script id="sdv-data" type="application/json">(.*?)</script>', page)
    return json.loads(blob)


def files_of(folder):
    """Every file of a run folder but the lock: ``{relative path: bytes}``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"
    }


def test_a_full_disk_names_the_file_and_the_resume_draws_what_was_not_drawn(uninterrupted, tmp_path, monkeypatch):
    """The disk fills up at the drawn pair's second picture, after its prediction was recorded: the error names
    the file; once there is space, the same run resumes, matches that pair again for its pictures (not for
    its prediction: one line per pair) and leaves the folder as an uninterrupted run leaves it."""
    from sdcorr.errors import OutputError

    save = Image.Image.save

    def full_disk(image, path, *args, **kwargs):
        if str(path).endswith(".target-heatmaps.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(image, path, *args, **kwargs)

    out = tmp_path / "-".join(CALLBACKS)
    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OutputError) as failure:
        python_run(out, CALLBACKS)
    (drawn,) = json.loads((uninterrupted / "pictures" / "chosen.json").read_text())["pair_ids"]
    assert str(failure.value) == (
        f"{out / 'pictures' / drawn}.target-heatmaps.png: cannot write ([Errno 28] No space left on device); "
        "free space and rerun the same command (a test run resumes)"
    )
    assert [json.loads(line)["pair_id"] for line in (out / "predictions.jsonl").read_text().splitlines()] == [drawn]
    assert not (out / "pictures" / f"{drawn}.viewer.json").exists()  # the pair is not drawn

    monkeypatch.setattr(Image.Image, "save", save)  # space again
    python_run(out, CALLBACKS)
    resumed, reference = files_of(out), files_of(uninterrupted)
    assert sorted(resumed) == sorted(reference)
    for name in reference:  # the same predictions, results, pictures and viewer files, byte for byte
        if name != "index.html":
            assert resumed[name] == reference[name], name
    assert viewer_json(out / "index.html") == viewer_json(uninterrupted / "index.html")
    assert "Missing pictures" not in (out / "index.html").read_text()
