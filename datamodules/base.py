"""What every datamodule yields, and the behaviour they share.

A sample is one image pair, a dict:

======================  ==========================  ==============================================
key                     value                       meaning
======================  ==========================  ==============================================
pair_id                 str                         unique within the dataset
category                str                         used for the per-category PCK table
source_image            ``[3, H_s, W_s]`` float     RGB in [0, 1], original size
target_image            ``[3, H_t, W_t]`` float     RGB in [0, 1], original size
source_keypoints        ``[N, 2]`` float            ``(x, y)`` in source pixels
target_keypoints        ``[N, 2]`` float or None    ``(x, y)`` in target pixels; None: no ground truth
threshold               scalar float or None        PCK reference length (see ``pck_scale``)
pck_scale               ``[2]`` float               per-axis factor from target pixels to the
                                                    threshold's space; ones when the threshold is in
                                                    target pixels
references              dict, optional              every threshold mode the dataset defines,
                                                    ``{mode: {"threshold", "pck_scale"}}``, so
                                                    ``sdcorr evaluate`` can switch modes afterwards
groups                  dict[str, str], optional    extra breakdowns of PCK, e.g. SPair's
                                                    ``{"occlusion": "1", ...}``
source_image_id         str or None, optional       identity of the source image: the digest of
                                                    its file's bytes (the record's ``source_group``,
                                                    see :mod:`datamodules.schedule`); pairs that
                                                    show one image share its dense features, and
                                                    intervals resample them together
target_image_id         str or None, optional       the same for the target image
class_name              str or None, optional       the object's class in words, for sources that
                                                    prompt with it (DIFT's ``"a photo of a {}"``):
                                                    SPair's category folder name, PF-Willow's
                                                    class without its ``(G)`` suffix, CUB ``bird``
source_group_keypoints  ``[M, 2]`` float, optional  every distinct source keypoint of the run's
                                                    selected pairs with this source image (before
                                                    sharding), for batching fits by source image
rematch                 bool, optional              set by the datamodule (see
                                                    :meth:`PairDataModule.rematch`): a pair an
                                                    earlier run finished, matched again for its
                                                    pictures only: not scored or recorded again
======================  ==========================  ==============================================

Batches are lists of samples (images differ in size), see :func:`collate_pairs`.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.schedule import GROUP, GROUP_KEYPOINTS, TARGET_GROUP, add_group_keypoints, file_digest, split
from sdcorr.errors import DataError, OptionError
from sdcorr.images import MIN_IMAGE_SIDE, first_outside, image_dimensions, load_image
from sdcorr.paths import bundled

__all__ = [
    "DataError",
    "MIN_IMAGE_SIDE",
    "PairDataModule",
    "PairListDataset",
    "collate_pairs",
    "first_outside",
    "image_dimensions",
    "load_image",
    "sample_from_record",
]


def sample_from_record(
    pair: dict[str, Any], source_image: Optional[Tensor] = None, target_image: Optional[Tensor] = None
) -> dict[str, Any]:
    """The sample dict (see the module docstring) of a standard pair record; reads the images not given.

    Raises:
        DataError: a threshold (or a ``references`` threshold) that is not a finite positive length.
    """
    for mode, entry in [(None, pair)] + list((pair.get("references") or {}).items()):
        value = entry["threshold"]
        if value is not None and not (math.isfinite(float(value)) and float(value) > 0):
            name = "threshold" if mode is None else f"references.{mode}.threshold"
            raise DataError(
                f"pair {pair['pair_id']!r}: {name} {float(value)} is not a finite positive length "
                "(PCK would be meaningless); check its bounding box or keypoints"
            )
    sample = {
        "pair_id": pair["pair_id"],
        "category": pair["category"],
        "source_image": load_image(pair["source_path"]) if source_image is None else source_image,
        "target_image": load_image(pair["target_path"]) if target_image is None else target_image,
        "source_keypoints": pair["source_keypoints"],
        "target_keypoints": pair["target_keypoints"],
        "threshold": None if pair["threshold"] is None else torch.tensor(float(pair["threshold"])),
        "pck_scale": torch.as_tensor(pair.get("pck_scale", (1.0, 1.0)), dtype=torch.float32),
    }
    if pair.get("groups"):
        sample["groups"] = dict(pair["groups"])
    for key, field in (("source_image_id", GROUP), ("target_image_id", TARGET_GROUP), ("class_name", "class_name")):
        if pair.get(field) is not None:
            sample[key] = str(pair[field])
    if pair.get(GROUP_KEYPOINTS) is not None:
        sample[GROUP_KEYPOINTS] = pair[GROUP_KEYPOINTS]
    if pair.get("references"):
        sample["references"] = {
            mode: {"threshold": float(entry["threshold"]), "pck_scale": [float(v) for v in entry["pck_scale"]]}
            for mode, entry in pair["references"].items()
        }
    return sample


#: the index an idle DDP process's sampler yields (it has no pair): :class:`PairListDataset` gives None for it
#: and :func:`collate_pairs` leaves that out, so the process runs one empty batch (see
#: :class:`UnpaddedDistributedSampler`)
IDLE = -1


def load_declared_images(pair: dict[str, Any], declared: Callable[[str, int, int], str]) -> dict[str, Tensor]:
    """Both images of a record (``{side}_path``), each checked against the ``(W, H)`` its annotation declares
    (``{side}_size``): ``{"source": ..., "target": ...}``, ``[3, H, W]`` in [0, 1].

    Args:
        pair: the record.
        declared: ``declared(side, w, h)`` says where the size is declared, for the message.

    Raises:
        DataError: ``<image>: decoded image is WxH (W x H) but <declared(...)>``.
    """
    images = {}
    for side in ("source", "target"):
        image = load_image(pair[f"{side}_path"])
        w, h = pair[f"{side}_size"]
        if (image.shape[2], image.shape[1]) != (w, h):
            raise DataError(
                f"{pair[f'{side}_path']}: decoded image is {image.shape[2]}x{image.shape[1]} (W x H) but "
                f"{declared(side, w, h)}"
            )
        images[side] = image
    return images


def csv_pair_rows(file: Path, num_columns: int) -> list[tuple[int, int, list[str]]]:
    """The data rows of a pair-list CSV file with a header row (PF-Willow's, PF-Pascal's), as
    ``(index, line, cells)``: the 0-based data row, the 1-based line of the file (the header is line 1) and
    its cells.

    Raises:
        DataError: naming the file (and the line): fewer than a header and one row, or a row without
            ``num_columns`` cells.
    """
    with open(file, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{file}: expected a header row and at least one pair row, got {len(rows)} rows")
    out = []
    for index, row in enumerate(rows[1:]):
        if len(row) != num_columns:
            raise DataError(f"{file}: row {index + 2}: expected {num_columns} columns, got {len(row)}")
        out.append((index, index + 2, row))
    return out


def collate_pairs(batch: list[Optional[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Keep a batch as a list of sample dicts (pairs have different image sizes and keypoint counts); an idle
    process's placeholder (None, see :data:`IDLE`) is left out: its batch is the empty list."""
    return [sample for sample in batch if sample is not None]


