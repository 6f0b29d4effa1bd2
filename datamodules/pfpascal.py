"""PF-Pascal (Ham et al., Proposal Flow, 2017): 20 PASCAL VOC classes, pairs of one class, 3 to 20 keypoints.

Layout (``root`` is the ``PF-dataset-PASCAL`` folder of ``PF-dataset-PASCAL.zip``, with the pair lists of
the geometric-matching work (Rocco et al.) put beside its folders)::

    JPEGImages/<name>.jpg
    Annotations/<class>/<name>.mat            # 'kps' [K, 2] (x, y), NaN rows for absent parts; 'bbox' [1, 4]
    test_pairs_pf_pascal.csv                  # the benchmark's test pairs
    val_pairs_pf_pascal.csv

CSV (read by column position, the header row is skipped): 0 source path, 1 target path (like
``PF-dataset-PASCAL/JPEGImages/2009_001332.jpg``, relative to the folder above ``root``; the first path
component is dropped to find the file under ``root``), 2 class index 1..20 (in :data:`CLASSES` order,
alphabetical), 3 ``XA``, 4 ``YA``, 5 ``XB``, 6 ``YB``: the x and y coordinates of the source (A) and
target (B) keypoints, each a ``;``-separated list, in pixels. The lists hold only the pair's keypoints
(3 to 20 per pair), in the same order for A and B; every listed keypoint is scored. The category is the
class name. Pair ids are the row and the file names, like PF-Willow's.

Which loaders this follows, and each fact's source (read in their public code, not copied):

* layout, file names, the ``../`` image paths, the class index column and the ``;`` lists:
  Junyi42/GeoAware-SC ``utils/utils_dataset.py`` (``load_pascal_data``) and ``data/prepare_pfpascal.sh``
  (as mirrored in bronyayang/Law_of_Vision_Representation_in_MLLMs ``GeoAware-SC/``); the same columns
  are read by ignacio-rocco/weakalign ``data/pf_dataset.py`` (``PFPascalDataset``: ``iloc[:, 3:5]`` and
  ``iloc[:, 5:]``) and PruneTruong/DenseMatching. The test and val lists are downloaded by those scripts
  from ``www.di.ens.fr/willow/research/cnngeometric/other_resources/``.
* the class order: juhongm999/hpf ``data/pfpascal.py`` (``self.cls``, index = class column - 1), the same
  list in GeoAware-SC and weakalign.
* ``img-trg`` (the default): hpf's ``data/dataset.py`` ``get_pckthres`` with ``thres='img'``, the
  PF-Pascal default there: ``max`` of the **target** image's height and width (that file is not in the
  stored copy of juhongm999/hpf; a stored copy whose constructor matches hpf's ``PFPascalDataset`` was
  read). GeoAware-SC measures errors on images resized so that their longer side is ``ANNO_SIZE`` and
  compares them with ``alpha * ANNO_SIZE``: the same threshold (the target's longer side) in another unit.
* ``bbox-trg``: hpf ``get_pckthres`` with ``thres='bbox'``: ``max(x2 - x1, y2 - y1)`` of the target's
  ``bbox`` read from its ``.mat`` annotation (``read_mat(..., 'bbox')[0]``).

What could not be checked against stored sources: the number of pairs of each list (299 test and 308
val pairs are the figures commonly quoted; nothing here depends on them), and whether the CSV
keypoints equal the ``.mat`` ones (hpf reads the ``.mat`` files, the others the CSV; the CSV is read
here, as GeoAware-SC, weakalign and DenseMatching do). The train list (``train_pairs_pf_pascal.csv``)
is not offered: GeoAware-SC reads no keypoints from it (it takes them from the ``.mat`` files), and
hpf's train list marks pairs whose images are to be mirrored (a ``flip`` column); both are for
training. Loaders count a keypoint correct when its error is ``< alpha * threshold``; sdcorr's PCK
uses ``<=`` (:mod:`sdcorr.stats.pck`), which differs only for errors exactly on the threshold.

PCK thresholds (``threshold``), both in original target pixels, ``pck_scale = (1, 1)``:

* ``img-trg`` (default): ``max(W_t, H_t)`` of the target image.
* ``bbox-trg``: max side of the target's annotated bounding box.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch

from datamodules.base import DataError, PairDataModule, csv_pair_rows
from datamodules.download import Archive, fetch
from sdcorr.errors import OptionError
from sdcorr.images import first_outside, image_dimensions

__all__ = ["CLASSES", "PF_PASCAL_ARCHIVE", "PFPascalDataModule", "read_pfpascal_csv", "read_annotation"]

PF_PASCAL_ARCHIVE = Archive(
    url="https://www.di.ens.fr/willow/research/proposalflow/dataset/PF-dataset-PASCAL.zip",
    filename="PF-dataset-PASCAL.zip",
    folder="PF-dataset-PASCAL",
)
#: where the geometric-matching work publishes the test and val pair lists (not part of the archive)
PAIR_LISTS_URL = "https://www.di.ens.fr/willow/research/cnngeometric/other_resources/"
#: the class of CSV index ``i`` is ``CLASSES[i - 1]``; also the folder names of ``Annotations/``
CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("test", "val")
THRESHOLDS = ("img-trg", "bbox-trg")
NUM_COLUMNS = 7


def pairs_file(root: Path, split: str) -> Path:
    """``root/<split>_pairs_pf_pascal.csv``."""
    return root / f"{split}_pairs_pf_pascal.csv"


def _hint(root: Path, split: str) -> str:
    return (
        f"download {PAIR_LISTS_URL}{pairs_file(root, split).name} into {root} (columns: source path, target "
        "path, class 1..20, XA, YA, XB, YB with ';'-separated coordinates)"
    )


def _relative_path(value: str, where: str) -> PurePosixPath:
    """``PF-dataset-PASCAL/JPEGImages/x.jpg`` -> ``JPEGImages/x.jpg`` (first component dropped)."""
    parts = PurePosixPath(value.strip().replace("\\", "/")).parts
    if len(parts) < 3:
        raise DataError(f"{where}: expected a path like 'PF-dataset-PASCAL/JPEGImages/<image>', got {value!r}")
    return PurePosixPath(*parts[1:])


def _coordinates(value: str, where: str) -> list[float]:
    """``"10.5;20;31"`` -> ``[10.5, 20.0, 31.0]``; every entry a finite number."""
    values = []
    for item in value.strip().split(";"):
        try:
            number = float(item)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise DataError(f"{where}: expected ';'-separated finite numbers, got {value!r}")
        values.append(number)
    return values


def read_pfpascal_csv(root: Path, split: str = "test") -> list[dict[str, Any]]:
    """Parse ``<split>_pairs_pf_pascal.csv`` of ``root`` into rows (no image or annotation access).

    Returns:
        One dict per data row: ``line`` (1-based row of the file, the header is row 1), ``index``
        (0-based data row), ``source_path``, ``target_path`` (absolute), ``category`` (class name),
        ``source_keypoints`` and ``target_keypoints`` ``[N, 2] (x, y)`` in pixels.

    Raises:
        DataError: no such file, or a row that is not as described in the module docstring.
    """
    file = pairs_file(root, split)
    if not file.is_file():
        raise DataError(f"{file}: pairs file not found; {_hint(root, split)}")
    records = []
    for index, line, row in csv_pair_rows(file, NUM_COLUMNS):
        try:
            label = int(float(row[2]))
        except ValueError:
            label = 0
        if not 1 <= label <= len(CLASSES) or float(row[2]) != label:
            raise DataError(f"{file}: row {line}, column 2: expected a class index 1..20, got {row[2]!r}")
        points = {}
        for side, (x_column, y_column) in (("source", (3, 4)), ("target", (5, 6))):
            xs = _coordinates(row[x_column], f"{file}: row {line}, column {x_column}")
            ys = _coordinates(row[y_column], f"{file}: row {line}, column {y_column}")
            if len(xs) != len(ys):
                raise DataError(f"{file}: row {line}: {side} has {len(xs)} x but {len(ys)} y coordinates")
            points[side] = torch.tensor([xs, ys], dtype=torch.float32).t().contiguous()
        if len(points["source"]) != len(points["target"]):
            raise DataError(
                f"{file}: row {line}: {len(points['source'])} source but {len(points['target'])} target keypoints"
            )
        records.append(
            {
                "line": line,
                "index": index,
                "source_path": root / _relative_path(row[0], f"{file}: row {line}, column 0"),
                "target_path": root / _relative_path(row[1], f"{file}: row {line}, column 1"),
                "category": CLASSES[label - 1],
                "source_keypoints": points["source"],
                "target_keypoints": points["target"],
            }
        )
    return records


def read_annotation(file: Path) -> dict[str, np.ndarray]:
    """One ``Annotations/<class>/<name>.mat`` file: ``{"kps": [K, 2] (x, y), NaN rows for absent parts,
    "bbox": [4] (x1, y1, x2, y2)}``.

    Raises:
        DataError: the file is missing, not a MATLAB file, or has no ``kps`` or no usable ``bbox``.
    """
    import scipy.io  # here, not at the top: it takes about a second to import, and only PF-Pascal needs it

    if not file.is_file():
        raise DataError(f"{file}: annotation not found (PF-dataset-PASCAL/Annotations/<class>/<image>.mat)")
    try:
        content = scipy.io.loadmat(file)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError) as error:
        raise DataError(f"{file}: not a readable MATLAB annotation ({error})") from error
    for key in ("kps", "bbox"):
        if key not in content:
            raise DataError(f"{file}: missing field '{key}'")
    bbox = np.asarray(content["bbox"], dtype=np.float64).reshape(-1)
    if bbox.shape != (4,) or not np.isfinite(bbox).all() or min(bbox[2] - bbox[0], bbox[3] - bbox[1]) < 0:
        raise DataError(f"{file}: field 'bbox' must be [x1, y1, x2, y2] with x2 >= x1, y2 >= y1; got {bbox.tolist()}")
    if max(bbox[2] - bbox[0], bbox[3] - bbox[1]) <= 0:
        raise DataError(f"{file}: field 'bbox' = {bbox.tolist()} has no extent (PCK threshold 0)")
    return {"kps": np.asarray(content["kps"], dtype=np.float64), "bbox": bbox}


class PFPascalDataModule(PairDataModule):
    """PF-Pascal pairs of one split (see :mod:`datamodules.pfpascal` for the layout, sources and thresholds).

    Args:
        root: the PF-dataset-PASCAL folder: JPEGImages/, Annotations/<class>/ and <split>_pairs_pf_pascal.csv.
        split: which pair list: test (the benchmark) or val.
        threshold: img-trg (target image's longer side, the standard) or bbox-trg (target bounding box's longer side).
        download: in prepare_data, fetch the Proposal Flow PASCAL archive when root does not exist.
        **kwargs: selection and loading options of :class:`~datamodules.base.PairDataModule`.
    """

    def __init__(
        self,
        root: str,
        split: Literal["test", "val"] = "test",
        threshold: Literal["img-trg", "bbox-trg"] = "img-trg",
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if split not in SPLITS:
            raise OptionError(self, "split", f"expected one of {list(SPLITS)}; got {split!r}")
        if threshold not in THRESHOLDS:
            raise OptionError(self, "threshold", f"expected one of {list(THRESHOLDS)}; got {threshold!r}")
        self.split = split
        self.threshold = threshold
        self.download = download

    def prepare_data(self) -> None:
        root = Path(self.root)
        if self.download and not root.exists():
            fetch(PF_PASCAL_ARCHIVE, root)
            file = pairs_file(root, self.split)
            if not file.is_file():
                raise DataError(f"{file}: not part of the image archive; {_hint(root, self.split)}")

    def read_pairs(self) -> list[dict[str, Any]]:
        root = Path(self.root)
        file = pairs_file(root, self.split)
        sizes: dict[Path, tuple[int, int]] = {}
        boxes: dict[Path, np.ndarray] = {}
        pairs = []
        for row in read_pfpascal_csv(root, self.split):
            for side in ("source", "target"):
                path = row[f"{side}_path"]
                if path not in sizes:
                    sizes[path] = image_dimensions(path)
                w, h = sizes[path]
                i = first_outside(row[f"{side}_keypoints"], (w, h))
                if i is not None:
                    point = row[f"{side}_keypoints"][i].tolist()
                    raise DataError(
                        f"{file}: row {row['line']}, {side} keypoint {i + 1} = {point} lies outside the {w}x{h} "
                        f"image {path.name}"
                    )
            target = row["target_path"]
            annotation = root / "Annotations" / row["category"] / f"{target.stem}.mat"
            if annotation not in boxes:
                boxes[annotation] = read_annotation(annotation)["bbox"]
            x1, y1, x2, y2 = boxes[annotation]
            references = {"img-trg": float(max(sizes[target])), "bbox-trg": float(max(x2 - x1, y2 - y1))}
            pairs.append(
                {
                    "pair_id": f"{row['index']:04d}:{row['source_path'].stem}-{target.stem}",
                    "category": row["category"],
                    "source_path": row["source_path"],
                    "target_path": target,
                    "source_keypoints": row["source_keypoints"],
                    "target_keypoints": row["target_keypoints"],
                    "threshold": references[self.threshold],
                    "pck_scale": torch.ones(2),
                    "references": {m: {"threshold": t, "pck_scale": [1.0, 1.0]} for m, t in references.items()},
                    "num_keypoints": len(row["source_keypoints"]),
                }
            )
        return pairs

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split, "threshold_mode": self.threshold}
