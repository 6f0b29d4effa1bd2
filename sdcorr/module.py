"""The LightningModule: each ``test_step`` matches its pairs (inner per-keypoint optimisation) and scores them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from lightning.pytorch import LightningModule

from sdcorr import geometry
from sdcorr.errors import DataError, InferenceModeError, NumericalError, OptionError
from sdcorr.matchers.base import Matcher, MatchResult, PairContext, Progress
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.runs.folder import RunFolder
from sdcorr.runs.records import Prediction
from sdcorr.runs.scoring import accumulate
from sdcorr.sources.base import Source
from sdcorr.stats.pck import PCK, check_alphas

INFERENCE_MODE_MESSAGE = (
    "sdcorr optimises text embeddings inside test_step/predict_step, which is impossible under "
    "torch.inference_mode(). Run with `--trainer.inference_mode false` (the default of the sdcorr "
    "CLI) or build the Trainer with `Trainer(inference_mode=False)`."
)


@runtime_checkable
class MatchProgressHook(Protocol):
    """A Trainer callback that follows the model passes inside each pair.

    While a pair is matched, the module calls ``on_match_progress(trainer, pl_module, done, total, phase)``
    on every callback of its Trainer that has this method: ``done`` of ``total`` item-passes through the
    model, ``phase`` ``"fit"`` or ``"locate"`` (see :data:`sdcorr.matchers.base.Progress`).
    """

    def on_match_progress(self, trainer: Any, pl_module: Any, done: int, total: int, phase: str) -> None: ...


class CorrespondenceModule(LightningModule):
    """Semantic correspondence with a feature source and a matcher, scored with PCK.

    Args:
        source: the model the maps come from (default: Stable Diffusion 1.4 from the hub).
        matcher: the method that predicts target keypoints (default: the paper's prompt optimisation).
        alphas: PCK thresholds as fractions of each pair's reference length; paper 0.05 and 0.1.
        seed: seed of every random draw; default: the run's ``seed_everything`` value (or 0).
            Each pair draws from its own streams derived from the seed and its pair id; a matcher that
            shares fits across pairs (``reuse_fits``) keys them by the seed, the source image and keypoint.
        embeddings: run folder of an earlier run made with ``--output.save_embeddings true``: reuse its
            fitted embeddings and only locate them in the targets (prompt matcher only).
    """

    def __init__(
        self,
        source: Optional[Source] = None,
        matcher: Optional[Matcher] = None,
        alphas: Sequence[float] = (0.05, 0.1),
        seed: Optional[int] = None,
        embeddings: Optional[str] = None,
    ) -> None:
        super().__init__()
        if source is None:
            from sdcorr.sources.stable_diffusion import StableDiffusionSource

            source = StableDiffusionSource()
        self.source = source
        self.matcher = matcher if matcher is not None else PromptMatcher()
        check_alphas(self, alphas)
        self.alphas = list(alphas)
        self.seed = seed
        if embeddings is not None and not isinstance(self.matcher, PromptMatcher):
            problem = f"works with PromptMatcher only, not {type(self.matcher).__name__}"
            raise OptionError(self, "embeddings", problem)
        # absolute, so the run folder records where they are, whatever the working directory
        self.embeddings = None if embeddings is None else str(Path(embeddings).expanduser().resolve())
        self.pck = PCK(self.alphas)
        # breakdowns by the samples' ``groups`` (e.g. SPair difficulty): "key=value" plays the category
        self.pck_groups = PCK(self.alphas)
        #: the predictions an earlier run of the folder finished, counted in this run's metrics (see :meth:`add_done`)
        self.done: list[Prediction] = []
        #: pairs whose source-side maps :meth:`test_step` computes too (:meth:`source_maps`), ``{pair_id: how
        #: many keypoints, None for all}``; a pictures callback asks at setup, so the model runs in the test loop only
        self.source_map_requests: dict[str, Optional[int]] = {}

    @property
    def run_seed(self) -> int:
        """The seed in use: ``seed`` or else the one ``seed_everything`` set."""
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def match_pair(self, sample: dict[str, Any]) -> MatchResult:
        """Predict the target keypoints of one sample dict (see :mod:`datamodules.base`)."""
        if torch.is_inference_mode_enabled():
            raise InferenceModeError(INFERENCE_MODE_MESSAGE)
        args = (self.source, sample["source_image"], sample["target_image"], sample["source_keypoints"])
        seed = (self.run_seed, sample["pair_id"])
        options = {}
        if self.embeddings is not None:
            path = RunFolder(self.embeddings).embedding_file(sample["pair_id"])
            if not path.is_file():
                raise DataError(f"{path}: no saved embeddings for pair {sample['pair_id']!r} (model.embeddings)")
            options["embeddings"] = torch.load(path, map_location=self.device)
        elif self.matcher.reuse_fits and sample.get("source_group_keypoints") is not None:
            options["group_keypoints"] = sample["source_group_keypoints"]  # fits batched by source image
        try:
            return self.matcher.match(
                *args,
                seed=seed,
                fit_seed=self.run_seed,
                progress=self._progress(),
                context=PairContext.of_sample(sample),
                **options,
            )
        except NumericalError as error:
            raise NumericalError(f"pair {sample['pair_id']!r}: {error}") from error

    def _progress(self) -> Optional[Progress]:
        """Tells the Trainer's :class:`MatchProgressHook` callbacks how the matcher advances; None without any."""
        trainer = self._trainer  # None outside a Trainer (e.g. `sdcorr match`, or a notebook)
        hooks = [c for c in trainer.callbacks if isinstance(c, MatchProgressHook)] if trainer is not None else []
        if not hooks:
            return None

        def progress(done: int, total: int, phase: str) -> None:
            for hook in hooks:
                hook.on_match_progress(trainer, self, done, total, phase)

        return progress

    @torch.no_grad()
    def source_maps(
        self, sample: dict[str, Any], result: MatchResult, keypoints: Optional[int] = None
    ) -> Optional[MatchResult]:
        """Where the fitted embeddings of ``result`` attend in the *source* image (for pictures).

        The prompt matcher's locate step run on the source image with its own random stream (an extra
        ``N x restarts x locate_crops`` passes, so only for the pairs of :attr:`source_map_requests`). A
        keypoint's map does not depend on the others: ``keypoints`` locates the first ones only.

        Returns:
            the locate step's :class:`~sdcorr.matchers.base.MatchResult` on the source, in working pixels:
            ``heatmaps`` ``[N, S, S]`` (mean over the read layers), ``layer_heatmaps`` ``[L, N, S, S]``
            and their argmaxes; None for matchers without embeddings.
        """
        if result.embeddings is None or not hasattr(self.matcher, "locate"):
            return None
        image = geometry.resize_image(sample["source_image"].float().to(self.device), self.source.image_size)
        embeddings = result.embeddings[:keypoints]
        return self.matcher.locate(self.source, image, embeddings, seed=(self.run_seed, sample["pair_id"], "source"))

    def prediction(self, sample: dict[str, Any], result: MatchResult) -> Prediction:
        """The ``predictions.jsonl`` line of one pair, scored at :attr:`alphas` (see :meth:`Prediction.from_sample`)."""
        return Prediction.from_sample(sample, result, self.alphas)

    def add_done(self, predictions: list[Prediction]) -> None:
        """Count pairs an earlier run of the folder finished in this run's metrics (a resume; rank 0); they
        are kept in :attr:`done`, for callbacks that report on every pair of the run."""
        self.done = list(predictions)
        accumulate(self.done, self.pck, self.pck_groups)

    def _step(self, batch: list[dict[str, Any]], score: bool) -> dict[str, Any]:
        predictions, matches, source_maps = [], [], []
        for sample in batch:
            match = self.match_pair(sample)
            predictions.append(self.prediction(sample, match))
            matches.append(match)
            wanted = sample["pair_id"] in self.source_map_requests
            source_maps.append(
                self.source_maps(sample, match, self.source_map_requests[sample["pair_id"]]) if wanted else None
            )
        if score:  # from the lines, exactly as results.json and `sdcorr evaluate` score them
            # a pair matched again for its pictures (see PairDataModule.rematch) counts once: its earlier line
            scored = [p for p, sample in zip(predictions, batch) if not sample.get("rematch")]
            accumulate(scored, self.pck, self.pck_groups)
        return {"predictions": predictions, "matches": matches, "source_maps": source_maps}

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Any]:
        """Match and score every pair of the batch (a pair matched again for its pictures, ``sample["rematch"]``,
        is not scored again: see :meth:`datamodules.base.PairDataModule.rematch`).

        Returns ``{"predictions": [Prediction, ...], "matches": [MatchResult, ...], "source_maps": [...]}``, one
        of each per pair: the ``predictions.jsonl`` lines, what the matcher returned (heatmaps, per-layer
        points, embeddings) and, for the pairs of :attr:`source_map_requests`, :meth:`source_maps` (else None).
        """
        return self._step(batch, score=True)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Any]:
        """Match every pair of the batch (no ground truth needed). Returns ``{"predictions": [...]}``: not the
        MatchResults (heatmaps...), since Lightning keeps every ``predict_step`` output in memory until the end.
        """
        return {"predictions": self._step(batch, score=False)["predictions"]}

    def on_test_epoch_end(self) -> None:
        # every process, a process that matched no pair included: the metric gathers all processes' pairs, so
        # each process holds the same figures (the groups' breakdown is results.json's, see sdcorr.runs.scoring)
        results = self.pck.compute()
        # equal on every process already: Lightning's sync with "max" keeps them exact (a mean could move a bit)
        log = dict(sync_dist=True, reduce_fx="max")
        for alpha in self.alphas:
            key = f"pck@{alpha:g}"
            if not results["overall"]["num_pairs"]:  # nothing scored: PCK is undefined, log no NaN
                continue
            for kind in ("per_image", "per_point"):
                self.log(f"{key}/{kind}", results["overall"][key][kind], **log)
            for name, values in results["per_category"].items():
                self.log(f"{key}/per_image/{name}", values[key]["per_image"], **log)
        self.pck.reset()
        self.pck_groups.reset()
