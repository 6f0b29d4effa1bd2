"""Diffusion features (DIFT, Tang et al. 2023): a noised image's UNet activations as dense descriptors.

For each image: encode with the VAE, add Gaussian noise at timestep ``t`` (the scheduler's
``add_noise``), run the UNet once with a text context and keep the output of one up block (read by a
forward hook on ``unet.up_blocks[up_block]``, which then stops the forward: nothing later is needed).
The result is averaged over ``ensemble_size`` independent draws of the noise.

The text context follows DIFT's evaluation (``SDFeaturizer4Eval`` in Tsingularity/dift,
``src/models/dift_sd.py``): each image is conditioned on ``"a photo of a {category}"`` with its class
(:class:`~sdcorr.matchers.base.PairContext`), each class encoded once; an image of unknown class gets
the empty prompt. The rest of DIFT's recipe (its 8-bit bicubic resize, matching at each image's own
resolution) is the nearest-neighbour matcher's (:mod:`sdcorr.matchers.nearest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer

from sdcorr.attention import StopForward
from sdcorr.errors import OptionError
from sdcorr.rng import generator
from sdcorr.sources.architectures import build_random
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.hub import check_pretrained, load_from_hub_or_folder
from sdcorr.sources.stable_diffusion import load_pretrained


def sd_noise_scheduler() -> DDPMScheduler:
    """The training noise schedule of Stable Diffusion 1.x and 2.x (``scaled_linear``, 0.00085 to 0.012, 1000 steps).

    Only ``add_noise`` is used, which depends on nothing else; SD 2.1's own DDIM config gives the same.
    """
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def load_text_model(pretrained: str, local_files_only: bool = False) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """The CLIP tokenizer and text encoder of ``pretrained`` (hub id or local diffusers folder: ``tokenizer/``
    and ``text_encoder/``), the encoder in eval mode on the CPU."""

    def load(name: str, local_only: bool) -> tuple[CLIPTokenizer, CLIPTextModel]:
        tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer", local_files_only=local_only)
        encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", local_files_only=local_only)
        return tokenizer, encoder.eval().requires_grad_(False)

    return load_from_hub_or_folder(
        load, pretrained, "the CLIP tokenizer/ and text_encoder/ (or pass prompt_embedding='zeros')", local_files_only
    )


def encode_text(tokenizer: CLIPTokenizer, encoder: CLIPTextModel, prompt: str) -> Tensor:
    """The text encoder's last hidden state for ``prompt``, ``[1, T, D]`` float32 (T = the tokenizer's max
    length, 77 for SD: the prompt's tokens padded to it, as Stable Diffusion pipelines encode a prompt)."""
    length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    tokens = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)
    with torch.no_grad():
        return encoder(torch.tensor([tokens["input_ids"]])).last_hidden_state.float()


def encode_prompt(pretrained: str, prompt: str, local_files_only: bool = False) -> Tensor:
    """The CLIP text encoder's last hidden state for ``prompt``, ``[1, T, D]``: loads the text model of
    ``pretrained``, encodes once and lets the model go."""
    return encode_text(*load_text_model(pretrained, local_files_only), prompt)


#: the placeholder of ``DiftSource.prompt`` that each image's class replaces
CATEGORY = "{category}"


def check_noised_text_options(owner: object, architecture: Optional[str], prompt_embedding: str, timestep: int) -> None:
    """Refuse, as ``owner``'s :class:`~sdcorr.errors.OptionError`, a text context that is neither ``text`` nor
    ``zeros``, ``text`` with a random-weight ``architecture`` (it has no text encoder) and a ``timestep``
    outside the 1000-step schedule: the options DIFT and SD+DINO share."""
    if prompt_embedding not in ("text", "zeros"):
        raise OptionError(owner, "prompt_embedding", f"expected 'text' or 'zeros'; got {prompt_embedding!r}")
    if architecture is not None and prompt_embedding == "text":
        problem = f"expected 'zeros' with architecture={architecture!r} (a random-weight build has no text encoder)"
        raise OptionError(owner, "prompt_embedding", f"{problem}; got prompt_embedding='text'")
    if not 0 <= timestep < 1000:
        raise OptionError(owner, "timestep", f"expected 0..999; got {timestep}")


