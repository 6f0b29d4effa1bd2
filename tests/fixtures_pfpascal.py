"""A tiny PF-Pascal folder in the public layout (see :mod:`datamodules.pfpascal`), with known values.

Rows ``r = 0, 1, ...`` of ``<split>_pairs_pf_pascal.csv`` run over the classes in order (``pairs_per_class``
each); the test rows come first, then the val rows, numbered on (the val list's first row is ``r =
pairs_per_class * len(classes)``):

* row ``r``: ``PF-dataset-PASCAL/JPEGImages/2010_{r:06d}a.jpg`` -> ``.../2010_{r:06d}b.jpg``, class index of
  its class (aeroplane 1, ..., tvmonitor 20);
* source image ``W x H = (60 + 8r) x (50 + 4r)``, target ``(70 + 6r) x (90 + 2r)`` (so the target's
  longer side, the ``img-trg`` threshold, is ``90 + 2r`` for ``r <= 5``);
* ``n = 3 + r % 3`` keypoints; source keypoint ``i``: ``(4 + 5i + r, 3 + 4i)``, target ``(6 + 7i, 5 + 3i + r)``;
* each image's ``Annotations/<class>/<stem>.mat``: ``kps`` = its keypoints then one NaN row (an absent
  part), ``bbox`` = ``[5, 6, 45 + 3r, 36 + 5r]`` for the target (longer side ``max(40 + 3r, 30 + 5r)``,
  the ``bbox-trg`` threshold: ``40 + 3r`` for ``r <= 5``) and ``[1, 2, 50, 40]`` for the source.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

FOLDER = "PF-dataset-PASCAL"
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip


def pfpascal_sizes(r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(W, H)`` of the source and target images of row ``r``."""
    return (60 + 8 * r, 50 + 4 * r), (70 + 6 * r, 90 + 2 * r)


def pfpascal_keypoints(r: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Source and target keypoints ``(x, y)`` of row ``r``, ``3 + r % 3`` each."""
    n = 3 + r % 3
    return [(4.0 + 5 * i + r, 3.0 + 4 * i) for i in range(n)], [(6.0 + 7 * i, 5.0 + 3 * i + r) for i in range(n)]


def pfpascal_target_bbox(r: int) -> list[float]:
    """``[x1, y1, x2, y2]`` of the target of row ``r``."""
    return [5.0, 6.0, 45.0 + 3 * r, 36.0 + 5 * r]


def _write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def _write_mat(path: Path, points: list[tuple[float, float]], bbox: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kps = np.vstack([np.array(points, dtype=np.float64), np.full((1, 2), np.nan)])
    scipy.io.savemat(path, {"kps": kps, "bbox": np.array([bbox], dtype=np.float64), "class": path.parent.name})


def _joined(values: list[float]) -> str:
    return ";".join(f"{v:g}" for v in values)


def write_pfpascal(
    parent: Path, pairs_per_class: int = 1, classes: Sequence[str] = ("aeroplane", "cat"), val: bool = True
) -> Path:
    """Write ``parent/PF-dataset-PASCAL`` (module docstring), a test list and (``val``) a val list; return it."""
    root = Path(parent) / FOLDER
    r = 0
    for split in ("test", "val") if val else ("test",):
        rows = [["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]]
        for name in classes:
            for _ in range(pairs_per_class):
                stems = (f"2010_{r:06d}a", f"2010_{r:06d}b")
                source, target = pfpascal_keypoints(r)
                for stem, size, points, bbox, seed in zip(
                    stems, pfpascal_sizes(r), (source, target), ([1.0, 2.0, 50.0, 40.0], pfpascal_target_bbox(r)),
                    (2 * r, 2 * r + 1),
                ):  # fmt: skip
                    _write_image(root / "JPEGImages" / f"{stem}.jpg", size, seed)
                    _write_mat(root / "Annotations" / name / f"{stem}.mat", points, bbox)
                rows.append(
                    [f"{FOLDER}/JPEGImages/{stem}.jpg" for stem in stems]
                    + [str(CLASSES.index(name) + 1)]
                    + [_joined([p[axis] for p in points]) for points in (source, target) for axis in (0, 1)]
                )
                r += 1
        with open(root / f"{split}_pairs_pf_pascal.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root
