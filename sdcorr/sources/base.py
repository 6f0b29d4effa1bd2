"""The interfaces a model wrapper implements. Subclass :class:`AttentionSource` to try a new model.

:class:`Source` is what every model wrapper shares (the module accepts any); each matcher says which
kind it needs: the prompt matcher needs an :class:`AttentionSource` (attention maps for an embedding),
the nearest-neighbour matcher a :class:`~sdcorr.sources.dense.DenseSource` (dense features).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn


class Source(HyperparametersMixin, nn.Module):
    """A frozen model that works on square images of side :attr:`image_size`; the base of every source.

    Subclasses call ``self.save_hyperparameters()`` in ``__init__``: the saved arguments identify the
    source in ``run.json`` (a resumed run must use the same source), less :attr:`speed_options`.
    """

    #: side of the square working image, in pixels
    image_size: int
    #: init arguments that change only speed or loading, not results (left out of the run fingerprint)
    speed_options: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        """Device of the source's parameters."""
        return next(self.parameters()).device

    @property
    def unused_options(self) -> tuple[str, ...]:
        """Saved arguments that had no effect on this instance (``pretrained`` when ``architecture`` built
        random weights); left out of ``run.json`` so that it does not name a model that was not used."""
        return ("pretrained",) if (self.hparams or {}).get("architecture") else ()

    def model_description(self) -> str:
        """Which model this is, in words, for every output: the checkpoint or random weights.

        Reads the ``pretrained``/``architecture``/``init_seed`` arguments the built-in sources share;
        override it in a source with other arguments.
        """
        hparams = dict(self.hparams or {})
        name = type(self).__name__
        if hparams.get("architecture"):
            return (
                f"{name}: random weights of the {hparams['architecture']!r} architecture "
                f"(init_seed {hparams.get('init_seed')}), not a trained model; its numbers mean nothing"
            )
        if hparams.get("pretrained"):
            local = Path(str(hparams["pretrained"])).expanduser()
            where = f"the local folder {local.resolve()}" if local.exists() else f"the hub id {hparams['pretrained']!r}"
            return f"{name}: pretrained weights from {where}"
        return name


class AttentionSource(Source, ABC):
    """Maps ``(image, text embedding)`` to attention maps; all the prompt matcher needs of a model.

    A source works on square images of side :attr:`image_size` and owns everything model specific
    (encoder, noise schedule, which layers are read). It is frozen: only embeddings get gradients.

    Contract, for a batch of ``B`` items:

    * :meth:`encode`: images ``[B, 3, S, S]`` in ``[0, 1]`` -> latents ``[B, C, h, w]``.
    * :meth:`random_embeddings`: one generator per item -> ``[B, T, D]`` initial embeddings.
    * :meth:`attention_maps`: latents, embeddings ``[B, T, D]``, a timestep index and one noise
      generator per item -> ``L`` maps ``[B, h_l, w_l]`` (one per read layer, any resolution,
      float32, differentiable with respect to the embeddings).

    Every random draw takes its generator argument, so results do not depend on batching.
    """

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """``[B, 3, S, S]`` in ``[0, 1]`` -> latents ``[B, C, h, w]``."""

    @abstractmethod
    def random_embeddings(self, generators: Sequence[torch.Generator]) -> Tensor:
        """One random embedding per generator: ``[B, T, D]`` on the source's device, float32."""

    @abstractmethod
    def attention_maps(
        self, latents: Tensor, embeddings: Tensor, timestep_index: int, generators: Sequence[torch.Generator]
    ) -> list[Tensor]:
        """Noise ``latents`` at the indexed timestep and return the read maps, ``L x [B, h_l, w_l]``."""

    @contextmanager
    def full_forward(self) -> Iterator[None]:
        """Inside this block run the whole model (no early exit); the engine's reference mode uses it."""
        yield
