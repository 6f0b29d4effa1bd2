"""A tiny PF-Willow folder in any of the benchmark's three layouts (see :mod:`datamodules.pfwillow`), with
known keypoints.

Pairs are numbered ``r = 0, 1, ...`` over the categories in order (``pairs_per_category`` each):

* row ``r`` of ``test_pairs.csv`` (after the header) is ``PF-dataset/<category>/img_<r:03d>a.png`` ->
  ``PF-dataset/<category>/img_<r:03d>b.png``;
* source image ``W x H = (64 + 8r) x (48 + 4r)``, target ``(80 + 8r) x (60 + 12r)``;
* source keypoint ``i = 0..9``: ``(5 + 4i + r, 4 + 3i)``;
* target keypoint ``i``: ``(10 + (5 + r % 4) i + r, 8 + (2 + 5 (r % 2)) i)``.

So row 0's target is 80 x 60 with x in 10..55, y in 8..26 and row 1's is 88 x 72 with x in 11..65,
y in 8..71 (its y extent dominates).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

NUM_KEYPOINTS = 10


def pfwillow_keypoints(r: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Source and target keypoints ``(x, y)`` of fixture row ``r``, 10 each."""
    source = [(5.0 + 4 * i + r, 4.0 + 3 * i) for i in range(NUM_KEYPOINTS)]
    target = [(10.0 + (5 + r % 4) * i + r, 8.0 + (2 + 5 * (r % 2)) * i) for i in range(NUM_KEYPOINTS)]
    return source, target


def pfwillow_sizes(r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(W, H)`` of the source and target images of fixture row ``r``."""
    return (64 + 8 * r, 48 + 4 * r), (80 + 8 * r, 60 + 12 * r)


def _write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _columns(points: list[tuple[float, float]]) -> list[str]:
    """``x1..x10`` then ``y1..y10`` as CSV fields."""
    return [f"{x:g}" for x, _ in points] + [f"{y:g}" for _, y in points]


#: the pairs file and image folder of each layout, relative to ``root``
LAYOUTS = {"hpf": ("test_pairs.csv", "."), "geometric": ("test_pairs_pf.csv", "PF-dataset"),
           "sd4match": ("test_pairs.csv", "PF-dataset")}  # fmt: skip


def write_pfwillow(
    root: Path,
    pairs_per_category: int = 1,
    categories: Sequence[str] = ("car(G)", "duck(S)"),
    layout: str = "hpf",
) -> Path:
    """Write the pairs file and the images (see the module docstring) in ``layout`` (a key of
    :data:`LAYOUTS`: ``hpf`` writes ``root/test_pairs.csv`` beside the class folders); return ``root``."""
    pairs_file, image_folder = LAYOUTS[layout]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = root / image_folder
    header = ["imageA", "imageB"]
    for side in ("A", "B"):
        header += [f"X{side}{i}" for i in range(1, 11)] + [f"Y{side}{i}" for i in range(1, 11)]
    rows = [header]
    r = 0
    for category in categories:
        for _ in range(pairs_per_category):
            names = (f"img_{r:03d}a.png", f"img_{r:03d}b.png")
            for name, size, seed in zip(names, pfwillow_sizes(r), (2 * r, 2 * r + 1)):
                _write_image(images / category / name, size, seed)
            source, target = pfwillow_keypoints(r)
            rows.append([f"PF-dataset/{category}/{name}" for name in names] + _columns(source) + _columns(target))
            r += 1
    with open(root / pairs_file, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root
