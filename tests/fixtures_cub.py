"""A tiny CUB-200-2011 folder in the exact layout of the official archive, with known parts.

Images are numbered ``1, 2, ...`` in ``images.txt`` order, class by class (``classes`` order). Each
class has ``images_per_class`` test images and one train image, placed second (so excluding it changes
the indices): with the defaults, class 1 is ids 1 (test), 2 (train), 3, 4 (test); class 2 is 5, 6
(train), 7, 8; class 4 is 9, 10 (train), 11, 12.

* image ``id``: ``W x H = (60 + 4 id) x (50 + 2 id)``; bounding box ``x, y, w, h = 2, 3, 10 + 3 id, 30``;
* part ``p = 1..15`` of image ``id`` lies at ``(2p + id, p + id)`` when visible, else ``(0, 0)`` with visible 0;
* visible parts: train images all 15; the k-th test image of the FIRST class, for k < 3:
  ``{1, 2, 3, 4, 5}``, ``{6, 7, 8}``, ``{1, 3, 6, 9, 15}`` (so its test pair (0, 1) shares no part);
  every other test image: all parts except part ``k % 15 + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

NUM_PARTS = 15
CLASS_NAMES = {1: "Black_footed_Albatross", 2: "Laysan_Albatross", 3: "Sooty_Albatross", 4: "Groove_billed_Ani"}
FIRST_CLASS_VISIBLE = ({1, 2, 3, 4, 5}, {6, 7, 8}, {1, 3, 6, 9, 15})


def cub_class_folder(class_id: int) -> str:
    """``001.Black_footed_Albatross`` style folder name of a class."""
    return f"{class_id:03d}.{CLASS_NAMES.get(class_id, f'Class_{class_id}')}"


def cub_size(image_id: int) -> tuple[int, int]:
    """``(W, H)`` of fixture image ``image_id``."""
    return 60 + 4 * image_id, 50 + 2 * image_id


def cub_part(image_id: int, part: int) -> tuple[float, float]:
    """``(x, y)`` of a visible part of fixture image ``image_id``."""
    return 2.0 * part + image_id, float(part + image_id)


def _visible(class_index: int, test_index: int | None) -> set[int]:
    if test_index is None:
        return set(range(1, NUM_PARTS + 1))
    if class_index == 0 and test_index < len(FIRST_CLASS_VISIBLE):
        return FIRST_CLASS_VISIBLE[test_index]
    return set(range(1, NUM_PARTS + 1)) - {test_index % NUM_PARTS + 1}


def write_cub(root: Path, images_per_class: int = 3, classes: Sequence[int] = (1, 2, 4)) -> Path:
    """Write the CUB_200_2011 files and images under ``root`` (see the module docstring); return ``root``."""
    root = Path(root)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    images, split, labels, boxes, parts = [], [], [], [], []
    image_id = 0
    for class_index, class_id in enumerate(classes):
        folder = cub_class_folder(class_id)
        test_indices: list[int | None] = list(range(images_per_class))
        test_indices.insert(1, None)  # the train image, second in the class
        for test_index in test_indices:
            image_id += 1
            path = f"{folder}/{CLASS_NAMES.get(class_id, 'Bird')}_{image_id:04d}_{1000 + image_id}.jpg"
            w, h = cub_size(image_id)
            pixels = np.random.default_rng(image_id).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            (root / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "images" / path)
            images.append(f"{image_id} {path}")
            split.append(f"{image_id} {int(test_index is None)}")
            labels.append(f"{image_id} {class_id}")
            boxes.append(f"{image_id} 2.0 3.0 {10.0 + 3 * image_id:.1f} 30.0")
            visible = _visible(class_index, test_index)
            for part in range(1, NUM_PARTS + 1):
                x, y = cub_part(image_id, part) if part in visible else (0.0, 0.0)
                parts.append(f"{image_id} {part} {x:.1f} {y:.1f} {int(part in visible)}")
    for name, lines in (
        ("images.txt", images),
        ("train_test_split.txt", split),
        ("image_class_labels.txt", labels),
        ("bounding_boxes.txt", boxes),
        ("parts/part_locs.txt", parts),
    ):
        (root / name).write_text("\n".join(lines) + "\n")
    return root
