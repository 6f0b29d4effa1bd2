"""The pair viewer of index.html: its files (tiles, peaks), per-layer maps from the matcher, the page's data,
the W&B tables, and the page itself in headless Chromium (playwright, the system's chromium)."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from callbacks.pictures import PictureCallback
from sdcorr import geometry
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.pages.index import write_report
from sdcorr.pages.viewer import map_peaks, map_tiles, pair_assets, panel_picture, read_assets
from sdcorr.rng import generator
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import FORMAT
from tests.conftest import FAST
from tests.fakes import FakeModule, fake_pair, fake_trainer, viewer_json

#: the pairs of the viewer folder: (id, keypoints, category, occlusion); the last keypoint of each is wrong
PAIRS = [("p0", 5, "cat", "0"), ("p1", 2, "dog", "1"), ("p2", 4, "cat", "1"), ("p3", 3, "dog", "0")]
LAYERS = [7, 8]  # the read layers' names in run.json


def make_viewer_folder(folder: Path) -> RunFolder:
    """A finished run folder of 4 pairs, 2 read layers, through the public code paths: PictureCallback draws
    the first 2 pairs (3 keypoints of maps each, with source maps), the predictions and a run.json are
    written as the RunFolderWriter writes them, results.json by RunFolder.finish, then write_report."""
    torch.manual_seed(0)
    run = RunFolder(folder)
    pairs = [fake_pair(i, n, category, {"occlusion": occlusion}) for i, n, category, occlusion in PAIRS]
    for sample, _, _ in pairs:  # flat grey photos: a panel's colours come from its map alone
        sample["source_image"], sample["target_image"] = torch.full((3, 30, 40), 0.5), torch.full((3, 30, 40), 0.5)
    callback, module = PictureCallback(num_pairs=2, keypoints=3), FakeModule()
    trainer = fake_trainer(folder, pair_ids=[prediction.pair_id for _, prediction, _ in pairs])
    callback.setup(trainer, module, "test")
    for index, (sample, prediction, match) in enumerate(pairs):
        callback.on_test_batch_end(trainer, module, module.outputs(sample, prediction, match), [sample], index)
    fingerprint = {"seed": 0, "source": {"layers": LAYERS}, "matcher": {}, "precision": "32-true", "data": {}}
    pair_ids = [prediction.pair_id for _, prediction, _ in pairs]
    run.write_manifest(Manifest.from_json({"format": FORMAT, "fingerprint": fingerprint, "pair_ids": pair_ids,
                                           "alphas": [0.05, 0.1], "layers": LAYERS}))  # fmt: skip
    appender = run.appender()
    for _, prediction, _ in pairs:
        appender.write(prediction)
    appender.close()
    run.finish()
    write_report(run)
    return run


@pytest.fixture(scope="module")
def viewer_folder(tmp_path_factory) -> RunFolder:
    return make_viewer_folder(tmp_path_factory.mktemp("viewer"))


# ---------------------------------------------------------------- the files


def test_tiles_are_laid_out_keypoint_by_panel_and_normalised_per_map():
    maps = torch.zeros(3, 2, 16, 16)  # 3 panels, 2 keypoints
    for p in range(3):
        for k in range(2):
            maps[p, k, 4 * k + p, 2 * p] = 1.0 + p + k  # one peak per map, its own height
    tiles = map_tiles(maps, tile=16)
    assert tiles.shape == (2 * 16, 3 * 16) and tiles.dtype == np.uint8
    for p in range(3):
        for k in range(2):
            tile = tiles[16 * k : 16 * (k + 1), 16 * p : 16 * (p + 1)]
            assert tile.max() == 255 and tile.min() == 0  # each map stretched on its own
            assert np.unravel_index(tile.argmax(), tile.shape) == (4 * k + p, 2 * p)


def test_peaks_are_argmax_centres_scaled_to_the_image():
    maps = torch.zeros(1, 4, 4)
    maps[0, 1, 3] = 1.0  # row 1, column 3 of a 4x4 working map
    assert map_peaks(maps, (40, 20)).tolist() == [[35.0, 7.5]]  # (3.5 * 10, 1.5 * 5)


def test_pair_assets_have_a_panel_per_layer_and_side_marked_by_each_layers_prediction():
    sample, prediction, match = fake_pair("p", n=5)
    source_layers = torch.rand(2, 5, 8, 8)
    assets = pair_assets(
        sample["source_image"], sample["target_image"], prediction, match.heatmaps, match.layer_heatmaps,
        source_layers.mean(0), source_layers, keypoints=3, height=60, tile=16,
    )  # fmt: skip
    panels = assets.meta["panels"]
    assert [(p["side"], p["layer"]) for p in panels] == [
        ("target", 0), ("target", 1), ("target", None), ("source", 0), ("source", 1), ("source", None)
    ]  # fmt: skip
    layer_1 = np.array(prediction.layer_predictions[1][:3])
    assert np.allclose(panels[1]["points"], layer_1, atol=0.01)
    assert np.allclose(panels[2]["points"], np.array(prediction.predicted_keypoints[:3]), atol=0.01)
    assert np.allclose(panels[3]["points"], map_peaks(source_layers[0, :3], (40, 30)).numpy(), atol=0.01)
    assert assets.maps.size == (6 * 16, 3 * 16) and assets.maps.mode == "L"
    assert assets.source.size == (80, 60) and assets.meta["keypoints"] == 3
    picture = panel_picture(assets, panel=1, keypoint=2, panel_size=64)
    assert picture.width == 64 and len(np.unique(np.asarray(picture).reshape(-1, 3), axis=0)) > 50
    with pytest.raises(ValueError, match="keypoint < 3"):
        panel_picture(assets, panel=1, keypoint=3)


def test_without_per_layer_maps_only_the_mean_panel_is_kept():
    """The nearest-neighbour matcher: no per-layer maps, no layer predictions, no embeddings."""
    sample, prediction, match = fake_pair("p", n=3)
    prediction.layer_predictions = None
    assets = pair_assets(sample["source_image"], sample["target_image"], prediction, match.heatmaps, tile=8)
    assert [(p["side"], p["layer"]) for p in assets.meta["panels"]] == [("target", None)]
    assert assets.maps.size == (8, 3 * 8)


def test_locate_returns_each_layers_map_and_its_mean_is_the_heatmap(source, photo):
    matcher = PromptMatcher(**{**FAST, "restarts": 1, "locate_crops": 2})
    image = geometry.resize_image(photo, source.image_size)
    embeddings = torch.stack([source.random_embeddings([generator(0, k)]) for k in range(2)])  # [2, 1, T, D]
    located = matcher.locate(source, image, embeddings, seed=0)
    layers = located.layer_heatmaps
    assert layers.shape == (len(source.hparams["layers"]), 2, source.image_size, source.image_size)
    assert torch.allclose(layers.mean(dim=0), located.heatmaps, atol=1e-7)
    assert torch.equal(geometry.argmax_xy(layers, offset=0.5), located.layer_keypoints)


# ---------------------------------------------------------------- the page's data


def test_page_lists_every_pair_and_embeds_only_the_drawn_pairs_maps(viewer_folder):
    page = viewer_folder.report_file
    data = viewer_json(page)
    assert [p["id"] for p in data["pairs"]] == ["p0", "p1", "p2", "p3"]
    assert [p["pck"] for p in data["pairs"]] == [4 / 5, 1 / 2, 3 / 4, 2 / 3]
    assert data["pairs"][1]["correct"] == [True, False] and data["pairs"][1]["groups"] == {"occlusion": "1"}
    assert data["groupKeys"] == ["occlusion"] and data["layers"] == ["7", "8"] and data["alpha"] == "0.1"
    assert sorted(data["drawn"]) == ["p0", "p1"]
    assert data["drawn"]["p0"]["maps"].startswith("data:image/png;base64,")
    assert data["drawn"]["p0"]["source"].startswith("data:image/jpeg;base64,")
    text = page.read_text()
    assert 'alt="correspondence"' not in text  # the static pictures are not embedded beside the viewer
    assert "<td>overall</td>" in text and "Pairs by fraction of keypoints correct" in text  # the tables stay
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # offline
    assert len(list(viewer_folder.pictures.glob("*.correspondence.png"))) == 2  # the PNGs stay as files


def test_report_rebuilds_the_same_viewer_from_the_folder(viewer_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(viewer_folder.path, copy)
    (copy / "index.html").unlink()
    write_report(copy)  # what `sdcorr report` does
    assert viewer_json(copy / "index.html") == viewer_json(viewer_folder.report_file)


def test_older_pictures_without_viewer_files_are_still_shown(viewer_folder, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(viewer_folder.path, copy)
    for path in (copy / "pictures").glob("p1.viewer*"):
        path.unlink()
    write_report(copy)
    assert sorted(viewer_json(copy / "index.html")["drawn"]) == ["p0"]
    assert (copy / "index.html").read_text().count('alt="correspondence"') == 1  # p1's, as an older page had it


def test_a_broken_viewer_file_is_named_and_the_rest_still_shown(viewer_folder, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(viewer_folder.path, copy)
    (copy / "pictures" / "p0.viewer.json").write_text("{")
    with pytest.raises(Exception, match=r"p0\.viewer\.json: not a viewer file"):
        read_assets(RunFolder(copy))
    write_report(copy)
    text = (copy / "index.html").read_text()
    assert "p0.viewer.json: not a viewer file" in text and "<td>overall</td>" in text


def test_report_draw_refuses_a_folder_without_config_and_pairs_not_of_the_run(viewer_folder, tmp_path, capsys):
    from sdcorr.cli.main import main

    copy = tmp_path / "copy"
    shutil.copytree(viewer_folder.path, copy)
    with pytest.raises(SystemExit) as exit:
        main(["report", str(copy), "--draw", "p2"])
    assert exit.value.code == 1 and "config.yaml: not found; --draw runs the config.yaml" in capsys.readouterr().err
    (copy / "config.yaml").write_text("seed_everything: 0\n")  # never read: the pair is checked first
    with pytest.raises(SystemExit) as exit:
        main(["report", str(copy), "--draw", "p9"])
    assert exit.value.code == 2 and f"--draw: 'p9': not a pair of the run in {copy}" in capsys.readouterr().err
    assert not (copy / "pictures" / "p9.viewer.json").exists() and (copy / "pictures" / "p0.viewer.json").exists()


# ---------------------------------------------------------------- W&B


class FakeWandb:
    """Records what the PictureCallback logs to W&B."""

    def __init__(self):
        self.tables = {}

    def log_table(self, key, columns, data, step=None):
        self.tables[key] = (columns, data)

    def log_image(self, key, images, step=None, caption=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass


def test_wandb_gets_the_pair_and_keypoint_tables(tmp_path, monkeypatch):
    import wandb

    from callbacks.wandb_tables import WandbTables

    folder = make_viewer_folder(tmp_path / "run")
    logger = FakeWandb()
    # every pair of the run with its PCK: WandbTables, from the predictions it is given
    WandbTables().log_tables(logger, 0, folder.predictions(), folder.manifest())
    columns, rows = logger.tables["viewer/pairs"]
    assert columns == ["pair_id", "category", "groups", "pck@0.1"]
    assert rows[1] == ["p1", "dog", "occlusion=1", 0.5] and len(rows) == 4
    # each drawn keypoint with its maps: PictureCallback, from what it drew
    monkeypatch.setattr(PictureCallback, "wandb_logger", staticmethod(lambda trainer: logger))
    callback, module = PictureCallback(num_pairs=1, keypoints=2), FakeModule()
    trainer = fake_trainer(folder.path, pair_ids=["p9"])
    module.source = SimpleNamespace(hparams={"layers": LAYERS})
    callback.setup(trainer, module, "test")
    sample, prediction, match = fake_pair("p9", 4)
    callback.on_test_batch_end(trainer, module, module.outputs(sample, prediction, match), [sample], 0)
    callback.on_test_end(trainer, module)
    columns, rows = logger.tables["viewer/keypoints"]
    assert columns == ["pair_id", "keypoint", "correct@0.1", "mean of layers", "layer 7", "layer 8"]
    assert [row[:3] for row in rows] == [["p9", 0, True], ["p9", 1, True]]  # 2 keypoints drawn
    assert all(isinstance(image, wandb.Image) for row in rows for image in row[3:])


# ---------------------------------------------------------------- the page in a browser


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if chromium() is None:
        pytest.skip("needs a chromium binary (Debian's chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


def rows(page):
    return page.locator("#sdv-list tr[data-pair]").evaluate_all("rows => rows.map(r => r.dataset.pair)")


def test_page_in_chromium_sorts_filters_and_shows_a_keypoints_maps_per_layer(browser, viewer_folder, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(10_000)
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(viewer_folder.report_file.as_uri())
    assert rows(page) == ["p0", "p1", "p2", "p3"]

    page.click('#sdv-list th[data-column="pck"]')  # ascending PCK
    assert rows(page) == ["p1", "p3", "p2", "p0"]
    page.click('#sdv-list th[data-column="pck"]')  # descending
    assert rows(page) == ["p0", "p2", "p3", "p1"]
    page.select_option('select[data-filter="group:occlusion"]', "1")
    assert rows(page) == ["p2", "p1"] and page.inner_text("#sdv-count") == "2 of 4 pairs"
    page.select_option('select[data-filter="category"]', "dog")
    assert rows(page) == ["p1"]
    page.select_option('select[data-filter="category"]', "")
    page.select_option('select[data-filter="group:occlusion"]', "")
    assert len(rows(page)) == 4

    page.click('#sdv-list tr[data-pair="p2"]')  # not drawn: said so, keypoints still listed
    assert "sdcorr report RUN_DIR --draw 'p2'" in page.inner_text("#sdv-pair .sdv-undrawn")
    verdicts = page.locator("#sdv-keypoints td:last-child").all_inner_texts()
    assert verdicts == ["correct", "correct", "correct", "wrong"]

    page.click('#sdv-list tr[data-pair="p0"]')
    page.locator('#sdv-picture .sdv-kp[data-keypoint="2"] circle').last.click()  # its prediction: keypoint #2's maps
    page.wait_for_function("document.querySelectorAll('#sdv-panels canvas[data-ready]').length === 6")
    assert page.get_attribute("#sdv-panels", "data-keypoint") == "2"
    for side in ("target", "source"):
        captions = page.locator(f'#sdv-panels figure[data-side="{side}"] figcaption').all_inner_texts()
        assert captions == [f"{side}: layer 7", f"{side}: layer 8", f"{side}: mean of layers"]  # layers + mean
    page.click('#sdv-keypoints tr[data-keypoint="4"]')  # drawn pair, but only 3 keypoints have maps
    assert "--pictures.keypoints" in page.inner_text("#sdv-panels")
    page.click('#sdv-keypoints tr[data-keypoint="1"]')  # a keypoint row works as well as its line
    page.wait_for_function("document.querySelectorAll('#sdv-panels canvas[data-ready]').length === 6")
    assert page.get_attribute("#sdv-panels", "data-keypoint") == "1"

    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    size = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert [picture.shape[1], picture.shape[0]] == size  # the screenshot is the whole page
    boxes = page.locator("#sdv-picture, #sdv-panels canvas").evaluate_all(
        "nodes => nodes.map(n => { const r = n.getBoundingClientRect();"
        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })"
    )  # in page pixels, as in the full-page screenshot
    assert len(boxes) == 1 + 6
    for index, box in enumerate(boxes):
        assert box["width"] > 20 and box["height"] > 20
        assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= size[0]
        assert box["y"] + box["height"] <= size[1]
        x, y = int(box["x"]) + 1, int(box["y"]) + 1
        region = picture[y : y + int(box["height"]) - 2, x : x + int(box["width"]) - 2].reshape(-1, 3)
        # on the flat grey photos, lines and markers give a few hundred colours, a coloured map thousands
        assert len(np.unique(region, axis=0)) > (1000 if index else 100), index
    assert problems == []
    page.close()
