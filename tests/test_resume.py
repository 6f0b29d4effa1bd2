"""Long runs: killed runs resume to the same results, shards merge to the unsharded run, re-evaluation."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

# QUICK: the smoke run, shortened: these tests are about bookkeeping, not accuracy
from tests.conftest import QUICK, REPO, sdcorr, sdcorr_here
from tests.fakes import viewer_json

pytestmark = pytest.mark.slow  # every test runs `sdcorr test` end to end, some twice

PAIRS = ["0_chelsea", "1_astronaut", "2_astronaut"]


def run(out, *extra, check=True):
    return sdcorr("test", *QUICK, "--trainer.default_root_dir", str(out), *extra, check=check)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted run: the reference every other run must reproduce."""
    out = tmp_path_factory.mktemp("whole")
    run(out)
    return out


def test_sigkill_then_rerun_gives_the_uninterrupted_results(whole, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "sdcorr.cli.main", "test", *QUICK, "--trainer.default_root_dir", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = out / "predictions.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if predictions.exists() and predictions.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(lines(predictions))
    assert process.returncode == -signal.SIGKILL and 1 <= done_before < 3, "killed too late to test resuming"
    assert not (out / "results.json").exists()
    assert json.loads((out / ".lock").read_text())["pid"] == process.pid  # left behind, but no longer held

    result = run(out)
    assert f"{done_before} pairs already done are skipped" in result.stderr + result.stdout
    assert sorted(r["pair_id"] for r in lines(predictions)) == PAIRS  # each pair exactly once
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()


def test_a_second_run_into_a_live_runs_folder_is_refused_at_once(whole, tmp_path):
    out = tmp_path / "busy"
    command = [sys.executable, "-m", "sdcorr.cli.main", "test", *QUICK, "--trainer.default_root_dir", str(out)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None and not (out / "run.json").exists():
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # however slow the second start is, the first is still running
        assert first.poll() is None and (out / "run.json").exists(), "the first run did not start"
        started = time.monotonic()
        second = run(out, check=False)
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        assert time.monotonic() - started < 120  # refused at setup, before any pair is matched
        assert (
            f"{out}: another sdcorr run (pid {first.pid} on host " in second.stderr
            and "is writing this folder; wait for it or use another --trainer.default_root_dir" in second.stderr
        )
        merged = sdcorr_here("merge", str(out), str(whole), check=False)  # nor may a merge write into it
        assert merged.returncode == 1 and "is writing this folder" in merged.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert sorted(r["pair_id"] for r in lines(out / "predictions.jsonl")) == PAIRS
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()


def test_a_line_cut_short_by_a_crash_is_redone(whole, tmp_path):
    out = tmp_path / "cut"
    shutil.copytree(whole, out)
    text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text(text[0] + text[1][:40])  # the crash hit mid-write
    (out / "results.json").unlink()
    run(out)
    assert sorted(r["pair_id"] for r in lines(out / "predictions.jsonl")) == PAIRS
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()


def test_a_finished_run_rerun_rewrites_the_same_results(whole, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(whole, out)
    (out / "results.json").unlink()
    result = run(out)
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()
    assert f"{out}: all 3 pairs already done; nothing left to match" in result.stderr
    assert "DataLoader" not in result.stderr  # Lightning's warning about the empty loop: said in our words
    assert len(lines(out / "predictions.jsonl")) == 3


def test_a_run_resumes_from_any_working_directory(whole, tmp_path):
    out, elsewhere = tmp_path / "moved", tmp_path / "elsewhere"
    shutil.copytree(whole, out)
    elsewhere.mkdir()
    (out / "results.json").unlink()
    root = os.path.relpath(REPO / "datamodules" / "demo_pairs", elsewhere)  # another spelling of the same folder
    recorded = json.loads((out / "run.json").read_text())["fingerprint"]["data"]["root"]
    assert recorded == str((REPO / "datamodules" / "demo_pairs").resolve())  # absolute, whatever the given spelling
    result = sdcorr(
        "test", *QUICK, "--trainer.default_root_dir", str(out), "--data.init_args.root", root, cwd=elsewhere
    )
    assert "nothing left to match" in result.stderr
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()
    assert not any(elsewhere.iterdir())


def test_a_folder_of_another_run_is_refused_unless_overwritten(whole, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(whole, out)
    before = (out / "predictions.jsonl").read_text()
    result = sdcorr_here("test", *QUICK, "--trainer.default_root_dir", str(out), "--model.matcher.init_args.restarts",
                         "1", check=False)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "was made by a different run" in result.stderr and "matcher.restarts: 2 -> 1" in result.stderr
    assert (out / "predictions.jsonl").read_text() == before
    # options that change only speed are not a different run
    result = run(out, "--model.matcher.init_args.max_batch", "3")
    assert "3 pairs already done" in result.stderr + result.stdout
    stale = out / "pictures" / "old_pair.correspondence.png"
    stale.write_bytes(b"a picture of the discarded run")
    run(out, "--model.matcher.init_args.restarts", "1", "--output.overwrite", "true")
    assert json.loads((out / "run.json").read_text())["fingerprint"]["matcher"]["restarts"] == 1
    assert not stale.exists() and len(pictures_of(out)) == 3 * (3 + 4) + 1  # only the new run's pictures
    assert len(lines(out / "predictions.jsonl")) == 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards 0 and 1 of 3 (shard 2 is the missing one); merged shards equal to one run: see
    tests/test_schedule.py::test_three_shards_merge_to_the_same_results, on pairs that share sources."""
    root = tmp_path_factory.mktemp("shards")
    for index in range(2):
        run(root / str(index), "--data.init_args.shard_index", str(index), "--data.init_args.num_shards", "3")
    return root


def test_merge_refuses_overlaps_and_lists_what_is_missing(shards, tmp_path):
    result = sdcorr_here("merge", str(tmp_path / "a"), str(shards / "0"), str(shards / "0"), check=False)
    assert result.returncode == 1 and "shard 0/3 is also" in result.stderr
    # a folder claiming to be shard 1 but holding shard 0's pair: the overlap is found by pair
    fake = tmp_path / "fake1"
    shutil.copytree(shards / "0", fake)
    manifest = json.loads((fake / "run.json").read_text())
    manifest["fingerprint"]["data"]["shard"] = [1, 3]
    (fake / "run.json").write_text(json.dumps(manifest))
    result = sdcorr_here("merge", str(tmp_path / "b"), str(shards / "0"), str(fake), check=False)
    (pair,) = lines(shards / "0" / "predictions.jsonl")
    assert result.returncode == 1 and f"{pair['pair_id']!r} is also predicted in" in result.stderr
    result = sdcorr_here("merge", str(tmp_path / "c"), str(shards / "0"), str(shards / "1"), check=False)
    assert result.returncode == 1 and "shards [2] of 3 were not given" in result.stderr
    assert not (tmp_path / "c").exists()
    sdcorr_here("merge", str(tmp_path / "d"), str(shards / "0"), str(shards / "1"), "--allow_missing", "true")
    partial = json.loads((tmp_path / "d/results.json").read_text())
    assert partial["incomplete"] is True and partial["missing_shards"] == [2]
    assert "shards [2] of 3 were not given" in partial["missing"] and "not listed" in partial["missing"]
    assert partial["overall"]["num_pairs"] == 2


def test_evaluate_recomputes_with_other_alphas(whole, tmp_path):
    output = tmp_path / "evaluation.json"
    sdcorr_here("evaluate", str(whole), "--alphas", "[0.1, 1.0]", "--output", str(output))
    again, original = json.loads(output.read_text()), json.loads((whole / "results.json").read_text())
    assert again["overall"]["pck@0.1"] == original["overall"]["pck@0.1"]
    # PCK@1 from the prediction lines by hand (distance within the whole threshold); 3 pairs: no interval
    per_pair = []
    for line in lines(whole / "predictions.jsonl"):
        offset = torch.tensor(line["predicted_keypoints"]) - torch.tensor(line["target_keypoints"])
        error = (offset * torch.tensor(line["pck_scale"])).norm(dim=1)
        per_pair.append((error <= line["threshold"]).double().mean().item())
    assert again["overall"]["pck@1"]["per_image"] == pytest.approx(sum(per_pair) / len(per_pair))
    assert "pck@0.05" not in again["overall"]
    result = sdcorr_here("evaluate", str(whole), "--threshold", "bbox-trg", check=False)
    assert result.returncode == 1 and "no threshold 'bbox-trg' recorded" in result.stderr


def test_saved_embeddings_rerun_only_the_target_side(whole, tmp_path):
    first = tmp_path / "first"
    run(first, "--output.save_embeddings", "true")
    saved = sorted((first / "embeddings").glob("*.pt"))
    assert len(saved) == 3
    assert lines(first / "predictions.jsonl") == lines(whole / "predictions.jsonl")
    # the same locate settings on the saved embeddings reproduce the predictions without fitting
    retest = tmp_path / "retest"
    run(retest, "--model.embeddings", str(first), "--model.matcher.init_args.steps", "1")
    assert [r["predicted_keypoints"] for r in lines(retest / "predictions.jsonl")] == [
        r["predicted_keypoints"] for r in lines(whole / "predictions.jsonl")
    ]
    os.remove(saved[0])
    result = sdcorr_here("test", *QUICK, "--trainer.default_root_dir", str(tmp_path / "broken"),
                         "--model.embeddings", str(first), check=False)  # fmt: skip
    assert result.returncode == 1 and "no saved embeddings for pair" in result.stderr


def test_report_is_written_for_any_finished_folder(whole, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(whole, folder)
    (folder / "index.html").unlink(missing_ok=True)
    result = sdcorr_here("report", str(folder))
    assert result.stdout.strip().endswith("index.html")
    page = (folder / "index.html").read_text()
    assert "0_chelsea" in page and "<h2>PCK</h2>" in page and "overall" in page


def test_output_dir_expands_environment_variables(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from callbacks.run_folder import RunFolderWriter

    monkeypatch.setenv("SDCORR_TEST_RUN", "run-7")
    trainer = SimpleNamespace(default_root_dir="elsewhere")
    assert RunFolderWriter(dir=str(tmp_path / "$SDCORR_TEST_RUN")).run_folder(trainer).path == tmp_path / "run-7"


def pictures_of(folder):
    """The files of pictures/: per drawn pair its 3 pictures and 4 viewer files, plus chosen.json."""
    return sorted(p.name for p in (folder / "pictures").iterdir())


def test_a_resumed_run_draws_the_pairs_an_uninterrupted_run_draws(whole, tmp_path):
    """Killed after 0_chelsea was drawn: the rerun matches and draws the other two (the same maps) and the
    page shows the same pairs as the uninterrupted run's."""
    out = tmp_path / "cut"
    shutil.copytree(whole, out)
    (out / "predictions.jsonl").write_text("".join((whole / "predictions.jsonl").read_text().splitlines(True)[:1]))
    for path in [out / "results.json", out / "index.html", *(out / "pictures").glob("1_astronaut.*"),
                 *(out / "pictures").glob("2_astronaut.*")]:  # fmt: skip
        path.unlink()
    run(out)
    assert pictures_of(out) == pictures_of(whole) and len(pictures_of(whole)) == 3 * (3 + 4) + 1
    for name in pictures_of(whole):  # the very same pictures, viewer images and maps
        assert (out / "pictures" / name).read_bytes() == (whole / "pictures" / name).read_bytes(), name
    page, reference = (viewer_json(f / "index.html") for f in (out, whole))
    assert page == reference and len(page["drawn"]) == 3
    assert "Missing pictures" not in (out / "index.html").read_text()


def test_a_rerun_draws_the_chosen_pairs_an_earlier_run_finished_without_pictures(whole, tmp_path):
    """Killed (or stopped by a full disk) after 1_astronaut's prediction was written but before its pictures
    were (here: every pair done): the rerun matches it again for its pictures, the same ones, and nothing else."""
    out = tmp_path / "done"
    shutil.copytree(whole, out)
    for path in (out / "pictures").glob("1_astronaut.*"):
        path.unlink()
    result = run(out)
    assert "3 pairs already done" in result.stderr and "no pictures of" not in result.stderr
    assert pictures_of(out) == pictures_of(whole)
    for name in [*pictures_of(whole), "predictions.jsonl", "results.json", "run.json"]:
        path = name if (out / name).is_file() else f"pictures/{name}"
        assert (out / path).read_bytes() == (whole / path).read_bytes(), name
    assert "Missing pictures" not in (out / "index.html").read_text()


def test_report_draw_redraws_pairs_with_the_runs_own_config(whole, tmp_path):
    """``sdcorr report RUN --draw PAIR``: the run's config.yaml runs again in its folder for that pair's
    pictures (deleted first); they come out as the run drew them, and its records stay as they were."""
    out = tmp_path / "report"
    shutil.copytree(whole, out)
    (out / "pictures" / "2_astronaut.viewer-maps.png").write_bytes(b"damaged")
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "predictions.jsonl", "results.json")}
    result = sdcorr("report", str(out), "--draw", "2_astronaut")
    assert result.stdout.strip().endswith("index.html")
    for name in pictures_of(whole):
        assert (out / "pictures" / name).read_bytes() == (whole / "pictures" / name).read_bytes(), name
    assert {name: (out / name).read_bytes() for name in before} == before
    assert viewer_json(out / "index.html") == viewer_json(whole / "index.html")


def test_an_empty_shard_writes_results_that_say_so(tmp_path):
    out = tmp_path / "empty"
    result = run(out, "--data.init_args.shard_index", "4", "--data.init_args.num_shards", "5")  # 3 pairs, 5 shards
    assert "this selection has no pairs (an empty shard)" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["num_pairs"] == 0 and results["data"]["num_pairs"] == 0
    assert json.loads((out / "run.json").read_text())["pair_ids"] == []
