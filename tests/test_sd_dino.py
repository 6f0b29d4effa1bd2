"""The SD+DINO fusion source (sdcorr.sources.sd_dino): its arithmetic against hand computations, the tiny
configuration through the CLI on a SPair-71k fixture, and the real config's recipe."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
import yaml

from sdcorr import NearestNeighbourMatcher, SdDinoSource
from sdcorr.cli.main import main
from sdcorr.rng import generator
from sdcorr.sources.sd_dino import co_pca, fuse
from tests.conftest import REPO
from tests.fixtures_spair import write_spair


def model_config(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())["model"]


@pytest.fixture(scope="module")
def tiny() -> SdDinoSource:
    config = model_config("tiny_sd_dino")
    assert config["source"]["class_path"] == "sdcorr.SdDinoSource"
    return SdDinoSource(**config["source"]["init_args"])


def test_co_pca_projects_on_the_exact_principal_components():
    # 2 x 12 tokens of 6 channels with variances 10x apart: pca_lowrank's 2 iterations find the exact PCA's
    # scores (up to each component's sign) to about (1/10)^5
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1000.0, 100.0, 10.0, 1.0, 0.1, 0.01])
    a, b = [(torch.randn(12, 6, generator=g) * scales).T.reshape(6, 3, 4) for _ in range(2)]
    reduced = co_pca(a, b, dims=3)
    tokens = torch.cat([a.flatten(1), b.flatten(1)], 1).T
    centred = tokens - tokens.mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    exact = (u[:, :3] * s[:3]).T  # [3, 24]
    got = torch.cat([reduced[0].flatten(1), reduced[1].flatten(1)], 1)
    assert got.shape == (3, 24)
    assert torch.allclose(got.abs(), exact.abs(), rtol=1e-3, atol=1e-3), (got.abs() - exact.abs()).abs().max()
    with pytest.raises(ValueError, match="pca dims"):
        co_pca(a, b, dims=7)


def _bilinear_2_to_4(x: torch.Tensor) -> torch.Tensor:
    """Upsample ``[C, 2, 2]`` to ``[C, 4, 4]`` bilinearly, pixel centres aligned (align_corners False), by hand:
    output i samples input (i + 0.5) / 2 - 0.5, clamped to [0, 1]."""
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    return torch.einsum("ik,ckl,jl->cij", w, x, w)


def test_fusion_equals_a_hand_computation():
    # with as many PCA dimensions as channels the PCA only rotates each layer, which keeps every inner product:
    # the similarities of fused descriptors equal those of the centred, upsampled, normalised, weighted features
    g = torch.Generator().manual_seed(1)
    coarse = [torch.randn(2, 2, 2, generator=g) for _ in range(2)]  # [C, 2, 2] source, target
    fine = [torch.randn(3, 4, 4, generator=g) for _ in range(2)]
    dino = [torch.randn(4, 4, 4, generator=g) for _ in range(2)]
    fused = fuse([tuple(coarse), tuple(fine)], tuple(dino), pca_dims=[2, 3], weights=(1.0, 0.5))
    assert fused[0].shape == fused[1].shape == (2 + 3 + 4, 4, 4)

    def centred(pair):
        mean = torch.cat([m.flatten(1) for m in pair], 1).mean(1)[:, None, None]
        return [m - mean for m in pair]

    hand = []
    for side in (0, 1):
        sd = torch.cat([centred(fine)[side], _bilinear_2_to_4(centred(coarse)[side])]).flatten(1)
        d = dino[side].flatten(1)
        hand.append(torch.cat([sd / sd.norm(dim=0), 0.5 * d / d.norm(dim=0)]))
    expected = hand[0].T @ hand[1]  # [16 source cells, 16 target cells]
    got = fused[0].flatten(1).T @ fused[1].flatten(1)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    # every fused descriptor has the norm sqrt(1 + 0.25): cosine and L2 rank neighbours alike
    assert torch.allclose(fused[0].norm(dim=0), torch.full((4, 4), 1.25**0.5), atol=1e-5)


def test_tiny_source_is_per_image_and_seeded(tiny):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    both = tiny.features(images)
    assert torch.allclose(both[1:], tiny.features(images[1:]), atol=1e-5)  # no batch effect: shared noise
    a = tiny.pair_descriptors(both[0], both[1], generator(0, "pair"))
    b = tiny.pair_descriptors(both[0], both[1], generator(0, "pair"))
    grid = 64 // tiny.dino.patch_size
    assert a[0].shape == (sum(tiny.pca_dims) + tiny.dino.model.config.hidden_size, grid, grid)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and tiny.passes_per_image == 2
    result = NearestNeighbourMatcher().match(tiny, images[0], images[1], torch.tensor([[10.0, 20.0]]), seed=0)
    assert result.keypoints.shape == (1, 2)


def test_the_real_config_states_the_authors_recipe():
    source = model_config("sd_dino")["source"]
    assert source["class_path"] == "sdcorr.SdDinoSource"
    args = source["init_args"]
    # the authors' defaults (Junyi42/sd-dino pck_spair_pascal.py, ODISE): v1-5, 960 px, t 100, noise seed 42,
    # output blocks 2, 5, 8 = diffusers' up_blocks.0.resnets.1, up_blocks.1.attentions.1, up_blocks.2.attentions.1,
    # PCA to 256 each, DINOv2 ViT-B/14 at 840 px, equal weights
    assert args["pretrained"].endswith("stable-diffusion-v1-5") and args["image_size"] == 960
    assert (args["timestep"], args["noise_seed"], args["pca_dims"]) == (100, 42, [256, 256, 256])
    assert args["sd_layers"] == ["up_blocks.0.resnets.1", "up_blocks.1.attentions.1", "up_blocks.2.attentions.1"]
    assert (args["dino_pretrained"], args["dino_size"], args["weights"]) == ("facebook/dinov2-base", 840, [1.0, 1.0])
    # the config only restates the class's defaults: a run of either follows the recipe
    defaults = {k: p.default for k, p in inspect.signature(SdDinoSource.__init__).parameters.items() if k != "self"}
    assert all(json.loads(json.dumps(defaults[k])) == v for k, v in args.items())


def test_spair_config_runs_with_the_tiny_weights_and_compares(tmp_path, monkeypatch, capsys):
    root = write_spair(tmp_path / "SPair-71k", splits=("test",))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = tmp_path / "run"
    with torch.random.fork_rng(devices=[]):
        main(["test", "--config", "configs/spair.yaml", "--config", "configs/model/tiny_sd_dino.yaml",
              "--data.init_args.root", str(root), "--trainer.default_root_dir", str(run)])  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["overall"]["num_pairs"] == 4 and 0 <= results["overall"]["pck@0.1"]["per_image"] <= 1
    capsys.readouterr()
    main(["compare", str(run), "--paper", "sd-dino", "--threshold", "bbox-trg"])
    out = capsys.readouterr().out
    assert "published figures NOT comparable: source.architecture 'tiny' (recipe None)" in out, out
