"""Dense sources (DIFT, DINOv2) and nearest-neighbour matching, through the same paths as real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdcorr import AttentionSource, DenseSource, DiftSource, Dinov2Source, NearestNeighbourMatcher, geometry
from sdcorr.cli.main import main
from sdcorr.errors import ModelLoadError
from sdcorr.matchers.nearest import cosine_maps, sample_descriptors
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.rng import generator
from sdcorr.sources import hub
from sdcorr.sources.architectures import save_random
from tests.conftest import REPO
from tests.example_source import FixedTimestepSource


def model_config(name: str) -> dict:
    """``model:`` of ``configs/model/<name>.yaml``."""
    return yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())["model"]


def from_config(name: str, **overrides) -> tuple[DenseSource, NearestNeighbourMatcher]:
    """The source and matcher a tiny model config builds (the classes are checked, not assumed)."""
    config = model_config(name)
    classes = {"sdcorr.DiftSource": DiftSource, "sdcorr.Dinov2Source": Dinov2Source}
    source = classes[config["source"]["class_path"]](**{**config["source"]["init_args"], **overrides})
    assert config["matcher"]["class_path"] == "sdcorr.NearestNeighbourMatcher"
    return source, NearestNeighbourMatcher(**config["matcher"].get("init_args", {}))


@pytest.fixture(scope="module")
def dift() -> DiftSource:
    """tiny_dift.yaml's source at 32 px with 2 draws: the same code for a small part of the work."""
    return from_config("tiny_dift", ensemble_size=2, image_size=32)[0]


@pytest.fixture(scope="module")
def dino() -> Dinov2Source:
    return from_config("tiny_dinov2")[0]


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- sources


def test_dinov2_shapes_grid_and_stride(dino):
    plain = Dinov2Source(architecture="tiny", image_size=64)
    x = images()
    assert plain.features(x).shape == (2, 64, 8, 8)  # 64 px / patch 8, hidden 64
    dense_grid = dino.features(x)
    assert dense_grid.shape == (2, 64, 32, 32) and dense_grid.dtype == torch.float32
    # cell (4i + m, 4j + n) is token (i, j) of the image moved up by 2m and left by 2n px, after a
    # margin of (8 - 2) / 2 = 3 px of replicated edge
    padded = F.pad(x, (3, 3, 3, 3), mode="replicate")
    for m, n in [(0, 0), (1, 2), (3, 1)]:
        copy = padded[..., 2 * m : 2 * m + 64, 2 * n : 2 * n + 64]
        assert torch.allclose(dense_grid[..., m::4, n::4], plain.features(copy), atol=1e-5)
    with pytest.raises(ValueError, match="stride: expected a divisor of the patch size"):
        Dinov2Source(architecture="tiny", image_size=64, stride=3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Dinov2Source(architecture="tiny", image_size=60)


def test_dift_shapes_and_options(dift):
    x = images(size=32)
    features = dift.features(x)
    assert features.shape == (2, 64, 16, 16)  # up block 1 of tiny-v2: 64 channels at the latent size (32 px / 2)
    assert features.dtype == torch.float32 and not features.requires_grad
    assert DiftSource(
        architecture="tiny-v2", prompt_embedding="zeros", image_size=32, up_block=0, ensemble_size=1
    ).features(x).shape == (2, 128, 16, 16)  # up block 0 ends with an upsampler
    with pytest.raises(ValueError, match="prompt_embedding: expected 'zeros' with architecture"):
        DiftSource(architecture="tiny-v2")
    with pytest.raises(ValueError, match="up_block"):
        DiftSource(architecture="tiny-v2", prompt_embedding="zeros", up_block=2)


def test_dift_draws_are_per_image_and_seeded(dift):
    x = images(size=32)
    gens = lambda *keys: [generator("test", k) for k in keys]  # noqa: E731
    both = dift.features(x, gens("a", "b"))
    assert torch.equal(both, dift.features(x, gens("a", "b")))
    assert torch.allclose(both[1:], dift.features(x[1:], gens("b")), atol=1e-5)  # batching changes nothing
    assert not torch.allclose(both[:1], dift.features(x[:1], gens("c")), atol=1e-3)  # other noise, other features
    assert torch.equal(dift.features(x), dift.features(x))  # without generators: a fixed stream per image


def test_dift_average_over_the_ensemble(dift):
    """The ensemble mean equals the mean of single-draw features over the same draws (drawn in order)."""
    x = images(1, size=32)
    one = DiftSource(architecture="tiny-v2", prompt_embedding="zeros", image_size=32, latent="mean", ensemble_size=1)
    g = torch.Generator().manual_seed(5)
    singles = torch.stack([one.features(x, [g])[0] for _ in range(2)])
    assert torch.allclose(dift.features(x, [torch.Generator().manual_seed(5)])[0], singles.mean(dim=0), atol=1e-5)


def test_dinov2_round_trip_through_a_saved_folder(tmp_path, dino):
    dino.model.save_pretrained(tmp_path / "dinov2-tiny")
    loaded = Dinov2Source(pretrained=str(tmp_path / "dinov2-tiny"), image_size=64, stride=2)
    x = images()
    assert torch.equal(loaded.features(x), dino.features(x))


def test_dinov2_load_failures_name_the_model(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="DINOv2 from the folder .*empty"):
        Dinov2Source(pretrained=str(tmp_path / "empty"))
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ModelLoadError, match="DINOv2:? 'sdcorr-tests/no-such-dinov2'"):
        Dinov2Source(pretrained="sdcorr-tests/no-such-dinov2")


