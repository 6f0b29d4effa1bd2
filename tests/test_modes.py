"""Fast vs reference engine modes, the crop pool approximation and mixed precision."""

import pytest
import torch

from sdcorr import geometry
from sdcorr.errors import NumericalError
from sdcorr.matchers.prompt import PromptMatcher
from tests.conftest import FAST


@pytest.fixture(scope="module")
def problem(photo):
    image = geometry.resize_image(photo, 48)
    return image, torch.tensor([[20.0, 18.0], [30.0, 25.0], [12.0, 33.0]])


def count_up_block_calls(source):
    calls = []
    handle = source.unet.up_blocks[-1].register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_fast_and_reference_agree_with_the_same_draws(source, problem):
    image, points = problem
    # the paper's learning rate: with lr 1.0 Adam's normalised steps amplify rounding to ~1e-4
    options = dict(FAST, steps=2, locate_crops=5, max_batch=4, lr=2.3755632e-3)
    fast, reference = PromptMatcher(**options), PromptMatcher(**options, mode="reference")
    emb_fast, emb_ref = fast.fit(source, image, points, seed=1), reference.fit(source, image, points, seed=1)
    # fp32; batched kernels and cached crop latents only round differently (measured ~3e-7)
    assert torch.allclose(emb_fast, emb_ref, atol=1e-5)
    loc_fast, loc_ref = fast.locate(source, image, emb_ref, seed=1), reference.locate(source, image, emb_ref, seed=1)
    assert torch.allclose(loc_fast.heatmaps, loc_ref.heatmaps, atol=1e-6)
    assert torch.equal(loc_fast.keypoints, loc_ref.keypoints)


def test_reference_runs_the_whole_unet_and_fast_stops_early(source, problem):
    image, points = problem
    calls, handle = count_up_block_calls(source)
    try:
        PromptMatcher(**dict(FAST, steps=1, restarts=1)).fit(source, image, points[:1])
        assert calls == []  # layers 0 and 1 are in the down path: the up path never runs
        PromptMatcher(**dict(FAST, steps=1, restarts=1), mode="reference").fit(source, image, points[:1])
        assert len(calls) == 1
    finally:
        handle.remove()
    assert source.store.early_exit  # restored after the reference run


def encode_counter(source, monkeypatch):
    encoded = []
    original = source.encode
    monkeypatch.setattr(source, "encode", lambda images: encoded.append(len(images)) or original(images))
    return encoded


def test_crop_cache_encodes_each_distinct_crop_once(source, problem, monkeypatch):
    image, points = problem
    encoded = encode_counter(source, monkeypatch)
    # 75% crops at 48 px: side 36, corners in [0, 12]^2; 3 keypoints x 2 restarts x 30 steps = 180 draws
    matcher = PromptMatcher(**FAST)
    encoder = matcher.crop_encoder(source, image)
    side, margin = matcher.crop_geometry(48)
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([geometry.sample_crop_corner((24, 24), side, margin, 48, g) for _ in range(180)])
    latents = encoder(corners)
    distinct = len(set(map(tuple, corners.tolist())))
    assert sum(encoded) == encoder.encoded == distinct < 180
    # exactly the latent of encoding that crop alone: crops are encoded one at a time
    alone = source.encode(geometry.crop_resize(image, corners[:1], side, 48))
    assert torch.equal(latents[:1], alone)
    encoded.clear()
    PromptMatcher(**FAST, mode="reference").fit(source, image, points[:1])
    assert sum(encoded) == 2 * 30  # reference: one encode per item and step


def test_crop_pool_limits_the_crops_each_item_sees(source, problem, monkeypatch):
    image, points = problem
    encoded = encode_counter(source, monkeypatch)
    embeddings = PromptMatcher(**dict(FAST, steps=6), crop_pool=2).fit(source, image, points)
    assert sum(encoded) <= len(points) * 2 * 2  # at most items x pool distinct crops, instead of items x steps
    assert torch.isfinite(embeddings).all()


def test_mixed_precision_keeps_embeddings_fp32_and_reference_in_fp32(source, problem):
    image, points = problem
    options = dict(FAST, steps=2, restarts=1)
    plain = PromptMatcher(**options, mode="reference").fit(source, image, points[:1], seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = PromptMatcher(**options, mode="reference").fit(source, image, points[:1], seed=4)
        fast = PromptMatcher(**options).fit(source, image, points[:1], seed=4)
    assert reference.dtype == fast.dtype == torch.float32
    assert torch.equal(reference, plain)  # reference ignores the autocast
    assert torch.isfinite(fast).all() and not torch.equal(fast, plain)  # fast ran in bf16


def test_bad_mode_and_pool_are_refused():
    with pytest.raises(ValueError, match="mode"):
        PromptMatcher(mode="turbo")
    with pytest.raises(ValueError, match="crop_pool"):
        PromptMatcher(crop_pool=-1)
    with pytest.raises(ValueError, match="crop_cache"):
        PromptMatcher(crop_cache=-1)
    with pytest.raises(ValueError, match="fit_batching.*'source_image' or 'keypoint'; got 'pair'"):
        PromptMatcher(fit_batching="pair")


def test_non_finite_loss_stops_with_a_clear_error(source, problem, monkeypatch):
    image, points = problem
    original = source.attention_maps
    monkeypatch.setattr(source, "attention_maps", lambda *args: [m * float("nan") for m in original(*args)])
    with pytest.raises(NumericalError, match="non-finite loss"):
        PromptMatcher(**dict(FAST, steps=1)).fit(source, image, points[:1])
