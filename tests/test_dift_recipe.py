"""DIFT's evaluation recipe (issue 26), each step against an independent computation, and each image's
features computed once per run: equal to recomputing them per pair, whatever the order, shards or resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from datamodules import CUBDataModule, PFWillowDataModule, SPairDataModule
from sdcorr import DenseSource, DiftSource, NearestNeighbourMatcher
from sdcorr.matchers.base import PairContext
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.pages.viewer import map_peaks
from sdcorr.rng import generator
from sdcorr.runs.plan import make_plan
from sdcorr.sources.architectures import save_random
from tests.fixtures_cub import write_cub
from tests.fixtures_pfwillow import write_pfwillow
from tests.fixtures_spair import write_spair
from tests.test_dense import from_config, sdcorr


class RecordingSource(DenseSource):
    """Hand-built descriptors: ``maps[i]`` for the ``i``-th image it is asked for; records what it receives."""

    def __init__(self, image_size: int, maps: list[torch.Tensor]) -> None:
        super().__init__()
        self.image_size = image_size
        self.maps = maps
        self.seen: list[torch.Tensor] = []
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the source a device

    def features(self, images, generators=None, categories=None):
        self.seen.append(images[0].clone())
        return self.maps[len(self.seen) - 1][None]


def dift_reference(source_map, target_map, source_size, target_size, keypoints):
    """What DIFT's ``eval_spair.py`` does with two maps, written out in full: both upsampled to their image's
    ``H x W`` (nn.Upsample, bilinear), the source vector at ``[y, x]``, every target pixel normalised, the
    cosine, NumPy's argmax. Returns ``[N, 2] (x, y)`` integers."""
    up = torch.nn.Upsample(size=source_size[::-1], mode="bilinear")(source_map[None])[0]
    target = torch.nn.Upsample(size=target_size[::-1], mode="bilinear")(target_map[None])[0]
    c, h, w = target.shape
    vectors = F.normalize(target.reshape(c, -1).T)  # [HW, C]
    points = []
    for x, y in keypoints.long().tolist():
        descriptor = F.normalize(up[:, y, x].reshape(1, c)).T  # [C, 1]
        cosine = (vectors @ descriptor).reshape(h, w).numpy()
        row, column = np.unravel_index(cosine.argmax(), cosine.shape)
        points.append([float(column), float(row)])
    return torch.tensor(points)


DIFT_MATCHER = dict(resolution="image", resize="pil-bicubic")


