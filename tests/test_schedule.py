"""Pairs grouped by source image: shards and DDP processes get whole images, so each fit is done once."""

import doctest
import json
import random
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from datamodules import schedule
from datamodules.base import PairListDataset, UnpaddedDistributedSampler, collate_pairs
from datamodules.pairs import PairsDataModule
from datamodules.schedule import GROUP, GROUP_KEYPOINTS, split
from tests.conftest import DEMO, QUICK, REPO, sdcorr, sdcorr_here
from tests.fixtures_spair import write_spair


def records(groups_and_counts):
    return [
        {"pair_id": f"p{i}", GROUP: group, "num_keypoints": count} for i, (group, count) in enumerate(groups_and_counts)
    ]


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_split_keeps_source_images_whole_and_balances_keypoints(parts):
    rng = random.Random(parts)
    pairs = records([(f"img{rng.randrange(40)}", rng.randint(1, 20)) for _ in range(300)])
    split_pairs = split(pairs, parts)
    assert sorted(i for part in split_pairs for i in part) == list(range(len(pairs)))  # each pair exactly once
    owner = {}
    for p, part in enumerate(split_pairs):
        for i in part:
            assert owner.setdefault(pairs[i][GROUP], p) == p  # a source image never spans two parts
        seen = [pairs[i][GROUP] for i in part]
        assert seen == sorted(seen, key=seen.index)  # and its pairs come one after another
    loads = [sum(pairs[i]["num_keypoints"] for i in part) for part in split_pairs]
    heaviest = max(sum(p["num_keypoints"] for p in pairs if p[GROUP] == g) for g in owner)
    assert max(loads) - min(loads) <= heaviest  # greedy heaviest-first balance


def test_split_examples_and_fewer_images_than_parts():
    assert doctest.testmod(schedule).failed == 0  # the docstring's examples (datamodules is not doctest-collected)
    pairs = records([("a", 2), ("a", 3), ("a", 1), ("b", 4)])
    assert split(pairs, 3) == [[3], [1], [0, 2]]  # two images, three parts: pair by pair, none empty
    assert split(pairs[:1], 2) == [[0], []]  # fewer pairs than parts: nothing to give


def test_an_idle_process_gets_one_empty_batch_unless_no_process_has_a_pair():
    def batches(pairs, rank):
        dataset = PairListDataset(pairs, lambda pair: pair["pair_id"])
        sampler = UnpaddedDistributedSampler(dataset, num_replicas=3, rank=rank)
        return list(DataLoader(dataset, sampler=sampler, batch_size=2, collate_fn=collate_pairs))

    one = records([("a", 2)])
    assert [batches(one, rank) for rank in range(3)] == [[["p0"]], [[]], [[]]]  # ranks 1, 2: run the loop, no pair
    assert [batches([], rank) for rank in range(3)] == [[], [], []]  # nothing to do anywhere: no loop at all


def write_shared_pairs(folder):
    """6 pairs over 4 source files, one of them a byte-identical copy of another: 3 source images."""
    shutil.copy(DEMO / "0_chelsea_source.jpg", folder / "chelsea_copy.jpg")
    cat, copy, astro1, astro2 = (
        str(DEMO / "0_chelsea_source.jpg"), "chelsea_copy.jpg",
        str(DEMO / "1_astronaut_source.jpg"), str(DEMO / "2_astronaut_source.jpg"),
    )  # fmt: skip
    targets = [
        str(DEMO / name) for name in ("0_chelsea_target.jpg", "1_astronaut_target.jpg", "2_astronaut_target.jpg")
    ]
    points = [[114.41, 74.67], [211.53, 90.0], [174.28, 161.33]]
    truth = [[120.0, 80.0], [200.0, 100.0], [170.0, 150.0]]
    pairs = [
        ("cat-a", cat, targets[0], [0, 1, 2]),
        ("cat-b", cat, targets[1], [1, 2]),
        ("cat-copy", copy, targets[0], [0, 1]),
        ("astro1-a", astro1, targets[1], [0, 1]),
        ("astro1-b", astro1, targets[2], [0]),
        ("astro2-a", astro2, targets[2], [0, 2]),
    ]
    entries = [
        {"id": pid, "category": pid.split("-")[0], "source": src, "target": trg,
         "source_keypoints": [points[k] for k in kps], "target_keypoints": [truth[k] for k in kps],
         "target_bbox": [40, 40, 220, 200]}
        for pid, src, trg, kps in pairs
    ]  # fmt: skip
    (folder / "pairs.json").write_text(json.dumps({"pairs": entries}))
    return folder


