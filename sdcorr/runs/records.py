"""One line of ``predictions.jsonl``: what was predicted for one pair, with everything PCK needs; and the
``format`` version every run record carries.

Every JSON record of a run folder (:class:`Prediction` lines, :class:`~sdcorr.runs.manifest.Manifest`,
:class:`~sdcorr.runs.results.Results`) starts with ``"format": FORMAT``; :func:`check_format` refuses one
without it (written by an older sdcorr) or with another number. Only these record modules and
:mod:`sdcorr.runs.folder` (which reads and writes the files) look inside the JSON.

A :class:`Prediction` is made from a sample dict and the matcher's :class:`~sdcorr.matchers.base.MatchResult`
(:meth:`Prediction.from_sample`), written as one JSON line (:meth:`Prediction.to_json`) and read back
(:meth:`Prediction.from_json`). Points are float32 values stored exactly (a float32 survives the round
trip through JSON), so a line read back and written again is the same bytes. Every score of a run (the
live metric, results.json, a resume, merged shards, ``sdcorr evaluate``) is computed from these lines,
see :mod:`sdcorr.runs.scoring`.

>>> line = {"format": FORMAT, "pair_id": "p", "category": "cat", "source_keypoints": [[1.0, 2.0]],
...         "predicted_keypoints": [[3.0, 4.0]], "target_keypoints": [[3.0, 5.0]], "threshold": 10.0}
>>> prediction = Prediction.from_json(line)
>>> prediction.correct([0.05, 0.2]).tolist()  # distance 1 against 0.5 and 2 pixels
[[False, True]]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import torch

from sdcorr.errors import DataError, NumericalError
from sdcorr.stats.pck import pck_correct

#: the version of the run records this sdcorr writes and reads (folders of an older sdcorr have none)
FORMAT = 1

#: keys a line must have; the others default as in :class:`Prediction`
REQUIRED = ("pair_id", "category", "source_keypoints", "predicted_keypoints")
Points = list[list[float]]


class FormatError(ValueError):
    """A record of another format version: written by an older sdcorr (no ``format``) or a newer one."""


def check_format(payload: Any, what: str) -> dict[str, Any]:
    """``payload`` if it is a JSON object of this :data:`FORMAT`; the caller names the file and the remedy.

    Raises:
        ValueError: not a JSON object. FormatError: no ``format`` (an older sdcorr) or another number.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object ({what}) but got {type(payload).__name__}")
    version = payload.get("format")
    if version is None:
        raise FormatError(f"{what} written by an older sdcorr (no format version)")
    if version != FORMAT:
        raise FormatError(f"{what} of format {version!r}, this sdcorr reads format {FORMAT} (a newer sdcorr wrote it?)")
    return payload


def _points(tensor: torch.Tensor) -> Points:
    """``[N, 2]`` float32 -> JSON lists; exact (a float32 survives the round trip through JSON)."""
    return tensor.float().tolist()


