"""Capturing cross-attention maps from a diffusers UNet through its attention-processor hook.

Only the layers that are read get a :class:`CaptureProcessor`; every other layer keeps diffusers'
SDPA processor. A capture processor lets diffusers' own ``AttnProcessor2_0`` compute the layer
output and, beside it, computes the softmax attention probability of one text token
(``attn.get_attention_scores``), averaged over the chosen heads. That is all the method reads.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor, nn


class StopForward(Exception):
    """Raised once the last read layer (or block) has run, so that the rest of the UNet never runs (early exit)."""


def cross_attention_layers(unet: nn.Module) -> list[str]:
    """Names of the cross-attention modules of a ``UNet2DConditionModel``, in forward order.

    Forward order is down blocks, then the mid block, then up blocks, each block's transformers in
    order. (``named_modules`` lists ``up_blocks`` before ``mid_block``, which would put the mid layer
    last.) For SD 1.x this gives 16 layers: down 64 (0, 1), down 32 (2, 3), down 16 (4, 5), mid (6),
    up 16 (7, 8, 9), up 32 (10, 11, 12), up 64 (13, 14, 15).
    """
    names = {id(module): name for name, module in unet.named_modules()}
    blocks = list(getattr(unet, "down_blocks", []))
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(unet.mid_block)
    blocks += list(getattr(unet, "up_blocks", []))
    layers = []
    for block in blocks:
        for module in block.modules():
            if isinstance(module, Attention) and getattr(module, "is_cross_attention", False):
                layers.append(names[id(module)])
    return layers


class AttentionStore:
    """Holds the maps captured during one UNet forward.

    Args:
        layers: names of the read layers, in forward order.
        early_exit: stop the UNet right after the last read layer.
    """

    def __init__(self, layers: Sequence[str], early_exit: bool = True) -> None:
        self.layers = list(layers)
        self.early_exit = early_exit
        self.latent_hw: tuple[int, int] = (1, 1)
        self.maps: dict[str, Tensor] = {}

    def reset(self, latent_hw: tuple[int, int]) -> None:
        """Forget the last forward's maps; ``latent_hw`` is the UNet input's ``(h, w)``."""
        self.latent_hw = latent_hw
        self.maps = {}

    def add(self, name: str, token_map: Tensor) -> None:
        """Keep ``[B, N]`` flattened probabilities of layer ``name`` as ``[B, h, w]``; after the last read
        layer, stop the forward (with ``early_exit``)."""
        n = token_map.shape[-1]
        lat_h, lat_w = self.latent_hw
        h = round(math.sqrt(n * lat_h / lat_w))
        w = n // h
        if h * w != n:
            raise RuntimeError(
                f"cannot reshape {n} attention positions of layer {name} to the latent aspect {lat_h}x{lat_w}"
            )
        self.maps[name] = token_map.reshape(token_map.shape[0], h, w)
        if self.early_exit and name == self.layers[-1]:
            raise StopForward

    def stacked(self) -> list[Tensor]:
        """The captured maps in layer order, each ``[B, h_l, w_l]``."""
        missing = [name for name in self.layers if name not in self.maps]
        if missing:
            raise RuntimeError(f"the UNet forward did not reach layers {missing}")
        return [self.maps[name] for name in self.layers]

    def record(self, name: str, token_map: Tensor) -> None:
        """Deprecated name of :meth:`add` ("record" means a datamodule pair record elsewhere in sdcorr)."""
        warnings.warn("AttentionStore.record is renamed AttentionStore.add", DeprecationWarning, stacklevel=2)
        self.add(name, token_map)


class CaptureProcessor:
    """Attention processor that captures one token's attention probabilities.

    Args:
        store: where to keep them.
        name: the layer's module name (key in the store).
        token_index: which of the text tokens to read (the paper reads token 1).
        head_slice: which heads to average (the paper's code averages the last half).
    """

    def __init__(self, store: AttentionStore, name: str, token_index: int, head_slice: slice) -> None:
        self.store = store
        self.name = name
        self.token_index = token_index
        self.head_slice = head_slice
        self.inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        # capture first: after the last read layer the store stops the forward (early exit), so that
        # layer's attention output is never computed
        self.store.add(self.name, self.token_probabilities(attn, hidden_states, encoder_hidden_states, attention_mask))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def token_probabilities(
        self, attn: Attention, hidden_states: Tensor, context: Tensor | None, attention_mask: Tensor | None
    ) -> Tensor:
        """Head-averaged softmax probability of the read token: ``[B, N, C]`` -> ``[B, N]``."""
        if attn.spatial_norm is not None or hidden_states.dim() != 3:
            raise NotImplementedError("CaptureProcessor supports transformer cross-attention on [B, N, C] inputs")
        batch, n, _ = hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if context is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, mask)  # [B * heads, N, T]
        token = probs[..., self.token_index].reshape(batch, attn.heads, n)
        return token[:, self.head_slice].mean(dim=1)


def head_slice(heads: str, num_heads: int) -> slice:
    """Heads to average: ``"last_half"`` (the paper's code) or ``"all"``."""
    if heads == "last_half":
        return slice(num_heads // 2, num_heads)
    if heads == "all":
        return slice(0, num_heads)
    raise ValueError(f"Expected heads to be 'last_half' or 'all' but got {heads!r}")


def install_capture(
    unet: nn.Module, layer_indices: Sequence[int], token_index: int, heads: str, early_exit: bool
) -> AttentionStore:
    """Put capture processors on the chosen cross-attention layers and SDPA on every other layer.

    Args:
        unet: a ``UNet2DConditionModel``.
        layer_indices: forward-order indices (see :func:`cross_attention_layers`).

    Returns:
        The store the processors write into.
    """
    layers = cross_attention_layers(unet)
    bad = [i for i in layer_indices if not 0 <= i < len(layers)]
    if bad or not layer_indices:
        raise ValueError(
            f"Expected layer indices in 0..{len(layers) - 1} (this UNet has {len(layers)} cross-attention layers) "
            f"but got {list(layer_indices)}"
        )
    chosen = [layers[i] for i in sorted(set(layer_indices))]
    store = AttentionStore(chosen, early_exit=early_exit)
    modules = dict(unet.named_modules())
    processors = {}
    for key in unet.attn_processors:
        name = key[: -len(".processor")]
        if name in chosen:
            processors[key] = CaptureProcessor(store, name, token_index, head_slice(heads, modules[name].heads))
        else:
            processors[key] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
    return store


def run_unet(
    unet: nn.Module, store: AttentionStore, latents: Tensor, timestep: Tensor | int, context: Tensor
) -> list[Tensor]:
    """One UNet forward that returns the read layers' maps, ``L`` tensors ``[B, h_l, w_l]``."""
    store.reset(tuple(latents.shape[-2:]))
    try:
        unet(latents, timestep, encoder_hidden_states=context, return_dict=False)
    except StopForward:
        pass
    return store.stacked()


__all__ = ["AttentionStore", "CaptureProcessor", "cross_attention_layers", "install_capture", "run_unet"]
