"""Pure geometry of the method: resizing, crops, Gaussian targets, canvases and argmax.

The coordinate convention, used everywhere in sdcorr:

* An image of ``W x H`` pixels covers ``[0, W] x [0, H]``; pixel ``(i, j)`` (column ``i``, row ``j``)
  is the unit square centred at ``(i + 0.5, j + 0.5)``. Keypoints ``(x, y)`` in every file and every
  matcher's output use it, ``x`` along columns and ``y`` along rows; resizing an image scales them
  by ``W'/W`` and ``H'/H`` (:func:`scale_keypoints`), nothing else. A map's argmax pixel is therefore
  the point ``(column, row) + 0.5`` (:func:`argmax_xy` with ``offset=0.5``).
* Inside the prompt matcher, as in the paper's code, the Gaussian target (:func:`gaussian_map`) and
  the running argmax that places the inference crops use pixel indices, ``(column, row)`` without the
  ``+ 0.5``: part of the paper's method, kept so that its numbers stay the paper's.
* Images are ``[3, H, W]`` float tensors in ``[0, 1]``; the working image is square,
  ``[3, S, S]``. Crop corners are integer pixel edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: the working size the paper's numbers are defined at, in pixels: sigma is given in pixels at 512 x 512
#: (scaled to other working sizes), and SPair's ``bbox-src-512``, CUB's ``bbox-trg-512`` and PF-Willow's
#: ``kps-trg-paper`` thresholds are measured on images resized to 512 x 512
PAPER_SIZE = 512


def resize_image(image: Tensor, size: int) -> Tensor:
    """Resize ``[3, H, W]`` (or ``[B, 3, H, W]``) to ``size x size``, bilinear, aspect ratio not kept.

    Antialiasing is on, so that downscaling a large photo does not alias.
    """
    batched = image.dim() == 4
    x = image if batched else image[None]
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out if batched else out[0]


def scale_keypoints(keypoints: Tensor, from_size: Sequence[float], to_size: Sequence[float]) -> Tensor:
    """Map ``[N, 2] (x, y)`` keypoints from an image of ``(W, H)`` = ``from_size`` to one of ``to_size``."""
    scale = keypoints.new_tensor([to_size[0] / from_size[0], to_size[1] / from_size[1]])
    return keypoints * scale


def crop_corner_range(
    keypoint: Sequence[float], side: int, margin: int, image_size: int
) -> tuple[list[int], list[int]]:
    """Inclusive integer range of crop top-left corners that keep ``keypoint`` ``margin`` px inside.

    For each axis the corner ``c`` should satisfy ``c <= k - margin`` and ``c + side - k >= margin``;
    both bounds are rounded down, as the paper's code does (Python's ``int()`` of the clamped float),
    so at a non-integer keypoint the lowest corner may leave up to 1 px less than ``margin``. Both
    are clamped to ``[0, image_size - side]`` so the crop stays in the image. When the margin cannot
    be kept (a keypoint near the border) the clamping wins.

    Returns:
        ``(low, high)``, each ``[x, y]``.
    """
    limit = image_size - side
    low, high = [], []
    for k in keypoint:
        lo = math.floor(float(k) + margin - side)
        hi = math.floor(float(k) - margin)
        low.append(min(max(lo, 0), limit))
        high.append(min(max(hi, 0), limit))
    return low, high


def sample_crop_corner(
    keypoint: Sequence[float], side: int, margin: int, image_size: int, generator: torch.Generator
) -> tuple[int, int]:
    """Draw a crop corner ``(x, y)`` uniformly from :func:`crop_corner_range` (x first, then y)."""
    low, high = crop_corner_range(keypoint, side, margin, image_size)
    return tuple(int(torch.randint(lo, hi + 1, (1,), generator=generator)) for lo, hi in zip(low, high))


def corner_anchors(image_size: int) -> list[tuple[int, int]]:
    """The four keypoints ``(x, y)`` whose crops open the inference loop: one per image corner."""
    s = image_size
    return [(0, 0), (0, s), (s, 0), (s, s)]


def crop_resize(images: Tensor, corners: Tensor, side: int, size: int) -> Tensor:
    """Cut one square crop per image and resize it to ``size`` (bilinear, align_corners=False).

    Args:
        images: ``[B, 3, S, S]`` or ``[3, S, S]`` (shared by every crop).
        corners: ``[B, 2]`` integer top-left corners ``(x, y)``.
        side: crop side in pixels.
        size: output side.

    Returns:
        ``[B, 3, size, size]``.
    """
    crops = []
    for b, (cx, cy) in enumerate(corners.tolist()):
        image = images if images.dim() == 3 else images[b]
        crops.append(image[:, cy : cy + side, cx : cx + side])
    crops = torch.stack(crops)
    if side == size:
        return crops
    return F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False)


def gaussian_map(centers: Tensor, size: int, sigma: float) -> Tensor:
    """Unnormalised Gaussians ``exp(-d^2 / (2 sigma^2))`` on a ``size x size`` pixel grid.

    Args:
        centers: ``[B, 2] (x, y)`` in pixels of the grid, compared with the pixel indices (the
            paper's target: pixel ``(i, j)`` is taken at ``(i, j)``, see the module docstring).

    Returns:
        ``[B, size, size]`` with value 1 at an integer centre.
    """
    grid = torch.arange(size, device=centers.device, dtype=centers.dtype)
    dx = grid[None, None, :] - centers[:, 0, None, None]
    dy = grid[None, :, None] - centers[:, 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def upsample_maps(maps: Tensor, size: int) -> Tensor:
    """Bilinearly upsample ``[B, L, h, w]`` maps to ``[B, L, size, size]`` (align_corners=False)."""
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def paste_into_canvas(canvas: Tensor, count: Tensor, maps: Tensor, corners: Tensor) -> None:
    """Add crop maps into running canvases, in place.

    Args:
        canvas: ``[B, L, S, S]`` running sums.
        count: ``[B, S, S]`` how many crops covered each pixel.
        maps: ``[B, L, c, c]`` one map per layer of a crop of side ``c``.
        corners: ``[B, 2]`` top-left ``(x, y)`` of each crop.
    """
    side = maps.shape[-1]
    for b, (cx, cy) in enumerate(corners.tolist()):
        canvas[b, :, cy : cy + side, cx : cx + side] += maps[b]
        count[b, cy : cy + side, cx : cx + side] += 1


def canvas_average(canvas: Tensor, count: Tensor) -> Tensor:
    """``canvas / count`` with uncovered pixels set to 0. ``[B, L, S, S]``, ``[B, S, S]`` -> ``[B, L, S, S]``."""
    count = count[:, None]
    return torch.where(count > 0, canvas / count.clamp(min=1), torch.zeros_like(canvas))


def argmax_xy(heatmaps: Tensor, offset: float = 0.0) -> Tensor:
    """Location ``(x, y) = (column, row) + offset`` of the maximum of each ``[..., H, W]`` map.

    ``offset=0.5`` gives the centre of the argmax pixel in the module's convention (a prediction);
    the default 0 gives its indices. Ties go to the first pixel in row-major order. Returns ``[..., 2]``.

    >>> heatmap = torch.zeros(3, 4)
    >>> heatmap[1, 2] = 1.0  # row 1, column 2
    >>> argmax_xy(heatmap), argmax_xy(heatmap, offset=0.5)
    (tensor([2., 1.]), tensor([2.5000, 1.5000]))
    """
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.reshape(*heatmaps.shape[:-2], h * w).argmax(dim=-1)
    xy = torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor")], dim=-1)
    return xy.to(torch.float32) + offset
