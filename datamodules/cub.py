"""CUB-200-2011 under the paper's protocol: pairs of bird images of the same class, 15 parts.

Layout (``root`` is the ``CUB_200_2011`` folder of the official ``CUB_200_2011.tgz``)::

    images.txt              <image id> <path>  (e.g. 001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg)
    train_test_split.txt    <image id> <is_train>   (1 = train, 0 = test)
    image_class_labels.txt  <image id> <class id>   (1..200)
    bounding_boxes.txt      <image id> <x> <y> <w> <h>
    parts/part_locs.txt     <image id> <part id 1..15> <x> <y> <visible>
    images/<path>

Pairs: for each chosen class, the chosen split's images in ``images.txt`` order, every unordered
pair ``i < j`` with source ``i`` and target ``j``. Keypoints: the parts visible in both images, in
part-id order (a pair may have none; the base class skips and counts it). Category: the class folder
name of the image path, e.g. ``001.Black_footed_Albatross``.

PCK threshold (``bbox-trg-512``, as the paper's code): ``max(w, h)`` of the target bounding box times
``512 / W_t``, i.e. measured as if the target were resized to 512 x 512; distances are measured at
that scale too, ``pck_scale = (512 / W_t, 512 / H_t)``, so threshold and distances share the 512 space.
(The box height is scaled by the width factor, as in the reference code.)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from datamodules.base import DataError, PairDataModule
from sdcorr.errors import OptionError
from sdcorr.geometry import PAPER_SIZE
from sdcorr.images import first_outside, image_dimensions

__all__ = ["CUBDataModule", "CUB_FILES", "NUM_PARTS"]

NUM_PARTS = 15
NUM_CLASSES = 200
SPLITS = ("test", "train", "all")
CUB_FILES = (
    "images.txt",
    "train_test_split.txt",
    "image_class_labels.txt",
    "bounding_boxes.txt",
    "parts/part_locs.txt",
)
WHERE_TO_GET = (
    "download CUB-200-2011 (Caltech-UCSD Birds-200-2011, CUB_200_2011.tgz) from its official page at Caltech "
    "and extract it so that the CUB_200_2011 folder (holding " + ", ".join(CUB_FILES) + " and images/) is the root"
)


def _read_table(file: Path, columns: int, kinds: Sequence[type]) -> list[tuple[int, tuple]]:
    """Lines of a whitespace-separated table as ``(line number, values)``, converted by ``kinds``."""
    if not file.is_file():
        raise DataError(f"{file}: file not found; {WHERE_TO_GET}")
    rows = []
    with open(file) as f:
        for number, text in enumerate(f, start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != columns:
                raise DataError(
                    f"{file}: line {number}: expected {columns} fields, got {len(fields)}: {text.strip()!r}"
                )
            try:
                rows.append((number, tuple(kind(value) for kind, value in zip(kinds, fields))))
            except ValueError as error:
                raise DataError(f"{file}: line {number}: {error}: {text.strip()!r}") from error
    return rows


def _by_image(file: Path, columns: int, kinds: Sequence[type]) -> dict[int, tuple[int, tuple]]:
    """A table keyed by its first field (the image id): ``id -> (line number, remaining values)``."""
    table: dict[int, tuple[int, tuple]] = {}
    for number, values in _read_table(file, columns, kinds):
        if values[0] in table:
            raise DataError(f"{file}: line {number}: image id {values[0]} repeats line {table[values[0]][0]}")
        table[values[0]] = (number, values[1:])
    return table


def _lookup(table: dict[int, tuple[int, tuple]], image_id: int, file: Path) -> tuple:
    if image_id not in table:
        raise DataError(f"{file}: no line for image id {image_id}")
    return table[image_id][1]


def _read_parts(file: Path, image_ids: set[int]) -> dict[int, tuple[Tensor, Tensor, list[int]]]:
    """Part locations of the given images: ``id -> (points [15, 2] (x, y), visible [15] bool, line numbers)``."""
    parts: dict[int, tuple[Tensor, Tensor, list[int]]] = {}
    for number, (image_id, part, x, y, visible) in _read_table(file, 5, (int, int, float, float, int)):
        if image_id not in image_ids:
            continue
        if not 1 <= part <= NUM_PARTS or visible not in (0, 1):
            raise DataError(f"{file}: line {number}: expected part id 1..{NUM_PARTS} and visible 0/1")
        if image_id not in parts:
            parts[image_id] = (torch.zeros(NUM_PARTS, 2), torch.zeros(NUM_PARTS, dtype=torch.bool), [0] * NUM_PARTS)
        points, seen, lines = parts[image_id]
        points[part - 1] = torch.tensor([x, y])
        seen[part - 1] = bool(visible)
        lines[part - 1] = number
    missing = sorted(image_ids - parts.keys())
    if missing:
        raise DataError(f"{file}: no part locations for image id {missing[0]}")
    return parts


def _check_inside(points: Tensor, visible: Tensor, lines: list[int], size: tuple[int, int], file: Path) -> None:
    """Raise :class:`DataError` naming the line of the first visible part outside ``[0, W] x [0, H]``."""
    w, h = size
    i = first_outside(points, (w, h), visible)
    if i is not None:
        raise DataError(f"{file}: line {lines[i]}: part {i + 1} = {points[i].tolist()} lies outside the {w}x{h} image")


def _pair(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """One pair record from two image infos.

    Args:
        source, target: ``id``, ``path``, ``size`` ``(W, H)``, ``box_side`` (max side of the bounding box),
            ``points`` ``[15, 2] (x, y)`` and ``visible`` ``[15]`` bool.

    Returns:
        The record: keypoints ``[N, 2] (x, y)`` of the parts visible in both images (part-id order), their
        ``part_ids``, threshold ``box_side_t * 512 / W_t`` and ``pck_scale`` ``[2]`` = ``(512 / W_t, 512 / H_t)``.
    """
    both = source["visible"] & target["visible"]  # [15] bool
    w, h = target["size"]
    return {
        "pair_id": f"{source['id']}-{target['id']}",
        "category": source["path"].parent.name,
        "class_name": "bird",  # the prompt of sources that name the object (DIFT's "a photo of a bird")
        "source_path": source["path"],
        "target_path": target["path"],
        "source_keypoints": source["points"][both],
        "target_keypoints": target["points"][both],
        "part_ids": (both.nonzero().flatten() + 1).tolist(),
        "threshold": target["box_side"] * PAPER_SIZE / w,
        "pck_scale": torch.tensor([PAPER_SIZE / w, PAPER_SIZE / h], dtype=torch.float32),
        "num_keypoints": int(both.sum()),
    }


class CUBDataModule(PairDataModule):
    """CUB-200-2011 pairs under the paper's protocol (see :mod:`datamodules.cub`).

    Args:
        root: the ``CUB_200_2011`` folder.
        classes: class ids (1..200) to pair images within; the paper uses the three albatrosses 1, 2, 3.
        split: images of the ``test`` split (the paper), the ``train`` split, or ``all``.
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[int] = (1, 2, 3),
        split: Literal["test", "train", "all"] = "test",
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes) or not all(1 <= c <= NUM_CLASSES for c in classes):
            raise OptionError(self, "classes", f"expected distinct class ids in 1..{NUM_CLASSES}; got {classes}")
        if split not in SPLITS:
            raise OptionError(self, "split", f"expected one of {list(SPLITS)}; got {split!r}")
        self.classes = classes
        self.split = split

    def prepare_data(self) -> None:
        """Nothing to do: CUB-200-2011 is not downloaded automatically (see :data:`WHERE_TO_GET`)."""

    def setup(self, stage: str) -> None:
        if self.dataset is None and not Path(self.root).is_dir():
            raise DataError(f"{self.root}: dataset folder not found; {WHERE_TO_GET}")
        super().setup(stage)

    def _chosen_images(self, root: Path) -> dict[int, list[tuple[int, str]]]:
        """Per chosen class: ``(image id, relative path)`` of the split's images, in ``images.txt`` order."""
        images = _read_table(root / "images.txt", 2, (int, str))
        split = _by_image(root / "train_test_split.txt", 2, (int, int))
        labels = _by_image(root / "image_class_labels.txt", 2, (int, int))
        chosen: dict[int, list[tuple[int, str]]] = {c: [] for c in self.classes}
        seen: set[int] = set()
        present: set[int] = set()
        for number, (image_id, path) in images:
            if image_id in seen:
                raise DataError(f"{root / 'images.txt'}: line {number}: image id {image_id} appears twice")
            seen.add(image_id)
            (label,) = _lookup(labels, image_id, root / "image_class_labels.txt")
            present.add(label)
            if label not in chosen:
                continue
            (is_train,) = _lookup(split, image_id, root / "train_test_split.txt")
            if self.split == "all" or is_train == (self.split == "train"):
                chosen[label].append((image_id, path))
        absent = [c for c in self.classes if c not in present]
        if absent:
            raise DataError(f"{root / 'image_class_labels.txt'}: no image of class {absent[0]}")
        return chosen

    def read_pairs(self) -> list[dict[str, Any]]:
        root = Path(self.root)
        chosen = self._chosen_images(root)
        ids = {image_id for images in chosen.values() for image_id, _ in images}
        boxes_file, parts_file = root / "bounding_boxes.txt", root / "parts" / "part_locs.txt"
        boxes = _by_image(boxes_file, 5, (int, float, float, float, float))
        parts = _read_parts(parts_file, ids)
        pairs = []
        for images in chosen.values():
            infos = []
            for image_id, path in images:
                points, visible, lines = parts[image_id]
                size = image_dimensions(root / "images" / path)
                _check_inside(points, visible, lines, size, parts_file)
                _, _, box_w, box_h = _lookup(boxes, image_id, boxes_file)
                if box_w <= 0 or box_h <= 0:
                    raise DataError(f"{boxes_file}: line {boxes[image_id][0]}: expected a box with w > 0 and h > 0")
                info = {"id": image_id, "path": root / "images" / path, "size": size, "box_side": max(box_w, box_h)}
                infos.append({**info, "points": points, "visible": visible})
            pairs.extend(_pair(source, target) for source, target in combinations(infos, 2))
        return pairs

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "classes": list(self.classes),
            "split": self.split,
            "threshold_mode": "bbox-trg-512",
        }