#: the sample key of a pair matched again for its pictures only (see :meth:`PairDataModule.rematch`)
REMATCH = "rematch"


class PairListDataset(Dataset):
    """Lightweight pair records, turned into sample dicts (images loaded) on access; the samples of the
    ``rematch`` ids carry ``"rematch": True``; :data:`IDLE` gives None."""

    def __init__(
        self,
        pairs: list[dict[str, Any]],
        load: Callable[[dict[str, Any]], dict[str, Any]],
        rematch: frozenset[str] = frozenset(),
    ) -> None:
        self.pairs, self.load, self.rematch = pairs, load, rematch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        if index == IDLE:
            return None
        sample = self.load(self.pairs[index])
        if self.rematch and sample["pair_id"] in self.rematch:
            sample[REMATCH] = True
        return sample


class UnpaddedDistributedSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` gets its part of :func:`~datamodules.schedule.split`: each pair once.

    Whole source-image groups go to one process, balanced by keypoints, so no two processes fit the
    same source keypoint. Lightning's default distributed sampler pads the dataset by repeating pairs
    so every process gets the same number, which would score some pairs twice. Being a
    ``DistributedSampler``, this one is left in place by Lightning.

    With fewer pairs than processes, the last processes have none: each gets one empty batch (the index
    :data:`IDLE`) instead. Lightning skips the whole test loop of a process without batches, hooks
    included, so it would miss the collective steps of the others (the metric's gather, the run
    folder's barrier) and leave them waiting; with its empty batch it runs them all. With no pair at
    all (a resumed run with every pair done) no process gets a batch: every loop is skipped alike.
    """

    def __init__(self, dataset: PairListDataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.indices = split(dataset.pairs, num_replicas)[rank] or ([IDLE] if dataset.pairs else [])
        self.num_samples = len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PairDataModule(LightningDataModule):
    """Shared behaviour of every datamodule: reading, filtering, subsampling and sharding pairs.

    A subclass implements :meth:`read_pairs` (cheap records, no image decoding: ``pair_id``,
    ``category``, ``num_keypoints`` and whatever :meth:`load_sample` needs) and :meth:`load_sample`
    (record -> sample dict, see the module docstring). ``setup`` then keeps the chosen categories,
    handles pairs without keypoints, draws the seeded subsample and finally takes this shard, in
    that order: shards of a subsample partition it. Pairs come grouped by source image (see
    :mod:`datamodules.schedule`): shards and DDP processes get whole source images, so a matcher
    that reuses fits does each once.

    What the run's callbacks ask of it (after ``setup``): :meth:`describe` (the data part of the run's
    fingerprint), :meth:`selected_ids` and the records :attr:`selected` (the pairs of the run),
    :meth:`exclude` (a resumed run leaves out the pairs done), :meth:`rematch` (but matches again those
    whose pictures are missing) and :meth:`pending` (the pairs still to match).

    Args:
        root: dataset folder.
        categories: keep only these categories (default: all).
        subsample: keep this many pairs, drawn at random with ``subsample_seed`` (default: all).
        subsample_seed: seed of the subsample draw.
        shard_index: which shard this run evaluates, ``0 <= shard_index < num_shards``.
        num_shards: split the pairs into this many disjoint shards: all pairs of a source image go to
            one shard, and shards get about the same number of keypoints.
        empty_pairs: pairs with no keypoint (e.g. no part visible in both images): ``skip`` them and
            count them in results.json, or stop with an ``error``.
        batch_size: pairs per ``test_step`` call.
        num_workers: DataLoader worker processes that read images.
    """

    _done: frozenset[str] = frozenset()  # the pairs done (see exclude)
    _rematch: frozenset[str] = frozenset()  # the pairs to match again for pictures (see rematch)

    def __init__(
        self,
        root: str,
        categories: Optional[list[str]] = None,
        subsample: Optional[int] = None,
        subsample_seed: int = 0,
        shard_index: int = 0,
        num_shards: int = 1,
        empty_pairs: Literal["skip", "error"] = "skip",
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= shard_index < num_shards:
            problem = f"expected 0 <= shard_index < num_shards; got {shard_index} with num_shards {num_shards}"
            raise OptionError(self, "shard_index" if num_shards >= 1 else "num_shards", problem)
        if subsample is not None and subsample < 1:
            raise OptionError(self, "subsample", f"expected a number of pairs >= 1; got {subsample}")
        if batch_size < 1:
            raise OptionError(self, "batch_size", f"expected a number of pairs >= 1; got {batch_size}")
        if num_workers < 0:
            raise OptionError(self, "num_workers", f"expected a number of processes >= 0; got {num_workers}")
        # absolute and resolved, so a run folder records where the data is, whatever the working directory;
        # a bundled dataset (the demo pairs) is found from any folder
        self.root = str(bundled(Path(root).expanduser()).resolve())
        self.categories = list(categories) if categories else None
        self.subsample = subsample
        self.subsample_seed = subsample_seed
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.empty_pairs = empty_pairs
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset: Optional[PairListDataset] = None
        #: the pair records this run is responsible for (after selection and sharding), set by ``setup``
        self.selected: Optional[list[dict[str, Any]]] = None
        self.skipped: dict[str, int] = {}
        self._digests: dict[str, str] = {}

    def read_pairs(self) -> list[dict[str, Any]]:
        """All pair records of the dataset, in a fixed order; may raise :class:`DataError`."""
        raise NotImplementedError

    def load_sample(self, pair: dict[str, Any]) -> dict[str, Any]:
        """The sample dict of one record (reads the images); may raise :class:`DataError`.

        The default reads a standard record: ``source_path``/``target_path``, keypoints, ``threshold``
        (float or None), optional ``pck_scale`` (default ones) and ``groups``.
        """
        return sample_from_record(pair)

    def describe(self) -> dict[str, Any]:
        """What results.json records about the data: class, root, selection and skipped pairs."""
        return {
            "datamodule": type(self).__name__,
            "root": str(self.root),
            "categories": self.categories,
            "subsample": self.subsample,
            "shard": [self.shard_index, self.num_shards],
            "num_pairs": None if self.selected is None else len(self.selected),
            "skipped": dict(self.skipped),
        }

    def source_group(self, pair: dict[str, Any], side: str = "source") -> Optional[str]:
        """Which source image a record's pair has: the digest of its ``source_path`` file's bytes.

        Pairs of one group go to one process. None (no ``source_path``): the pair is a group of its
        own; override for records that name their source image otherwise. ``side="target"``: the same
        for the target image (``target_path``), the sample's ``target_image_id``.
        """
        if pair.get(f"{side}_path") is None:
            return None
        path = str(pair[f"{side}_path"])
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def select(self, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Category filter, empty-pair policy, subsample, shard; grouped by source image (see the class docstring)."""
        if self.categories is not None:
            known = sorted({p["category"] for p in pairs})
            unknown = [c for c in self.categories if c not in known]
            if unknown:
                raise DataError(f"{self.root}: unknown categories {unknown}; this dataset has {known}")
            pairs = [p for p in pairs if p["category"] in self.categories]
        empty = [p for p in pairs if p["num_keypoints"] == 0]
        if empty and self.empty_pairs == "error":
            raise DataError(f"{self.root}: pair {empty[0]['pair_id']} has no keypoint (set empty_pairs: skip)")
        self.skipped = {"no_keypoints": len(empty)} if empty else {}
        pairs = [p for p in pairs if p["num_keypoints"] > 0]
        if self.subsample is not None and self.subsample < len(pairs):
            chosen = sorted(random.Random(self.subsample_seed).sample(range(len(pairs)), self.subsample))
            pairs = [pairs[i] for i in chosen]
        for pair in pairs:
            pair[GROUP] = self.source_group(pair)
            pair[TARGET_GROUP] = self.source_group(pair, "target")
        add_group_keypoints(pairs)  # over the whole selection: the same for every shard, process and resume
        return [pairs[i] for i in split(pairs, self.num_shards)[self.shard_index]]

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            if not Path(self.root).exists():
                raise DataError(f"{self.root}: dataset folder not found (set --data.root)")
            self.selected = self.select(self.read_pairs())
            self.dataset = PairListDataset(self.selected, self.load_sample)

    def _require_setup(self) -> list[dict[str, Any]]:
        if self.selected is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for its pairs")
        return self.selected

    def selected_ids(self) -> list[str]:
        """Ids of the pairs this run is responsible for (:attr:`selected`, after selection and sharding),
        in run order; a resumed run's done pairs included. Needs ``setup``."""
        return [pair["pair_id"] for pair in self._require_setup()]

    def exclude(self, pair_ids: set[str]) -> None:
        """Leave out pairs already done (a resumed run); they stay in :attr:`selected` and ``describe``."""
        self._done = frozenset(pair_ids)
        self._refresh()

    def rematch(self, pair_ids: set[str]) -> None:
        """Match these pairs even if :meth:`exclude` left them out as done: a resumed run draws the
        pictures an interrupted one did not (the model runs only in the test loop). Their samples carry
        ``"rematch": True``: the module scores them once (the earlier run's line counts) and the run
        folder's writer records no second line. Independent of the order of the two calls; ids of pairs
        not done are pending anyway, and unknown ids are ignored."""
        self._rematch = frozenset(pair_ids)
        self._refresh()

    def _refresh(self) -> None:
        selected = self._require_setup()
        again = self._done & self._rematch
        pending = [p for p in selected if p["pair_id"] not in self._done or p["pair_id"] in again]
        self.dataset = PairListDataset(pending, self.load_sample, again)

    def pending(self) -> list[dict[str, Any]]:
        """The pair records this run will still match: :attr:`selected` less what :meth:`exclude` left out
        (and :meth:`rematch` did not put back; every process's pairs together). Needs ``setup``."""
        self._require_setup()
        return list(self.dataset.pairs)

    def _loader(self) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnpaddedDistributedSampler(self.dataset, dist.get_world_size(), dist.get_rank())
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