def save_tiny_text_model(folder: Path) -> CLIPTextModel:
    """A random CLIP text encoder and a 4-token tokenizer in a diffusers folder (``tokenizer/``, ``text_encoder/``)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "!</w>": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!")
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder / "tokenizer")
    config = CLIPTextConfig(
        vocab_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = CLIPTextModel(config).eval()
    encoder.save_pretrained(folder / "text_encoder")
    return encoder


def test_dift_round_trip_through_a_saved_folder_with_its_text_encoder(tmp_path):
    folder = save_random("tiny-v2", tmp_path / "tiny-sd2")
    options = dict(image_size=32, latent="mean", ensemble_size=2)
    built = DiftSource(architecture="tiny-v2", prompt_embedding="zeros", **options)
    loaded = DiftSource(pretrained=str(folder), prompt_embedding="zeros", **options)
    x = images(size=32)
    assert torch.equal(loaded.features(x), built.features(x))
    with pytest.raises(ModelLoadError, match="text_encoder"):
        DiftSource(pretrained=str(folder), prompt_embedding="text", **options)
    encoder = save_tiny_text_model(folder)
    with_text = DiftSource(pretrained=str(folder), prompt_embedding="text", **options)
    expected = encoder(torch.tensor([[0, 1] + [2] * 75])).last_hidden_state  # "" -> BOS, EOS, padding
    assert with_text.context.shape == (1, 77, 32) and torch.allclose(with_text.context, expected, atol=1e-6)
    assert not torch.allclose(with_text.features(x), loaded.features(x), atol=1e-4)  # the context is used


# ---------------------------------------------------------------- the nearest-neighbour matcher


class PatchSource(DenseSource):
    """Reference descriptors: every pixel's 5 x 5 neighbourhood (zero padded), ``[B, 75, S, S]``."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the source a device

    def features(self, images, generators=None, categories=None):
        b, _, h, w = images.shape
        return F.unfold(images, 5, padding=2).reshape(b, 75, h, w)


def test_sampling_and_cosine_follow_the_pixel_centre_convention():
    features = torch.arange(4.0).reshape(1, 2, 2)  # cells centred at (1, 1), (3, 1), (1, 3), (3, 3) of a 4 px image
    points = torch.tensor([[1.0, 1.0], [3.0, 1.0], [2.0, 1.0], [2.0, 2.0], [-3.0, 1.0]])
    assert sample_descriptors(features, points, 4)[:, 0].tolist() == [0.0, 1.0, 0.5, 1.5, 0.0]
    maps = cosine_maps(torch.tensor([[1.0, 0.0]]), torch.tensor([[[2.0, 0.0]], [[0.0, -1.0]]]))
    assert maps.tolist() == [[[1.0, 0.0]]]


class PositionSource(DenseSource):
    """Descriptors that name the working pixel, whatever the image: one-hot, channel ``row * S + column``."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the source a device

    def features(self, images, generators=None, categories=None):
        s = self.image_size
        return torch.eye(s * s).reshape(s * s, s, s).expand(len(images), -1, -1, -1)


class PeakAttentionMatcher(PromptMatcher):
    """The prompt matcher's own locate and match, with crop maps that peak at the working pixel of each
    source keypoint (no model): what it predicts for a perfect match."""

    def fit(self, source, image, keypoints, seed=0, keys=None, group=None, *, counter=None):
        self.pixels = keypoints.floor().long()  # the working pixel under each keypoint
        return torch.zeros(len(keypoints), self.restarts, 1, 1)

    def _locate_chunk(self, source, encoder, embeddings, items, seed, counter):
        size = source.image_size
        maps = torch.zeros(len(items), 1, size, size)
        for b, (k, _) in enumerate(items):
            x, y = self.pixels[k].tolist()
            maps[b, 0, y, x] = 10.0
        return maps


class StubAttentionSource(AttentionSource):
    """An AttentionSource that is never run (the matcher above reads no maps from it)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def encode(self, images):
        raise AssertionError("not used")

    def random_embeddings(self, generators):
        raise AssertionError("not used")

    def attention_maps(self, latents, embeddings, timestep_index, generators):
        raise AssertionError("not used")