class DiftSource(DenseSource):
    """DIFT descriptors of a Stable Diffusion UNet: one up block's output, averaged over noise draws.

    Defaults are DIFT's published SPair-71k setting: SD 2.1, up block 1, t=261, 8 draws, 768 px, the
    prompt ``"a photo of a {category}"``.

    Text context (``prompt_embedding``): DIFT feeds the CLIP encoding of a prompt. ``text`` does the
    same: it loads the tokenizer and text encoder from ``pretrained`` (subfolders ``tokenizer/`` and
    ``text_encoder/``). A ``prompt`` without ``{category}`` is encoded once at construction and the
    text model let go. With ``{category}`` (DIFT's evaluation), each image's class (the ``categories``
    of :meth:`features`) fills it in, each class encoded once when first met (the text model stays on
    the CPU for that: 1.4 GB for SD 2.1); an image of unknown class (None) gets the empty prompt, as
    DIFT's does. ``zeros`` feeds an all-zero context of SD's shape ``[1, 77, cross_attention_dim]`` for
    every image and needs no text model; it is the only choice for random-weight builds (there is no
    tokenizer to build) and is not DIFT's setting (the encoding of ``""`` is not zero).

    Args:
        pretrained: hub id or local diffusers folder (``unet/``, ``vae/``; ``tokenizer/`` and
            ``text_encoder/`` for ``prompt_embedding="text"``).
        architecture: build this UNet/VAE with random weights instead of loading (``tiny-v2`` for
            tests and CPU runs, ``sd-v2-1`` for speed and memory work); no download.
        init_seed: seed of the random weights when ``architecture`` is set.
        up_block: index into ``unet.up_blocks`` whose output is read; DIFT 1 (48 x 48 x 1280 at 768 px for SD 2.1).
        timestep: diffusion timestep of the added noise (0..999); DIFT 261.
        ensemble_size: noise draws averaged per image; DIFT 8.
        prompt_embedding: ``text`` (CLIP encoding of ``prompt``, DIFT's choice) or ``zeros`` (see above).
        prompt: the text encoded for ``prompt_embedding="text"``; ``{category}`` in it is each image's class
            (DIFT: ``"a photo of a {category}"``, and ``""`` for an unknown class).
        latent: ``sample`` from the VAE posterior (DIFT) or take its ``mean``.
        image_size: side of the square working image in pixels; DIFT 768.
        max_batch: most UNet inputs (image x noise draw) per forward; only affects speed and memory.
        local_files_only: never contact the hub.
    """

    speed_options = ("local_files_only",)

    def __init__(
        self,
        pretrained: str = "stabilityai/stable-diffusion-2-1",
        architecture: Optional[Literal["tiny-v2", "sd-v2-1", "tiny", "sd-v1-4"]] = None,
        init_seed: int = 0,
        up_block: int = 1,
        timestep: int = 261,
        ensemble_size: int = 8,
        prompt_embedding: Literal["text", "zeros"] = "text",
        prompt: str = "a photo of a {category}",
        latent: Literal["sample", "mean"] = "sample",
        image_size: int = 768,
        max_batch: int = 8,
        local_files_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_noised_text_options(self, architecture, prompt_embedding, timestep)
        if latent not in ("sample", "mean"):
            raise OptionError(self, "latent", f"expected 'sample' or 'mean'; got {latent!r}")
        for name, value in (("ensemble_size", ensemble_size), ("max_batch", max_batch)):
            if value < 1:
                raise OptionError(self, name, f"expected an integer >= 1; got {value}")
        if architecture is not None:
            self.unet, self.vae = build_random(architecture, init_seed)
        else:
            check_pretrained(self, pretrained)
            self.unet, self.vae = load_pretrained(pretrained, local_files_only)
        if not 0 <= up_block < len(self.unet.up_blocks):
            raise OptionError(self, "up_block", f"expected 0..{len(self.unet.up_blocks) - 1}; got {up_block}")
        self.vae.decoder = None  # never used; frees most of the VAE's memory
        try:
            prompt.format(category="x")
        except (KeyError, IndexError, ValueError) as error:
            problem = f"expected a text whose only placeholder is {CATEGORY}; got {prompt!r} ({error!r})"
            raise OptionError(self, "prompt", problem) from None
        #: the text model, kept (outside the module's parameters, on the CPU) while classes are still to encode
        self._text: Optional[tuple[CLIPTokenizer, CLIPTextModel]] = None
        #: ``{class: [1, T, D]}`` contexts encoded so far (CPU)
        self._contexts: dict[str, Tensor] = {}
        if prompt_embedding == "text":
            tokenizer, encoder = load_text_model(pretrained, local_files_only)
            # the context of an unknown class ("", DIFT's null prompt) or of a prompt without {category};
            # a buffer, so that the source's identity covers the text encoder's weights through it
            context = encode_text(tokenizer, encoder, "" if CATEGORY in prompt else prompt)
            if CATEGORY in prompt:
                self._text = (tokenizer, encoder)
        else:
            context = torch.zeros(1, 77, self.unet.config.cross_attention_dim)
        self.register_buffer("context", context, persistent=False)
        self.prompt = prompt
        self.requires_grad_(False)
        self.eval()
        self.scheduler = sd_noise_scheduler()
        self.up_block = up_block
        self.timestep = timestep
        self.ensemble_size = self.passes_per_image = ensemble_size
        self.latent = latent
        self.image_size = image_size
        self.max_batch = max_batch

    def _draw(self, shape: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        """``[B, E, *shape]`` standard normal draws: E in a row from each image's generator (on the CPU)."""
        return torch.stack(
            [torch.stack([torch.randn(*shape, generator=g) for _ in range(self.ensemble_size)]) for g in generators]
        )

    def context_of(self, category: Optional[str]) -> Tensor:
        """The text context ``[1, T, D]`` (on the source's device) of an image of class ``category``.

        ``prompt`` with ``{category}`` filled in, encoded once per class; the empty prompt's for None;
        :attr:`context` itself when the context does not depend on the class (``zeros``, or a prompt
        without ``{category}``).
        """
        if self._text is None or category is None:
            return self.context
        if category not in self._contexts:
            self._contexts[category] = encode_text(*self._text, self.prompt.format(category=category))
        return self._contexts[category].to(self.device, self.context.dtype)

    def _read_block(self, noisy: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """Run the UNet on ``[N, 4, h, w]`` with ``[N, T, D]`` contexts until ``up_blocks[up_block]``; that
        block's output."""
        out: list[Tensor] = []

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            out.append(output)
            raise StopForward

        handle = self.unet.up_blocks[self.up_block].register_forward_hook(hook)
        try:
            self.unet(noisy, t, encoder_hidden_states=context.to(noisy.dtype))
        except StopForward:
            pass
        finally:
            handle.remove()
        if not out:
            raise RuntimeError(f"the UNet forward did not reach up block {self.up_block}")
        return out[0]

    @torch.no_grad()
    def features(
        self,
        images: Tensor,
        generators: Optional[Sequence[torch.Generator]] = None,
        categories: Optional[Sequence[Optional[str]]] = None,
    ) -> Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> the mean over noise draws of the up block's output ``[B, C, h, w]``.

        Each image draws from its own generator (default: a fixed stream per position in the batch):
        with ``latent="sample"`` first ``ensemble_size`` posterior samples, then ``ensemble_size``
        noise tensors; draw ``e`` of each goes to ensemble member ``e``. ``categories``: each image's
        class for the prompt (:meth:`context_of`); None: unknown for all.
        """
        if generators is None:
            generators = [generator("dift", b) for b in range(len(images))]
        if len(generators) != len(images):
            raise ValueError(f"Expected one generator per image ({len(images)}) but got {len(generators)}")
        posterior = self.vae.encode(2 * images.to(self.device, self.vae.dtype) - 1).latent_dist
        b, c, h, w = posterior.mean.shape
        latents = posterior.mean[:, None].expand(b, self.ensemble_size, c, h, w)
        if self.latent == "sample":
            latents = latents + posterior.std[:, None] * self._draw((c, h, w), generators).to(latents)
        latents = latents * self.vae.config.scaling_factor
        noise = self._draw((c, h, w), generators).to(latents)
        t = torch.tensor([self.timestep])
        noisy = self.scheduler.add_noise(latents.reshape(b * self.ensemble_size, c, h, w), noise.flatten(0, 1), t)
        t = t.to(self.device)
        classes = [None] * b if categories is None else list(categories)
        if len(classes) != b:
            raise ValueError(f"Expected one category per image ({b}) but got {len(classes)}")
        contexts = torch.cat([self.context_of(c) for c in classes]).repeat_interleave(self.ensemble_size, dim=0)
        blocks = [
            self._read_block(noisy[i : i + self.max_batch], t, contexts[i : i + self.max_batch]).float()
            for i in range(0, len(noisy), self.max_batch)
        ]
        features = torch.cat(blocks)
        return features.reshape(b, self.ensemble_size, *features.shape[1:]).mean(dim=1)
