"""An example of a new source: subclass StableDiffusionSource, change one thing, select it by class_path.

    sdcorr test --config configs/smoke.yaml \\
        --model.source.class_path tests.example_source.FixedTimestepSource \\
        --model.source.init_args.timestep 200

Every argument of :class:`~sdcorr.StableDiffusionSource` still works (``**kwargs`` is passed on, and
the CLI lists the parent's arguments too); ``--print_config`` shows them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sdcorr import StableDiffusionSource
from sdcorr.attention import run_unet


class FixedTimestepSource(StableDiffusionSource):
    """Stable Diffusion cross-attention read at one diffusion timestep for fitting and locating alike.

    The paper fits at DDIM step index -8 (t=140) and locates at -3 (t=40); this source ignores the
    matcher's index and always noises at ``timestep``.

    Args:
        timestep: diffusion timestep (0..999) of the added noise.
        **kwargs: arguments of :class:`~sdcorr.StableDiffusionSource`.
    """

    def __init__(self, timestep: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= timestep < self.scheduler.config.num_train_timesteps:
            raise ValueError(f"Expected timestep in 0..999 but got {timestep}")
        self.timestep = timestep

    def attention_maps(
        self, latents: Tensor, embeddings: Tensor, timestep_index: int, generators: Sequence[torch.Generator]
    ) -> list[Tensor]:
        """As the parent's, with ``timestep`` in place of ``timesteps[timestep_index]``: ``L x [B, h_l, w_l]``."""
        t = torch.tensor([self.timestep])
        noise = self.draw_noise(latents.shape[1:], generators).to(latents)
        noisy = self.scheduler.add_noise(latents, noise, t)
        maps = run_unet(self.unet, self.store, noisy, t[0].to(latents.device), embeddings.to(noisy.dtype))
        return [m.float() for m in maps]
