"""Pictures of what the model sees: correspondence lines, attention heatmaps, the per-pair PCK histogram.

Pure functions from tensors (or arrays) to ``PIL.Image``; Pillow and numpy only. Images are
``[3, H, W]`` floats in [0, 1]; points are ``(x, y)`` in pixels of their own image, as everywhere in
sdcorr. Colours: a line is :data:`CORRECT` (blue) when the prediction is correct, :data:`WRONG`
(orange) when it is not and :data:`UNSCORED` (grey) without ground truth; the ground truth is a
:data:`STAR` (yellow) star.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "CORRECT",
    "STAR",
    "UNSCORED",
    "WRONG",
    "colorize",
    "correspondence_plot",
    "heatmap_plot",
    "histogram_plot",
    "to_pil",
]

RGB = tuple[int, int, int]
#: a ``[3, H, W]`` image in [0, 1] (torch tensor or numpy array)
ImageLike = Any
#: ``[N, 2] (x, y)`` points: a tensor, an array or a list of pairs
PointsLike = Any

CORRECT: RGB = (31, 119, 180)  # blue
WRONG: RGB = (255, 127, 14)  # orange
UNSCORED: RGB = (170, 170, 170)  # grey: no ground truth
STAR: RGB = (255, 230, 0)  # yellow
PREDICTION: RGB = (255, 255, 255)  # white ring
BAR: RGB = CORRECT
TEXT: RGB = (30, 30, 30)

# a jet-like map without white or yellow at the top, so the yellow star stays visible on a peak
_ANCHORS = np.array(
    [(0, 0, 110), (0, 40, 255), (0, 200, 255), (60, 230, 120), (255, 150, 0), (220, 0, 0), (120, 0, 0)],
    dtype=np.float32,
)


def _array(value: Any) -> np.ndarray:
    """A float32 numpy array from a tensor (any device, any dtype), an array or nested lists."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _points(points: PointsLike) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in _array(points).reshape(-1, 2)]


def _font(size: int) -> Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]:
    """Pillow's default font at ``size`` px (the fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def to_pil(image: ImageLike) -> Image.Image:
    """``[3, H, W]`` float in [0, 1] -> an RGB ``PIL.Image`` of ``W x H``."""
    array = _array(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"Expected an image of shape [3, H, W] but got {list(array.shape)}")
    return Image.fromarray((array.clip(0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0), "RGB")


def colorize(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 colours (dark blue = 0 ... dark red = 1)."""
    position = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    weight = (position - low)[..., None]
    return (_ANCHORS[low] * (1 - weight) + _ANCHORS[low + 1] * weight + 0.5).astype(np.uint8)


def _star(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float) -> None:
    """A five-pointed yellow star with a black outline, centred on ``centre``."""
    x, y = centre
    corners = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        corners.append((x + r * math.cos(angle), y + r * math.sin(angle)))
    draw.polygon(corners, fill=STAR, outline=(0, 0, 0))


def _dot(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, colour: RGB) -> None:
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(0, 0, 0))


def _caption(canvas: Image.Image, text: str, top: int, size: int = 12) -> None:
    ImageDraw.Draw(canvas).text((4, top + 3), text, fill=TEXT, font=_font(size))


