"""Bootstrap intervals: they cover the true PCK at about the nominal rate, keypoints of a pair move
together, and two runs' paired difference is zero when it should be and significant when it should be."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import torch

from sdcorr.runs.records import Prediction
from sdcorr.runs.results import Results, format_table, summary_rows
from sdcorr.runs.scoring import score
from sdcorr.stats.intervals import LEVEL, paired_difference, pck_intervals, stratified_mean_intervals
from sdcorr.stats.pck import PCK


def coverage(draw_pairs, truth: float, repeats: int = 300) -> dict[str, float]:
    """How often the per-image and per-point intervals over a fresh sample of pairs contain ``truth``."""
    hits = {"per_image": 0, "per_point": 0}
    for repeat in range(repeats):
        correct, total = draw_pairs(torch.Generator().manual_seed(repeat))
        intervals = pck_intervals(correct, total, resamples=400, name=repeat)
        for kind in hits:
            low, high = intervals[kind][0].tolist()
            hits[kind] += low <= truth <= high
    return {kind: count / repeats for kind, count in hits.items()}


def difficulty(rng: torch.Generator, n: int) -> torch.Tensor:
    """``[n]`` chances that a pair's keypoints are found: 0.1 or 0.7, even odds (mean 0.4). Keypoints of
    one pair share it, so they are correlated (intra-pair correlation 0.375)."""
    return torch.where(torch.rand(n, generator=rng) < 0.5, 0.1, 0.7)


def test_intervals_cover_the_true_pck_at_the_nominal_rate():
    # 120 pairs of 5 keypoints: the true value of both PCKs is 0.4
    def draw_pairs(rng):
        correct = torch.binomial(torch.full((120,), 5.0), difficulty(rng, 120), generator=rng)
        return correct[:, None], torch.full((120,), 5.0)

    for kind, rate in coverage(draw_pairs, 0.4, repeats=600).items():
        # nominal 0.95; 600 repeats give a standard error of 0.009, and the bounds are 2.5 of them either way.
        # They tell the level apart: 90% intervals cover 0.902 here and 99% ones 0.98, and both fail
        assert 0.925 <= rate <= 0.975, (kind, rate)


def test_a_too_narrow_interval_would_fail_the_coverage_test():
    # the check above can fail: a bootstrap over keypoints (each its own "pair") ignores the correlation
    # within pairs and undercovers (about 78% here)
    def draw_keypoints_as_pairs(rng):
        correct = torch.binomial(torch.full((120,), 5.0), difficulty(rng, 120), generator=rng)
        flags = torch.cat([torch.arange(5) < c for c in correct.long()]).float()  # 600 one-keypoint "pairs"
        return flags[:, None], torch.ones(600)

    assert coverage(draw_keypoints_as_pairs, 0.4, repeats=100)["per_point"] < 0.87


def test_intervals_are_seeded_and_contain_the_figure():
    rng = torch.Generator().manual_seed(0)
    total = torch.randint(1, 9, (30,), generator=rng).float()  # 30 pairs of 1..8 keypoints
    correct = (torch.rand(30, 2, generator=rng) * (total[:, None] + 1)).floor().clamp(max=total[:, None])
    first, again = pck_intervals(correct, total, 500, "cat"), pck_intervals(correct, total, 500, "cat")
    assert torch.equal(first["per_image"], again["per_image"])
    assert not torch.equal(first["per_image"], pck_intervals(correct, total, 500, "dog")["per_image"])
    metric = PCK([0.05, 0.1], resamples=500)
    values = metric._summary(correct, total, "cat")
    for alpha in ("pck@0.05", "pck@0.1"):
        for kind in ("per_image", "per_point"):
            low, high = values[alpha][f"{kind}_interval"]
            assert low <= values[alpha][kind] <= high and low < high
    nothing = pck_intervals(torch.zeros(0, 2), torch.zeros(0), 100)
    assert torch.isnan(nothing["per_image"]).all()  # no pair: undefined, written as null


def test_identical_runs_differ_by_zero_and_shifted_ones_significantly():
    scores = torch.rand(80, generator=torch.Generator().manual_seed(0))
    same = paired_difference(scores, scores.clone())
    assert same["difference"] == 0 and same["low"] <= 0 <= same["high"] and same["p_value"] == 1
    worse = paired_difference(scores, (scores - 0.25).clamp(min=0))  # every pair loses
    assert worse["difference"] < -0.2 and worse["high"] < 0 and worse["p_value"] < 0.01
    noise = paired_difference(scores, scores[torch.randperm(80, generator=torch.Generator().manual_seed(1))])
    assert noise["low"] < noise["difference"] < noise["high"] and noise["p_value"] > 0.01  # same distribution


def prediction(pair_id: str, category: str, hits: int, n: int = 4, source: Optional[str] = None) -> Prediction:
    """A pair of ``n`` keypoints of which the first ``hits`` are predicted exactly (threshold 10), of the source
    image ``source`` (None: not recorded)."""
    target = [[float(10 * i), 5.0] for i in range(n)]
    predicted = [p if i < hits else [p[0], p[1] + 50] for i, p in enumerate(target)]
    return Prediction(pair_id, category, target, predicted, target, threshold=10.0, source_group=source)


def tables(scored: dict) -> Results:
    """The PCK tables of :func:`score` as a results.json record of a run at alpha 0.1."""
    return Results([0.1], 0, {}, {}, "32-true", {}, scored["overall"], scored["per_category"])


def test_results_and_the_table_carry_the_intervals():
    predictions = [prediction(f"{c}{i}", c, hits=i % 5) for c in ("cat", "dog") for i in range(20)]
    results = score(predictions, [0.1], resamples=300)
    assert results["intervals"]["resamples"] == 300 and results["intervals"]["level"] == LEVEL
    for entry in (results["overall"], *results["per_category"].values()):
        value = entry["pck@0.1"]
        assert value["per_image_interval"][0] <= value["per_image"] <= value["per_image_interval"][1]
    assert score(list(reversed(predictions)), [0.1], resamples=300) == results  # any order: the same intervals
    overall = results["overall"]["pck@0.1"]
    half = 50 * (overall["per_image_interval"][1] - overall["per_image_interval"][0])
    assert f"{100 * overall['per_image']:.1f} +- {half:.1f}" in format_table(tables(results))
    columns, rows = summary_rows(tables(results), intervals=True)
    assert columns[3:6] == ["pck@0.1/per_image", "pck@0.1/per_image/low", "pck@0.1/per_image/high"]
    assert rows[-1][3:6] == [overall["per_image"], *overall["per_image_interval"]]
    few = score(predictions[:9], [0.1], resamples=300)  # 9 pairs: too few to resample, no interval claimed
    assert "per_image_interval" not in few["overall"]["pck@0.1"] and "+-" not in format_table(tables(few))
    plain = score(predictions, [0.1], resamples=0)
    assert plain["intervals"] == {} and "per_image_interval" not in plain["overall"]["pck@0.1"]
    assert "+-" not in format_table(tables(plain))


def spair_shaped(rng: torch.Generator, images: int = 100) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Pairs grouped by source image as under fit reuse (SPair test: 12,234 pairs on 481 source images):
    ``images`` source images with 2 to 8 pairs each, 5 keypoints a pair. Each source image's fitted
    embeddings are good or bad for all its pairs (chance 0.1 or 0.7, even odds: the true PCK is 0.4), so
    errors are correlated within a source image, the unit the bootstrap must resample."""
    sizes = torch.randint(2, 9, (images,), generator=rng)
    chance = difficulty(rng, images).repeat_interleave(sizes)
    correct = torch.binomial(torch.full((len(chance),), 5.0), chance, generator=rng)
    return correct[:, None], torch.full((len(chance),), 5.0), torch.arange(images).repeat_interleave(sizes).tolist()