def test_the_resize_is_pillows_own_on_the_8_bit_pixels():
    """The working image the source receives is what Pillow's default resize makes of the uint8 pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    pixels[:, 20:] = 255  # a sharp edge, where bicubic overshoots and bilinear does not
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255  # as sdcorr.load_image reads an 8-bit file
    expected = np.asarray(Image.fromarray(pixels).resize((24, 24)))  # Pillow's default filter
    maps = [torch.rand(4, 6, 6) for _ in range(4)]
    source = RecordingSource(24, maps)
    NearestNeighbourMatcher(**DIFT_MATCHER).match(source, image, image.flip(-1), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(source.seen[0], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255)
    NearestNeighbourMatcher(cache_maps=0).match(source, image, image.flip(-1), torch.tensor([[3.0, 4.0]]))
    assert (source.seen[2] - source.seen[0]).abs().max() > 10 / 255  # the float bilinear resize is another image


def test_normalising_after_upsampling_picks_dift_point():
    """A target map of two cells, (1, 0.9) and (1, -1), and a source descriptor (1, 0): each cell alone is at
    cosine 0.74 and 0.71, but their blend between the cells points at (1, 0). Cosines of the cells,
    upsampled (the working grid), peak on the first cell; vectors upsampled and then normalised (DIFT)
    peak in between, where DIFT's own computation puts it."""
    source_map = torch.tensor([1.0, 0.0]).reshape(2, 1, 1).expand(2, 3, 3).clone()
    target_map = torch.tensor([[[1.0, 1.0]], [[0.9, -1.0]]])  # [C=2, h=1, w=2]
    source_image, target_image = torch.ones(3, 30, 20), torch.zeros(3, 8, 40)  # [3, H, W]
    keypoints = torch.tensor([[5.0, 7.0], [19.0, 29.0]])
    expected = dift_reference(source_map, target_map, (20, 30), (40, 8), keypoints)
    assert 12 <= expected[0, 0] <= 28  # DIFT's point lies between the cell centres (10 and 30)
    dift = NearestNeighbourMatcher(**DIFT_MATCHER).match(
        RecordingSource(16, [source_map, target_map]), source_image, target_image, keypoints
    )
    assert torch.equal(dift.keypoints, expected) and dift.heatmaps.shape == (2, 8, 40)
    assert torch.equal(map_peaks(dift.heatmaps, (40, 8)), expected + 0.5)  # the viewer reads maps of the target's size
    grid = NearestNeighbourMatcher().match(
        RecordingSource(16, [source_map, target_map]), source_image, target_image, keypoints
    )
    assert (grid.keypoints[:, 0] < 10).all()  # on the first cell's side: another point


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_image_resolution_matches_dift_on_random_maps(seed):
    """Random maps of other sizes and channel counts than the chunk: every point exactly DIFT's."""
    g = torch.Generator().manual_seed(seed)
    source_map, target_map = torch.randn(40, 6, 5, generator=g), torch.randn(40, 7, 9, generator=g)
    source_image, target_image = torch.rand(3, 45, 38), torch.rand(3, 33, 51)
    keypoints = torch.tensor([[0.0, 0.0], [37.0, 44.0], [12.0, 20.0], [30.0, 3.0], [19.6, 7.2]])
    matcher = NearestNeighbourMatcher(**DIFT_MATCHER, upsample_chunk=16)
    result = matcher.match(RecordingSource(16, [source_map, target_map]), source_image, target_image, keypoints)
    assert torch.equal(result.keypoints, dift_reference(source_map, target_map, (38, 45), (51, 33), keypoints.floor()))


def save_text_model_with_letters(folder: Path) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A random CLIP text model in a diffusers folder (``tokenizer/``, ``text_encoder/``) whose vocabulary
    holds single letters, so that class names tokenise apart (save_tiny_text_model's has one symbol)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "!</w>": 3}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter], vocab[f"{letter}</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!")
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder / "tokenizer")
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = CLIPTextModel(config).eval()
    encoder.save_pretrained(folder / "text_encoder")
    return tokenizer, encoder


def test_each_class_gets_its_own_prompt_context(tmp_path):
    folder = save_random("tiny-v2", tmp_path / "sd")
    tokenizer, encoder = save_text_model_with_letters(folder)
    source = DiftSource(pretrained=str(folder), image_size=32, latent="mean", ensemble_size=1)

    def encoded(text):  # what a Stable Diffusion pipeline feeds the UNet for a prompt
        ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return encoder(ids).last_hidden_state

    with torch.no_grad():
        for category, text in (("cat", "a photo of a cat"), ("pottedplant", "a photo of a pottedplant"), (None, "")):
            assert torch.allclose(source.context_of(category), encoded(text), atol=1e-6), category
    assert not torch.allclose(source.context_of("cat"), source.context_of("dog"), atol=1e-3)
    assert set(source._contexts) == {"cat", "pottedplant", "dog"}  # each class encoded once, then kept
    x = torch.rand(2, 3, 32, 32)
    draws = lambda: [generator("p", 0), generator("p", 1)]  # noqa: E731
    both = source.features(x, draws(), ["cat", "dog"])
    assert torch.allclose(both[1:], source.features(x[1:], [generator("p", 1)], ["dog"]), atol=1e-5)
    assert not torch.allclose(both[:1], source.features(x[:1], [generator("p", 0)], ["dog"]), atol=1e-4)
    # the matcher hands the pair's class to the source
    matcher = NearestNeighbourMatcher(**DIFT_MATCHER)
    points, image = torch.tensor([[10.0, 12.0]]), torch.rand(3, 40, 36)
    cat = matcher.match(source, image, image.flip(-1), points, fit_seed=0, context=PairContext("s", "t", "cat"))
    again = NearestNeighbourMatcher(**DIFT_MATCHER, cache_maps=0).match(
        source, image, image.flip(-1), points, fit_seed=0, context=PairContext("s", "t", "cat")
    )
    dog = matcher.match(source, image, image.flip(-1), points, fit_seed=0, context=PairContext("s", "t", "dog"))
    assert torch.equal(cat.heatmaps, again.heatmaps) and not torch.equal(cat.heatmaps, dog.heatmaps)
    with pytest.raises(ValueError, match="prompt: expected a text whose only placeholder is {category}"):
        DiftSource(architecture="tiny-v2", prompt_embedding="zeros", prompt="a photo of a {cls}")
    with pytest.raises(ValueError, match="soft_argmax: expected false with resolution 'image'"):
        NearestNeighbourMatcher(resolution="image", soft_argmax=True)