def correspondence_plot(
    source_image: ImageLike,
    target_image: ImageLike,
    source_keypoints: PointsLike,
    predicted_keypoints: PointsLike,
    correct: Optional[Sequence[bool]] = None,
    target_keypoints: Optional[PointsLike] = None,
    height: Optional[int] = None,
    caption: Optional[str] = None,
    gap: int = 8,
    line_width: int = 2,
) -> Image.Image:
    """Source and target side by side, a line from each source keypoint to its prediction.

    Layout: both images are scaled to ``height`` rows (aspect kept), the source at ``x = 0`` and the
    target at ``x = W_s' + gap`` (``W_s'`` the scaled source width); a point ``(x, y)`` of the source
    is drawn at ``(x, y) * height / H_s``, a prediction at ``(W_s' + gap, 0) + (x, y) * height / H_t``.
    The caption, if any, is a strip below the images.

    Args:
        source_image: ``[3, H_s, W_s]`` in [0, 1].
        target_image: ``[3, H_t, W_t]`` in [0, 1].
        source_keypoints: ``[N, 2] (x, y)`` in source pixels.
        predicted_keypoints: ``[N, 2] (x, y)`` in target pixels.
        correct: ``[N]`` whether each prediction is correct (blue line) or not (orange); None: grey lines.
        target_keypoints: ``[N, 2] (x, y)`` ground truth in target pixels, drawn as small yellow stars.
        height: rows of the picture (without the caption); default: the taller image's height.
        caption: one line of text under the images.
        gap: white columns between the two images.
        line_width: width of the lines in pixels.

    Returns:
        An RGB image of ``W_s' + gap + W_t'`` x ``height`` (+ 20 rows with a caption).
    """
    source, target = to_pil(source_image), to_pil(target_image)
    height = height or max(source.height, target.height)
    scale_s, scale_t = height / source.height, height / target.height
    source = source.resize((max(1, round(source.width * scale_s)), height), Image.BILINEAR)
    target = target.resize((max(1, round(target.width * scale_t)), height), Image.BILINEAR)
    strip = 20 if caption else 0
    canvas = Image.new("RGB", (source.width + gap + target.width, height + strip), "white")
    canvas.paste(source, (0, 0))
    offset = source.width + gap
    canvas.paste(target, (offset, 0))

    starts, ends = _points(source_keypoints), _points(predicted_keypoints)
    if len(starts) != len(ends) or (correct is not None and len(correct) != len(starts)):
        raise ValueError(
            f"Expected as many predictions and correct flags as source keypoints ({len(starts)}) but got "
            f"{len(ends)} and {None if correct is None else len(correct)}"
        )
    draw = ImageDraw.Draw(canvas)
    radius = max(2, line_width + 1)
    if target_keypoints is not None:
        for x, y in _points(target_keypoints):
            _star(draw, (offset + x * scale_t, y * scale_t), 2.5 * radius)
    colours = [UNSCORED if correct is None else (CORRECT if ok else WRONG) for ok in (correct or [None] * len(starts))]
    lines = [
        ((xs * scale_s, ys * scale_s), (offset + xp * scale_t, yp * scale_t))
        for (xs, ys), (xp, yp) in zip(starts, ends)
    ]
    for (start, end), colour in zip(lines, colours):
        draw.line([start, end], fill=colour, width=line_width)
    for (start, end), colour in zip(lines, colours):
        _dot(draw, start, radius, colour)
        _dot(draw, end, radius, colour)
    if caption:
        _caption(canvas, caption, height)
    return canvas