def test_both_matchers_predict_pixel_centres_in_one_convention():
    """A source keypoint at the centre of working pixel (i, j) goes to the centre of pixel (i, j) of the
    target, in target pixels, for the nearest-neighbour and the prompt matcher alike (sdcorr.geometry:
    pixel (i, j) covers [i, i + 1) x [j, j + 1)). Non-square images of other sizes, so scaling matters."""
    size = 8
    pixels = torch.tensor([[0, 0], [3, 5], [7, 7], [6, 1]])
    src, trg = torch.rand(3, 30, 50), torch.rand(3, 45, 20)  # [3, H, W]
    keypoints = geometry.scale_keypoints(pixels + 0.5, (size, size), (50, 30))
    expected = geometry.scale_keypoints(pixels + 0.5, (size, size), (20, 45))
    nearest = NearestNeighbourMatcher().match(PositionSource(size), src, src, keypoints).keypoints
    assert torch.allclose(nearest, keypoints, atol=1e-5)  # an identical target: the same points
    nearest = NearestNeighbourMatcher().match(PositionSource(size), src, trg, keypoints).keypoints
    assert torch.allclose(nearest, expected, atol=1e-5)
    soft = NearestNeighbourMatcher(soft_argmax=True, temperature=1e-3).match(PositionSource(size), src, trg, keypoints)
    assert torch.allclose(soft.keypoints, expected, atol=1e-4)
    prompt = PeakAttentionMatcher(restarts=2, locate_crops=4).match(StubAttentionSource(size), src, trg, keypoints)
    assert torch.allclose(prompt.keypoints, expected, atol=1e-5)
    assert torch.allclose(prompt.layer_keypoints[0], expected, atol=1e-5)


def test_exact_shift_of_a_texture_is_found_to_the_pixel():
    texture = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    src, trg = texture[:, 4:36, 2:34], texture[:, 1:33, 6:38]  # target = source moved by (-4, +3)
    points = torch.tensor([[10.5, 10.5], [20.5, 15.5], [25.5, 5.5]])  # pixel centres
    result = NearestNeighbourMatcher().match(PatchSource(32), src, trg, points)
    assert torch.equal(result.keypoints, points + torch.tensor([-4.0, 3.0]))
    assert result.heatmaps.shape == (3, 32, 32)
    assert torch.allclose(result.heatmaps.sum(dim=(-2, -1)), torch.ones(3), atol=1e-5)
    assert result.layer_keypoints is None and result.embeddings is None
    # non-square images of other sizes: predictions in target pixels
    wide = NearestNeighbourMatcher().match(PatchSource(32), src, torch.rand(3, 64, 96), points).keypoints
    assert ((wide >= 0) & (wide <= torch.tensor([96.0, 64.0]))).all()


def test_soft_argmax_with_a_window_stays_near_the_peak():
    texture = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    src, trg = texture[:, 4:36, 2:34], texture[:, 1:33, 6:38]
    points = torch.tensor([[10.5, 10.5], [20.5, 15.5]])
    hard = NearestNeighbourMatcher().match(PatchSource(32), src, trg, points).keypoints
    soft = NearestNeighbourMatcher(soft_argmax=True, temperature=0.05, window=3).match(
        PatchSource(32), src, trg, points
    )
    assert (soft.keypoints - hard).abs().max() <= 1.0 and not torch.equal(soft.keypoints, hard)
    with pytest.raises(ValueError, match="temperature"):
        NearestNeighbourMatcher(temperature=0)


def test_progress_counts_model_passes(dift):
    calls = []
    matcher = NearestNeighbourMatcher()
    progress = lambda done, total, stage: calls.append((done, total, stage))  # noqa: E731
    matcher.match(dift, torch.rand(3, 50, 60), torch.rand(3, 40, 40), torch.tensor([[10.0, 10.0]]), progress=progress)
    assert matcher.cost(5, dift) == 4 and matcher.cost(5) == 2
    assert calls == [(0, 4, "start"), (2, 4, "features"), (4, 4, "features")]


def test_wrong_kind_of_source_is_refused_with_a_clear_message(source, dino):
    with pytest.raises(TypeError, match="needs a DenseSource .* got StableDiffusionSource"):
        NearestNeighbourMatcher().match(
            source, torch.rand(3, 48, 48), torch.rand(3, 48, 48), torch.tensor([[1.0, 1.0]])
        )
    with pytest.raises(TypeError, match="needs an AttentionSource .* got Dinov2Source"):
        PromptMatcher().match(dino, torch.rand(3, 48, 48), torch.rand(3, 48, 48), torch.tensor([[1.0, 1.0]]))


# ---------------------------------------------------------------- the tiny models localise


