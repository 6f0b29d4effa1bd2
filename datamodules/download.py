"""Download, verify and atomically extract a dataset archive (used by ``prepare_data``).

Nothing is left half-done: the archive is written to ``<name>.part`` and renamed when complete; it
is verified (size and SHA-256 when known, else that it opens as an archive) and a corrupted one is
removed; it is extracted into a temporary folder beside the dataset folder, which is renamed into
place only when extraction has finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lightning.pytorch.utilities import rank_zero_info

from sdcorr.errors import DataError


@dataclass(frozen=True)
class Archive:
    """Where a dataset comes from.

    Attributes:
        url: download address.
        filename: name of the archive file (``.tar.gz``, ``.tgz``, ``.tar`` or ``.zip``).
        folder: top-level folder inside the archive; it becomes the dataset root.
        sha256: expected SHA-256 of the archive, when known.
        size: expected size in bytes, when known.
    """

    url: str
    filename: str
    folder: str
    sha256: Optional[str] = None
    size: Optional[int] = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(archive: Archive, path: Path) -> None:
    """Raise :class:`DataError` (and delete ``path``) when the file is not the expected archive."""
    problem = None
    if archive.size is not None and path.stat().st_size != archive.size:
        problem = f"size {path.stat().st_size} bytes, expected {archive.size}"
    elif archive.sha256 is not None and _sha256(path) != archive.sha256:
        problem = f"SHA-256 {_sha256(path)}, expected {archive.sha256}"
    elif not (tarfile.is_tarfile(path) or zipfile.is_zipfile(path)):
        problem = "not a tar or zip archive"
    if problem:
        path.unlink()
        raise DataError(f"{path}: corrupted download ({problem}); the file was removed, run again to retry")


def _download(url: str, path: Path) -> None:
    partial = path.with_name(path.name + ".part")
    rank_zero_info(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {error}") from error
    os.replace(partial, path)


def _extract(path: Path, into: Path) -> None:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(into)
    else:
        with tarfile.open(path) as archive:
            archive.extractall(into, filter="data")


def fetch(archive: Archive, root: Path, keep_archive: bool = False) -> Path:
    """Make ``root`` hold the archive's ``folder``, downloading and extracting it if needed.

    Args:
        archive: what to fetch.
        root: the dataset folder; its parent receives the archive and the temporary extraction.
        keep_archive: keep the archive file after a successful extraction.

    Returns:
        ``root``.
    """
    root = Path(root)
    if root.exists():
        return root
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / archive.filename
    where = f"or download {archive.url} yourself and extract it so that its {archive.folder}/ folder is {root}"
    try:
        if not path.exists():
            _download(archive.url, path)
        verify(archive, path)
    except DataError as error:
        raise DataError(f"{error}\nRun again when online, {where}") from error
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=parent))
    try:
        _extract(path, scratch)
        extracted = scratch / archive.folder
        if not extracted.is_dir():
            found = sorted(p.name for p in scratch.iterdir())
            raise DataError(f"{path}: expected a top-level folder {archive.folder}/ in the archive, found {found}")
        os.replace(extracted, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not keep_archive:
        path.unlink()
    return root
