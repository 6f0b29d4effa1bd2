import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from sdcorr.attention import (
    AttentionStore,
    CaptureProcessor,
    StopForward,
    cross_attention_layers,
    install_capture,
    run_unet,
)
from sdcorr.sources.architectures import ARCHITECTURES, build_random


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 32, 32, generator=g), torch.randn(batch, 77, 32, generator=g)


def test_forward_order_numbering_of_sd14():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd-v1-4"]["unet"])
    layers = cross_attention_layers(unet)
    assert len(layers) == 16
    assert layers[0].startswith("down_blocks.0.") and layers[5].startswith("down_blocks.2.")
    assert layers[6].startswith("mid_block.")
    assert [name.split(".attentions")[0] for name in layers[7:11]] == ["up_blocks.1"] * 3 + ["up_blocks.2"]
    assert layers[15].startswith("up_blocks.3.")
    assert all(name.endswith("attn2") for name in layers)


def test_capture_keeps_unet_output_and_captures_only_chosen_layers():
    latents, context = inputs()
    reference, _ = build_random("tiny")
    reference.set_attn_processor(AttnProcessor2_0())
    unet, _ = build_random("tiny")
    store = install_capture(unet, [3, 5], token_index=1, heads="last_half", early_exit=False)
    with torch.no_grad():
        expected = reference(latents, 10, encoder_hidden_states=context).sample
        store.reset((32, 32))
        got = unet(latents, 10, encoder_hidden_states=context).sample
    assert torch.allclose(got, expected, atol=1e-5)
    capturing = [k for k, p in unet.attn_processors.items() if isinstance(p, CaptureProcessor)]
    assert capturing == [cross_attention_layers(unet)[i] + ".processor" for i in (3, 5)]
    assert all(isinstance(p, AttnProcessor2_0) for k, p in unet.attn_processors.items() if k not in capturing)
    assert set(store.maps) == {cross_attention_layers(unet)[i] for i in (3, 5)}
    # layer 3 is in the low-resolution up block (16x16), layer 5 at the latent resolution (32x32)
    assert [tuple(m.shape) for m in store.stacked()] == [(2, 16, 16), (2, 32, 32)]


def test_early_exit_gives_the_same_maps_as_the_full_forward():
    latents, context = inputs()
    full, _ = build_random("tiny")
    early, _ = build_random("tiny")
    store_full = install_capture(full, [3, 4], 1, "all", early_exit=False)
    store_early = install_capture(early, [3, 4], 1, "all", early_exit=True)
    with torch.no_grad():
        maps_full = run_unet(full, store_full, latents, 10, context)
        maps_early = run_unet(early, store_early, latents, 10, context)
    for a, b in zip(maps_full, maps_early):
        assert torch.equal(a, b)


@pytest.mark.parametrize("heads", ["last_half", "all"])
def test_token_probabilities_match_a_hand_computed_softmax(heads):
    latents, context = inputs(batch=1)
    unet, _ = build_random("tiny")
    store = install_capture(unet, [4], token_index=1, heads=heads, early_exit=True)
    attn = unet.get_submodule(cross_attention_layers(unet)[4])
    seen = {}
    attn.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(h=args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    with torch.no_grad():
        (got,) = run_unet(unet, store, latents, 10, context)
    h = seen["h"]
    q = attn.to_q(h).reshape(1, -1, attn.heads, attn.to_q.out_features // attn.heads).transpose(1, 2)
    k = attn.to_k(context).reshape(1, 77, attn.heads, -1).transpose(1, 2)
    probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(dim=-1)[..., 1]  # [1, heads, N]
    chosen = probs[:, attn.heads // 2 :] if heads == "last_half" else probs
    assert torch.allclose(got.flatten(1), chosen.mean(dim=1), atol=1e-6)


def test_gradients_reach_the_embedding():
    latents, context = inputs(batch=1)
    unet, _ = build_random("tiny")
    unet.requires_grad_(False)
    store = install_capture(unet, [3, 4, 5], 1, "last_half", early_exit=True)
    context.requires_grad_(True)
    maps = run_unet(unet, store, latents, 10, context)
    sum(m[0, 2, 3] for m in maps).backward()
    assert context.grad is not None and context.grad[0, 1].abs().sum() > 0


def test_bad_layer_index_is_refused():
    unet, _ = build_random("tiny")
    with pytest.raises(ValueError, match=r"0\.\.6"):
        install_capture(unet, [7], 1, "all", True)
    with pytest.raises(ValueError, match="heads"):
        install_capture(unet, [1], 1, "first", True)


def test_store_add_and_its_deprecated_name_record():
    store = AttentionStore(["a", "b"], early_exit=True)
    store.reset((2, 4))
    store.add("a", torch.arange(16.0).reshape(2, 8))
    assert store.maps["a"].shape == (2, 2, 4)
    with pytest.warns(DeprecationWarning, match="AttentionStore.add"), pytest.raises(StopForward):
        store.record("b", torch.zeros(2, 8))  # the last read layer stops the forward
    assert [m.shape for m in store.stacked()] == [(2, 2, 4), (2, 2, 4)]