def test_pairs_sharing_a_source_image_are_resampled_together():
    def rate(clustered: bool, repeats: int) -> float:
        hits = 0
        for repeat in range(repeats):
            correct, total, images = spair_shaped(torch.Generator().manual_seed(repeat))
            interval = pck_intervals(correct, total, 400, repeat, clusters=images if clustered else None)
            low, high = interval["per_image"][0].tolist()
            hits += low <= 0.4 <= high
        return hits / repeats

    # nominal 0.95 with clusters (0.937 measured: a percentile bootstrap over 100 clusters is a little
    # narrow); 300 repeats give a standard error of 0.0126, the bounds are 2.5 of them either way
    assert 0.918 <= rate(True, 300) <= 0.982
    # resampling pairs as if independent undercovers here (0.65 measured): the check above can fail
    assert rate(False, 100) < 0.85


def test_each_pair_its_own_cluster_draws_the_unclustered_resamples():
    rng = torch.Generator().manual_seed(3)
    correct, total = torch.randint(0, 5, (25, 2), generator=rng).float(), torch.full((25,), 5.0)
    alone = pck_intervals(correct, total, 300, "cat")
    clustered = pck_intervals(correct, total, 300, "cat", clusters=[f"pair{i}" for i in range(25)])
    assert all(torch.equal(alone[kind], clustered[kind]) for kind in alone)
    scores = correct[:, 0] / 5
    assert paired_difference(scores, scores.flip(0), 300, "d") == paired_difference(
        scores, scores.flip(0), 300, "d", clusters=list(range(25))
    )
    strata = ["a"] * 10 + ["b"] * 15
    assert torch.equal(
        stratified_mean_intervals(correct / 5, strata, 300, "s"),
        stratified_mean_intervals(correct / 5, strata, 300, "s", clusters=list(range(25))),
    )
    with pytest.raises(ValueError, match="Expected 25 cluster labels"):
        pck_intervals(correct, total, 10, clusters=[0, 1])


