"""PF-Willow: 900 test pairs of 10 sub-classes with 10 keypoints each.

Layouts: the same public annotations circulate in three layouts, all accepted (same pairs, same numbers)::

    root/test_pairs.csv      + root/<sub-class>/<name>.png             HPF / CATs (``root`` = PF-WILLOW)
    root/test_pairs_pf.csv   + root/PF-dataset/<sub-class>/<name>.png  geometric matching (Rocco et al.)
    root/test_pairs.csv      + root/PF-dataset/<sub-class>/<name>.png  SD4Match

that is: the pairs file is ``test_pairs.csv`` or else ``test_pairs_pf.csv`` in ``root``; the images are in
``root/PF-dataset`` when that folder exists, else in ``root`` (e.g. ``car(G)/Cars_006a.png``).

CSV (the same in every layout): a header row, then one pair per row; columns 0 source path, 1 target
path (like ``PF-dataset/car(G)/Cars_006a.png``; the first path component is dropped to find the file
under the image folder), 2..21 source ``x1..x10`` then ``y1..y10``, 22..41 target ``x1..x10`` then
``y1..y10``, in pixels. The category is the sub-folder name. Pair ids are the row and the file names,
so every layout gives the same ids. Some images are byte-identical copies in two sub-class folders:
nothing here takes two paths for two different images or one image for one path.

PCK thresholds (``threshold``):

* ``kps-trg`` (default, the correct form): the max side of the bounding box of the target
  keypoints, ``max(x_max - x_min, y_max - y_min)``, in original target pixels; ``pck_scale = (1, 1)``.
* ``kps-trg-paper``: the paper code's quirk (it pads the keypoints with -1 before taking the min):
  ``max(x_max, y_max) + 1`` of the target keypoints resized to 512 x 512, with distances measured at
  that scale too: ``pck_scale = (512 / W_t, 512 / H_t)``.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
from torch import Tensor

from datamodules.base import DataError, PairDataModule, csv_pair_rows
from datamodules.download import Archive, fetch
from sdcorr.errors import OptionError
from sdcorr.geometry import PAPER_SIZE
from sdcorr.images import first_outside, image_dimensions

__all__ = ["PF_WILLOW_ARCHIVE", "PFWillowDataModule", "read_pfwillow_csv"]

PF_WILLOW_ARCHIVE = Archive(
    url="https://www.di.ens.fr/willow/research/proposalflow/dataset/PF-dataset.zip",
    filename="PF-dataset.zip",
    folder="PF-dataset",
)
#: the pairs file's names, in the order they are looked for (HPF, CATs and SD4Match; geometric matching)
PAIRS_FILES = ("test_pairs.csv", "test_pairs_pf.csv")
#: the image folder of the geometric-matching and SD4Match layouts (the Proposal Flow archive's folder)
IMAGE_FOLDER = "PF-dataset"
NUM_KEYPOINTS = 10
NUM_COLUMNS = 2 + 4 * NUM_KEYPOINTS
THRESHOLDS = ("kps-trg", "kps-trg-paper")


def _csv_hint(root: Path) -> str:
    return (
        f"place the benchmark's {PAIRS_FILES[0]} (900 pairs; columns: source path, target path, "
        f"source x1..x10, y1..y10, target x1..x10, y1..y10) into {root}"
    )


def find_layout(root: Path) -> tuple[Path, Path]:
    """``(pairs file, image folder)`` of a PF-Willow folder in any accepted layout (see the module docstring).

    Raises:
        DataError: no pairs file: the message lists the names looked for, and any other CSV file found
            that should be renamed.
    """
    images = root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root
    for name in PAIRS_FILES:
        if (root / name).is_file():
            return root / name, images
    looked = " or ".join(PAIRS_FILES)
    others = sorted({*root.glob("*.csv"), *images.glob("*.csv")}) if root.is_dir() else []
    if others:
        found = ", ".join(str(p) for p in others)
        raise DataError(
            f"{root}: no PF-Willow pairs file ({looked}); found {found}: if it is the PF-Willow test pairs, "
            f"rename it to {root / PAIRS_FILES[0]}"
        )
    raise DataError(f"{root / PAIRS_FILES[0]}: pairs file not found (nor {PAIRS_FILES[1]}); {_csv_hint(root)}")


def _relative_path(value: str, where: str) -> PurePosixPath:
    """``PF-dataset/car(G)/Cars_006a.png`` -> ``car(G)/Cars_006a.png`` (first component dropped)."""
    parts = PurePosixPath(value.strip().replace("\\", "/")).parts
    if len(parts) < 3:
        raise DataError(f"{where}: expected a path like 'PF-dataset/<sub-class>/<image>', got {value!r}")
    return PurePosixPath(*parts[1:])


def _numbers(row: list[str], first: int, line: int, file: Path) -> Tensor:
    """Columns ``first .. first + 19`` (``x1..x10, y1..y10``) as ``[10, 2] (x, y)``."""
    values = []
    for column in range(first, first + 2 * NUM_KEYPOINTS):
        try:
            value = float(row[column])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{file}: row {line}, column {column}: expected a finite number, got {row[column]!r}")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32).view(2, NUM_KEYPOINTS).t().contiguous()


def _check_inside(points: Tensor, size: tuple[int, int], where: str) -> None:
    """Raise :class:`DataError` unless every ``(x, y)`` of ``[N, 2]`` lies in ``[0, W] x [0, H]``."""
    w, h = size
    i = first_outside(points, (w, h))
    if i is not None:
        raise DataError(f"{where}: keypoint {i + 1} = {points[i].tolist()} lies outside the {w}x{h} image")


def read_pfwillow_csv(root: Path) -> list[dict[str, Any]]:
    """Parse the pairs file of ``root`` (any layout, see :func:`find_layout`) into rows (no image access).

    Returns:
        One dict per data row: ``line`` (1-based row of the file, the header is row 1), ``index``
        (0-based data row), ``source_path``, ``target_path`` (absolute), ``category``,
        ``source_keypoints`` and ``target_keypoints`` ``[10, 2] (x, y)`` in pixels.
    """
    file, images = find_layout(root)
    records = []
    for index, line, row in csv_pair_rows(file, NUM_COLUMNS):
        source = _relative_path(row[0], f"{file}: row {line}, column 0")
        target = _relative_path(row[1], f"{file}: row {line}, column 1")
        if source.parent != target.parent:
            raise DataError(f"{file}: row {line}: source {row[0]!r} and target {row[1]!r} are in different sub-classes")
        records.append(
            {
                "line": line,
                "index": index,
                "source_path": images / source,
                "target_path": images / target,
                "category": source.parent.name,
                "source_keypoints": _numbers(row, 2, line, file),
                "target_keypoints": _numbers(row, 2 + 2 * NUM_KEYPOINTS, line, file),
            }
        )
    return records


def class_of(category: str) -> str:
    """The object class of a sub-class folder name, for prompts: ``"car(G)"`` -> ``"car"``."""
    return category.split("(", 1)[0].strip() or category


def keypoint_threshold(target_keypoints: Tensor, target_size: tuple[int, int], mode: str) -> tuple[float, Tensor]:
    """PCK threshold and ``pck_scale`` of one pair (see the module docstring).

    Args:
        target_keypoints: ``[N, 2] (x, y)`` in target pixels.
        target_size: ``(W_t, H_t)``.
        mode: ``kps-trg`` or ``kps-trg-paper``.

    Returns:
        ``(threshold, pck_scale [2])``.
    """
    if mode == "kps-trg":
        extent = target_keypoints.max(dim=0).values - target_keypoints.min(dim=0).values
        return float(extent.max()), torch.ones(2)
    w, h = target_size
    scale = torch.tensor([PAPER_SIZE / w, PAPER_SIZE / h], dtype=torch.float32)
    resized_max = (target_keypoints * scale).max(dim=0).values  # [2] (x_max, y_max) at 512 scale
    return float(resized_max.max()) + 1.0, scale


class PFWillowDataModule(PairDataModule):
    """PF-Willow test pairs (see :mod:`datamodules.pfwillow` for the layout and thresholds).

    Args:
        root: the PF-Willow folder: ``test_pairs.csv`` (or ``test_pairs_pf.csv``) beside the sub-class image
            folders or beside a ``PF-dataset`` folder of them (see :mod:`datamodules.pfwillow`).
        threshold: ``kps-trg`` (target-keypoint box, original pixels) or ``kps-trg-paper`` (the paper code's quirk).
        download: in ``prepare_data``, fetch the Proposal Flow images when ``root`` does not exist.
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(
        self,
        root: str,
        threshold: Literal["kps-trg", "kps-trg-paper"] = "kps-trg",
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if threshold not in THRESHOLDS:
            raise OptionError(self, "threshold", f"expected one of {list(THRESHOLDS)}; got {threshold!r}")
        self.threshold = threshold
        self.download = download

    def prepare_data(self) -> None:
        root = Path(self.root)
        if self.download and not root.exists():
            fetch(PF_WILLOW_ARCHIVE, root)
            if not any((root / name).is_file() for name in PAIRS_FILES):
                raise DataError(f"{root / PAIRS_FILES[0]}: not part of the image archive; {_csv_hint(root)}")

    def read_pairs(self) -> list[dict[str, Any]]:
        root = Path(self.root)
        file, _ = find_layout(root)
        sizes: dict[Path, tuple[int, int]] = {}
        pairs = []
        rows = read_pfwillow_csv(root)
        if rows and not rows[0]["source_path"].parent.is_dir():
            raise DataError(
                f"{rows[0]['source_path'].parent}: image folder not found; the images go in {root}/<sub-class>/ "
                f"or {root / IMAGE_FOLDER}/<sub-class>/ (the Proposal Flow archive's {IMAGE_FOLDER} folder)"
            )
        for row in rows:
            for side in ("source", "target"):
                path = row[f"{side}_path"]
                if path not in sizes:
                    sizes[path] = image_dimensions(path)
                where = f"{file}: row {row['line']}, {side} keypoints of {path.name}"
                _check_inside(row[f"{side}_keypoints"], sizes[path], where)
            target_size = sizes[row["target_path"]]
            references = {mode: keypoint_threshold(row["target_keypoints"], target_size, mode) for mode in THRESHOLDS}
            threshold, scale = references[self.threshold]
            if threshold <= 0:
                raise DataError(f"{file}: row {row['line']}: target keypoints span no extent (PCK threshold 0)")
            pairs.append(
                {
                    "pair_id": f"{row['index']:04d}:{row['source_path'].stem}-{row['target_path'].stem}",
                    "category": row["category"],
                    "class_name": class_of(row["category"]),
                    "source_path": row["source_path"],
                    "target_path": row["target_path"],
                    "source_keypoints": row["source_keypoints"],
                    "target_keypoints": row["target_keypoints"],
                    "threshold": threshold,
                    "pck_scale": scale,
                    "references": {m: {"threshold": t, "pck_scale": s.tolist()} for m, (t, s) in references.items()},
                    "num_keypoints": NUM_KEYPOINTS,
                }
            )
        return pairs

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threshold_mode": self.threshold}
