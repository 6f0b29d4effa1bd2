"""AP-10K correspondences (Zhang et al., "Telling Left from Right", CVPR 2024): animal pairs, 17 keypoints.

The geometry-aware follow-up work builds a correspondence benchmark from the AP-10K pose dataset (Yu et
al., 2021) with its preparation notebook; this module reads what that notebook writes. Layout under
``root`` (the ``ap-10k`` folder)::

    ImageAnnotation/<family>/<species>/<id>.json     # one animal: COCO annotation + image + category fields
    JPEGImages/<family>/<species>/<id>.jpg           # the same stem as its annotation
    PairAnnotation/<folder>/<src>-<trg>:<category>.json

A pair file holds ``src_json_path`` and ``trg_json_path``: the paths of the two image annotations as the
notebook wrote them (relative to its working directory, e.g. ``data/ap-10k/ImageAnnotation/Felidae/cat/
000000012345.json``); the part from ``ImageAnnotation/`` on is looked up under ``root``, and the image is
the same path under ``JPEGImages/`` with ``.jpg``. An image annotation holds ``keypoints`` (17 x
``(x, y, v)`` flattened, COCO order: left eye, right eye, nose, neck, root of tail, left shoulder, left
elbow, left front paw, right shoulder, right elbow, right front paw, left hip, left knee, left back paw,
right hip, right knee, right back paw), ``bbox`` as COCO ``[x, y, w, h]``, ``width`` and ``height``.

The three test sets (``subset``) and their folders (``split`` ``test`` or ``val``; the training pairs,
``trn``, exist only intra-species):

==============  ==========================  =========================================================
subset          folder                      pairs (category = the name after ``:``)
==============  ==========================  =========================================================
intra-species   ``<split>``                 two animals of one species (category: the species)
cross-species   ``<split>_cross_species``   two species of one family (category: the family)
cross-family    ``<split>_cross_family``    two families (category: ``all``)
==============  ==========================  =========================================================

Keypoints: those visible in both images (``v > 0`` in both), in keypoint order; ``kps_ids`` records
their indices 0..16. Pairs are read in the order of (category, file name).

PCK threshold (``bbox-trg``, the only one the benchmark defines): ``max(w, h)`` of the **target**
``bbox``, in original target pixels, ``pck_scale = (1, 1)``.

Which loader this follows, and each fact's source (read in its public code, not copied):
Junyi42/GeoAware-SC ``prepare_ap10k.ipynb`` (the folders, the file names ``<src>-<trg>:<category>.json``,
the ``src_json_path``/``trg_json_path`` keys, the annotation fields merged from the COCO files, the
categories of each subset, pairs kept when at least 3 keypoints are visible in both images) and
``utils/utils_dataset.py`` (``load_ap10k_data``: image path from the annotation path, ``keypoints``
viewed as ``[17, 3]``, the target ``max(bbox[2], bbox[3])`` as the test and val threshold;
``get_dataset_info``: the folder suffixes ``_cross_species`` and ``_cross_family``), as mirrored in
bronyayang/Law_of_Vision_Representation_in_MLLMs ``GeoAware-SC/``; ``pck_train.py`` (``compute_pck``:
the keypoints visible in both images are scored). The keypoint names are AP-10K's published order.

Decided here, not verifiable from stored sources: the number of pairs of each set (the notebook samples
them with a seed from the data; nothing here depends on it); visibility ``v = 1`` (COCO's "labelled,
not visible"): the reference divides ``v`` by 2 and multiplies the coordinates by it, so such a point
would be scored at half its coordinates; AP-10K's annotations are believed to use only 0 and 2, and a
labelled point is scored here at its own coordinates. The reference compares errors with ``<``, sdcorr's
PCK with ``<=``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch

from datamodules.base import DataError, PairDataModule, load_declared_images, sample_from_record
from sdcorr.errors import OptionError
from sdcorr.images import first_outside

__all__ = ["AP10KDataModule", "KEYPOINT_NAMES", "SUBSETS", "pair_folder"]

KEYPOINT_NAMES = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
    "right_knee", "right_back_paw",
)  # fmt: skip
#: where the AP-10K pose dataset (images and COCO annotations) is published
AP10K_SOURCE = "github.com/AlexTheBad/AP-10K"
SPLITS = ("test", "val", "trn")
#: subset -> suffix of the pair folder name
SUBSETS = {"intra-species": "", "cross-species": "_cross_species", "cross-family": "_cross_family"}
THRESHOLDS = ("bbox-trg",)
EXPECTED_LAYOUT = (
    "expected the AP-10K correspondence layout written by GeoAware-SC's prepare_ap10k.ipynb: "
    "ImageAnnotation/<family>/<species>/, JPEGImages/<family>/<species>/, PairAnnotation/<split>[_cross_species|"
    "_cross_family]/"
)


def pair_folder(root: Path, split: str, subset: str) -> Path:
    """``root/PairAnnotation/<split><suffix>`` of a split and subset."""
    return root / "PairAnnotation" / f"{split}{SUBSETS[subset]}"


def _read_json(file: Path, where: str) -> dict[str, Any]:
    try:
        content = json.loads(file.read_text())
    except FileNotFoundError as error:
        raise DataError(f"{file}: not found ({where})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{file}: expected a JSON object, got {type(content).__name__}")
    return content


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _annotation_path(root: Path, content: dict[str, Any], key: str, file: Path) -> Path:
    """The image annotation a pair file names, found under ``root/ImageAnnotation``."""
    value = content.get(key)
    if not isinstance(value, str) or not value:
        raise DataError(f"{file}: field '{key}' must be the path of an image annotation, got {value!r}")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if "ImageAnnotation" not in parts:
        raise DataError(f"{file}: field '{key}' = {value!r} has no ImageAnnotation/ folder; {EXPECTED_LAYOUT}")
    last = len(parts) - 1 - parts[::-1].index("ImageAnnotation")
    return root.joinpath(*parts[last:])


def read_image_annotation(file: Path, where: str) -> dict[str, Any]:
    """``{"size": (W, H), "keypoints": [17, 2] (x, y), "visible": [17] bool, "bbox": [4] (x, y, w, h)}``.

    Raises:
        DataError: a missing file or field, or a field not as described in the module docstring.
    """
    content = _read_json(file, where)
    for key in ("keypoints", "bbox", "width", "height"):
        if key not in content:
            raise DataError(f"{file}: missing field '{key}'")
    w, h = content["width"], content["height"]
    if not (_number(w) and _number(h) and w > 0 and h > 0):
        raise DataError(f"{file}: fields 'width', 'height' must be positive numbers, got {w!r}, {h!r}")
    values = content["keypoints"]
    if not (isinstance(values, list) and len(values) == 3 * len(KEYPOINT_NAMES) and all(map(_number, values))):
        raise DataError(f"{file}: field 'keypoints' must be {3 * len(KEYPOINT_NAMES)} numbers (x, y, v per keypoint)")
    points = torch.tensor(values, dtype=torch.float32).view(-1, 3)
    flags = points[:, 2]
    if not bool(((flags == 0) | (flags == 1) | (flags == 2)).all()):
        raise DataError(f"{file}: field 'keypoints': visibility flags must be 0, 1 or 2, got {flags.tolist()}")
    bbox = content["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_number, bbox)) and min(bbox[2:]) >= 0):
        raise DataError(f"{file}: field 'bbox' must be [x, y, w, h] numbers with w, h >= 0, got {bbox!r}")
    if max(bbox[2:]) <= 0:
        raise DataError(f"{file}: field 'bbox' = {bbox} has no extent (PCK threshold 0)")
    visible = flags > 0
    i = first_outside(points[:, :2], (int(w), int(h)), visible)
    if i is not None:
        point = points[i, :2].tolist()
        raise DataError(f"{file}: field 'keypoints': keypoint {i} = {point} lies outside the {w}x{h} image")
    return {"size": (int(w), int(h)), "keypoints": points[:, :2], "visible": visible, "bbox": bbox}


class AP10KDataModule(PairDataModule):
    """AP-10K correspondence pairs of one split and test set (see :mod:`datamodules.ap10k`).

    Args:
        root: the ap-10k folder holding ImageAnnotation, JPEGImages and PairAnnotation (GeoAware-SC's layout).
        split: test (the benchmark), val or trn (trn: intra-species only).
        subset: intra-species, cross-species or cross-family.
        threshold: bbox-trg: the longer side of the target bounding box (the benchmark's rule).
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(
        self,
        root: str,
        split: Literal["test", "val", "trn"] = "test",
        subset: Literal["intra-species", "cross-species", "cross-family"] = "intra-species",
        threshold: Literal["bbox-trg"] = "bbox-trg",
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if split not in SPLITS:
            raise OptionError(self, "split", f"expected one of {list(SPLITS)}; got {split!r}")
        if subset not in SUBSETS:
            raise OptionError(self, "subset", f"expected one of {list(SUBSETS)}; got {subset!r}")
        if split == "trn" and subset != "intra-species":
            raise OptionError(self, "subset", f"the trn split has intra-species pairs only; got {subset!r}")
        if threshold not in THRESHOLDS:
            raise OptionError(self, "threshold", f"expected one of {list(THRESHOLDS)}; got {threshold!r}")
        self.split = split
        self.subset = subset
        self.threshold = threshold

    def prepare_data(self) -> None:
        """Nothing to fetch (GeoAware-SC's notebook builds the benchmark from AP-10K): say so when root is absent."""
        if not Path(self.root).exists():
            raise DataError(
                f"{self.root}: dataset folder not found; the AP-10K correspondence benchmark is not a download: "
                f"build it from AP-10K ({AP10K_SOURCE}) with GeoAware-SC's prepare_ap10k.ipynb (docs/benchmarks.md)"
            )

    def read_pairs(self) -> list[dict[str, Any]]:
        """Records of the folder's pairs, by (category, file name); reads the JSON files, not the images."""
        root = Path(self.root)
        folder = pair_folder(root, self.split, self.subset)
        if not folder.is_dir():
            raise DataError(f"{folder}: pair folder not found; {EXPECTED_LAYOUT}")
        files = [f for f in folder.iterdir() if f.suffix == ".json"]
        for file in files:
            if ":" not in file.stem:
                raise DataError(f"{file}: expected a pair file named <source>-<target>:<category>.json")
        files.sort(key=lambda f: (f.stem.rsplit(":", 1)[1], f.name))
        annotations: dict[Path, dict[str, Any]] = {}
        return [self._parse(file, root, annotations) for file in files]

    def _parse(self, file: Path, root: Path, annotations: dict[Path, dict[str, Any]]) -> dict[str, Any]:
        content = _read_json(file, f"listed in {file.parent}")
        sides = {}
        for side, key in (("source", "src_json_path"), ("target", "trg_json_path")):
            path = _annotation_path(root, content, key, file)
            if path not in annotations:
                annotations[path] = read_image_annotation(path, f"named by {file}: '{key}'")
            image = root / "JPEGImages" / path.relative_to(root / "ImageAnnotation").with_suffix(".jpg")
            if not image.is_file():
                raise DataError(f"{file}: field '{key}': image {image} not found")
            sides[side] = {**annotations[path], "image": image}
        source, target = sides["source"], sides["target"]
        both = source["visible"] & target["visible"]
        ids = torch.nonzero(both).flatten()
        threshold = float(max(target["bbox"][2], target["bbox"][3]))
        return {
            "pair_id": file.stem,
            "category": file.stem.rsplit(":", 1)[1],
            "annotation": file,
            "source_path": source["image"],
            "target_path": target["image"],
            "source_size": source["size"],
            "target_size": target["size"],
            "source_keypoints": source["keypoints"][ids],
            "target_keypoints": target["keypoints"][ids],
            "kps_ids": [str(int(i)) for i in ids],
            "num_keypoints": len(ids),
            "threshold": threshold,
            "pck_scale": (1.0, 1.0),
            "references": {"bbox-trg": {"threshold": threshold, "pck_scale": [1.0, 1.0]}},
        }

    def load_sample(self, pair: dict[str, Any]) -> dict[str, Any]:
        """The sample dict of one record; the decoded image sizes must match the annotations' width and height."""
        images = load_declared_images(
            pair, lambda side, w, h: f"its annotation declares width {w}, height {h} (pair {pair['annotation']})"
        )
        return sample_from_record(pair, images["source"], images["target"])

    def describe(self) -> dict[str, Any]:
        """The base description plus the split, the test set and the threshold mode."""
        return {**super().describe(), "split": self.split, "subset": self.subset, "threshold_mode": self.threshold}
