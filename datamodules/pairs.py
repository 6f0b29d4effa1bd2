"""The user's own image pairs, listed in a small JSON file.

Format (paths relative to the JSON file's folder; only ``source``, ``target`` and
``source_keypoints`` are required)::

    {"pairs": [
      {"id": "cat-1",                                   # default: "<index>"
       "source": "cat_a.jpg", "target": "cat_b.jpg",
       "source_keypoints": [[x, y], ...],               # source-image pixels
       "target_keypoints": [[x, y], ...],               # optional ground truth, same length
       "target_bbox": [x1, y1, x2, y2],                 # optional: PCK threshold = its max side
       "category": "cat"}                               # default: "all"; also the class that
                                                        # prompting sources name (DIFT), else none
    ]}

PCK threshold: the max side of ``target_bbox`` when given (the box must lie inside the target
image), else the max side of the bounding box of the target keypoints (as PF-Willow does), in target
pixels. Pairs without ``target_keypoints`` are predicted but not scored. A field not listed here is an
error (a misspelt ``target_keypoint`` would otherwise leave the pair unscored); ``null`` counts as
absent for the optional fields.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.base import DataError, PairDataModule, sample_from_record
from sdcorr.images import first_outside, image_dimensions

#: the fields of a pair and what each holds; any other field is refused (a misspelt one would be ignored)
FIELDS = {
    "id": "a string or integer",
    "source": "an image path (string)",
    "target": "an image path (string)",
    "source_keypoints": "a non-empty list of [x, y] numbers",
    "target_keypoints": "a list of [x, y] numbers, as many as source_keypoints",
    "target_bbox": "[x1, y1, x2, y2] numbers with x2 > x1 and y2 > y1, inside the target image",
    "category": "a string",
}
REQUIRED = ("source", "target", "source_keypoints")


def _is_number(value: Any) -> bool:
    """A JSON number that is a finite real (booleans, strings and NaN or Infinity are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unknown(name: str, known: list[str]) -> str:
    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{guess[0]}'? " if guess else ""
    return f"unknown field '{name}' ({hint}known fields: {', '.join(known)})"


def _points(value: Any, where: str) -> torch.Tensor:
    """``[[x, y], ...]`` of finite numbers -> ``[N, 2]`` float32; anything else is a :class:`DataError`."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected {FIELDS['source_keypoints']}, got {json.dumps(value)[:80]}")
    for i, point in enumerate(value):
        if not (isinstance(point, list) and len(point) == 2 and all(map(_is_number, point))):
            raise DataError(f"{where}[{i}]: expected [x, y] with two finite numbers, got {json.dumps(point)[:80]}")
    return torch.tensor(value, dtype=torch.float32)


def _inside(points: torch.Tensor, size: tuple[int, int], where: str) -> None:
    w, h = size
    i = first_outside(points, (w, h))
    if i is not None:
        raise DataError(f"{where}[{i}] = {points[i].tolist()} lies outside the {w}x{h} image")


def _bbox_threshold(box: Any, size: tuple[int, int], where: str) -> float:
    """The PCK threshold of ``target_bbox``: its max side; the box must be a proper box inside the image."""
    w, h = size
    if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
        raise DataError(f"{where}: expected {FIELDS['target_bbox']}, got {json.dumps(box)[:80]}")
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise DataError(f"{where}: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {box}")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise DataError(f"{where}: {box} is not inside the {w}x{h} target image")
    return float(max(x2 - x1, y2 - y1))


class PairsDataset(Dataset):
    """Pairs read from a JSON file; see the module docstring for the format.

    Every field is checked: unknown fields are refused with the nearest known name, each value must
    have its type (see :data:`FIELDS`; booleans are not numbers), keypoints and the box must lie in
    their images, and pair ids must be unique. Messages name the file, the pair and the field.

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
        if isinstance(content, dict):
            for key in content:
                if key != "pairs":
                    raise DataError(f"{self.file}: {_unknown(key, ['pairs'])}")
        entries = content.get("pairs") if isinstance(content, dict) else content
        if not isinstance(entries, list) or not entries:
            raise DataError(f'{self.file}: expected {{"pairs": [...]}} with at least one pair')
        self.pairs = [self._parse(i, entry) for i, entry in enumerate(entries)]
        seen: dict[str, int] = {}
        for index, pair in enumerate(self.pairs):
            if pair["pair_id"] in seen:
                raise DataError(
                    f"{self.file}: pairs[{index}] and pairs[{seen[pair['pair_id']]}] have the same id "
                    f"{pair['pair_id']!r}; pair ids must be unique"
                )
            seen[pair["pair_id"]] = index

    def _parse(self, index: int, entry: Any) -> dict[str, Any]:
        where = f"{self.file}: pairs[{index}]"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object")
        for key in entry:
            if key not in FIELDS:
                raise DataError(f"{where}: {_unknown(key, list(FIELDS))}")
        if "id" in entry and (isinstance(entry["id"], bool) or not isinstance(entry["id"], (str, int))):
            raise DataError(f"{where}.id: expected {FIELDS['id']}, got {json.dumps(entry['id'])[:80]}")
        where = f"{self.file}: pair {str(entry.get('id', index))!r}, pairs[{index}]"
        for key in REQUIRED:
            if key not in entry:
                raise DataError(f"{where}: missing field '{key}'")
        for key in ("source", "target", "category"):
            if key in entry and not (isinstance(entry[key], str) and entry[key]):
                raise DataError(f"{where}.{key}: expected {FIELDS[key]}, got {json.dumps(entry[key])[:80]}")
        folder = self.file.parent
        pair = {
            "pair_id": str(entry.get("id", index)),
            "category": str(entry.get("category", "all")),
            "class_name": entry.get("category"),  # what a prompting source names (None: no category given)
            "source_path": folder / entry["source"],
            "target_path": folder / entry["target"],
        }
        source_kps = _points(entry["source_keypoints"], f"{where}.source_keypoints")
        _inside(source_kps, image_dimensions(pair["source_path"]), f"{where}.source_keypoints")
        target_size = image_dimensions(pair["target_path"])
        target_kps = None
        if entry.get("target_keypoints") is not None:
            target_kps = _points(entry["target_keypoints"], f"{where}.target_keypoints")
            if len(target_kps) != len(source_kps):
                raise DataError(f"{where}: {len(source_kps)} source_keypoints but {len(target_kps)} target_keypoints")
            _inside(target_kps, target_size, f"{where}.target_keypoints")
        threshold = None
        if entry.get("target_bbox") is not None:
            threshold = _bbox_threshold(entry["target_bbox"], target_size, f"{where}.target_bbox")
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
