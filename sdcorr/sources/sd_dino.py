"""SD+DINO (Zhang et al., "A Tale of Two Features", NeurIPS 2023): Stable Diffusion decoder features fused
with DINOv2 patch tokens, as dense descriptors for the nearest-neighbour matcher.

The recipe, and where each number comes from (the authors' code, Junyi42/sd-dino: ``pck_spair_pascal.py``
and its defaults, ``extractor_sd.py``, ``utils/utils_correspondence.py``, and the ODISE feature extractor
it vendors, ``third_party/ODISE/odise/modeling/meta_arch/ldm.py``):

* Stable Diffusion v1-5 (``--VER v1-5``), the image at 960 x 960 (``--SIZE 960``), mapped to [-1, 1],
  VAE-encoded, the posterior **mean** times 0.18215 (ODISE ``encode_to_latent``).
* Noise at timestep 100 (``--TIMESTEP 100``), one draw (no ensemble), the same for every image: ODISE's
  shared noise, ``randn(1, 4, 64, 64)`` from a generator seeded 42, resized bicubically to the latent size
  (120 x 120 at 960 px) and added by the scaled-linear schedule (``q_sample``, SD's training schedule).
* Three decoder features (``--INDICES 2 5 8 11``, "only the first three are used"): ODISE reads, with
  ``decoder_only``, the input of UNet output blocks 2, 5 and 8 before the skip connection, i.e. the
  outputs of output blocks 1, 4 and 7. In diffusers' names: ``up_blocks.0.resnets.1`` (1280 channels,
  15 x 15 at 960 px), ``up_blocks.1.attentions.1`` (1280, 30 x 30) and ``up_blocks.2.attentions.1``
  (640, 60 x 60); the GeoAware-SC README (same authors) gives those sizes and channels.
* Per pair, each layer is reduced by a PCA fitted on both images' tokens together (``co_pca``: centred
  by the joint mean, ``torch.pca_lowrank(q=256)``, default 2 iterations), 256 dimensions each
  (``--PCA_DIMS 256 256 256``). Then, coarse to fine: the 15 x 15 map is upsampled bilinearly
  (align_corners False) to 30 x 30 and put after the 30 x 30 one, that pair upsampled to 60 x 60 and put
  after the 60 x 60 one: 768 channels at 60 x 60.
* DINOv2 ViT-B/14 (``--MODEL_SIZE base``: ``dinov2_vitb14``), the image at 840 x 840 (60 x 60 patches of
  14 px, stride 14), the "token" facet of the last block (layer 11): the block's output before the final
  LayerNorm, CLS dropped; ImageNet mean and standard deviation.
* Fusion (``DIST`` "l2" whenever both are used): each part L2-normalised per token, then concatenated,
  each part times its weight (``--WEIGHT 1 1 1 1 1``: 1 and 1, i.e. equal weights), matched by the L2
  distance. With both parts of unit norm the fused vectors all have the same norm, so the nearest by L2
  is the most similar by cosine: the nearest-neighbour matcher's cosine gives the same matches.

Differences from the authors' evaluation, on purpose or by necessity:

* SD's text context: ODISE conditions SD on an "implicit caption", a projection of the image's CLIP
  embedding learnt by ODISE (its own checkpoint, not Stable Diffusion's). sdcorr has no such module and
  feeds the CLIP encoding of a fixed prompt (default ``""``), as DIFT does without a category.
* Images: the authors resize each image keeping its aspect ratio and pad it to a square (LANCZOS, zero
  padding), separately to 960 (SD) and 840 (DINOv2); sdcorr's matcher resizes each image to the
  960 x 960 working size without keeping the aspect ratio, and this source resizes that to 840 for DINOv2.
* Matching: the authors take the descriptor of the feature cell holding the keypoint and predict the
  centre of the nearest cell; the nearest-neighbour matcher samples the descriptor bilinearly and upsamples
  the similarity map to the working size (see :mod:`sdcorr.matchers.nearest`).
* Whether ODISE's backbone runs the UNet on the whole 960 px image or on overlapping 512 px windows
  depends on its config, which could not be checked; this source runs it on the whole image.
* The PCA's random start is seeded per pair (the authors' is the global random state), so a pair always
  gets the same descriptors.

Memory: :meth:`SdDinoSource.features` packs every layer onto the finest grid (coarser maps repeated, so
the pair step recovers them exactly by striding): about 57 MB per image at 960 px, float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdcorr.attention import StopForward
from sdcorr.errors import OptionError
from sdcorr.sources.architectures import build_random
from sdcorr.sources.dense import DenseSource
from sdcorr.sources.dift import check_noised_text_options, encode_prompt, sd_noise_scheduler
from sdcorr.sources.dinov2 import Dinov2Source
from sdcorr.sources.hub import check_pretrained
from sdcorr.sources.stable_diffusion import load_pretrained

#: the decoder features SD+DINO reads (ODISE's output blocks 2, 5, 8, read before the block), coarse to fine
SD_DINO_LAYERS = ("up_blocks.0.resnets.1", "up_blocks.1.attentions.1", "up_blocks.2.attentions.1")
#: ODISE's shared noise: a 64 x 64 latent (SD 1.x at 512 px) drawn once from this seed
SHARED_NOISE_SIZE = 64


def shared_noise(channels: int, size: tuple[int, int], seed: int) -> Tensor:
    """ODISE's noise, the same for every image: ``randn(1, channels, 64, 64)`` from a CPU generator seeded
    ``seed``, resized bicubically (align_corners False) to ``size`` when that differs -> ``[1, channels, h, w]``."""
    noise = torch.randn(
        1, channels, SHARED_NOISE_SIZE, SHARED_NOISE_SIZE, generator=torch.Generator().manual_seed(seed)
    )
    if tuple(size) != (SHARED_NOISE_SIZE, SHARED_NOISE_SIZE):
        noise = F.interpolate(noise, size=tuple(size), mode="bicubic", align_corners=False)
    return noise


def co_pca(source: Tensor, target: Tensor, dims: int, iterations: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reduce two feature maps ``[C, h, w]`` to ``[dims, h, w]`` each by one PCA fitted on both.

    The ``2 h w`` tokens are centred by their joint mean and projected on the first ``dims`` principal
    directions of ``torch.pca_lowrank(q=dims, niter=iterations)``, whose random start is drawn from
    ``seed`` (the global random state is left as it was).
    """
    c, h, w = source.shape
    if not 0 < dims <= min(c, 2 * h * w):
        raise ValueError(f"Expected 0 < pca dims <= min(channels {c}, tokens {2 * h * w}) but got {dims}")
    tokens = torch.cat([source.flatten(1), target.flatten(1)], dim=1).T.float()  # [2 h w, C]
    centred = tokens - tokens.mean(dim=0, keepdim=True)
    with torch.random.fork_rng(devices=[centred.device] if centred.is_cuda else []):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(centred, q=dims, center=False, niter=iterations)
    reduced = (centred @ v[:, :dims]).T  # [dims, 2 h w]
    return reduced[:, : h * w].reshape(dims, h, w), reduced[:, h * w :].reshape(dims, h, w)