def heatmap_plot(
    image: ImageLike,
    heatmaps: Any,
    points: Optional[PointsLike] = None,
    predictions: Optional[PointsLike] = None,
    labels: Optional[Sequence[str]] = None,
    panel_size: int = 192,
    columns: int = 4,
    opacity: float = 0.5,
    gap: int = 4,
) -> Image.Image:
    """One panel per keypoint: its heatmap, colour-mapped and blended over the image.

    Each map covers the whole image and is stretched to its shape (the matcher works on a square
    resize of the image), normalised to [0, 1] per map (min to max), coloured by :func:`colorize` and
    blended with ``opacity``. ``points`` are drawn as yellow stars, ``predictions`` as white rings.

    Layout: panels of ``W' x H'`` with ``scale = panel_size / max(H, W)``, ``W' = round(W * scale)``;
    panel ``n`` sits at column ``n % columns`` and row ``n // columns`` of a grid of cells
    ``(W' + gap) x (H' + 16 + gap)``, the 16 rows under each panel holding its label. A point
    ``(x, y)`` of panel ``n`` is at ``(col * (W' + gap), row * (H' + 16 + gap)) + (x, y) * scale``.

    Args:
        image: ``[3, H, W]`` in [0, 1].
        heatmaps: ``[N, h, w]`` maps of any size (e.g. ``[N, S, S]`` at the matcher's working size).
        points: ``[N, 2] (x, y)`` in image pixels: the ground truth (or the source keypoint).
        predictions: ``[N, 2] (x, y)`` in image pixels: the predicted points.
        labels: ``[N]`` text under each panel; default ``#0``, ``#1``, ...
        panel_size: longest side of a panel in pixels.
        columns: panels per row.
        opacity: weight of the heatmap colours over the image, in [0, 1].
        gap: white pixels between panels.

    Returns:
        An RGB image of the grid.
    """
    maps = _array(heatmaps)
    if maps.ndim != 3 or len(maps) == 0:
        raise ValueError(f"Expected heatmaps of shape [N, h, w] with N >= 1 but got {list(maps.shape)}")
    if not 0 <= opacity <= 1:
        raise ValueError(f"Expected opacity in [0, 1] but got {opacity}")
    base = to_pil(image)
    scale = panel_size / max(base.width, base.height)
    width, height = max(1, round(base.width * scale)), max(1, round(base.height * scale))
    base = base.resize((width, height), Image.BILINEAR)
    count, label_rows = len(maps), 16
    stars = _points(points) if points is not None else []
    rings = _points(predictions) if predictions is not None else []
    cols = max(1, min(columns, count))
    rows = math.ceil(count / cols)
    cell_w, cell_h = width + gap, height + label_rows + gap
    canvas = Image.new("RGB", (cols * cell_w - gap, rows * cell_h - gap), "white")
    draw, font = ImageDraw.Draw(canvas), _font(11)
    radius = max(5.0, panel_size / 24)
    for n, heatmap in enumerate(maps):
        low, high = float(heatmap.min()), float(heatmap.max())
        normalised = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)
        stretched = np.asarray(Image.fromarray(normalised, "F").resize((width, height), Image.BILINEAR))
        overlay = Image.fromarray(colorize(stretched), "RGB")
        left, top = (n % cols) * cell_w, (n // cols) * cell_h
        canvas.paste(Image.blend(base, overlay, opacity), (left, top))
        if n < len(rings):
            x, y = rings[n]
            r = radius * 1.3  # around the star when the prediction hits the ground truth
            cx, cy = left + x * scale, top + y * scale
            draw.ellipse((cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1), outline=(0, 0, 0), width=4)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=PREDICTION, width=2)
        if n < len(stars):
            x, y = stars[n]
            _star(draw, (left + x * scale, top + y * scale), radius)
        label = labels[n] if labels is not None and n < len(labels) else f"#{n}"
        draw.text((left + 2, top + height + 2), label, fill=TEXT, font=font)
    return canvas


def histogram_plot(
    bins: Sequence[str],
    counts: Sequence[int],
    title: Optional[str] = None,
    slot: int = 64,
    plot_height: int = 160,
) -> Image.Image:
    """A bar chart: one bar per bin, its height proportional to the count, the count above it.

    Args:
        bins: ``[B]`` bin labels, e.g. ``["0%", "(0,10%]", ..., "(90,100%]"]``.
        counts: ``[B]`` non-negative counts (pairs per bin).
        title: a line of text above the bars.
        slot: width of each bin's column in pixels (the bar takes the middle ``slot - 16``).
        plot_height: height in pixels of the tallest bar.

    Returns:
        An RGB image of ``B * slot + 20`` x ``plot_height + 80``.
    """
    if len(bins) != len(counts) or not bins:
        raise ValueError(
            f"Expected one count per bin and at least one bin but got {len(bins)} bins, {len(counts)} counts"
        )
    if any(c < 0 for c in counts):
        raise ValueError(f"Expected non-negative counts but got {list(counts)}")
    top, bottom, left = 40, 40, 10
    canvas = Image.new("RGB", (len(bins) * slot + 2 * left, top + plot_height + bottom), "white")
    draw, font = ImageDraw.Draw(canvas), _font(11)
    if title:
        draw.text((left, 8), title, fill=TEXT, font=_font(13))
    base = top + plot_height
    highest = max(max(counts), 1)
    for i, (label, count) in enumerate(zip(bins, counts)):
        x0 = left + i * slot + 8
        bar = round(plot_height * count / highest)
        if bar:
            draw.rectangle((x0, base - bar, x0 + slot - 17, base - 1), fill=BAR)
        centre = x0 + (slot - 16) / 2
        draw.text(
            (centre - draw.textlength(str(count), font=font) / 2, base - bar - 16), str(count), fill=TEXT, font=font
        )
        draw.text((centre - draw.textlength(str(label), font=font) / 2, base + 6), str(label), fill=TEXT, font=font)
    draw.line((left, base, canvas.width - left, base), fill=(120, 120, 120), width=1)
    return canvas