def test_each_benchmark_names_the_class_and_the_images(tmp_path):
    """The real-format fixtures: SPair's folder names as they are, PF-Willow's class without its suffix, CUB
    'bird'; each sample names its images by their files' digests (equal files, equal ids)."""
    spair = SPairDataModule(str(write_spair(tmp_path / "spair", categories=("pottedplant", "cat"))), download=False)
    pfwillow = PFWillowDataModule(str(write_pfwillow(tmp_path / "pfwillow")), download=False)
    cub = CUBDataModule(str(write_cub(tmp_path / "cub")), classes=[1, 2])
    for data, classes in ((spair, {"pottedplant", "cat"}), (pfwillow, None), (cub, {"bird"})):
        data.setup("test")
        samples = [data.dataset[i] for i in range(len(data.dataset))]
        names = {s["class_name"] for s in samples}
        if classes is None:  # PF-Willow: car(G) -> car, winebottle(wC) -> winebottle
            assert names == {s["category"].split("(")[0] for s in samples} and not any("(" in n for n in names)
        else:
            assert names == classes
        for s in samples:
            assert len(s["source_image_id"]) == len(s["target_image_id"]) == 20
        by_id = {}
        for s in samples:
            for side in ("source", "target"):
                by_id.setdefault(s[f"{side}_image_id"], s[f"{side}_image"])
        for s in samples:  # one id, one picture
            for side in ("source", "target"):
                assert torch.equal(by_id[s[f"{side}_image_id"]], s[f"{side}_image"])


@pytest.fixture(scope="module")
def tiny_dift():
    source, matcher = from_config("tiny_dift", ensemble_size=2, image_size=32)
    return source, matcher


def shared_pairs():
    """Four pairs over three images (A, B, C), each image in several pairs, as (source, target, id) names."""
    g = torch.Generator().manual_seed(0)
    images = {name: torch.rand(3, h, w, generator=g) for name, (h, w) in zip("ABC", [(40, 36), (33, 45), (38, 38)])}
    pairs = [("A", "B"), ("A", "C"), ("B", "A"), ("C", "B")]
    return images, pairs


def run_pairs(source, matcher, images, pairs, seed=0):
    points = torch.tensor([[5.0, 6.0], [20.0, 30.0], [30.0, 10.0]])
    out = {}
    for s, t in pairs:
        context = PairContext(s, t, "cat")
        out[(s, t)] = matcher.match(source, images[s], images[t], points, (seed, s + t), seed, context=context)
    return out