def test_results_json_resamples_the_pairs_of_a_source_image_together():
    # SPair-shaped lines as a run writes them: 40 source images, 2 to 8 pairs each, errors correlated within one
    correct, total, images = spair_shaped(torch.Generator().manual_seed(0), images=40)
    lines = [prediction(f"p{i:03d}", "cat", int(c), n=5, source=f"img{image}")
             for i, (c, image) in enumerate(zip(correct[:, 0].tolist(), images))]  # fmt: skip
    results = score(lines, [0.1], resamples=300)
    clustered = pck_intervals(correct, total, 300, "overall", clusters=images)
    for kind in ("per_image", "per_point"):
        assert results["overall"]["pck@0.1"][f"{kind}_interval"] == clustered[kind][0].tolist()
    block = results["intervals"]
    assert (block["clusters"], block["num_clusters"], block["num_pairs"]) == ("source image", 40, len(lines))
    # lines of an older sdcorr record no source image: pair by pair, narrower here, and the block says so
    per_pair = pck_intervals(correct, total, 300, "overall")
    older = score([dataclasses.replace(p, source_group=None) for p in lines], [0.1], resamples=300)
    assert older["overall"]["pck@0.1"]["per_image_interval"] == per_pair["per_image"][0].tolist()
    assert older["intervals"]["clusters"] == "pair" and "older sdcorr" in older["intervals"]["note"]
    width = [float(i["per_image"][0, 1] - i["per_image"][0, 0]) for i in (clustered, per_pair)]
    assert width[0] > 1.3 * width[1]
    # enough pairs, but on 3 source images: too few units to draw, no interval claimed
    three = score(
        [dataclasses.replace(p, source_group=f"img{i % 3}") for i, p in enumerate(lines)], [0.1], resamples=300
    )
    assert "per_image_interval" not in three["overall"]["pck@0.1"] and three["intervals"]["num_clusters"] == 3
