"""PCK (percentage of correct keypoints): a functional core and a thin torchmetrics class.

A keypoint is correct at ``alpha`` when ``|| (pred - target) * scale ||_2 <= alpha * threshold``.
``threshold`` comes from the datamodule (for example the max side of the target bounding box) and
``scale`` maps pixel offsets into the space the threshold is measured in (``(1, 1)`` when both are
in target-image pixels). Two averages:

* per image: the PCK of each pair, then the mean over pairs (the paper's number);
* per point: all correct keypoints over all keypoints.

Pairs with no valid keypoint are left out of both. Values are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from sdcorr.errors import OptionError
from sdcorr.stats.intervals import MIN_PAIRS, pck_intervals


def check_alphas(owner: object, alphas: Sequence[float]) -> None:
    """Raise :class:`OptionError` naming ``owner``'s ``alphas`` unless they are a non-empty list of fractions in
    (0, 1] of the reference length (a larger one counts points farther off than the object is large)."""
    if not alphas or any(not 0 < a <= 1 for a in alphas):
        problem = "expected a non-empty list of PCK fractions in (0, 1] of the reference length"
        raise OptionError(owner, "alphas", f"{problem}; got {list(alphas)}")


def _check_inputs(preds: Tensor, target: Tensor, threshold: Tensor, mask: Tensor) -> None:
    if preds.shape != target.shape or preds.dim() != 3 or preds.shape[-1] != 2:
        raise ValueError(
            f"Expected preds and target of shape [B, N, 2] but got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    if threshold.shape != preds.shape[:1]:
        raise ValueError(f"Expected threshold of shape [B] = [{preds.shape[0]}] but got {tuple(threshold.shape)}")
    if mask.shape != preds.shape[:2]:
        raise ValueError(f"Expected mask of shape [B, N] = {list(preds.shape[:2])} but got {tuple(mask.shape)}")
    if not torch.all(threshold[mask.any(dim=1)] > 0):
        raise ValueError("Expected every threshold of a pair with keypoints to be > 0")


def pck_correct(
    preds: Tensor,
    target: Tensor,
    threshold: Tensor,
    alphas: Sequence[float],
    scale: Optional[Tensor] = None,
) -> Tensor:
    """Which keypoints are correct at each alpha.

    Args:
        preds: ``[B, N, 2] (x, y)`` predicted keypoints.
        target: ``[B, N, 2] (x, y)`` ground truth.
        threshold: ``[B]`` reference length per pair.
        alphas: ``A`` fractions of the threshold.
        scale: ``[B, 2]`` per-axis factor applied to offsets before the norm (default ones).

    Returns:
        ``[B, N, A]`` bool.

    Example:
        >>> preds = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
        >>> pck_correct(preds, torch.zeros(1, 2, 2), torch.tensor([50.0]), [0.05, 0.1])
        tensor([[[ True,  True],
                 [False,  True]]])
    """
    offset = preds - target
    if scale is not None:
        offset = offset * scale[:, None, :]
    distance = offset.norm(dim=-1)  # [B, N]
    limits = threshold[:, None, None] * torch.as_tensor(alphas, dtype=distance.dtype, device=distance.device)
    return distance[..., None] <= limits


def _pck_update(
    preds: Tensor, target: Tensor, threshold: Tensor, mask: Tensor, alphas: Sequence[float], scale: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per pair: correct counts ``[B, A]`` and valid counts ``[B]``."""
    _check_inputs(preds, target, threshold, mask)
    correct = pck_correct(preds.float(), target.float(), threshold.float(), alphas, scale) & mask[..., None]
    return correct.sum(dim=1).float(), mask.sum(dim=1).float()


def _pck_compute(correct: Tensor, total: Tensor) -> dict[str, Tensor]:
    """``{"per_image": [A], "per_point": [A]}`` from per-pair counts; NaN when there is no keypoint."""
    keep = total > 0
    correct, total = correct[keep], total[keep]
    if total.numel() == 0:
        nan = torch.full((correct.shape[-1],), float("nan"), device=correct.device)
        return {"per_image": nan, "per_point": nan.clone()}
    return {
        "per_image": (correct / total[:, None]).mean(dim=0),
        "per_point": correct.sum(dim=0) / total.sum(),
    }


