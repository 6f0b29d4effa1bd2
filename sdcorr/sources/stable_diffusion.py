"""Stable Diffusion cross-attention as an attention source (maps for a text embedding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import Tensor

from sdcorr.attention import cross_attention_layers, install_capture, run_unet
from sdcorr.errors import ModelLoadError, OptionError
from sdcorr.sources.architectures import HUB_ARCHITECTURES, build_random
from sdcorr.sources.base import AttentionSource
from sdcorr.sources.hub import check_pretrained, load_from_hub_or_folder
from sdcorr.sources.weightless import weightless

#: the largest working size accepted: 4x the paper's 512 (a 256 x 256 latent; memory grows with its square)
MAX_IMAGE_SIZE = 2048


def paper_scheduler(num_inference_steps: int = 50) -> DDIMScheduler:
    """The DDIM schedule the paper's code builds itself (not the checkpoint's, whose ``steps_offset=1``).

    ``set_timesteps(50)`` gives 980, 960, ..., 0; index -8 is t=140 and index -3 is t=40.
    """
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=0,
    )
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def _load(source: str, local_files_only: bool) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_files_only)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", local_files_only=local_files_only)
    return unet, vae


def load_pretrained(pretrained: str, local_files_only: bool = False) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """Load UNet and VAE from a local diffusers folder (with ``unet/`` and ``vae/``) or a hub id.

    A hub id is first looked up in the local cache; the network is only used when the model is not
    cached, and an unreachable hub fails at once with instructions instead of retrying. Inside
    :func:`~sdcorr.sources.weightless.without_weights`, a local folder's configs or a hub id of
    :data:`~sdcorr.sources.architectures.HUB_ARCHITECTURES` give the models' shapes on the ``meta`` device.
    """
    local = Path(pretrained).expanduser()
    if local.exists() and (not (local / "unet").is_dir() or not (local / "vae").is_dir()):
        raise ModelLoadError(f"{local} is not a diffusers model folder: expected subfolders unet/ and vae/")
    if weightless():  # the shapes only, where they are known without loading weights
        if local.exists():
            try:
                with torch.device("meta"):
                    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(local / "unet"))
                    return unet, AutoencoderKL.from_config(AutoencoderKL.load_config(local / "vae"))
            except (OSError, ValueError):
                pass  # a broken folder is reported when the run loads it
        elif pretrained in HUB_ARCHITECTURES:
            return build_random(HUB_ARCHITECTURES[pretrained])
    tiny = "For a quick run without weights use `--config configs/model/tiny.yaml`."
    return load_from_hub_or_folder(_load, pretrained, "Stable Diffusion", local_files_only, hint=tiny)


class StableDiffusionSource(AttentionSource):
    """Cross-attention maps of a Stable Diffusion UNet for one text token.

    Args:
        pretrained: hub id or local diffusers folder (with ``unet/`` and ``vae/``) to load.
        architecture: build this architecture with random weights instead of loading
            (``tiny`` for tests and CPU runs, ``sd-v1-4`` for speed and memory work); no download.
        init_seed: seed of the random weights when ``architecture`` is set.
        layers: cross-attention layers to read, numbered in forward order (SD 1.x: 0..15); paper 7, 8, 9, 10.
        heads: average the ``last_half`` of the heads (the paper's code) or ``all``.
        token_index: the text token whose attention is supervised; paper 1.
        num_tokens: length of the optimised text embedding; SD's text length is 77.
        noise: ``uniform`` in [0, 1) (the paper's code) or ``gaussian`` noise for the latent.
        num_inference_steps: DDIM steps the timestep indices refer to; paper 50.
        image_size: side of the square working image in pixels; paper 512. A multiple of the model's total
            downsampling (64 for SD: 8 in the VAE, 8 in the UNet), so every layer's map tiles the image exactly.
        early_exit: stop the UNet after the last read layer (exact: nothing later affects the maps).
        local_files_only: never contact the hub.
        compile: ``torch.compile`` the UNet and the VAE encoder (the first calls are slow while compiling).
    """

    speed_options = ("early_exit", "local_files_only", "compile")

    def __init__(
        self,
        pretrained: str = "CompVis/stable-diffusion-v1-4",
        architecture: Optional[Literal["tiny", "sd-v1-4"]] = None,
        init_seed: int = 0,
        layers: Sequence[int] = (7, 8, 9, 10),
        heads: Literal["last_half", "all"] = "last_half",
        token_index: int = 1,
        num_tokens: int = 77,
        noise: Literal["uniform", "gaussian"] = "uniform",
        num_inference_steps: int = 50,
        image_size: int = 512,
        early_exit: bool = True,
        local_files_only: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if noise not in ("uniform", "gaussian"):
            raise OptionError(self, "noise", f"expected 'uniform' or 'gaussian'; got {noise!r}")
        if num_tokens < 1:
            raise OptionError(self, "num_tokens", f"expected a text length >= 1; got {num_tokens}")
        if not 0 <= token_index < num_tokens:
            raise OptionError(self, "token_index", f"expected an index in 0..{num_tokens - 1}; got {token_index}")
        if image_size > MAX_IMAGE_SIZE:  # checked before loading: a huge size only fails after minutes
            problem = f"expected at most {MAX_IMAGE_SIZE} pixels (4x the paper's 512, which SD 1.4 was trained at)"
            raise OptionError(self, "image_size", f"{problem}; got {image_size}")
        if len(set(layers)) != len(layers) or not layers:
            raise OptionError(self, "layers", f"expected distinct layer indices, at least one; got {list(layers)}")
        if architecture is not None:
            self.unet, self.vae = build_random(architecture, init_seed)
        else:
            check_pretrained(self, pretrained)
            self.unet, self.vae = load_pretrained(pretrained, local_files_only)
        available = len(cross_attention_layers(self.unet))
        if not all(0 <= i < available for i in layers):
            problem = f"expected indices in 0..{available - 1} (this UNet has {available} cross-attention layers)"
            raise OptionError(self, "layers", f"{problem}; got {list(layers)}")
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) * 2 ** (len(self.unet.config.down_block_types) - 1)
        if image_size < factor or image_size % factor:
            problem = f"expected a multiple of {factor} (the VAE's and the UNet's downsampling together)"
            raise OptionError(self, "image_size", f"{problem}; got {image_size}")
        self.requires_grad_(False)
        self.eval()
        self.store = install_capture(self.unet, list(layers), token_index, heads, early_exit)
        if compile:
            self.unet = torch.compile(self.unet)
            self.vae.encoder = torch.compile(self.vae.encoder)
        self.scheduler = paper_scheduler(num_inference_steps)
        self.image_size = image_size
        self.num_tokens = num_tokens
        self.noise = noise

    @contextmanager
    def full_forward(self) -> Iterator[None]:
        """Run the whole UNet inside this block, whatever ``early_exit`` says."""
        previous, self.store.early_exit = self.store.early_exit, False
        try:
            yield
        finally:
            self.store.early_exit = previous

    def encode(self, images: Tensor) -> Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> the scaled mean of the VAE posterior, ``[B, 4, S/8, S/8]`` for SD."""
        posterior = self.vae.encode(2 * images.to(self.device) - 1).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    def random_embeddings(self, generators: Sequence[torch.Generator]) -> Tensor:
        """``randn(T, D)`` per generator -> ``[B, T, D]`` float32 on the source's device."""
        dim = self.unet.config.cross_attention_dim
        draws = [torch.randn(self.num_tokens, dim, generator=g) for g in generators]
        return torch.stack(draws).to(self.device)

    def draw_noise(self, shape: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        """One noise tensor of ``shape`` per generator (drawn on the CPU so every device gets the same)."""
        draw = torch.rand if self.noise == "uniform" else torch.randn
        return torch.stack([draw(*shape, generator=g) for g in generators])

    def attention_maps(
        self, latents: Tensor, embeddings: Tensor, timestep_index: int, generators: Sequence[torch.Generator]
    ) -> list[Tensor]:
        """Noise the latents at ``timesteps[timestep_index]`` and read the chosen layers.

        Args:
            latents: ``[B, 4, h, w]``.
            embeddings: ``[B, T, D]``.

        Returns:
            ``L`` float32 maps ``[B, h_l, w_l]``.
        """
        t = self.scheduler.timesteps[timestep_index]
        noise = self.draw_noise(latents.shape[1:], generators).to(latents)
        noisy = self.scheduler.add_noise(latents, noise, t.reshape(1))
        maps = run_unet(self.unet, self.store, noisy, t.to(latents.device), embeddings.to(noisy.dtype))
        return [m.float() for m in maps]
