"""The run folder (sdcorr.runs.folder) and its prediction lines (sdcorr.runs.records) on hand-made folders."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from sdcorr.errors import DataError, NumericalError, OutputError
from sdcorr.matchers.base import MatchResult
from sdcorr.runs.folder import LOCK, RunFolder, fcntl
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import FORMAT, Prediction
from sdcorr.runs.results import Results
from sdcorr.runs.scoring import results_of

#: the keys of a predictions.jsonl line, in the order every version wrote them (``format`` since it has one)
KEYS = ["format", "pair_id", "category", "source_keypoints", "predicted_keypoints", "target_keypoints", "threshold",
        "pck_scale", "groups", "references", "layer_predictions", "correct"]  # fmt: skip


def sample(pair_id="p0", n=3, target=True):
    generator = torch.Generator().manual_seed(len(pair_id) + n)
    points = torch.rand(n, 2, generator=generator) * 100
    return {
        "pair_id": pair_id,
        "category": "cat",
        "source_keypoints": points,
        "target_keypoints": points + 1 / 3 if target else None,
        "threshold": torch.tensor(10.0) if target else None,
        "pck_scale": torch.tensor([1.0, 0.7]),
        "groups": {"occlusion": "1"},
        "references": {"bbox": {"threshold": 20.0, "pck_scale": [1.0, 1.0]}},
    }


def match(n=3, shift=0.2, seed=0):
    points = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed)) * 100
    return MatchResult(points + shift, torch.rand(n, 4, 4), layer_keypoints=torch.stack([points, points + 7]))


def line(pair_id, **changes):
    prediction = Prediction.from_sample(sample(pair_id), match(seed=ord(pair_id[0])), [0.05, 0.1])
    return json.dumps(prediction.to_json() | changes) + "\n"


def test_a_line_read_and_written_again_is_the_same_bytes():
    prediction = Prediction.from_sample(sample(), match(), [0.05, 0.1])
    text = json.dumps(prediction.to_json(), allow_nan=False)
    assert list(json.loads(text)) == KEYS
    again = Prediction.from_json(json.loads(text))
    assert json.dumps(again.to_json(), allow_nan=False) == text and again == prediction
    # a key this version does not know survives a rewrite (at the end)
    extended = json.loads(text) | {"future": [1.5]}
    assert json.dumps(Prediction.from_json(extended).to_json()) == json.dumps(extended)
    # the source image (format 1 still): after the others when recorded; a line without it stays without it
    grouped = Prediction.from_sample(sample() | {"source_image_id": "3f2a"}, match(), [0.05, 0.1])
    written = json.dumps(grouped.to_json())
    assert written == text[:-1] + ', "source_group": "3f2a"}' and Prediction.from_json(json.loads(written)) == grouped
    assert prediction.source_group is None and prediction.cluster == "pair:p0" and grouped.cluster == "image:3f2a"


def test_correct_flags_by_hand():
    # distances 1 and 3 against a threshold of 10 with a y-scale of 0.5: alpha 0.2 is 2 pixels
    prediction = Prediction.from_json(
        {"format": FORMAT, "pair_id": "p", "category": "c", "source_keypoints": [[0.0, 0.0]] * 2,
         "predicted_keypoints": [[0.0, 2.0], [3.0, 0.0]], "target_keypoints": [[0.0, 0.0], [0.0, 0.0]],
         "threshold": 10.0, "pck_scale": [1.0, 0.5],
         "references": {"wide": {"threshold": 40.0, "pck_scale": [1.0, 1.0]}}}
    )  # fmt: skip
    assert prediction.correct([0.05, 0.2, 0.3]).tolist() == [[False, True, True], [False, False, True]]
    assert prediction.correct([0.05], threshold_mode="wide").tolist() == [[True], [False]]
    with pytest.raises(DataError, match="no threshold 'other' recorded"):
        prediction.correct([0.1], threshold_mode="other")
    unscored = Prediction.from_json({**prediction.to_json(), "target_keypoints": None})
    assert unscored.correct([0.1]) is None and not unscored.scored()


def test_from_sample_refuses_non_finite_points_and_scores_itself():
    bad = match()
    bad.keypoints[1, 0] = float("nan")
    with pytest.raises(NumericalError, match="pair 'p0': a predicted keypoint is NaN"):
        Prediction.from_sample(sample(), bad, [0.1])
    prediction = Prediction.from_sample(sample(), match(), [0.05, 0.1])
    assert prediction.correct_flags == {"0.05": prediction.correct([0.05])[:, 0].tolist(),
                                        "0.1": prediction.correct([0.1])[:, 0].tolist()}  # fmt: skip
    assert Prediction.from_sample(sample(target=False), match(), [0.1]).correct_flags is None


def test_reading_never_changes_a_file_and_repair_cuts_only_the_incomplete_line(tmp_path):
    run = RunFolder(tmp_path)
    text = line("a") + line("b")[:40]  # the crash hit mid-write
    run.prediction_file().write_text(text)
    with pytest.raises(OutputError, match=r"predictions.jsonl:2: last line is incomplete"):
        run.predictions()
    assert run.prediction_file().read_text() == text
    assert run.repair() == [run.prediction_file()]
    assert run.prediction_file().read_text() == line("a")
    assert [p.pair_id for p in run.predictions()] == ["a"] and run.repair() == []


@pytest.mark.parametrize(
    "text, message",
    [("{not json\n", r"predictions.jsonl:2: not a JSON prediction line"),
     ('{"format": 1, "pair_id": "x"}\n', r"predictions.jsonl:2: not a prediction line .*'category'"),
     ('{"pair_id": "x"}\n', r"predictions.jsonl:2: a prediction line written by an older sdcorr .*new folder, or"),
     ("[1, 2]\n", r"predictions.jsonl:2: not a prediction line .*JSON object")],
)  # fmt: skip
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, text, message):
    run = RunFolder(tmp_path)
    run.prediction_file().write_text(line("a") + text)
    with pytest.raises(OutputError, match=message):
        run.predictions()


def test_ranks_are_read_together_and_missing_pairs_listed(tmp_path):
    run = RunFolder(tmp_path)
    run.prediction_file(1, 2).write_text(line("c") + line("a"))
    run.prediction_file(0, 2).write_text(line("b"))
    manifest = Manifest.from_json(manifest_json(["a", "b", "c", "d", "e"]))
    assert [p.pair_id for p in run.predictions()] == ["a", "b", "c"]
    assert run.missing_pairs(manifest) == ["d", "e"] and [p.pair_id for p in run.done(manifest)] == ["a", "b", "c"]
    run.prediction_file(0, 2).write_text(line("b") + line("a", predicted_keypoints=[[0.0, 0.0]]))
    with pytest.raises(OutputError, match="pair 'a' has two different predictions"):
        run.predictions()


def manifest(pair_ids, shard=(0, 1), restarts=2):
    return Manifest.from_json(manifest_json(pair_ids, shard, restarts))


def manifest_json(pair_ids, shard=(0, 1), restarts=2):
    return {
        "format": FORMAT,
        "fingerprint": {
            "data": {"datamodule": "PairsDataModule", "shard": list(shard), "num_pairs": len(pair_ids)},
            "source": {"class": "tiny"},
            "matcher": {"class": "PromptMatcher", "restarts": restarts},
            "seed": 0,
            "precision": "32-true",
            "embeddings": None,
        },
        "model": "tiny",
        "pair_ids": pair_ids,
        "alphas": [0.05, 0.1],
        "layers": [0, 1],
    }


def test_a_run_resumes_its_folder_and_refuses_another_runs(tmp_path):
    run = RunFolder(tmp_path)
    assert run.begin(manifest(["a", "b"])) == []
    run.prediction_file().write_text(line("a") + line("b")[:30])
    run.results_file.write_text("{}")
    assert [p.pair_id for p in run.begin(manifest(["a", "b"]))] == ["a"]  # the cut line repaired, stale results removed
    assert not run.results_file.exists() and run.prediction_file().read_text() == line("a")
    with pytest.raises(OutputError, match=r"was made by a different run(.|\n)*matcher.restarts: 2 -> 1"):
        run.begin(manifest(["a", "b"], restarts=1))
    assert run.begin(manifest(["a", "b"], restarts=1), overwrite=True) == [] and not run.prediction_files()
    with pytest.raises(OutputError, match="1 pairs have no prediction"):
        run.prediction_file().write_text(line("a"))
        run.finish()
    run.prediction_file().write_text(line("a") + line("b"))
    results = run.finish()
    assert run.read_results() == results and results.num_pairs == 2
    assert json.loads(run.results_file.read_text()) == results.to_json()
    again, path = run.rescore([0.5], output=tmp_path / "again.json")
    assert path == tmp_path / "again.json" and list(again.overall) == ["num_pairs", "num_keypoints", "pck@0.5"]


def test_a_folder_of_an_older_sdcorr_is_one_line_with_the_remedy(tmp_path):
    run = RunFolder(tmp_path)
    old = manifest_json(["a"])
    del old["format"]
    run.manifest_file.write_text(json.dumps(old))
    for read in (run.manifest, lambda: run.begin(manifest(["a"]))):
        with pytest.raises(
            OutputError,
            match=rf"^{tmp_path}: a run manifest written by an older sdcorr .*"
            r"rerun into a new folder, or pass --output.overwrite true",
        ):
            read()
    assert run.begin(manifest(["a"]), overwrite=True) == [] and run.manifest().to_json()["format"] == FORMAT
    run.results_file.write_text(json.dumps({"alphas": [0.1]}))
    with pytest.raises(OutputError, match="results file written by an older sdcorr"):
        run.read_results()
    newer = manifest_json(["a"]) | {"format": FORMAT + 1}
    run.manifest_file.write_text(json.dumps(newer))
    with pytest.raises(OutputError, match=f"of format {FORMAT + 1}, this sdcorr reads format {FORMAT}"):
        run.manifest()


def test_records_survive_the_round_trip_with_their_unknown_keys():
    payload = manifest_json(["a"]) | {"future": 1}
    assert Manifest.from_json(payload).to_json() == payload and list(payload)[0] == "format"
    prediction = Prediction.from_json(json.loads(line("a")))
    scored = results_of([prediction], manifest(["a"]))
    assert Results.from_json(scored.to_json()) == scored and list(scored.to_json())[:2] == ["format", "model"]


def shard(folder, index, pair_ids):
    run = RunFolder(folder)
    folder.mkdir()
    run.write_manifest(manifest(pair_ids, shard=(index, 3)))
    run.prediction_file().write_text("".join(line(p) for p in pair_ids))
    return folder


def test_merge_checks_and_messages(tmp_path):
    a, b, c = shard(tmp_path / "a", 0, ["a"]), shard(tmp_path / "b", 1, ["b"]), shard(tmp_path / "c", 2, ["c"])
    with pytest.raises(OutputError, match=r"shard 0/3 is also .*a; give each shard once"):
        RunFolder.merge(tmp_path / "out", [a, a])
    with pytest.raises(OutputError, match=r"merge: shards \[2\] of 3 were not given"):
        RunFolder.merge(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()
    partial = RunFolder.merge(tmp_path / "partial", [a, b], allow_missing=True)
    assert partial.incomplete and partial.missing_shards == [2] and "not listed" in partial.missing
    with pytest.raises(OutputError, match="already holds a run"):
        RunFolder.merge(tmp_path / "partial", [a, b, c])
    merged = RunFolder(tmp_path / "merged")
    results = RunFolder.merge(merged.path, [c, a, b])
    assert merged.prediction_file().read_text() == line("a") + line("b") + line("c")  # byte for byte
    assert merged.manifest().pair_ids == ["a", "b", "c"]
    assert merged.manifest().fingerprint.shard == (0, 1)
    assert merged.read_results() == results and results.num_pairs == 3
    overlap = shard(tmp_path / "d", 1, ["a"])
    with pytest.raises(OutputError, match="pair 'a' is also predicted in"):
        RunFolder.merge(tmp_path / "x", [a, overlap])
    RunFolder(b).write_manifest(manifest(["b"], shard=(1, 3), restarts=1))
    with pytest.raises(OutputError, match=r"not a shard of the same run as(.|\n)*matcher.restarts: 2 -> 1"):
        RunFolder.merge(tmp_path / "y", [a, b])


#: a process that locks the folder given as argument, says so, and waits to be killed
HOLDER = "import sys, time; from sdcorr.runs.folder import RunFolder; lock = RunFolder(sys.argv[1]).lock(); " \
    "print('locked', flush=True); time.sleep(600)"  # fmt: skip


@pytest.mark.skipif(fcntl is None, reason="no flock on this platform: folders are not locked")
def test_a_folder_locked_by_a_live_process_is_refused_and_free_once_it_is_killed(tmp_path):
    folder = RunFolder(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputError) as error:
            folder.lock()
        assert str(error.value) == (
            f"{folder.path}: another sdcorr run (pid {holder.pid} on host {os.uname().nodename}) is writing "
            "this folder; wait for it or use another --trainer.default_root_dir"
        )
        with pytest.raises(OutputError, match="is writing this folder"):  # also a merge into it
            RunFolder.merge(folder.path, [shard(tmp_path / "a", 0, ["a"])], allow_missing=True)
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash would: the lock must not outlive it
        holder.wait()
    with folder.lock() as lock:
        assert lock.held and json.loads(folder.lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputError, match=f"pid {os.getpid()} "):  # one holder, also within a process
            folder.lock()
    with folder.lock():  # released by the with block
        pass
    assert (folder.path / LOCK).exists() and not folder.holds_run()  # the lock file is not a run


def test_ctrl_c_says_what_is_kept_and_how_to_resume(tmp_path, capsys):
    from callbacks.run_folder import RunFolderWriter
    from tests.fakes import fake_pair, fake_trainer

    writer = RunFolderWriter()
    writer._done = [fake_pair("p0")[1]]  # one pair from before a resume, two matched in this run
    writer._new = [fake_pair("p1")[1], fake_pair("p2")[1]]
    writer.on_exception(fake_trainer(tmp_path), None, KeyboardInterrupt())
    assert capsys.readouterr().err == (
        f"sdcorr: interrupted: 3 finished pairs are kept in {tmp_path}; run the same command again to resume\n"
    )
    writer.on_exception(fake_trainer(tmp_path), None, RuntimeError("not an interruption"))
    assert capsys.readouterr().err == ""  # other errors are main's to report


def test_a_write_that_fails_part_way_names_its_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    """A full disk while writing results.json or the page: one error naming the file, the old file whole and
    no scratch file; a prediction line the disk cut short is named too (the resume cuts it, see repair)."""
    import errno
    from pathlib import Path

    from sdcorr.runs.folder import write_json, write_text

    def full_disk(path, text, *args, **kwargs):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT)
        os.write(handle, text[:7].encode())  # part of it, then no space
        os.close(handle)
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "results.json"
    write_json(path, {"old": 1})
    monkeypatch.setattr(Path, "write_text", full_disk)
    for write in (lambda: write_json(path, {"new": 2}), lambda: write_text(path, "new")):
        with pytest.raises(OutputError, match=rf"^{path}: cannot write \(\[Errno 28\] No space left on device\); free"):
            write()
        assert json.loads(path.read_text()) == {"old": 1} and sorted(tmp_path.iterdir()) == [path]
    monkeypatch.undo()

    appender = RunFolder(tmp_path).appender()
    monkeypatch.setattr(appender._file, "flush", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    line = Prediction("p0", "cat", [[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(OutputError, match=rf"^{tmp_path / 'predictions.jsonl'}: cannot write \(\[Errno 28\] full\)"):
        appender.write(line)
    monkeypatch.undo()
    appender.close()
