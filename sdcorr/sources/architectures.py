"""Model configurations that can be built with random weights, without any download.

``sd-v1-4`` is the published Stable Diffusion 1.4 UNet and VAE architecture (for speed and memory
work); ``tiny`` is a small model with the same block types for tests and CPU runs. ``sd-v2-1`` and
``tiny-v2`` are the same pair for Stable Diffusion 2.1 (the DIFT source): linear projections in
the transformers, per-block head sizes and 1024-wide text embeddings.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from sdcorr.sources.weightless import weightless

#: Stable Diffusion's VAE (1.x and 2.x share it; 2.x's config says 768 px)
_SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

ARCHITECTURES: dict[str, dict[str, dict]] = {
    "sd-v1-4": {
        "unet": dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        "vae": _SD_VAE,
    },
    "tiny": {
        # cross-attention layers in forward order: down 0, down 1, mid 2, up 3 4, up 5 6;
        # with random weights the down layers 0 and 1 localise best
        "unet": dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        ),
        # 2 encoder blocks: downsampling x2 (48 px -> 24 x 24 latents)
        "vae": dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            # SD's 0.18215 brings its trained VAE's latents to unit scale; a random VAE's latents are
            # ~0.03 wide after 0.18215 and drown in the added noise (the maps then only carry
            # position). 4.0 brings them to about unit scale.
            scaling_factor=4.0,
        ),
    },
    "sd-v2-1": {
        # stabilityai/stable-diffusion-2-1 (768 px, 96 x 96 latents); its VAE is SD 1.x's
        "unet": dict(
            sample_size=96,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            norm_num_groups=32,
        ),
        "vae": dict(_SD_VAE, sample_size=768),
    },
    "tiny-v2": {
        # SD 2.x's blocks in small (linear projections, per-block head counts): the last down block and
        # the first up block have no attention; up block 0 (128 channels) upsamples from half the latent
        # size, up block 1 (DIFT's default, 64 channels) stays at the latent size. Chosen so that random
        # weights give usable DIFT descriptors (tests/test_dense.py): a random network loses the
        # difference between inputs a little at every layer and every global (attention) mixing, so this
        # one is shallow (no mid block), wide (64/128 channels) and reads 16 latent channels (4 random
        # channels cannot describe a neighbourhood).
        "unet": dict(
            sample_size=16,
            in_channels=16,
            out_channels=16,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            mid_block_type=None,
            block_out_channels=(64, 128),
            layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=(4, 8),
            use_linear_projection=True,
            norm_num_groups=16,
        ),
        # the VAE of ``tiny`` with 16 latent channels: downsampling x2, latents brought to about unit scale
        "vae": dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=4.0,
        ),
    },
}


#: hub ids whose architecture :data:`ARCHITECTURES` holds: options are checked against its shape without
#: loading anything (see :mod:`sdcorr.sources.weightless`)
HUB_ARCHITECTURES = {"CompVis/stable-diffusion-v1-4": "sd-v1-4", "stabilityai/stable-diffusion-2-1": "sd-v2-1"}


def build_random(architecture: str, seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """Build the UNet and VAE of ``architecture`` with random weights drawn from ``seed``.

    The global random state is left untouched. Inside :func:`~sdcorr.sources.weightless.without_weights`
    they are built on the ``meta`` device (shapes, no weights).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Expected architecture in {sorted(ARCHITECTURES)} but got {architecture!r}")
    config = ARCHITECTURES[architecture]
    with torch.random.fork_rng(devices=[]), torch.device("meta") if weightless() else nullcontext():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**config["unet"])
        vae = AutoencoderKL(**config["vae"])
    return unet, vae


def save_random(architecture: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a random-weight model as a diffusers folder (``unet/``, ``vae/``) loadable like a checkpoint."""
    folder = Path(folder)
    unet, vae = build_random(architecture, seed)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    return folder