def fuse(
    sd_layers: Sequence[tuple[Tensor, Tensor]],
    dino: tuple[Tensor, Tensor],
    pca_dims: Sequence[int],
    weights: Sequence[float] = (1.0, 1.0),
    iterations: int = 2,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The SD+DINO descriptors of a pair from its SD layers and DINOv2 tokens.

    Args:
        sd_layers: per SD layer, coarse to fine, the source's and target's map ``[C_l, s_l, s_l]``.
        dino: the source's and target's DINOv2 tokens ``[C_d, g, g]``.
        pca_dims: the PCA dimensions of each SD layer (:func:`co_pca`).
        weights: the factors of the SD part and the DINOv2 part after each is L2-normalised per token.
        iterations: ``pca_lowrank`` iterations.
        seed: seeds the PCAs' random starts (layer ``l`` uses ``seed + l``).

    Returns:
        ``[sum(pca_dims) + C_d, g, g]`` for the source and the target: the SD part (finest layer first, then
        the coarser ones upsampled bilinearly, align_corners False, one level at a time; resized to ``g``
        when its grid differs), then DINOv2.
    """
    fused = []
    reduced = [co_pca(a, b, dims, iterations, seed + i) for i, ((a, b), dims) in enumerate(zip(sd_layers, pca_dims))]
    for side in (0, 1):
        sd = reduced[0][side][None]
        for layer in reduced[1:]:
            finer = layer[side][None]
            sd = torch.cat([finer, F.interpolate(sd, size=finer.shape[-2:], mode="bilinear", align_corners=False)], 1)
        grid = dino[side].shape[-2:]
        if sd.shape[-2:] != grid:
            sd = F.interpolate(sd, size=grid, mode="bilinear", align_corners=False)
        parts = (F.normalize(sd[0], dim=0), F.normalize(dino[side].float(), dim=0))
        fused.append(torch.cat([weights[0] * parts[0], weights[1] * parts[1]]))
    return fused[0], fused[1]


class SdDinoSource(DenseSource):
    """SD+DINO descriptors: Stable Diffusion decoder features, PCA-reduced per pair, fused with DINOv2 tokens.

    Defaults are the authors' SPair-71k setting (see the module docstring for each number's source):
    SD v1-5 at 960 px, t = 100 with ODISE's shared noise, three decoder layers reduced to 256 dimensions
    each, DINOv2 ViT-B/14 last-block tokens at 840 px, each part L2-normalised, equal weights.

    Args:
        pretrained: Stable Diffusion hub id or local diffusers folder (``unet/``, ``vae/``; ``tokenizer/``
            and ``text_encoder/`` for ``prompt_embedding="text"``).
        architecture: build this UNet/VAE with random weights instead of loading (``tiny`` for tests and
            CPU runs, ``sd-v1-4`` for speed and memory work); no download.
        init_seed: seed of the random weights (SD and DINOv2) when an architecture is set.
        sd_layers: UNet modules whose outputs are read, coarse to fine (names of ``unet.named_modules()``).
        pca_dims: PCA dimensions of each read layer; SD+DINO 256 each.
        timestep: diffusion timestep of the added noise (0..999); SD+DINO 100.
        noise_seed: seed of the shared noise (ODISE 42).
        prompt_embedding: ``text`` (CLIP encoding of ``prompt``) or ``zeros`` (``[1, 77, D]`` zeros, no text
            model; the only choice for random weights).
        prompt: the text encoded for ``prompt_embedding="text"``.
        dino_pretrained: DINOv2 hub id or local folder; SD+DINO ViT-B/14.
        dino_architecture: build DINOv2 with random weights instead (``tiny``); no download.
        dino_size: side of DINOv2's input in pixels, a multiple of its patch size; SD+DINO 840.
        weights: factors of the L2-normalised SD and DINOv2 parts; SD+DINO 1 and 1.
        pca_iterations: ``torch.pca_lowrank`` iterations; its default, 2, as SD+DINO.
        image_size: side of the square working image (SD's input) in pixels; SD+DINO 960.
        local_files_only: never contact the hub.
    """

    speed_options = ("local_files_only",)

    def __init__(
        self,
        pretrained: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        architecture: Optional[Literal["tiny", "sd-v1-4"]] = None,
        init_seed: int = 0,
        sd_layers: Sequence[str] = SD_DINO_LAYERS,
        pca_dims: Sequence[int] = (256, 256, 256),
        timestep: int = 100,
        noise_seed: int = 42,
        prompt_embedding: Literal["text", "zeros"] = "text",
        prompt: str = "",
        dino_pretrained: str = "facebook/dinov2-base",
        dino_architecture: Optional[Literal["tiny"]] = None,
        dino_size: int = 840,
        weights: Sequence[float] = (1.0, 1.0),
        pca_iterations: int = 2,
        image_size: int = 960,
        local_files_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_noised_text_options(self, architecture, prompt_embedding, timestep)
        if len(pca_dims) != len(sd_layers) or not sd_layers or min(pca_dims) < 1:
            raise OptionError(self, "pca_dims", f"expected one dimension >= 1 per read layer ({len(sd_layers)}); "
                              f"got {list(pca_dims)}")  # fmt: skip
        if len(weights) != 2:
            raise OptionError(self, "weights", f"expected two factors (SD, DINOv2); got {list(weights)}")
        if architecture is not None:
            self.unet, self.vae = build_random(architecture, init_seed)
        else:
            check_pretrained(self, pretrained)
            self.unet, self.vae = load_pretrained(pretrained, local_files_only)
        modules = dict(self.unet.named_modules())
        for name in sd_layers:
            if name not in modules:
                raise OptionError(self, "sd_layers", f"{name!r} is no module of the UNet (e.g. {SD_DINO_LAYERS[0]!r})")
        self.vae.decoder = None  # never used; frees most of the VAE's memory
        self.dino = Dinov2Source(
            dino_pretrained, dino_architecture, init_seed, dino_size, None, False, local_files_only
        )
        if prompt_embedding == "text":
            context = encode_prompt(pretrained, prompt, local_files_only)
        else:
            context = torch.zeros(1, 77, self.unet.config.cross_attention_dim)
        self.register_buffer("context", context, persistent=False)
        self.requires_grad_(False)
        self.eval()
        self.scheduler = sd_noise_scheduler()
        self.sd_layers, self.pca_dims = list(sd_layers), list(pca_dims)
        self.timestep, self.noise_seed, self.weights = timestep, noise_seed, list(weights)
        self.pca_iterations = pca_iterations
        self.image_size = image_size
        self.passes_per_image = 2  # one UNet pass, one ViT pass

    @property
    def unused_options(self) -> tuple[str, ...]:
        """``pretrained`` with random SD weights, ``dino_pretrained`` with a random DINOv2."""
        hparams = self.hparams or {}
        return (("pretrained",) if hparams.get("architecture") else ()) + (
            ("dino_pretrained",) if hparams.get("dino_architecture") else ()
        )

    def model_description(self) -> str:
        """Both models in words: checkpoints or random weights."""
        hparams = dict(self.hparams)
        sd = (
            f"random weights of the {hparams['architecture']!r} architecture"
            if hparams.get("architecture")
            else f"Stable Diffusion {hparams['pretrained']!r}"
        )
        dino = (
            f"random weights of the {hparams['dino_architecture']!r} DINOv2"
            if hparams.get("dino_architecture")
            else f"DINOv2 {hparams['dino_pretrained']!r}"
        )
        note = "; not trained models, numbers mean nothing" if hparams.get("architecture") else ""
        return f"SdDinoSource: {sd} + {dino} (init_seed {hparams.get('init_seed')}){note}"

    def _read_layers(self, noisy: Tensor, t: Tensor) -> list[Tensor]:
        """Run the UNet on ``[B, 4, h, w]`` until the last read layer; the read outputs ``[B, C_l, s_l, s_l]``."""
        out: dict[str, Tensor] = {}
        modules = dict(self.unet.named_modules())

        def hook_of(name: str):
            def hook(module: nn.Module, args: tuple, output: object) -> None:
                value = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
                out[name] = value
                if len(out) == len(self.sd_layers):
                    raise StopForward

            return hook

        handles = [modules[name].register_forward_hook(hook_of(name)) for name in self.sd_layers]
        try:
            self.unet(noisy, t, encoder_hidden_states=self.context.expand(len(noisy), -1, -1).to(noisy.dtype))
        except StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in self.sd_layers if name not in out]
        if missing:
            raise RuntimeError(f"the UNet forward did not reach {missing}")
        return [out[name].float() for name in self.sd_layers]

    @torch.no_grad()
    def features(
        self,
        images: Tensor,
        generators: Optional[Sequence[torch.Generator]] = None,
        categories: Optional[Sequence[Optional[str]]] = None,
    ) -> Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> every read SD layer and the DINOv2 tokens, packed ``[B, C, G, G]``.

        ``C`` = the layers' channels plus DINOv2's, in that order; ``G`` the finest of their grids, each
        coarser map repeated to it (:meth:`pair_descriptors` takes every ``G / s``-th cell back). No random
        draws: the noise is the shared one, so ``generators`` are not used; nor are ``categories`` (the prompt
        is fixed).
        """
        x = images.to(self.device, self.vae.dtype)
        latents = self.vae.encode(2 * x - 1).latent_dist.mean * self.vae.config.scaling_factor
        noise = shared_noise(latents.shape[1], latents.shape[-2:], self.noise_seed).to(latents)
        t = torch.tensor([self.timestep])
        noisy = self.scheduler.add_noise(latents, noise.expand_as(latents), t)
        maps = self._read_layers(noisy, t.to(self.device))
        dino_input = F.interpolate(images.float(), size=self.dino.image_size, mode="bilinear", antialias=True)
        maps.append(self.dino.features(dino_input.clamp(0, 1)))
        grid = max(m.shape[-1] for m in maps)
        for m in maps:
            if m.shape[-1] != m.shape[-2] or grid % m.shape[-1]:
                sizes = [list(m.shape[-2:]) for m in maps]
                raise ValueError(f"Expected square maps whose sides divide the finest ({grid}) but got {sizes}")
        packed = [m.repeat_interleave(grid // m.shape[-1], -2).repeat_interleave(grid // m.shape[-1], -1) for m in maps]
        self._layout = [(m.shape[1], m.shape[-1]) for m in maps]
        return torch.cat(packed, dim=1)

    def pair_descriptors(
        self, source: Tensor, target: Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[Tensor, Tensor]:
        """Packed features ``[C, G, G]`` of a pair -> SD+DINO descriptors ``[sum(pca_dims) + C_d, g, g]`` each
        (:func:`fuse`; ``g`` DINOv2's grid); ``generator`` seeds the PCAs' random starts.

        The packing (each part's channels and grid) is recorded by this instance's :meth:`features`, which
        must have run once (features kept from another process need one call first)."""
        layout = getattr(self, "_layout", None)
        if layout is None or sum(c for c, _ in layout) != source.shape[0]:
            got = source.shape[0]
            raise ValueError(f"Expected packed features of SdDinoSource.features (run first) but got {got} channels")
        parts, start, grid = [], 0, source.shape[-1]
        for channels, size in layout:
            step = grid // size
            parts.append(
                (source[start : start + channels, ::step, ::step], target[start : start + channels, ::step, ::step])
            )
            start += channels
        seed = int(torch.randint(2**31, (1,), generator=generator)) if generator is not None else 0
        return fuse(parts[:-1], parts[-1], self.pca_dims, self.weights, self.pca_iterations, seed)
