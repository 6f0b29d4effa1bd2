"""The paper's method: fit one text embedding per keypoint on the source, find its attention peak in the target.

Every number of the protocol is a named argument of :class:`PromptMatcher` whose default is the
paper's (see the project's METHOD sheet). The class reads algorithm first (:meth:`~PromptMatcher.match`,
:meth:`~PromptMatcher.fit`, :meth:`~PromptMatcher.locate` and their per-chunk steps), then the speed
machinery they call. Items (one keypoint, one restart) are independent: each has its own random
stream and its own Adam state (one Adam over the stacked embeddings is elementwise, and the loss is a
sum of per-item losses, so each item's update is exactly its own), and items are batched through the
model up to ``max_batch`` at a time (``"auto"``: as many as fit in GPU memory, see
:mod:`sdcorr.matchers.batching`). Batching changes nothing but speed (up to float rounding);
``mode="reference"`` runs the original one-at-a-time structure for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Literal, Optional, Union

import torch
from torch import Tensor

from sdcorr import geometry
from sdcorr.errors import InferenceModeError, NumericalError, OptionError
from sdcorr.matchers.base import Matcher, MatchResult, PairContext, Progress, WorkCounter
from sdcorr.matchers.batching import BatchSize, Chunking, Item, T, chunks
from sdcorr.matchers.crops import CropEncoder, autocast_state
from sdcorr.matchers.lru import LRU
from sdcorr.rng import content_key, generator
from sdcorr.sources.base import AttentionSource, Source


class PromptMatcher(Matcher):
    """The paper's method: optimise one text embedding per keypoint, then find its attention peak.

    Fit reuse (``reuse_fits``, on by default): the embeddings fitted for a source keypoint depend only
    on the source image, the keypoint and their random draws, never on the target. With reuse, those
    draws (initial embedding, crops, noise) are keyed by (run seed, source image content, keypoint
    coordinates as given, restart) instead of by the pair, so every pair that shares a source keypoint
    gets the same fit, and it is computed once and remembered (``fit_cache``). Every fit is still made
    exactly as the paper makes one; only pairs sharing a source keypoint now share it. Off: every
    pair fits its own embeddings with draws keyed by the pair, as the paper's code does. Draws of the
    locate step are keyed by the pair either way.

    Fit batching (``fit_batching``, with reuse): a fit is exactly reusable only if it is computed the
    same way wherever it is needed, so the items (keypoint x restart) that share a model call must not
    depend on which pair asks. ``"keypoint"``: a call holds one keypoint's restarts only (at most
    ``restarts`` items, 5 in the paper preset). ``"source_image"`` (default): the distinct keypoints of
    every selected pair with this source image (``group_keypoints`` of :meth:`match`, which the
    datamodules give each sample as ``source_group_keypoints``) are sorted by fit key and cut into
    fixed chunks of whole keypoints, ``max_batch // restarts`` keypoints each (:func:`~sdcorr.matchers.
    batching.chunks` ``"keypoints"``; one keypoint's restarts sliced alone when ``restarts >
    max_batch``). A pair computes, whole, every chunk holding one of its keypoints not remembered yet,
    and remembers all the fits of those chunks. A chunk depends only on the source image and the run's
    selection, never on the pair, their order, a resume, the DDP process or the shard, so each fit is
    the same bit for bit everywhere; in a run where every pair of an image is matched by one process
    each chunk is computed once, so the fits (and model passes) are exactly those of ``"keypoint"``.
    Only a process that matches part of an image's pairs (a resumed run cut inside an image, or fewer
    source images than processes) computes, with its keypoints, the others of their chunks. The two
    batchings give the same fits up to float rounding (items are independent, see above). Keypoints
    of a pair missing from ``group_keypoints`` (or all, when it is not given, e.g. :func:`sdcorr.match`)
    are batched by keypoint.

    Args:
        restarts: independent random initialisations per keypoint; paper 5.
        steps: Adam steps per initialisation; paper 129.
        lr: Adam learning rate; paper 0.0023755632081200314.
        crop_fraction: side of the random square crops as a fraction of the working image; paper 0.9316549.
        margin_fraction: a keypoint stays this fraction of the crop side inside the crop; paper 0.15.
        sigma: standard deviation of the Gaussian target in pixels at the reference size 512 (scaled
            with the working size, see :data:`~sdcorr.geometry.PAPER_SIZE`); paper 27.97853316316864.
        fit_timestep_index: index into the DDIM timesteps (980 ... 0) used while fitting; paper -8 (t=140).
        locate_timestep_index: index into the DDIM timesteps used on the target; paper -3 (t=40).
        locate_crops: crops per embedding on the target, the first 4 anchored at the corners; paper 20.
        reuse_fits: fit each distinct (source image, keypoint) once and share it across pairs (see
            above); off: per-pair fits seeded by the pair, like the paper's code.
        fit_batching: with ``reuse_fits``, which fits share a model call (see above): ``source_image``
            (default): the keypoints of a source image together, up to ``max_batch`` items a call;
            ``keypoint``: one keypoint's restarts a call (the earlier behaviour). Only speed and float
            rounding differ.
        max_batch: most items (keypoint x restart) sent through the model at once; only affects speed
            and memory. ``auto`` (default): on CUDA, start from an estimate (80% of the free GPU memory
            at the first call over about 2 GiB per item at 512 px, scaled by the working area, at most
            64), halve on CUDA out-of-memory and retry the failed chunk from scratch (fresh Adam state,
            the same random draws), keep the size settled on for the rest of the run (fitting and
            locating each their own), and say so in a warning; at 1 item, stop with an error. Off CUDA
            ``auto`` is 10, the earlier fixed default. Results of ``auto`` are bit-identical to a run
            with the settled size as a fixed number when each halving happens on the first chunk of a
            fit or locate call (the usual case: the first chunk is the largest); items that finished at
            a larger size before a later chunk ran out keep those results, equal up to float rounding
            (as between any two batch sizes). A number: at most that many, and out-of-memory stops the run.
        mode: ``fast`` batches items and lets the source stop early; ``reference`` keeps the original
            structure (one item and one crop at a time, the whole model, float32) for comparison.
            Both give the same results up to float rounding.
        crop_cache: most crop latents remembered, over all images (exact: crops repeat because the
            corner range is small, see :mod:`sdcorr.matchers.crops`); 64 KiB each for SD at 512 px in float32
            (the default 8192: 512 MiB of accelerator memory); 0 disables. Not used in reference
            mode, which encodes every crop.
        fit_cache: with ``reuse_fits``, most fitted keypoints remembered (on the CPU), each
            ``restarts x 77 x 768`` float32 for SD 1.4, 1.2 MB at 5 restarts (the default 256: about
            300 MB). Pairs come grouped by source image, so this needs to hold one image's keypoints.
            0 refits every pair, with the same keyed draws and so the same results.
        crop_pool: APPROXIMATION, off (0) by default: encode this many random crops per item once and
            draw each step's crop from that pool instead of encoding a fresh crop every step. Saves
            most of the VAE work; its effect on accuracy is not measured on real data.
    """

    speed_options = ("max_batch", "fit_batching", "mode", "crop_cache", "fit_cache")

    def __init__(
        self,
        restarts: int = 5,
        steps: int = 129,
        lr: float = 0.0023755632081200314,
        crop_fraction: float = 0.9316549,
        margin_fraction: float = 0.15,
        sigma: float = 27.97853316316864,
        fit_timestep_index: int = -8,
        locate_timestep_index: int = -3,
        locate_crops: int = 20,
        reuse_fits: bool = True,
        fit_batching: Literal["source_image", "keypoint"] = "source_image",
        max_batch: Union[int, Literal["auto"]] = "auto",
        mode: Literal["fast", "reference"] = "fast",
        crop_cache: int = 8192,
        fit_cache: int = 256,
        crop_pool: int = 0,
    ) -> None:
        for name, value in [
            ("restarts", restarts),
            ("steps", steps),
            ("locate_crops", locate_crops),
        ]:
            if value < 1:
                raise OptionError(self, name, f"expected an integer >= 1; got {value}")
        batch = BatchSize(max_batch)  # checks max_batch
        if fit_batching not in ("source_image", "keypoint"):
            raise OptionError(self, "fit_batching", f"expected 'source_image' or 'keypoint'; got {fit_batching!r}")
        if mode not in ("fast", "reference"):
            raise OptionError(self, "mode", f"expected 'fast' or 'reference'; got {mode!r}")
        for name, value in [("crop_pool", crop_pool), ("crop_cache", crop_cache), ("fit_cache", fit_cache)]:
            if value < 0:
                raise OptionError(self, name, f"expected an integer >= 0; got {value}")
        if not 0 < crop_fraction <= 1:
            raise OptionError(self, "crop_fraction", f"expected a fraction in (0, 1]; got {crop_fraction}")
        if not 0 <= margin_fraction < 0.5:
            raise OptionError(self, "margin_fraction", f"expected a fraction in [0, 0.5); got {margin_fraction}")
        for name, value in (("lr", lr), ("sigma", sigma)):
            if not value > 0:
                raise OptionError(self, name, f"expected a number > 0; got {value}")
        self.restarts = restarts
        self.steps = steps
        self.lr = lr
        self.crop_fraction = crop_fraction
        self.margin_fraction = margin_fraction
        self.sigma = sigma
        self.fit_timestep_index = fit_timestep_index
        self.locate_timestep_index = locate_timestep_index
        self.locate_crops = locate_crops
        self.reuse_fits = reuse_fits
        self.fit_batching = fit_batching
        self.max_batch = max_batch
        self.mode = mode
        self.crop_cache = crop_cache
        self.fit_cache = fit_cache
        self.crop_pool = crop_pool
        self._latents: LRU[Tensor] = LRU(crop_cache)
        self._fits: LRU[Tensor] = LRU(fit_cache)
        self._counts = {"fits": 0, "reused_fits": 0}
        self._batch = BatchSize(1) if mode == "reference" else batch  # sizes settled on, for the whole run

    # ------------------------------------------------------------------ the algorithm

    def match(
        self,
        source: AttentionSource,
        source_image: Tensor,
        target_image: Tensor,
        source_keypoints: Tensor,
        seed: object = 0,
        fit_seed: object = None,
        embeddings: Optional[Tensor] = None,
        *,
        group_keypoints: Optional[Tensor] = None,
        progress: Optional[Progress] = None,
        context: Optional[PairContext] = None,
    ) -> MatchResult:
        """Resize both images to the working size, fit on the source, locate on the target, map back.

        With :attr:`reuse_fits` the fit of each keypoint is keyed by :meth:`fit_keys` with ``fit_seed``
        (default ``seed``), else by ``seed`` and the keypoint's index; the locate step by ``seed``.
        ``embeddings`` ``[N, R, T, D]`` fitted earlier (saved with ``--output.save_embeddings``) skip the
        fit: only the target side runs, e.g. with other locate settings (the reference code's "retest").
        ``group_keypoints`` ``[M, 2] (x, y)`` in source-image pixels: every distinct source keypoint of
        the run's selected pairs with this source image; with :attr:`reuse_fits` and ``fit_batching
        "source_image"`` the fits are batched by them (see the class docstring). None: by keypoint.
        ``progress`` hears of every UNet pass (see :data:`~sdcorr.matchers.base.Progress`). ``context`` is
        not used (the fits are keyed by the source image's pixels, see :meth:`fit_keys`).
        """
        if not isinstance(source, AttentionSource):
            raise TypeError(
                f"PromptMatcher needs an AttentionSource (attention maps for an embedding), got "
                f"{type(source).__name__}; dense-feature sources go with sdcorr.NearestNeighbourMatcher"
            )
        size = source.image_size
        src_hw, trg_hw = source_image.shape[-2:], target_image.shape[-2:]
        source_work = geometry.resize_image(source_image.float(), size)
        target_work = geometry.resize_image(target_image.float(), size)
        keypoints = geometry.scale_keypoints(source_keypoints.float(), (src_hw[1], src_hw[0]), (size, size))
        if embeddings is not None and embeddings.shape[0] != len(keypoints):
            raise ValueError(f"Expected embeddings for {len(keypoints)} keypoints but got {embeddings.shape[0]}")
        keys = group = None
        if embeddings is None and self.reuse_fits:
            fit_seed = seed if fit_seed is None else fit_seed
            keys = self.fit_keys(source_image, source_keypoints, fit_seed)
            if group_keypoints is not None and self.fit_batching == "source_image":
                points = geometry.scale_keypoints(group_keypoints.float(), (src_hw[1], src_hw[0]), (size, size))
                group = (points, self.fit_keys(source_image, group_keypoints, fit_seed))
        if embeddings is not None:
            fits = 0
        else:
            fits = len(keypoints) if keys is None else self.pending_fits(source, keys, group and group[1])
        counter = WorkCounter(self.cost(len(keypoints), fits=fits), progress)
        if embeddings is None:
            embeddings = self.fit(source, source_work, keypoints, seed, keys, group, counter=counter)
        embeddings = embeddings.to(target_work.device)
        located = self.locate(source, target_work, embeddings, seed, counter=counter)

        def to_target(points: Tensor) -> Tensor:
            return geometry.scale_keypoints(points.to(source_keypoints.device), (size, size), (trg_hw[1], trg_hw[0]))

        return MatchResult(
            keypoints=to_target(located.keypoints),
            heatmaps=located.heatmaps,
            layer_keypoints=to_target(located.layer_keypoints),
            embeddings=embeddings,
            layer_heatmaps=located.layer_heatmaps,
        )

    def fit(
        self,
        source: AttentionSource,
        image: Tensor,
        keypoints: Tensor,
        seed: object = 0,
        keys: Optional[Sequence[tuple]] = None,
        group: Optional[tuple[Tensor, Sequence[tuple]]] = None,
        *,
        counter: Optional[WorkCounter] = None,
    ) -> Tensor:
        """Optimise embeddings so that the read attention peaks at each keypoint.

        Args:
            image: ``[3, S, S]`` working image.
            keypoints: ``[N, 2] (x, y)`` in working pixels.
            seed: keys the draws of keypoint ``k``, restart ``r`` as ``(seed, "fit", k, r)`` when no ``keys``.
            keys: one key per keypoint that names everything its fit depends on besides the matcher
                and the source (see :meth:`fit_keys`); restart ``r`` draws from ``(*key, r)``. Fits
                with equal keys are computed once and remembered (up to ``fit_cache``).
            group: with ``keys``: ``(points [M, 2] (x, y) in working pixels, their M keys)``, every
                distinct keypoint of the run's pairs with this source image; the fits are computed in
                its fixed chunks (see the class docstring), those missing from it by keypoint.
                None: every fit by keypoint.
            counter: counts the UNet passes (one per item and step); None: not counted.

        Returns:
            ``[N, R, T, D]`` embeddings (R = restarts).
        """
        if torch.is_inference_mode_enabled():
            raise InferenceModeError(
                "PromptMatcher optimises text embeddings and cannot run under torch.inference_mode(). "
                "With Lightning, build the Trainer with inference_mode=False (the sdcorr CLI does this)."
            )
        counter = counter if counter is not None else WorkCounter(0)
        reuse = keys is not None
        keys = list(keys) if reuse else [(seed, "fit", k) for k in range(len(keypoints))]
        slots = self._slots(source, keys) if reuse else keys
        fits = self._remembered(slots) if reuse else {}
        todo = [k for k, slot in enumerate(slots) if slot not in fits and slots.index(slot) == k]
        self._counts["reused_fits"] += len(keys) - len(todo)
        if todo:
            encoder = self.crop_encoder(source, image)
            if reuse:
                # with reuse, a keypoint's fit must not depend on which others this pair needs
                jobs = self._fit_jobs(source, keypoints[todo], [keys[k] for k in todo], group)
            else:
                jobs = [(keypoints[todo], [keys[k] for k in todo], "items")]
            with torch.enable_grad(), self._mode_context(source, image.device):
                for points, unit_keys, how in jobs:
                    self._counts["fits"] += len(unit_keys)
                    out = self._fit_units(source, encoder, points, unit_keys, how, counter)
                    for slot, fitted in zip(self._slots(source, unit_keys) if reuse else unit_keys, out):
                        fits[slot] = fitted
                        if reuse:
                            self._fits.put(slot, fitted.cpu())
        return torch.stack([fits[slot].to(image.device) for slot in slots])

    def _fit_units(
        self,
        source: AttentionSource,
        encoder: CropEncoder,
        points: Tensor,
        keys: list[tuple],
        how: Chunking,
        counter: WorkCounter,
    ) -> list[Tensor]:
        """Fit the keypoints ``points`` ``[U, 2]`` (restart ``r`` of ``keys[u]`` draws from ``(*keys[u], r)``),
        in chunks of the items ``(u, r)`` made ``how`` (see :func:`~sdcorr.matchers.batching.chunks`).
        Returns one ``[R, T, D]`` per keypoint."""
        items = [(u, r) for u in range(len(keys)) for r in range(self.restarts)]
        out = {}

        def fit_chunk(chunk: list[Item]) -> Tensor:  # fresh generators: a retried chunk draws the same
            gens = [generator(*keys[u], r) for u, r in chunk]
            return self._fit_chunk(source, encoder, points, chunk, gens, counter)

        for chunk, fitted in self._batched("fit", items, fit_chunk, source, counter, how):
            out.update(zip(chunk, fitted))
        return [torch.stack([out[(u, r)] for r in range(self.restarts)]) for u in range(len(keys))]

    def _fit_jobs(
        self,
        source: AttentionSource,
        keypoints: Tensor,
        keys: list[tuple],
        group: Optional[tuple[Tensor, Sequence[tuple]]],
    ) -> list[tuple[Tensor, list[tuple], Chunking]]:
        """What :meth:`fit` computes for ``keypoints`` ``[N, 2]`` with ``keys`` (distinct, not remembered), as
        ``(points [U, 2], keys [U], chunking)``: the keypoints of the group's chunks that hold one of
        ``keys`` (:meth:`_group_units`), in chunks of whole keypoints, then those of ``keys`` missing from
        the group, each keypoint alone."""
        jobs: list[tuple[Tensor, list[tuple], Chunking]] = []
        alone = list(range(len(keys)))
        if group is not None:
            points, group_keys = group
            chosen = self._group_units(source, keys, group_keys)
            if chosen:
                jobs.append((points[chosen], [group_keys[i] for i in chosen], "keypoints"))
            in_group = set(group_keys)
            alone = [k for k in alone if keys[k] not in in_group]
        if alone:
            jobs.append((keypoints[alone], [keys[k] for k in alone], "keypoint"))
        return jobs

    def _group_units(self, source: AttentionSource, keys: Sequence[tuple], group_keys: Sequence[tuple]) -> list[int]:
        """Indices into ``group_keys`` of the keypoints to fit for ``keys``, in order: the group's distinct
        keys sorted, their items ``(keypoint, restart)`` cut by :func:`~sdcorr.matchers.batching.chunks`
        ``"keypoints"`` at the fitting size now, and every chunk holding one of ``keys`` taken whole."""
        first: dict[tuple, int] = {}
        for i, key in enumerate(group_keys):
            first.setdefault(key, i)
        canonical = [first[key] for key in sorted(first)]
        items = [(u, r) for u in range(len(canonical)) for r in range(self.restarts)]
        wanted = set(keys)
        chosen: dict[int, None] = {}
        for chunk in chunks(items, self._batch.current("fit", source.device, source.image_size), "keypoints"):
            units = [canonical[u] for u in dict.fromkeys(u for u, _ in chunk)]
            if any(group_keys[i] in wanted for i in units):
                chosen.update(dict.fromkeys(units))
        return list(chosen)

    def _fit_chunk(
        self,
        source: AttentionSource,
        encoder: CropEncoder,
        keypoints: Tensor,
        items: list,
        gens: list,
        counter: WorkCounter,
    ) -> Tensor:
        """Fit the embeddings of ``items`` (``(keypoint, restart)``), each drawing from its generator."""
        size, device = source.image_size, encoder.image.device
        side, margin = self.crop_geometry(size)
        sigma = self.sigma * size / geometry.PAPER_SIZE
        points = keypoints[[k for k, _ in items]].float().cpu()
        embeddings = source.random_embeddings(gens).float().requires_grad_(True)
        optimizer = torch.optim.Adam([embeddings], lr=self.lr)
        crops = [CropCorners(p.tolist(), side, margin, size, g, pool=self.crop_pool) for p, g in zip(points, gens)]
        for _ in range(self.steps):
            corners = torch.tensor([draw() for draw in crops])
            latents = encoder(corners)
            target = geometry.gaussian_map((points - corners) / side * size, size, sigma).to(device)
            maps = source.attention_maps(latents, embeddings, self.fit_timestep_index, gens)
            # per item: mean over layers of the pixel-wise MSE; summed over items so each item's
            # gradient is exactly what it would be alone
            losses = torch.stack(
                [((geometry.upsample_maps(m[:, None], size)[:, 0] - target) ** 2).mean(dim=(-2, -1)) for m in maps]
            ).mean(dim=0)
            loss = losses.sum()
            if not torch.isfinite(loss):
                raise NumericalError(
                    f"non-finite loss ({loss.item()}) while fitting embeddings; "
                    "with fp16 precision try bf16-mixed or 32"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counter.advance(len(items), "fit")
        return embeddings.detach()

    @torch.no_grad()
    def locate(
        self,
        source: AttentionSource,
        image: Tensor,
        embeddings: Tensor,
        seed: object = 0,
        *,
        counter: Optional[WorkCounter] = None,
    ) -> MatchResult:
        """Find each embedding's attention peak in ``image``.

        Args:
            image: ``[3, S, S]`` working image.
            embeddings: ``[N, R, T, D]`` from :meth:`fit`.
            counter: counts the UNet passes (one per item and crop); None: not counted.

        Returns:
            keypoints ``[N, 2]`` in working pixels (the argmax pixel's centre, see :mod:`sdcorr.geometry`),
            the heatmaps ``[N, S, S]`` (softmax over pixels per layer, then the mean over layers),
            each layer's own argmax ``[L, N, 2]`` and each layer's softmaxed map ``[L, N, S, S]``.
        """
        counter = counter if counter is not None else WorkCounter(0)
        num_keypoints, restarts = embeddings.shape[:2]
        size = source.image_size
        sums = None
        encoder = self.crop_encoder(source, image)
        items = [(k, r) for k in range(num_keypoints) for r in range(restarts)]

        def locate_chunk(chunk: list[Item]) -> Tensor:  # [B, L, S, S]
            return self._locate_chunk(source, encoder, embeddings, chunk, seed, counter)

        with self._mode_context(source, image.device):
            for chunk, maps in self._batched("locate", items, locate_chunk, source, counter):
                if sums is None:
                    sums = maps.new_zeros(num_keypoints, maps.shape[1], size, size)
                for (k, _), item_map in zip(chunk, maps):
                    sums[k] += item_map
        per_layer = (sums / restarts).flatten(-2).softmax(dim=-1).reshape_as(sums)
        heatmaps = per_layer.mean(dim=1)
        layer_keypoints = geometry.argmax_xy(per_layer.transpose(0, 1), offset=0.5)
        return MatchResult(
            keypoints=geometry.argmax_xy(heatmaps, offset=0.5),
            heatmaps=heatmaps,
            layer_keypoints=layer_keypoints,
            layer_heatmaps=per_layer.transpose(0, 1),
        )

    def _locate_chunk(
        self,
        source: AttentionSource,
        encoder: CropEncoder,
        embeddings: Tensor,
        items: list,
        seed: object,
        counter: WorkCounter,
    ) -> Tensor:
        """Crop-averaged maps ``[B, L, S, S]`` of ``items``: 4 corner crops, then crops around the running argmax."""
        size, device = source.image_size, encoder.image.device
        side, margin = self.crop_geometry(size)
        gens = [generator(seed, "locate", k, r) for k, r in items]
        context = torch.stack([embeddings[k, r] for k, r in items]).to(device)
        canvas = count = None
        anchors = geometry.corner_anchors(size)
        for step in range(self.locate_crops):
            if step < len(anchors):
                points = [anchors[step]] * len(items)
            else:
                points = geometry.argmax_xy(geometry.canvas_average(canvas, count).mean(dim=1)).tolist()
            corners = torch.tensor(
                [geometry.sample_crop_corner(p, side, margin, size, g) for p, g in zip(points, gens)]
            )
            maps = source.attention_maps(encoder(corners), context, self.locate_timestep_index, gens)
            crop_maps = torch.cat([geometry.upsample_maps(m[:, None], side) for m in maps], dim=1).float()
            if canvas is None:
                canvas = torch.zeros(len(items), len(maps), size, size, device=device)
                count = torch.zeros(len(items), size, size, device=device)
            geometry.paste_into_canvas(canvas, count, crop_maps, corners)
            counter.advance(len(items), "locate")
        return geometry.canvas_average(canvas, count)

    # ------------------------------------------------------------------ protocol arithmetic

    def crop_geometry(self, image_size: int) -> tuple[int, int]:
        """``(side, margin)`` of the crops in pixels: 477 and 71 at 512 for the paper preset."""
        side = int(image_size * self.crop_fraction)
        return side, int(self.margin_fraction * side)

    def cost(self, num_keypoints: int, source: Optional[Source] = None, fits: Optional[int] = None) -> int:
        """UNet passes per pair: ``restarts x (fits x steps + N x locate_crops)`` (a pass = one item, one crop).

        ``fits`` (default ``N``): the keypoints that still need fitting.
        """
        fits = num_keypoints if fits is None else fits
        return self.restarts * (fits * self.steps + num_keypoints * self.locate_crops)

    # ------------------------------------------------------------------ speed machinery

    @property
    def counts(self) -> dict[str, int]:
        """Work done so far (for benchmarks and tests): keypoints fitted, and keypoints whose fit was
        already there (remembered, or a repeat within the pair)."""
        return dict(self._counts)

    def _batched(
        self,
        phase: str,
        items: list[Item],
        run: Callable[[list[Item]], T],
        source: AttentionSource,
        counter: WorkCounter,
        how: Chunking = "items",
    ) -> Iterator[tuple[list[Item], T]]:
        """``(chunk, run(chunk))`` in order, in chunks of the phase's size (halved on GPU out-of-memory
        with ``max_batch="auto"``, see :meth:`~sdcorr.matchers.batching.BatchSize.batched`), made ``how``
        (see :func:`~sdcorr.matchers.batching.chunks`)."""
        return self._batch.batched(phase, items, run, counter, source.device, source.image_size, how)

    def _mode_context(self, source: AttentionSource, device: torch.device) -> ExitStack:
        """Reference mode: the whole model, float32 even under a mixed-precision autocast."""
        stack = ExitStack()
        if self.mode == "reference":
            stack.enter_context(source.full_forward())
            stack.enter_context(torch.autocast(device.type, enabled=False))
        return stack

    def crop_encoder(self, source: AttentionSource, image: Tensor) -> CropEncoder:
        """Encodes crops of ``image``; in fast mode remembers latents across images and calls."""
        side, _ = self.crop_geometry(source.image_size)
        cache = self._latents if self.mode == "fast" and self.crop_cache else None
        return CropEncoder(source, image, side, cache)

    def fit_keys(self, source_image: Tensor, source_keypoints: Tensor, fit_seed: object) -> list[tuple]:
        """The key of each keypoint's fit with :attr:`reuse_fits`: ``(fit_seed, "fit", image content, x, y)``.

        Args:
            source_image: the source image as given to :meth:`match` (any size).
            source_keypoints: ``[N, 2] (x, y)`` in its pixels, as given (float32 values are used exactly).
        """
        image = content_key(source_image.float())
        return [(fit_seed, "fit", image, *map(float, point)) for point in source_keypoints.float().tolist()]

    @staticmethod
    def _slots(source: AttentionSource, keys: Sequence[tuple]) -> list[tuple]:
        """What each fit is remembered under: its key, within the source's identity (weights and settings,
        see :attr:`~sdcorr.sources.base.Source.identity`; never ``id()``, which a freed source hands on)
        and the autocast dtype in force."""
        within = (source.identity, autocast_state(source.device))
        return [(*within, *key) for key in keys]

    def _remembered(self, slots: Sequence[tuple]) -> dict[tuple, Tensor]:
        """The fits of ``slots`` already in the fit store, by slot (on the CPU)."""
        found = {}
        for slot in dict.fromkeys(slots):
            hit = self._fits.get(slot)
            if hit is not None:
                found[slot] = hit
        return found

    def pending_fits(
        self, source: AttentionSource, keys: Sequence[tuple], group_keys: Optional[Sequence[tuple]] = None
    ) -> int:
        """How many fits :meth:`fit` will compute for ``keys``: the distinct ones not remembered yet, or with
        ``group_keys`` (the keys of its ``group``) the keypoints of the group's chunks that hold one of
        those, plus those missing from the group."""
        distinct = list(dict.fromkeys(keys))
        todo = [key for key, slot in zip(distinct, self._slots(source, distinct)) if slot not in self._fits]
        if group_keys is None or not todo:
            return len(todo)
        in_group = set(group_keys)
        return len(self._group_units(source, todo, group_keys)) + sum(key not in in_group for key in todo)


class CropCorners:
    """Where one item's fitting crops go, one corner ``(x, y)`` per call, drawn from the item's generator.

    Each call draws a corner uniformly from the keypoint's range (:func:`~sdcorr.geometry.sample_crop_corner`).
    With ``pool`` (the ``crop_pool`` approximation) ``pool`` such corners are drawn once, here, and
    each call picks one of them instead.

    Args:
        point: the keypoint ``(x, y)`` in working pixels.
        side: crop side in pixels.
        margin: how far inside the crop the keypoint stays, in pixels.
        size: working image side.
        generator: the item's random stream.
        pool: corners drawn up front to pick from; 0: a fresh corner every call.
    """

    def __init__(
        self, point: Sequence[float], side: int, margin: int, size: int, generator: torch.Generator, pool: int = 0
    ) -> None:
        self.point, self.side, self.margin, self.size, self.generator = point, side, margin, size, generator
        self.pool = [self.fresh() for _ in range(pool)]

    def fresh(self) -> tuple[int, int]:
        """A corner drawn from the keypoint's range."""
        return geometry.sample_crop_corner(self.point, self.side, self.margin, self.size, self.generator)

    def __call__(self) -> tuple[int, int]:
        if not self.pool:
            return self.fresh()
        return self.pool[int(torch.randint(len(self.pool), (1,), generator=self.generator))]
