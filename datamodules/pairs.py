"""The user's own image pairs, listed in a small JSON file.

Format (paths relative to the JSON file's folder; only ``source``, ``target`` and
``source_keypoints`` are required)::

    {"pairs": [
      {"id": "cat-1",                                   # default: "<index>"
       "source": "cat_a.jpg", "target": "cat_b.jpg",
       "source_keypoints": [[x, y], ...],               # source-image pixels
       "target_keypoints": [[x, y], ...],               # optional ground truth, same length
       "target_bbox": [x1, y1, x2, y2],                 # optional: PCK threshold = its max side
       "category": "cat"}                               # default: "all"
    ]}

PCK threshold: the max side of ``target_bbox`` when given, else the max side of the bounding box of
the target keypoints (as PF-Willow does), in target pixels. Pairs without ``target_keypoints`` are
predicted but not scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.base import DataError, PairDataModule, first_outside, image_size, sample_from_record


def _points(value: Any, where: str) -> torch.Tensor:
    try:
        points = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: expected a list of [x, y] numbers ({error})") from error
    if points.dim() != 2 or points.shape[1] != 2 or points.shape[0] == 0 or not torch.isfinite(points).all():
        raise DataError(f"{where}: expected a non-empty list of finite [x, y] pairs, got shape {list(points.shape)}")
    return points


def _inside(points: torch.Tensor, size: tuple[int, int], where: str) -> None:
    w, h = size
    i = first_outside(points, (w, h))
    if i is not None:
        raise DataError(f"{where}[{i}] = {points[i].tolist()} lies outside the {w}x{h} image")


class PairsDataset(Dataset):
    """Pairs read from a JSON file; see the module docstring for the format.

    Args:
        pairs_file: path of the JSON file.
    """

    def __init__(self, pairs_file: str | Path) -> None:
        self.file = Path(pairs_file)
        try:
            content = json.loads(self.file.read_text())
        except FileNotFoundError as error:
            raise DataError(f"{self.file}: pairs file not found") from error
        except json.JSONDecodeError as error:
            raise DataError(f"{self.file}: not valid JSON ({error})") from error
        entries = content.get("pairs") if isinstance(content, dict) else content
        if not isinstance(entries, list) or not entries:
            raise DataError(f'{self.file}: expected {{"pairs": [...]}} with at least one pair')
        self.pairs = [self._parse(i, entry) for i, entry in enumerate(entries)]
        ids = [pair["pair_id"] for pair in self.pairs]
        if len(set(ids)) != len(ids):
            raise DataError(f"{self.file}: pair ids are not unique")

    def _parse(self, index: int, entry: Any) -> dict[str, Any]:
        where = f"{self.file}: pairs[{index}]"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object")
        for key in ("source", "target", "source_keypoints"):
            if key not in entry:
                raise DataError(f"{where}: missing field '{key}'")
        folder = self.file.parent
        pair = {
            "pair_id": str(entry.get("id", index)),
            "category": str(entry.get("category", "all")),
            "source_path": folder / entry["source"],
            "target_path": folder / entry["target"],
        }
        source_kps = _points(entry["source_keypoints"], f"{where}.source_keypoints")
        _inside(source_kps, image_size(pair["source_path"]), f"{where}.source_keypoints")
        target_size = image_size(pair["target_path"])
        target_kps = None
        if entry.get("target_keypoints") is not None:
            target_kps = _points(entry["target_keypoints"], f"{where}.target_keypoints")
            if len(target_kps) != len(source_kps):
                raise DataError(f"{where}: {len(source_kps)} source_keypoints but {len(target_kps)} target_keypoints")
            _inside(target_kps, target_size, f"{where}.target_keypoints")
        threshold = None
        if entry.get("target_bbox") is not None:
            box = entry["target_bbox"]
            if not (isinstance(box, list) and len(box) == 4 and box[2] > box[0] and box[3] > box[1]):
                raise DataError(f"{where}.target_bbox: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {box}")
            threshold = float(max(box[2] - box[0], box[3] - box[1]))
        elif target_kps is not None:
            extent = target_kps.max(dim=0).values - target_kps.min(dim=0).values
            threshold = float(extent.max())
            if threshold <= 0:
                raise DataError(f"{where}: target keypoints span no extent; give target_bbox for the PCK threshold")
        pair.update(
            source_keypoints=source_kps, target_keypoints=target_kps, threshold=threshold, num_keypoints=len(source_kps)
        )
        return pair

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return sample_from_record(self.pairs[index])


class PairsDataModule(PairDataModule):
    """Your own image pairs (see :mod:`datamodules.pairs` for the JSON format).

    Args:
        root: folder holding the pairs file; image paths in it are relative to the file.
        pairs_file: name of the JSON file inside ``root``.
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(self, root: str, pairs_file: str = "pairs.json", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.pairs_file = pairs_file

    def read_pairs(self) -> list[dict[str, Any]]:
        return PairsDataset(Path(self.root) / self.pairs_file).pairs