def test_copies_of_one_image_are_one_source_group(tmp_path):
    data = PairsDataModule(str(write_shared_pairs(tmp_path)), num_shards=2, shard_index=0)
    data.setup("test")
    other = PairsDataModule(str(tmp_path), num_shards=2, shard_index=1)
    other.setup("test")
    ids = [{p["pair_id"] for p in d.selected} for d in (data, other)]
    assert ids[0] | ids[1] == {"cat-a", "cat-b", "cat-copy", "astro1-a", "astro1-b", "astro2-a"}
    cat = {"cat-a", "cat-b", "cat-copy"}
    assert cat <= ids[0] or cat <= ids[1]  # the copy goes with the original
    groups = {p["pair_id"]: p[GROUP] for d in (data, other) for p in d.selected}
    assert groups["cat-a"] == groups["cat-copy"] != groups["astro1-a"]
    # the sample carries it to the prediction line, for the intervals (pairs of one image are drawn together)
    sample = data.dataset[0]
    assert sample["source_image_id"] == groups[sample["pair_id"]] and len(sample["source_image_id"]) == 20


@pytest.mark.slow
def test_plan_counts_distinct_fits_without_loading_the_model(tmp_path):
    # per category: pairs k = 0, 2, 4 go A -> B with A's 3 keypoints, k = 1, 3 go B -> A with B's first 2:
    # 13 keypoints, of which 5 distinct (A's 3, B's 2); two categories
    root = write_spair(tmp_path / "SPair-71k", pairs_per_category=5, splits=("test",))
    args = ["plan", "--config", "configs/spair.yaml", "--data.init_args.root", str(root)]
    out = sdcorr_here(*args).stdout  # configs/spair.yaml names SD 1.4, which is not loaded
    # paper preset, 5 restarts x (129 steps + 20 locate crops): 5 x (10 x 129 + 26 x 20) = 9,050
    assert out.strip() == "to do: 10 pairs, 26 keypoints, 10 distinct fits, 9,050 model passes (19,370 without reuse)"
    off = sdcorr_here(*args, "--model.matcher.init_args.reuse_fits", "false").stdout  # 5 x 26 x 149
    assert off.strip() == "to do: 10 pairs, 26 keypoints, 19,370 model passes"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The 6 shared-source pairs run in one process: the reference for DDP and shards."""
    folder = write_shared_pairs(tmp_path_factory.mktemp("shared_pairs"))
    out = tmp_path_factory.mktemp("shared_whole")
    sdcorr("test", *QUICK, "--data.init_args.root", str(folder), "--trainer.default_root_dir", str(out))
    return folder, out


@pytest.mark.slow
def test_ddp_ranks_get_whole_source_images_and_the_same_results(shared, tmp_path):
    folder, whole = shared
    sdcorr(
        "test", *QUICK, "--data.init_args.root", str(folder), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    ranks = [
        [json.loads(x)["pair_id"] for x in path.read_text().splitlines()]
        for path in sorted(tmp_path.glob("predictions.rank*.jsonl"))
    ]
    sources = [{pair_id.split("-")[0] for pair_id in rank} for rank in ranks]  # cat, cat copy -> "cat"
    assert len(ranks) == 2 and all(ranks) and not sources[0] & sources[1]  # no keypoint fitted on both ranks
    assert (tmp_path / "results.json").read_text() == (whole / "results.json").read_text()


@pytest.mark.slow
def test_more_processes_than_pairs_end_like_one_process(shared, tmp_path):
    """One source image's 2 pairs on 3 processes: ranks 0 and 1 get a pair each, rank 2 none. It still takes
    part in every collective step (no gloo crash), and the pairs and their scores are those of the one-process
    run, without warnings (Lightning's sync_dist advice was printed 10 times on 2 processes)."""
    folder, whole = shared
    ddp = ["--trainer.devices", "3", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    result = sdcorr("test", *QUICK, "--data.init_args.root", str(folder), "--data.init_args.categories", "[astro1]",
                    "--trainer.default_root_dir", str(tmp_path), *ddp)  # fmt: skip
    ranks = [(tmp_path / f"predictions.rank{r}.jsonl").read_text().splitlines() for r in range(3)]
    assert [len(lines) for lines in ranks] == [1, 1, 0]
    single = [line for line in (whole / "predictions.jsonl").read_text().splitlines() if '"astro1-' in line]
    assert sorted(ranks[0] + ranks[1]) == sorted(single) and len(single) == 2  # byte for byte
    results, reference = (json.loads((path / "results.json").read_text()) for path in (tmp_path, whole))
    assert results["overall"] == reference["per_category"]["astro1"] and list(results["per_category"]) == ["astro1"]
    assert "sync_dist" not in result.stderr and "Warning" not in result.stderr


@pytest.mark.slow
def test_three_shards_merge_to_the_same_results(shared, tmp_path):
    folder, whole = shared
    for index in range(3):
        sdcorr(
            "test", *QUICK, "--data.init_args.root", str(folder),
            "--trainer.default_root_dir", str(tmp_path / str(index)),
            "--data.init_args.shard_index", str(index), "--data.init_args.num_shards", "3",
        )  # fmt: skip
    sdcorr_here("merge", str(tmp_path / "merged"), *(str(tmp_path / str(i)) for i in range(3)))
    assert (tmp_path / "merged/results.json").read_text() == (whole / "results.json").read_text()


def test_samples_carry_their_source_images_keypoints_over_the_whole_selection(tmp_path):
    """Four shards of three source images split pair by pair: a shard holding one pair of an image still
    gets the image's keypoints over all the selected pairs (what fits are batched by)."""
    folder = write_shared_pairs(tmp_path)
    points = [[114.41, 74.67], [211.53, 90.0], [174.28, 161.33]]
    expected = {"cat": [0, 1, 2], "astro1": [0, 1], "astro2": [0, 2]}  # the unions of write_shared_pairs
    seen = set()
    for index in range(4):
        data = PairsDataModule(str(folder), num_shards=4, shard_index=index)
        data.setup("test")
        for i, pair in enumerate(data.selected):
            sample = data.dataset[i]
            group = torch.tensor([points[k] for k in expected[pair["pair_id"].split("-")[0]]], dtype=torch.float32)
            got = sample[GROUP_KEYPOINTS]
            assert sorted(got.tolist()) == sorted(group.tolist()) and got.dtype == torch.float32
            seen.add(pair["pair_id"])
    assert len(seen) == 6


def test_a_run_resumed_inside_a_source_image_fits_the_same_embeddings(tmp_path, monkeypatch):
    """Fits batched by source image, end to end: cut after cat-b, the resumed run's cat-copy (keypoints 0
    and 1 of the cat image) computes chunks the whole run computed (2 keypoints a call: the image's 3,
    sorted, as {0, 2} and {1}), not chunks of what is left ({0, 1}), and every saved embedding is the same
    bit for bit."""
    from sdcorr.cli.main import main
    from sdcorr.matchers.prompt import PromptMatcher

    calls, fit_chunk = [], PromptMatcher._fit_chunk

    def spy(self, source, encoder, points, items, *rest):
        calls[-1].append(sorted({tuple(points[u].tolist()) for u, _ in items}))
        return fit_chunk(self, source, encoder, points, items, *rest)

    monkeypatch.setattr(PromptMatcher, "_fit_chunk", spy)
    monkeypatch.chdir(REPO)
    (tmp_path / "pairs").mkdir()
    folder = write_shared_pairs(tmp_path / "pairs")
    args = ["test", *QUICK, "--data.init_args.root", str(folder), "--output.save_embeddings", "true",
            "--pictures.num_pairs", "0", "--model.matcher.init_args.max_batch", "4"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    calls.append([])
    main([*args, "--trainer.default_root_dir", str(whole)])
    shutil.copytree(whole, cut)
    done = (whole / "predictions.jsonl").read_text().splitlines(True)
    assert [json.loads(line)["pair_id"] for line in done[:3]] == ["cat-a", "cat-b", "cat-copy"]
    (cut / "predictions.jsonl").write_text("".join(done[:2]))
    (cut / "results.json").unlink()
    shutil.rmtree(cut / "embeddings")
    calls.append([])
    main([*args, "--trainer.default_root_dir", str(cut)])
    assert calls[1] and all(chunk in calls[0] for chunk in calls[1])
    assert max(len(chunk) for chunk in calls[1]) == 2  # the cat image's {0, 2}
    redone = sorted((cut / "embeddings").iterdir())
    assert len(redone) == 4  # cat-copy and the 3 astronaut pairs
    for path in redone:
        assert torch.equal(torch.load(path), torch.load(whole / "embeddings" / path.name)), path.name
    assert (cut / "results.json").read_text() == (whole / "results.json").read_text()