def pck(
    preds: Tensor,
    target: Tensor,
    threshold: Tensor,
    mask: Optional[Tensor] = None,
    alphas: Sequence[float] = (0.05, 0.1),
    scale: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """PCK per image and per point for a batch of pairs.

    Args:
        preds, target: ``[B, N, 2] (x, y)``.
        threshold: ``[B]``.
        mask: ``[B, N]`` valid keypoints (padding is False); default all valid.
        alphas: fractions of the threshold.
        scale: ``[B, 2]`` see :func:`pck_correct`.

    Returns:
        ``{"per_image": [A], "per_point": [A]}``.

    Example:
        >>> preds = torch.tensor([[[0.0, 0.0], [9.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> mask = torch.tensor([[True, True], [True, False]])
        >>> out = pck(preds, torch.zeros(2, 2, 2), torch.tensor([100.0, 100.0]), mask, alphas=[0.05])
        >>> out["per_image"], out["per_point"]
        (tensor([0.7500]), tensor([0.6667]))
    """
    mask = torch.ones(preds.shape[:2], dtype=torch.bool, device=preds.device) if mask is None else mask.bool()
    return _pck_compute(*_pck_update(preds, target, threshold, mask, alphas, scale))


def category_id(name: str) -> int:
    """A stable integer for a category name, so categories can be synced as tensors across processes."""
    return zlib.crc32(name.encode("utf-8"))


#: the cluster id of a pair added without a cluster label: it is a cluster of its own
ALONE = -1


def cluster_id(label: str) -> int:
    """A stable integer in ``[0, 2**63)`` for a cluster label (e.g. a source image), to sync as a tensor."""
    return int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big") >> 1


class PCK(Metric):
    """PCK at several alphas, per image and per point, overall and per category.

    ``compute()`` returns a nested dict: ``{"overall": {...}, "per_category": {name: {...}},
    "unscored_pairs": int}`` where
    each ``{...}`` is ``{"num_pairs": int, "num_keypoints": int, "pck@<alpha>": {"per_image": float,
    "per_point": float}}``, with ``resamples``, also ``"per_image_interval"`` and ``"per_point_interval"``
    (``[low, high]``, see :func:`sdcorr.stats.intervals.pck_intervals`; pairs added with one cluster label,
    e.g. their source image, are resampled together). Under DDP the per-pair states are gathered (``cat``),
    so both averages, their intervals and the category breakdown are exact.

    Args:
        alphas: fractions of the threshold at which PCK is reported; default 0.05 and 0.1.
        resamples: bootstrap resamples of each figure's 95% interval; 0: no intervals. Rows of fewer than
            :data:`~sdcorr.stats.intervals.MIN_PAIRS` scored pairs (or clusters) get none (too few to resample).
            The resamples of a row are seeded by its name, so they depend on the order pairs were added: add
            them in a fixed order (results.json's are added by pair id, see :func:`sdcorr.runs.scoring.score`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, alphas: Sequence[float] = (0.05, 0.1), resamples: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_alphas(self, alphas)
        if resamples < 0:
            raise OptionError(self, "resamples", f"expected an integer >= 0; got {resamples}")
        self.alphas = list(alphas)
        self.resamples = resamples
        self.category_names: dict[int, str] = {}
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("total", default=[], dist_reduce_fx="cat")
        self.add_state("category", default=[], dist_reduce_fx="cat")
        self.add_state("cluster", default=[], dist_reduce_fx="cat")
        self.add_state("unscored", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        threshold: Tensor,
        mask: Optional[Tensor] = None,
        categories: Optional[Sequence[str]] = None,
        scale: Optional[Tensor] = None,
        clusters: Optional[Sequence[Optional[str]]] = None,
    ) -> None:
        """Add a batch of pairs: shapes as in :func:`pck`, ``categories`` one name per pair, ``clusters`` one
        label per pair (pairs of one label are resampled together; None, or no ``clusters``: the pair alone)."""
        mask = torch.ones(preds.shape[:2], dtype=torch.bool, device=preds.device) if mask is None else mask.bool()
        categories = list(categories) if categories is not None else ["all"] * preds.shape[0]
        clusters = list(clusters) if clusters is not None else [None] * preds.shape[0]
        if len(categories) != preds.shape[0] or len(clusters) != preds.shape[0]:
            raise ValueError(
                f"Expected {preds.shape[0]} categories and cluster labels but got {len(categories)} and {len(clusters)}"
            )
        correct, total = _pck_update(preds, target, threshold, mask, self.alphas, scale)
        ids = [category_id(name) for name in categories]
        self.category_names.update(zip(ids, categories))
        self.correct.append(correct)
        self.total.append(total)
        self.category.append(torch.tensor(ids, dtype=torch.long, device=correct.device))
        labels = [ALONE if label is None else cluster_id(label) for label in clusters]
        self.cluster.append(torch.tensor(labels, dtype=torch.long, device=correct.device))

    def skip(self, num_pairs: int = 1) -> None:
        """Count pairs that were predicted but cannot be scored (no ground truth); reported as ``unscored_pairs``."""
        self.unscored += num_pairs

    def sync(
        self,
        dist_sync_fn: Optional[Callable] = None,
        process_group: Optional[Any] = None,
        should_sync: bool = True,
        distributed_available: Optional[Callable] = None,
    ) -> None:
        """torchmetrics' :meth:`~torchmetrics.Metric.sync`, also for a process that scored no pair (fewer pairs
        than DDP processes): its states become empty tensors of the others' shapes and dtypes first.
        torchmetrics' own stand-in for an empty list state is 1-D and of the metric's dtype, which the gather
        cannot match with ``[P, A]`` counts or ``long`` ids (the processes would wait on each other)."""
        idle = isinstance(self.correct, list) and not self.correct
        if should_sync and idle and dist.is_available() and dist.is_initialized():
            self.correct.append(torch.zeros(0, len(self.alphas), device=self.device))
            self.total.append(torch.zeros(0, device=self.device))
            self.category.append(torch.zeros(0, dtype=torch.long, device=self.device))
            self.cluster.append(torch.zeros(0, dtype=torch.long, device=self.device))
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def _names(self) -> dict[int, str]:
        names = dict(self.category_names)
        if self.sync_on_compute and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, names)
            for other in gathered:
                names.update(other)
        return names

    def _summary(self, correct: Tensor, total: Tensor, name: str, cluster: Optional[Tensor] = None) -> dict:
        values = _pck_compute(correct, total)
        num_pairs = int((total > 0).sum())
        labels = None  # every pair alone: the same resamples as no labels
        if cluster is not None and bool((cluster != ALONE).any()):
            labels = [c if c != ALONE else ("alone", i) for i, c in enumerate(cluster.tolist())]
        units = num_pairs if labels is None else len({c for c, n in zip(labels, total.tolist()) if n > 0})
        # a bootstrap over a handful of pairs (or source images) claims far too much certainty (one: a zero width)
        enough = self.resamples and units >= MIN_PAIRS
        intervals = pck_intervals(correct.cpu(), total.cpu(), self.resamples, name, labels) if enough else None
        out = {"num_pairs": num_pairs, "num_keypoints": int(total.sum())}
        for i, alpha in enumerate(self.alphas):
            entry = out[f"pck@{alpha:g}"] = {kind: float(values[kind][i]) for kind in ("per_image", "per_point")}
            for kind in ("per_image", "per_point") if intervals else ():
                entry[f"{kind}_interval"] = intervals[kind][i].tolist()
        return out

    def compute(self) -> dict:
        """The nested results dict described in the class docstring."""
        names = self._names()
        # states are lists before a sync and tensors after; an empty sync gives 1-D empty tensors
        states = [self.correct, self.total, self.category, self.cluster]
        if isinstance(self.correct, list) and not self.correct:
            states = [torch.zeros(0), torch.zeros(0)] + [torch.zeros(0, dtype=torch.long)] * 2
        correct, total, category, cluster = (dim_zero_cat(state) for state in states)
        correct = correct.reshape(-1, len(self.alphas))
        per_category = {}
        for cid in sorted(set(category.tolist()), key=lambda c: names.get(c, str(c))):
            keep = category == cid
            name = names.get(cid, str(cid))
            per_category[name] = self._summary(correct[keep], total[keep], name, cluster[keep])
        return {
            "overall": self._summary(correct, total, "overall", cluster),
            "per_category": per_category,
            "unscored_pairs": int(self.unscored),
        }
