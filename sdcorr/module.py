"""The LightningModule: each ``test_step`` matches its pairs (inner per-keypoint optimisation) and scores them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
from lightning.pytorch import LightningModule

from sdcorr import geometry
from sdcorr.engine import Matcher, MatchResult
from sdcorr.errors import DataError, InferenceModeError, NumericalError
from sdcorr.evaluate import accumulate, correct
from sdcorr.metrics import PCK
from sdcorr.prompt import PromptMatcher
from sdcorr.runfolder import embedding_file
from sdcorr.sources.base import Source

INFERENCE_MODE_MESSAGE = (
    "sdcorr optimises text embeddings inside test_step/predict_step, which is impossible under "
    "torch.inference_mode(). Run with `--trainer.inference_mode false` (the default of the sdcorr "
    "CLI) or build the Trainer with `Trainer(inference_mode=False)`."
)


def _points(tensor: torch.Tensor) -> list[list[float]]:
    """``[N, 2]`` float32 -> JSON lists; exact (a float32 survives the round trip through JSON)."""
    return tensor.float().tolist()


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
        self.alphas = list(alphas)
        self.seed = seed
        if embeddings is not None and not isinstance(self.matcher, PromptMatcher):
            raise ValueError(f"model.embeddings works with PromptMatcher only, not {type(self.matcher).__name__}")
        self.embeddings = embeddings
        self.pck = PCK(self.alphas)
        # breakdowns by the samples' ``groups`` (e.g. SPair difficulty): "key=value" plays the category
        self.pck_groups = PCK(self.alphas)
        #: predict_step also returns the MatchResults (heatmaps...); off because Lightning keeps predict outputs
        self.return_results = False
        #: the metric table of the last test run (see :class:`sdcorr.metrics.PCK`), set at epoch end
        self.results: Optional[dict[str, Any]] = None

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
            path = embedding_file(self.embeddings, sample["pair_id"])
            if not path.is_file():
                raise DataError(f"{path}: no saved embeddings for pair {sample['pair_id']!r} (model.embeddings)")
            options["embeddings"] = torch.load(path, map_location=self.device)
        try:
            return self.matcher.match(*args, seed=seed, fit_seed=self.run_seed, **options)
        except NumericalError as error:
            raise NumericalError(f"pair {sample['pair_id']!r}: {error}") from error

    @torch.no_grad()
    def source_heatmaps(self, sample: dict[str, Any], result: MatchResult) -> Optional[torch.Tensor]:
        """``[N, S, S]``: where the fitted embeddings of ``result`` attend in the *source* image (for pictures).

        The prompt matcher's locate step run on the source image with its own random stream (an extra
        ``N x restarts x locate_crops`` passes, so callbacks ask for it only for the pairs they draw).
        None for matchers without embeddings.
        """
        if result.embeddings is None or not hasattr(self.matcher, "locate"):
            return None
        image = geometry.resize_image(sample["source_image"].float().to(self.device), self.source.image_size)
        return self.matcher.locate(
            self.source, image, result.embeddings, seed=(self.run_seed, sample["pair_id"], "source")
        ).heatmaps

    def record(self, sample: dict[str, Any], result: MatchResult) -> dict[str, Any]:
        """The JSON-ready line of ``predictions.jsonl`` for one pair."""
        target = sample.get("target_keypoints")
        threshold = sample.get("threshold")
        if not torch.isfinite(result.keypoints).all():
            raise NumericalError(f"pair {sample['pair_id']!r}: a predicted keypoint is NaN or infinite")
        line = {
            "pair_id": sample["pair_id"],
            "category": sample["category"],
            "source_keypoints": _points(sample["source_keypoints"]),
            "predicted_keypoints": _points(result.keypoints),
            "target_keypoints": None if target is None else _points(target),
            "threshold": None if threshold is None else float(threshold),
            "pck_scale": [float(v) for v in sample["pck_scale"]],
            "groups": dict(sample.get("groups") or {}),
            "references": sample.get("references") or {},
            "layer_predictions": None if result.layer_keypoints is None else list(map(_points, result.layer_keypoints)),
            "correct": None,
        }
        flags = correct(line, self.alphas)  # from the line itself, as every later scoring reads it
        if flags is not None:
            line["correct"] = {f"{alpha:g}": flags[:, i].tolist() for i, alpha in enumerate(self.alphas)}
        return line

    def _step(self, batch: list[dict[str, Any]], score: bool) -> dict[str, Any]:
        records, results = [], []
        for sample in batch:
            result = self.match_pair(sample)
            records.append(self.record(sample, result))
            results.append(result)
        if score:  # from the records, exactly as results.json and `sdcorr evaluate` score them
            accumulate(records, self.pck, self.pck_groups)
        return {"records": records, "results": results}

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Any]:
        """Match and score every pair of the batch.

        Returns ``{"records": [...], "results": [MatchResult, ...]}``, one of each per pair: the
        ``predictions.jsonl`` lines and what the matcher returned (heatmaps, per-layer points, embeddings).
        """
        return self._step(batch, score=True)

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Any]:
        """Match every pair of the batch (no ground truth needed). Returns ``{"records": [...]}``.

        The MatchResults (heatmaps...) are added only when :attr:`return_results` is set: Lightning keeps
        every ``predict_step`` output in memory until the end.
        """
        outputs = self._step(batch, score=False)
        return outputs if self.return_results else {"records": outputs["records"]}

    def on_test_epoch_end(self) -> None:
        results = self.pck.compute()
        with warnings.catch_warnings():  # most datasets have no groups: an empty breakdown is expected
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            results["per_group"] = self.pck_groups.compute()["per_category"]
        self.results = results
        for alpha in self.alphas:
            key = f"pck@{alpha:g}"
            if not results["overall"]["num_pairs"]:  # nothing scored: PCK is undefined, log no NaN
                continue
            for kind in ("per_image", "per_point"):
                self.log(f"{key}/{kind}", results["overall"][key][kind], sync_dist=False)
            for name, values in results["per_category"].items():
                self.log(f"{key}/per_image/{name}", values[key]["per_image"], sync_dist=False)
        self.pck.reset()
        self.pck_groups.reset()
