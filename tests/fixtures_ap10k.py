"""A tiny AP-10K correspondence benchmark in the layout of GeoAware-SC's ``prepare_ap10k.ipynb`` (see
:mod:`datamodules.ap10k`), with known values.

Animals ``a = 0..5`` (:data:`ANIMALS`: family, species, annotation id), two per species, in three species
of two families (one species name has a space, as AP-10K's do):

* image annotation ``ImageAnnotation/<family>/<species>/<id:012d>.json``, image the same under
  ``JPEGImages/`` with ``.jpg``, ``W x H = (80 + 4a) x (60 + 2a)``;
* keypoint ``k = 0..16``: ``(5 + 3k + a, 4 + 2k)``, visibility 2 when ``(k + a) % 3 != 0``, else 0 with
  coordinates ``(0, 0)`` (as COCO writes unlabelled points);
* ``bbox`` ``[2, 3, 50 + a, 40 + 2a]`` (``x, y, w, h``), so the threshold with it as target is
  ``max(50 + a, 40 + 2a)``.

Pairs (:data:`PAIRS`, source -> target animal): ``test`` (intra-species) 0 -> 1 (cat), 2 -> 3 (snow
leopard), 4 -> 5 (dog); ``test_cross_species`` 0 -> 2 and 3 -> 1 (Felidae); ``test_cross_family`` 0 -> 4
and 5 -> 3 (all); ``val`` 1 -> 0 (cat). The pair files store the annotation paths as the notebook does,
relative to its working directory (``data/ap-10k/ImageAnnotation/...``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

ANIMALS = [("Felidae", "cat", 101), ("Felidae", "cat", 102), ("Felidae", "snow leopard", 111),
           ("Felidae", "snow leopard", 112), ("Canidae", "dog", 201), ("Canidae", "dog", 202)]  # fmt: skip
PAIRS = {
    "test": [(0, 1, "cat"), (2, 3, "snow leopard"), (4, 5, "dog")],
    "test_cross_species": [(0, 2, "Felidae"), (3, 1, "Felidae")],
    "test_cross_family": [(0, 4, "all"), (5, 3, "all")],
    "val": [(1, 0, "cat")],
}
NUM_KEYPOINTS = 17


def ap10k_size(a: int) -> tuple[int, int]:
    """``(W, H)`` of animal ``a``'s image."""
    return 80 + 4 * a, 60 + 2 * a


def ap10k_keypoints(a: int) -> list[tuple[float, float, int]]:
    """``(x, y, v)`` of animal ``a``'s 17 keypoints."""
    return [(5.0 + 3 * k + a, 4.0 + 2 * k, 2) if (k + a) % 3 else (0.0, 0.0, 0) for k in range(NUM_KEYPOINTS)]


def ap10k_bbox(a: int) -> list[float]:
    """COCO ``[x, y, w, h]`` of animal ``a``."""
    return [2.0, 3.0, 50.0 + a, 40.0 + 2 * a]


def stem(a: int) -> str:
    return f"{ANIMALS[a][2]:012d}"


def write_ap10k(parent: Path) -> Path:
    """Write ``parent/ap-10k`` (see the module docstring) and return it."""
    root = Path(parent) / "ap-10k"
    for a, (family, species, number) in enumerate(ANIMALS):
        w, h = ap10k_size(a)
        image = root / "JPEGImages" / family / species / f"{stem(a)}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(a).integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(image)
        points = ap10k_keypoints(a)
        annotation = {
            "id": number, "image_id": number, "category_id": 1 + a // 2, "iscrowd": 0, "area": 1000.0,
            "keypoints": [value for point in points for value in point],
            "num_keypoints": sum(1 for point in points if point[2]), "bbox": ap10k_bbox(a),
            "file_name": f"{stem(a)}.jpg", "width": w, "height": h, "name": species, "supercategory": family,
        }  # fmt: skip
        file = root / "ImageAnnotation" / family / species / f"{stem(a)}.json"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(annotation, indent=4))
    for folder, pairs in PAIRS.items():
        (root / "PairAnnotation" / folder).mkdir(parents=True, exist_ok=True)
        for source, target, category in pairs:
            paths = [
                f"data/ap-10k/ImageAnnotation/{ANIMALS[a][0]}/{ANIMALS[a][1]}/{stem(a)}.json" for a in (source, target)
            ]
            name = f"{stem(source)}-{stem(target)}:{category}.json"
            content = {"src_json_path": paths[0], "trg_json_path": paths[1]}
            (root / "PairAnnotation" / folder / name).write_text(json.dumps(content, indent=4))
    return root
