"""Reading image files: pixels as tensors, sizes from headers, and the image-bounds check of keypoints.

Library users load images here without the datamodules (``from sdcorr import load_image``). Every
size is ``(W, H)`` of the image as displayed (EXIF orientation applied), in pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from sdcorr.errors import DataError, writing

__all__ = [
    "MIN_IMAGE_SIDE",
    "data_uri",
    "first_outside",
    "image_dimensions",
    "load_image",
    "pil_resize",
    "save_picture",
]


@contextmanager
def _open_image(path: str | Path) -> Iterator[Image.Image]:
    """``PIL.Image.open`` whose failures become a :class:`DataError` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an image file")
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            yield image
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot decode image ({error})") from error


#: the smallest image side accepted, in pixels: below it there is nothing to match
MIN_IMAGE_SIDE = 8
#: EXIF tag of the orientation (1: as stored; 2..8: mirrored and/or rotated, see ``ImageOps.exif_transpose``)
_ORIENTATION = 0x0112
#: the full-scale value of integer modes with more than 8 bits per sample
_HIGH_BIT_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _check_size(path: Path, size: tuple[int, int]) -> None:
    if min(size) < MIN_IMAGE_SIDE:
        raise DataError(f"{path}: image is {size[0]}x{size[1]} pixels; expected at least {MIN_IMAGE_SIDE} on each side")


def _rgb_array(path: Path, image: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` float32 RGB in [0, 1] of a decoded image: high-bit-depth modes scaled, not clipped."""
    if image.mode in _HIGH_BIT_DEPTH:  # 16-bit grayscale (PNG, TIFF, PGM): ``convert("RGB")`` would clip at 255
        gray = np.asarray(image).astype(np.float64)
        if gray.size and (gray.min() < 0 or gray.max() > _HIGH_BIT_DEPTH[image.mode]):
            raise DataError(f"{path}: {image.mode} pixel values outside 0..65535; save the image as 8 or 16 bits")
        gray = gray / _HIGH_BIT_DEPTH[image.mode]
    elif image.mode == "F":  # 32-bit float: taken as intensities in [0, 1]
        gray = np.asarray(image).astype(np.float64)
        if not np.isfinite(gray).all() or gray.min() < 0 or gray.max() > 1:
            raise DataError(f"{path}: floating-point image with values outside [0, 1]; save it as 8 or 16 bits")
    else:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return np.repeat(gray.astype(np.float32)[:, :, None], 3, axis=2)


def load_image(path: str | Path) -> Tensor:
    """Read an image file as ``[3, H, W]`` float RGB in [0, 1], as image viewers show it.

    The EXIF orientation is applied (a phone photo stored sideways with orientation 6 comes out
    upright, so ``H, W`` and keypoints refer to the displayed image); 16-bit grayscale is scaled by
    65535 (PIL's ``convert("RGB")`` would clip it to white); other modes (palette, CMYK, gray with or
    without alpha) are converted to RGB, dropping alpha. Images under :data:`MIN_IMAGE_SIDE` pixels
    on a side are refused.
    """
    path = Path(path)
    with _open_image(path) as image:
        image = ImageOps.exif_transpose(image)
        _check_size(path, image.size)
        array = _rgb_array(path, image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


def pil_resize(image: Tensor, size: int) -> Tensor:
    """Resize as DIFT's evaluation does: 8-bit pixels, Pillow's bicubic filter, to ``size x size``.

    ``[3, H, W]`` float in [0, 1] -> ``[3, S, S]`` float in [0, 1] (multiples of 1/255), on the input's
    device. The pixels are rounded to uint8 (exact for what :func:`load_image` reads from an 8-bit file:
    ``k / 255`` comes back as ``k``), resized by ``PIL.Image.resize`` with ``BICUBIC`` (Pillow's default
    filter for RGB images, named here so that a change of default cannot move results) and divided by
    255. A float resize (``sdcorr.geometry.resize_image``) differs from it by up to about 20 levels of
    255 on sharp edges: bicubic overshoots where bilinear does not.
    """
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    picture = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    resized = np.asarray(picture.resize((size, size), Image.Resampling.BICUBIC))
    return (torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255).to(image.device)


def image_dimensions(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of an image file as displayed (EXIF orientation applied), reading only its header."""
    path = Path(path)
    with _open_image(path) as image:
        w, h = image.size
        if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
            w, h = h, w
    _check_size(path, (w, h))
    return w, h


def first_outside(points: Tensor, size: tuple[int, int], mask: Optional[Tensor] = None) -> Optional[int]:
    """Index of the first ``[N, 2] (x, y)`` point outside ``[0, W] x [0, H]`` of ``size = (W, H)`` (or None).

    Only points where ``mask`` ``[N]`` is true are checked.
    """
    w, h = size
    outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
    if mask is not None:
        outside &= mask
    hits = outside.nonzero().flatten()
    return int(hits[0]) if len(hits) else None


#: the media types of the image files pages embed
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def save_picture(image: Image.Image, path: str | Path, **options: object) -> None:
    """Save a picture to ``path`` (its format from the extension; ``options`` are PIL's, e.g. ``quality``),
    making its folder; an ``OSError`` (a full disk) is an :class:`~sdcorr.errors.OutputError` naming the file."""
    with writing(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **options)


def data_uri(image: Image.Image | Path) -> str:
    """An image as a ``data:`` URI for a self-contained page: a file's own bytes (JPEG or PNG), or a PIL
    image encoded as PNG."""
    if isinstance(image, Path):
        media, data = MEDIA_TYPES[image.suffix.lower()], image.read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        media, data = "image/png", buffer.getvalue()
    return f"data:{media};base64," + base64.b64encode(data).decode("ascii")