@dataclasses.dataclass
class Prediction:
    """One pair's prediction, in the order of the keys of its JSON line.

    Attributes:
        pair_id: unique within the dataset.
        category: the row of the per-category PCK table.
        source_keypoints: ``[N, 2] (x, y)`` in source pixels.
        predicted_keypoints: ``[N, 2] (x, y)`` in target pixels.
        target_keypoints: ``[N, 2] (x, y)`` ground truth in target pixels; None: no ground truth.
        threshold: PCK reference length as run; None: unscored.
        pck_scale: ``[2]`` per-axis factor from target pixels to the threshold's space.
        groups: extra PCK breakdowns, e.g. ``{"occlusion": "1"}``.
        references: every threshold mode of the dataset, ``{mode: {"threshold", "pck_scale"}}``.
        layer_predictions: ``[L, N, 2]`` each read layer's own prediction; None if not applicable.
        correct: ``{"<alpha>": [N] bool}`` at the run's alphas (for pictures and people); None if unscored.
        source_group: which source image the pair has (the digest of its file's bytes, see
            :mod:`datamodules.schedule`); pairs that share it share their fitted embeddings, and the bootstrap
            resamples them together (:attr:`cluster`). None: not recorded (a line of an older sdcorr, or a
            pair without a source file); the key is then left out of the line.
        extra: keys of a line this version does not know, kept (at the end) when the line is written again.
    """

    pair_id: str
    category: str
    source_keypoints: Points
    predicted_keypoints: Points
    target_keypoints: Optional[Points] = None
    threshold: Optional[float] = None
    pck_scale: list[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0])
    groups: dict[str, Any] = dataclasses.field(default_factory=dict)
    references: dict[str, Any] = dataclasses.field(default_factory=dict)
    layer_predictions: Optional[list[Points]] = None
    correct_flags: Optional[dict[str, list[bool]]] = None
    source_group: Optional[str] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_sample(cls, sample: dict[str, Any], result: Any, alphas: Sequence[float]) -> Prediction:
        """The prediction of one sample dict (see :mod:`datamodules.base`) and its MatchResult.

        ``correct`` is computed from the line itself, exactly as every later scoring reads it.

        Raises:
            NumericalError: a predicted keypoint is NaN or infinite.
        """
        if not torch.isfinite(result.keypoints).all():
            raise NumericalError(f"pair {sample['pair_id']!r}: a predicted keypoint is NaN or infinite")
        target, threshold = sample.get("target_keypoints"), sample.get("threshold")
        prediction = cls(
            pair_id=sample["pair_id"],
            category=sample["category"],
            source_keypoints=_points(sample["source_keypoints"]),
            predicted_keypoints=_points(result.keypoints),
            target_keypoints=None if target is None else _points(target),
            threshold=None if threshold is None else float(threshold),
            pck_scale=[float(v) for v in sample["pck_scale"]],
            groups=dict(sample.get("groups") or {}),
            references=sample.get("references") or {},
            layer_predictions=None if result.layer_keypoints is None else list(map(_points, result.layer_keypoints)),
            source_group=sample.get("source_image_id"),
        )
        flags = prediction.correct(alphas)
        if flags is not None:
            prediction.correct_flags = {f"{alpha:g}": flags[:, i].tolist() for i, alpha in enumerate(alphas)}
        return prediction

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the line: ``format`` first, then the keys in the order written since the first
        version (``source_group``, added later, last and only when recorded: a line of format 1 without it
        reads and writes back the same)."""
        return {
            "format": FORMAT,
            "pair_id": self.pair_id,
            "category": self.category,
            "source_keypoints": self.source_keypoints,
            "predicted_keypoints": self.predicted_keypoints,
            "target_keypoints": self.target_keypoints,
            "threshold": self.threshold,
            "pck_scale": self.pck_scale,
            "groups": self.groups,
            "references": self.references,
            "layer_predictions": self.layer_predictions,
            "correct": self.correct_flags,
            **({"source_group": self.source_group} if self.source_group is not None else {}),
            **self.extra,
        }

    @classmethod
    def from_json(cls, line: Any) -> Prediction:
        """A prediction from the JSON object of a line.

        Raises:
            ValueError: not an object, or a required key (see :data:`REQUIRED`) is missing;
                :class:`FormatError`: another format (see :func:`check_format`). The caller names the
                file and line (see :meth:`sdcorr.runs.folder.RunFolder.predictions`).
        """
        check_format(line, "a prediction line")
        missing = [key for key in REQUIRED if key not in line]
        if missing:
            raise ValueError(f"expected the keys {list(REQUIRED)} but {missing} are missing")
        known = {field.name for field in dataclasses.fields(cls)} - {"correct_flags", "extra"}
        fields = {key: value for key, value in line.items() if key in known}
        extra = {key: value for key, value in line.items() if key not in known and key not in ("correct", "format")}
        if fields.get("pck_scale") is None:
            fields.pop("pck_scale", None)
        for key in ("groups", "references"):
            if fields.get(key) is None:
                fields.pop(key, None)
        return cls(**fields, correct_flags=line.get("correct"), extra=extra)

    @property
    def cluster(self) -> str:
        """The unit the bootstrap intervals resample this pair with: its source image, or the pair alone
        when none is recorded (see :mod:`sdcorr.stats.intervals`)."""
        return f"image:{self.source_group}" if self.source_group is not None else f"pair:{self.pair_id}"

    def reference(self, threshold_mode: Optional[str] = None) -> tuple[Optional[float], list[float]]:
        """``(threshold, pck_scale)``: as run, or for another of the dataset's threshold modes.

        Raises:
            DataError: the dataset recorded no such threshold mode for this pair.
        """
        if threshold_mode is None:
            return self.threshold, self.pck_scale
        if threshold_mode not in self.references:
            raise DataError(
                f"pair {self.pair_id!r}: no threshold {threshold_mode!r} recorded; "
                f"this dataset's predictions have {sorted(self.references) or 'only the threshold they ran with'}"
            )
        entry = self.references[threshold_mode]
        return entry["threshold"], entry["pck_scale"]

    def scored(self, threshold_mode: Optional[str] = None) -> bool:
        """Whether PCK applies: the pair has ground truth and a threshold."""
        return self.target_keypoints is not None and self.reference(threshold_mode)[0] is not None

    def tensors(
        self, points: Points, threshold_mode: Optional[str] = None, device: Any = "cpu"
    ) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(preds [1, N, 2], target [1, N, 2], threshold [1], scale [1, 2])`` float32 of ``points``
        (the predicted keypoints or one layer's), ready for :class:`sdcorr.stats.pck.PCK`; None if unscored."""
        if not self.scored(threshold_mode):
            return None
        threshold, scale = self.reference(threshold_mode)
        return (
            torch.tensor([points], dtype=torch.float32, device=device),
            torch.tensor([self.target_keypoints], dtype=torch.float32, device=device),
            torch.tensor([threshold], dtype=torch.float32, device=device),
            torch.tensor([scale], dtype=torch.float32, device=device),
        )

    def correct(self, alphas: Sequence[float], threshold_mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """``[N, A]`` bool: which predicted keypoints are correct at each alpha; None if unscored."""
        args = self.tensors(self.predicted_keypoints, threshold_mode)
        if args is None:
            return None
        preds, target, threshold, scale = args
        return pck_correct(preds, target, threshold, list(alphas), scale)[0]