def test_features_once_equal_recomputation_in_any_order_or_split(tiny_dift, monkeypatch):
    source, config_matcher = tiny_dift
    options = dict(resolution=config_matcher.resolution, resize=config_matcher.resize)
    images, pairs = shared_pairs()
    calls = []
    features = source.features
    monkeypatch.setattr(source, "features", lambda *a, **k: calls.append(1) or features(*a, **k))
    once = run_pairs(source, NearestNeighbourMatcher(**options), images, pairs)
    assert len(calls) == 3  # one model call per distinct image
    calls.clear()
    every = run_pairs(source, NearestNeighbourMatcher(**options, cache_maps=0), images, pairs)
    assert len(calls) == 8
    assert all(torch.equal(once[p].keypoints, every[p].keypoints) for p in pairs)
    assert all(torch.equal(once[p].heatmaps, every[p].heatmaps) for p in pairs)
    # two processes (or shards, or a resumed run) each with a fresh store, and the pairs in another order
    first = run_pairs(source, NearestNeighbourMatcher(**options), images, pairs[::2][::-1])
    second = run_pairs(source, NearestNeighbourMatcher(**options), images, pairs[1::2])
    assert all(torch.equal({**first, **second}[p].heatmaps, once[p].heatmaps) for p in pairs)
    # the same draws, computed by hand per pair (DiftSource with the image's own stream): the same points
    for s, t in pairs:
        matcher = NearestNeighbourMatcher(**options)
        maps = [
            features(matcher.working_image(images[n], 32, source.device)[None], [generator(0, "features", n)], ["cat"])[
                0
            ]
            for n in (s, t)
        ]
        by_hand = NearestNeighbourMatcher(**options).match(
            RecordingSource(32, maps), images[s], images[t], torch.tensor([[5.0, 6.0], [20.0, 30.0], [30.0, 10.0]])
        )
        assert torch.equal(by_hand.keypoints, once[(s, t)].keypoints)
        assert torch.equal(by_hand.heatmaps, once[(s, t)].heatmaps)
    # another run seed draws other noise
    other = run_pairs(source, NearestNeighbourMatcher(**options), images, pairs[:1], seed=1)
    assert not torch.allclose(other[pairs[0]].heatmaps, once[pairs[0]].heatmaps, atol=1e-6)


def test_plan_counts_one_pass_per_distinct_image(tmp_path):
    root = write_spair(tmp_path / "spair", categories=("aeroplane", "cat", "dog"), pairs_per_category=4)
    data = SPairDataModule(str(root), download=False)
    data.setup("test")
    pairs = data.pending()
    plan = make_plan(pairs, NearestNeighbourMatcher())
    distinct = {(p["source_path"].name, p["category"]) for p in pairs} | {
        (p["target_path"].name, p["category"]) for p in pairs
    }
    assert plan.images == plan.passes == len(distinct) == 6 and plan.passes_without_reuse == 2 * len(pairs) == 24
    assert "6 image feature maps, 6 model passes (24 without reuse)" in str(plan)
    assert make_plan(pairs, NearestNeighbourMatcher(cache_maps=1)).passes > 6  # a store too small recomputes
    assert make_plan(pairs, PromptMatcher()).images is None  # the paper method's plan is unchanged


@pytest.mark.slow  # four runs of `sdcorr test` (17 s); the matcher-level test above is the fast check
def test_shards_and_resume_give_the_numbers_of_one_run(tmp_path, monkeypatch):
    """`sdcorr test` with the tiny DIFT recipe on SPair's format: 2 shards, and a run resumed after its first
    pair, predict exactly what one uninterrupted run predicts."""
    root = write_spair(tmp_path / "spair", pairs_per_category=3)
    common = ["--config", "configs/spair.yaml", "--config", "configs/model/tiny_dift.yaml", "--data.root", str(root),
              "--model.source.init_args.ensemble_size", "2", "--model.source.init_args.image_size", "32",
              "--trainer.logger", "false", "--data.download", "false"]  # fmt: skip

    def predictions(folder):
        lines = (folder / "predictions.jsonl").read_text().splitlines()
        return {r["pair_id"]: r["predicted_keypoints"] for r in map(json.loads, lines)}

    sdcorr(monkeypatch, "test", *common, "--trainer.default_root_dir", str(tmp_path / "whole"))
    whole = predictions(tmp_path / "whole")
    assert len(whole) == 6
    shards = {}
    for index in range(2):
        out = tmp_path / f"shard{index}"
        sdcorr(monkeypatch, "test", *common, "--trainer.default_root_dir", str(out),
               "--data.shard_index", str(index), "--data.num_shards", "2")  # fmt: skip
        shards.update(predictions(out))
    assert shards == whole
    resumed = tmp_path / "resumed"
    sdcorr(monkeypatch, "test", *common, "--trainer.default_root_dir", str(resumed))
    first = (resumed / "predictions.jsonl").read_text().splitlines()[0]
    (resumed / "predictions.jsonl").write_text(first + "\n")
    (resumed / "results.json").unlink()
    sdcorr(monkeypatch, "test", *common, "--trainer.default_root_dir", str(resumed))
    assert predictions(resumed) == whole
