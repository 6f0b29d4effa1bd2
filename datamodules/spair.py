"""SPair-71k in its official layout (Min et al., 2019): 18 categories, 70,958 pairs, test 12,234.

Layout under ``root`` (as extracted from ``SPair-71k.tar.gz``)::

    JPEGImages/<category>/<name>.jpg
    ImageAnnotation/<category>/<name>.json
    PairAnnotation/{trn,val,test}/<pair>.json
    Layout/{large,small}/{trn,val,test}.txt      # one <pair> per line, e.g. 000001-2008_002719-2008_004100:aeroplane

A pair JSON holds ``src_imname``, ``trg_imname``, ``category``, ``src_imsize``/``trg_imsize`` as
``[W, H, C]``, ``src_bndbox``/``trg_bndbox`` as ``[x1, y1, x2, y2]``, ``src_kps``/``trg_kps`` as lists
of ``(x, y)`` pixels, ``kps_ids`` and the difficulty flags ``viewpoint_variation``,
``scale_variation``, ``truncation``, ``occlusion`` (reported as PCK breakdowns through ``groups``)
and ``mirror``.

Two PCK thresholds are in use; each gives distances in the space of its threshold:

* ``bbox-src-512`` (the paper's code): max side of the **source** bbox after resizing the source
  image to 512x512, ``max((x2 - x1) * 512 / W_src, (y2 - y1) * 512 / H_src)``; target offsets are
  scaled to the 512x512 target, ``pck_scale = (512 / W_trg, 512 / H_trg)``.
* ``bbox-trg`` (the dataset authors, DIFT and most later work): max side of the **target** bbox in
  original target pixels, ``pck_scale = (1, 1)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from datamodules.base import DataError, PairDataModule, load_declared_images, sample_from_record
from datamodules.download import Archive, fetch
from sdcorr.errors import OptionError
from sdcorr.geometry import PAPER_SIZE
from sdcorr.images import first_outside

__all__ = ["GROUP_FIELDS", "SPAIR_ARCHIVE", "SPairDataModule"]

# The official archive; its checksum and size are not known here, so it is not verified.
SPAIR_ARCHIVE = Archive(
    url="http://cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz",
    filename="SPair-71k.tar.gz",
    folder="SPair-71k",
)

GROUP_FIELDS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion")
SPLITS = ("trn", "val", "test")
LAYOUTS = ("large", "small")
THRESHOLDS = ("bbox-src-512", "bbox-trg")

EXPECTED_LAYOUT = (
    "expected the official SPair-71k layout: JPEGImages/<category>/, ImageAnnotation/<category>/, "
    "PairAnnotation/{trn,val,test}/, Layout/{large,small}/{trn,val,test}.txt"
)


def _field(content: dict[str, Any], key: str, file: Path) -> Any:
    """``content[key]``, or a :class:`DataError` naming the file and the missing field."""
    if key not in content:
        raise DataError(f"{file}: missing field '{key}'")
    return content[key]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(file: Path, listed_in: Path) -> dict[str, Any]:
    """The object stored in a pair annotation file."""
    try:
        content = json.loads(file.read_text())
    except FileNotFoundError as error:
        raise DataError(f"{file}: pair annotation not found (listed in {listed_in})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{file}: expected a JSON object, got {type(content).__name__}")
    return content


def _imsize(content: dict[str, Any], key: str, file: Path) -> tuple[int, int]:
    """``(W, H)`` from a ``[W, H, C]`` field."""
    value = _field(content, key, file)
    if not (isinstance(value, list) and len(value) in (2, 3) and all(_number(v) and v > 0 for v in value)):
        raise DataError(f"{file}: field '{key}' must be [W, H, C] with positive numbers, got {value!r}")
    return int(value[0]), int(value[1])


def _bbox(content: dict[str, Any], key: str, file: Path) -> Tensor:
    """``[4] (x1, y1, x2, y2)`` float32 box with a positive longest side."""
    value = _field(content, key, file)
    if not (isinstance(value, list) and len(value) == 4 and all(_number(v) for v in value)):
        raise DataError(f"{file}: field '{key}' must be [x1, y1, x2, y2] numbers, got {value!r}")
    x1, y1, x2, y2 = value
    if x2 < x1 or y2 < y1 or max(x2 - x1, y2 - y1) <= 0:
        raise DataError(f"{file}: field '{key}' = {value} must have x2 >= x1, y2 >= y1 and a positive side")
    return torch.tensor(value, dtype=torch.float32)


def _keypoints(content: dict[str, Any], key: str, file: Path, size: tuple[int, int]) -> Tensor:
    """``[N, 2] (x, y)`` float32 keypoints, each inside ``[0, W] x [0, H]`` of ``size = (W, H)``."""
    value = _field(content, key, file)
    if not isinstance(value, list):
        raise DataError(f"{file}: field '{key}' must be a list of [x, y], got {type(value).__name__}")
    for i, point in enumerate(value):
        if not (isinstance(point, list) and len(point) == 2 and all(_number(v) for v in point)):
            raise DataError(f"{file}: field '{key}[{i}]' must be [x, y] numbers, got {point!r}")
    points = torch.tensor(value, dtype=torch.float32).reshape(-1, 2)
    w, h = size
    i = first_outside(points, (w, h))
    if i is not None:
        raise DataError(f"{file}: field '{key}[{i}]' = {points[i].tolist()} lies outside the {w}x{h} image")
    return points


def _image_path(content: dict[str, Any], key: str, file: Path, folder: Path) -> Path:
    """Path of the image named by ``content[key]`` inside ``folder``; it must exist."""
    name = _field(content, key, file)
    if not isinstance(name, str) or not name:
        raise DataError(f"{file}: field '{key}' must be an image file name, got {name!r}")
    path = folder / name
    if not path.is_file():
        raise DataError(f"{file}: field '{key}': image {path} not found")
    return path


def _group(content: dict[str, Any], key: str, file: Path) -> str:
    """A difficulty flag as a string label, e.g. ``"1"``."""
    value = _field(content, key, file)
    if not (_number(value) or isinstance(value, (str, bool))):
        raise DataError(f"{file}: field '{key}' must be a number, got {value!r}")
    return str(value)


def threshold_of(
    mode: str, source_bbox: Tensor, source_size: tuple[int, int], target_bbox: Tensor, target_size: tuple[int, int]
) -> tuple[float, tuple[float, float]]:
    """PCK threshold and the ``(x, y)`` scale from target pixels to its space.

    Args:
        mode: ``bbox-src-512`` or ``bbox-trg`` (see the module docstring).
        source_bbox: ``[4] (x1, y1, x2, y2)`` in source pixels.
        source_size: ``(W, H)`` of the source image.
        target_bbox: ``[4] (x1, y1, x2, y2)`` in target pixels.
        target_size: ``(W, H)`` of the target image.

    Returns:
        ``(threshold, (scale_x, scale_y))``.
    """
    if mode == "bbox-src-512":
        (w_src, h_src), (w_trg, h_trg) = source_size, target_size
        width = float(source_bbox[2] - source_bbox[0]) * PAPER_SIZE / w_src
        height = float(source_bbox[3] - source_bbox[1]) * PAPER_SIZE / h_src
        return max(width, height), (PAPER_SIZE / w_trg, PAPER_SIZE / h_trg)
    if mode == "bbox-trg":
        return float(max(target_bbox[2] - target_bbox[0], target_bbox[3] - target_bbox[1])), (1.0, 1.0)
    raise ValueError(f"Expected threshold in {THRESHOLDS} but got {mode!r}")


class SPairDataModule(PairDataModule):
    """SPair-71k pairs of one split, in the official layout (see :mod:`datamodules.spair`).

    Args:
        root: SPair-71k folder holding JPEGImages, ImageAnnotation, PairAnnotation and Layout.
        split: which pairs: trn, val or test (12,234 pairs in the large layout).
        layout: pair list of Layout/: large (the benchmark) or small (a subset).
        threshold: PCK threshold: bbox-src-512 (the paper's code) or bbox-trg (dataset authors, DIFT).
        download: fetch and extract the official archive into root when root does not exist.
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(
        self,
        root: str,
        split: Literal["trn", "val", "test"] = "test",
        layout: Literal["large", "small"] = "large",
        threshold: Literal["bbox-src-512", "bbox-trg"] = "bbox-src-512",
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        for name, value, allowed in (("split", split, SPLITS), ("layout", layout, LAYOUTS)):
            if value not in allowed:
                raise OptionError(self, name, f"expected one of {list(allowed)}; got {value!r}")
        if threshold not in THRESHOLDS:
            raise OptionError(self, "threshold", f"expected one of {list(THRESHOLDS)}; got {threshold!r}")
        self.split = split
        self.layout = layout
        self.threshold_mode = threshold
        self.download = download

    def prepare_data(self) -> None:
        """Download and extract the official archive when ``download`` is set and ``root`` is missing."""
        if self.download and not Path(self.root).exists():
            fetch(SPAIR_ARCHIVE, Path(self.root))

    def layout_file(self) -> Path:
        """``Layout/<layout>/<split>.txt`` under ``root``."""
        return Path(self.root) / "Layout" / self.layout / f"{self.split}.txt"

    def read_pairs(self) -> list[dict[str, Any]]:
        """Records of the layout's pairs, in its order; reads the pair JSONs, not the images."""
        listing = self.layout_file()
        if not listing.is_file():
            raise DataError(f"{listing}: layout file not found; {EXPECTED_LAYOUT}")
        lines = [line.strip() for line in listing.read_text().splitlines()]
        return [self._parse(line, listing) for line in lines if line]

    def _parse(self, line: str, listing: Path) -> dict[str, Any]:
        """The record of the pair named by one layout line."""
        root = Path(self.root)
        file = root / "PairAnnotation" / self.split / f"{line}.json"
        content = _read_json(file, listing)
        category = _field(content, "category", file)
        if not isinstance(category, str) or not category:
            raise DataError(f"{file}: field 'category' must be a category name, got {category!r}")
        if ":" in line and line.rsplit(":", 1)[1] != category:
            raise DataError(f"{file}: field 'category' is {category!r} but {listing} lists the pair as {line!r}")
        images = root / "JPEGImages" / category
        source_path = _image_path(content, "src_imname", file, images)
        target_path = _image_path(content, "trg_imname", file, images)
        source_size = _imsize(content, "src_imsize", file)
        target_size = _imsize(content, "trg_imsize", file)
        source_bbox = _bbox(content, "src_bndbox", file)
        target_bbox = _bbox(content, "trg_bndbox", file)
        source_kps = _keypoints(content, "src_kps", file, source_size)
        target_kps = _keypoints(content, "trg_kps", file, target_size)
        if len(source_kps) != len(target_kps):
            raise DataError(f"{file}: field 'trg_kps' has {len(target_kps)} points but 'src_kps' has {len(source_kps)}")
        kps_ids = content.get("kps_ids")
        if kps_ids is not None and (not isinstance(kps_ids, list) or len(kps_ids) != len(source_kps)):
            raise DataError(
                f"{file}: field 'kps_ids' must list one id per keypoint ({len(source_kps)}), got {kps_ids!r}"
            )
        references = {
            mode: threshold_of(mode, source_bbox, source_size, target_bbox, target_size) for mode in THRESHOLDS
        }
        threshold, pck_scale = references[self.threshold_mode]
        return {
            "pair_id": line,
            "category": category,
            "class_name": category,  # the folder name as it is ("pottedplant"), as DIFT prompts with it
            "annotation": file,
            "source_path": source_path,
            "target_path": target_path,
            "source_size": source_size,
            "target_size": target_size,
            "source_bbox": source_bbox,
            "target_bbox": target_bbox,
            "source_keypoints": source_kps,
            "target_keypoints": target_kps,
            "kps_ids": None if kps_ids is None else [str(k) for k in kps_ids],
            "num_keypoints": len(source_kps),
            "groups": {key: _group(content, key, file) for key in GROUP_FIELDS},
            "mirror": content.get("mirror"),
            "threshold": threshold,
            "pck_scale": pck_scale,
            "references": {m: {"threshold": t, "pck_scale": list(s)} for m, (t, s) in references.items()},
        }

    def load_sample(self, pair: dict[str, Any]) -> dict[str, Any]:
        """The sample dict of one record; the decoded image sizes must match the JSON's imsize."""
        keys = {"source": "src_imsize", "target": "trg_imsize"}
        images = load_declared_images(pair, lambda side, w, h: f"{pair['annotation']} declares '{keys[side]}' {w}x{h}")
        return sample_from_record(pair, images["source"], images["target"])

    def describe(self) -> dict[str, Any]:
        """The base description plus the split, the layout and the threshold mode."""
        return {**super().describe(), "split": self.split, "layout": self.layout, "threshold_mode": self.threshold_mode}