@pytest.mark.parametrize("config", ["tiny_dift", "tiny_dinov2"])
def test_translated_window_is_matched_far_above_identity(config, window_pair):
    src, trg, kps, truth = window_pair
    source, matcher = from_config(config)
    predicted = matcher.match(source, src, trg, kps, seed=0).keypoints
    threshold = 0.1 * 200
    pck = ((predicted - truth).norm(dim=-1) <= threshold).float().mean()
    identity = ((kps - truth).norm(dim=-1) <= threshold).float().mean()
    assert identity == 0.0
    assert pck >= 0.6, f"PCK@0.1 {pck:.2f}; errors {(predicted - truth).norm(dim=-1).round().tolist()}"


def test_published_settings_in_the_real_configs():
    dift, dino = model_config("dift"), model_config("dinov2")
    assert dift["source"]["class_path"] == "sdcorr.DiftSource"
    assert {k: dift["source"]["init_args"][k] for k in ("pretrained", "up_block", "timestep", "ensemble_size")} == {
        "pretrained": "stabilityai/stable-diffusion-2-1", "up_block": 1, "timestep": 261, "ensemble_size": 8,
    }  # fmt: skip
    assert (
        dift["source"]["init_args"]["image_size"] == 768 and dift["source"]["init_args"]["prompt_embedding"] == "text"
    )
    assert dift["source"]["init_args"]["prompt"] == "a photo of a {category}"  # DIFT's eval_spair.py, issue 26
    assert dift["matcher"]["init_args"] == {"resolution": "image", "resize": "pil-bicubic"}
    assert model_config("tiny_dift")["matcher"]["init_args"] == dift["matcher"]["init_args"]  # tests run the recipe
    assert dino["source"]["init_args"] == {"pretrained": "facebook/dinov2-base", "image_size": 448}
    assert DiftSource.__init__.__defaults__[:6] == (
        "stabilityai/stable-diffusion-2-1", None, 0, 1, 261, 8,
    )  # fmt: skip


# ---------------------------------------------------------------- the CLI


def sdcorr(monkeypatch, *args: str) -> None:
    """``sdcorr ARGS`` in this process (a subprocess would spend most of its time importing), side effects undone."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # seed_everything sets it; restored after the test
    with torch.random.fork_rng(devices=[]):
        main(list(args))


@pytest.mark.parametrize(
    "extra",
    [
        # 2 draws at 32 px: this checks the run, not the accuracy (see the translation test)
        ["--config", "configs/model/tiny_dift.yaml", "--model.source.init_args.ensemble_size", "2",
         "--model.source.init_args.image_size", "32"],
        ["--config", "configs/model/tiny_dinov2.yaml"],
        # the example subclass of StableDiffusionSource, chosen by class_path, with a short protocol
        [
            "--model.source.class_path", "tests.example_source.FixedTimestepSource",
            "--model.source.init_args.timestep", "200",
            "--model.matcher.init_args.restarts", "1", "--model.matcher.init_args.steps", "2",
            "--model.matcher.init_args.locate_crops", "4",
        ],
    ],
    ids=["tiny_dift", "tiny_dinov2", "example_subclass"],
)  # fmt: skip
def test_cli_runs_on_the_smoke_config(tmp_path, monkeypatch, extra):
    sdcorr(monkeypatch, "test", "--config", "configs/smoke.yaml", *extra, "--trainer.default_root_dir", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["overall"]["num_pairs"] == 3 and results["overall"]["num_keypoints"] == 16
    for alpha in ("pck@0.05", "pck@0.1"):
        assert 0.0 <= results["overall"][alpha]["per_image"] <= 1.0
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]
    if "tiny_dinov2" in " ".join(extra):
        # smoke.yaml's source and matcher arguments do not leak into the other classes
        assert resolved["matcher"]["class_path"] == "sdcorr.NearestNeighbourMatcher"
        assert "lr" not in resolved["matcher"]["init_args"] and "layers" not in resolved["source"]["init_args"]
    if "example_source" in " ".join(extra):
        assert resolved["source"]["init_args"]["timestep"] == 200 and resolved["source"]["init_args"]["layers"] == [
            0,
            1,
        ]


def test_example_subclass_reads_its_own_timestep(source):
    """FixedTimestepSource(t) equals the parent at the index whose timestep is t, and differs elsewhere."""
    fixed = FixedTimestepSource(timestep=140, architecture="tiny", layers=[0, 1], image_size=48)
    latents = source.encode(images(1, 48))
    context = source.random_embeddings([torch.Generator().manual_seed(0)])
    maps = lambda s, index: s.attention_maps(latents, context, index, [torch.Generator().manual_seed(1)])  # noqa: E731
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(maps(fixed, -3), maps(source, -8)))  # t=140 is index -8
        assert not torch.allclose(maps(fixed, -3)[0], maps(source, -3)[0])
