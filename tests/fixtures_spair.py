"""A tiny synthetic SPair-71k in the exact official layout, for the datamodule tests.

Per category ``c`` (index ``ci``) there are two images:

* ``A`` = ``2008_{100 ci + 1:06d}.jpg``, 120x90 (W x H), bbox ``[8, 15, 112, 85]``,
  keypoints ``(10, 20), (60, 45), (110, 80)``;
* ``B`` = ``2008_{100 ci + 2:06d}.jpg``, 100x140, bbox ``[20, 6, 80, 134]``,
  keypoints ``(25, 10), (50, 70), (75, 130)``.

Pair ``k`` of a category (``k = 0, 1, ...``) goes A -> B when ``k`` is even (3 keypoints) and
B -> A when ``k`` is odd (first 2 keypoints). Its difficulty flags are ``viewpoint_variation = k % 3``,
``scale_variation = (k + 1) % 3``, ``truncation = k % 4``, ``occlusion = (k + 2) % 4``,
``mirror = k % 2``. Pair numbers start at 1 (trn), 1001 (val), 2001 (test), counting over
categories. ``Layout/large`` lists every pair, ``Layout/small`` only the even ``k``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SPLIT_OFFSETS = {"trn": 1, "val": 1001, "test": 2001}

IMAGE_A = {"size": (120, 90), "bbox": [8, 15, 112, 85], "kps": [[10, 20], [60, 45], [110, 80]]}
IMAGE_B = {"size": (100, 140), "bbox": [20, 6, 80, 134], "kps": [[25, 10], [50, 70], [75, 130]]}


def image_names(category_index: int) -> tuple[str, str]:
    """Stems of images A and B of a category."""
    return f"2008_{100 * category_index + 1:06d}", f"2008_{100 * category_index + 2:06d}"


def _write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth random RGB JPEG of ``size = (W, H)``."""
    w, h = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, size=3)
    pixels = (base + 60 * np.sin(xs[..., None] / 7.0 + ys[..., None] / 11.0 + rng.uniform(0, 6, size=3))) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def _pair(category: str, category_index: int, k: int, number: int, empty: bool = False) -> tuple[str, dict]:
    """Layout line and pair JSON of pair ``k`` of a category (``empty``: no keypoints)."""
    name_a, name_b = image_names(category_index)
    (src_name, src), (trg_name, trg) = ((name_a, IMAGE_A), (name_b, IMAGE_B))
    if k % 2:
        (src_name, src), (trg_name, trg) = (trg_name, trg), (src_name, src)
    count = 0 if empty else 3 - k % 2
    line = f"{number:06d}-{src_name}-{trg_name}:{category}"
    content = {
        "pair_id": number,
        "src_imname": f"{src_name}.jpg",
        "trg_imname": f"{trg_name}.jpg",
        "src_imsize": [*src["size"], 3],
        "trg_imsize": [*trg["size"], 3],
        "src_bndbox": src["bbox"],
        "trg_bndbox": trg["bbox"],
        "category": category,
        "src_pose": "Frontal",
        "trg_pose": "Left",
        "src_kps": src["kps"][:count],
        "trg_kps": trg["kps"][:count],
        "kps_ids": [str(i) for i in range(count)],
        "viewpoint_variation": k % 3,
        "scale_variation": (k + 1) % 3,
        "truncation": k % 4,
        "occlusion": (k + 2) % 4,
        "mirror": k % 2,
        "filename": f"{line}.json",
    }
    return line, content


def write_spair(
    root: Path,
    categories: tuple[str, ...] = ("aeroplane", "cat"),
    pairs_per_category: int = 2,
    splits: tuple[str, ...] = ("trn", "val", "test"),
    empty_pair: bool = False,
) -> Path:
    """Write the dataset described in the module docstring under ``root`` and return ``root``.

    Args:
        root: dataset folder to create.
        categories: category names, in layout order.
        pairs_per_category: pairs of each category in each split (large layout).
        splits: which of trn, val, test to write.
        empty_pair: also append, in each split and both layouts, one pair of the first category
            with no keypoint.
    """
    root = Path(root)
    for ci, category in enumerate(categories):
        for name, image, seed in zip(image_names(ci), (IMAGE_A, IMAGE_B), (2 * ci, 2 * ci + 1)):
            _write_image(root / "JPEGImages" / category / f"{name}.jpg", image["size"], seed)
            w, h = image["size"]
            annotation = {"filename": f"{name}.jpg", "category": category, "image_width": w, "image_height": h}
            _write_json(root / "ImageAnnotation" / category / f"{name}.json", {**annotation, "bndbox": image["bbox"]})
    for split in splits:
        number, large, small = SPLIT_OFFSETS[split], [], []
        for ci, category in enumerate(categories):
            for k in range(pairs_per_category):
                line, content = _pair(category, ci, k, number)
                _write_json(root / "PairAnnotation" / split / f"{line}.json", content)
                large.append(line)
                if k % 2 == 0:
                    small.append(line)
                number += 1
        if empty_pair:
            line, content = _pair(categories[0], 0, 0, number, empty=True)
            _write_json(root / "PairAnnotation" / split / f"{line}.json", content)
            large.append(line)
            small.append(line)
        for layout, lines in (("large", large), ("small", small)):
            path = root / "Layout" / layout / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{line}\n" for line in lines))
    return root


def pair_file(root: Path, split: str, index: int, layout: str = "large") -> Path:
    """Path of the JSON of the ``index``-th pair listed in ``Layout/<layout>/<split>.txt``."""
    lines = (Path(root) / "Layout" / layout / f"{split}.txt").read_text().split()
    return Path(root) / "PairAnnotation" / split / f"{lines[index]}.json"
