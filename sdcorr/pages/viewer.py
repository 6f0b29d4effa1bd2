"""What the page's pair viewer keeps of a drawn pair: small images, every map as 8-bit tiles, and where each peaks.

Per drawn pair, four files in the run folder's ``pictures/`` (named by
:meth:`sdcorr.runs.folder.RunFolder.picture_file`, kinds of :data:`sdcorr.runs.folder.VIEWER_FILES`):

* ``<pair>.viewer-source.jpg``, ``<pair>.viewer-target.jpg``: the two images, ``height`` rows (aspect kept);
* ``<pair>.viewer-maps.png``: every map of the pair as one 8-bit grayscale PNG of ``tile x tile`` tiles,
  row ``k`` the keypoint ``k``, column ``p`` the panel ``p`` (see ``panels`` below). Each map covers the
  whole image (stretched from the matcher's square working size) and is normalised on its own, its
  minimum 0 and its maximum 255, as :func:`sdcorr.pages.plots.heatmap_plot` does; the page colours it;
* ``<pair>.viewer.json``: ``{"pair_id", "prediction": its predictions.jsonl line, "source_size": [W, H],
  "target_size": [W, H], "tile", "keypoints": K (the maps' rows), "panels": [{"side": "target" or
  "source", "layer": index into the read layers or null for their mean, "points": [K, 2] (x, y)}]}``.
  ``points`` is the prediction each panel marks, in its image's pixels: on the target, each layer's own
  prediction (``layer_predictions``) and, for the mean, the pair's prediction; on the source, the peak
  of each map (where the fitted embedding attends).

:func:`pair_assets` makes them from tensors, :func:`write_assets` writes them, :func:`read_assets`
reads them back for :mod:`sdcorr.pages.index`, which embeds them in ``index.html``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdcorr import geometry
from sdcorr.errors import OutputError
from sdcorr.images import data_uri, save_picture
from sdcorr.pages.plots import ImageLike, heatmap_plot, to_pil
from sdcorr.runs.folder import RunFolder, write_json
from sdcorr.runs.records import Prediction

__all__ = ["PairAssets", "map_peaks", "map_tiles", "pair_assets", "panel_picture", "read_assets", "write_assets"]

#: JPEG quality of the viewer's images
JPEG_QUALITY = 80


@dataclasses.dataclass
class PairAssets:
    """The viewer's files of one drawn pair (see the module docstring).

    Attributes:
        meta: the content of ``<pair>.viewer.json``.
        source: the source image, ``height`` rows.
        target: the target image, ``height`` rows.
        maps: the tiles, mode ``L``, ``K * tile`` rows by ``P * tile`` columns.
    """

    meta: dict[str, Any]
    source: Image.Image
    target: Image.Image
    maps: Image.Image


def map_tiles(maps: torch.Tensor, tile: int = 64) -> np.ndarray:
    """Maps ``[P, K, S, S]`` -> one ``[K * tile, P * tile]`` uint8 array, tile ``(k, p)`` the map ``[p, k]``.

    Each map is resized to ``tile x tile`` (bilinear, antialiased), then stretched to 0..255 between
    its own minimum and maximum (a flat map is all 0).

    >>> maps = torch.zeros(2, 1, 4, 4)
    >>> maps[1, 0, 0, 0] = 3.0
    >>> tiles = map_tiles(maps, tile=4)
    >>> tiles.shape, int(tiles[:, :4].max()), int(tiles[0, 4]), int(tiles[3, 7])
    ((4, 8), 0, 255, 0)
    """
    if maps.dim() != 4 or maps.shape[0] == 0 or maps.shape[1] == 0:
        raise ValueError(f"Expected maps of shape [P, K, S, S] with P, K >= 1 but got {list(maps.shape)}")
    panels, keypoints = maps.shape[:2]
    small = F.interpolate(maps.detach().float().cpu().flatten(0, 1)[:, None], size=(tile, tile), mode="bilinear",
                          align_corners=False, antialias=True)[:, 0]  # fmt: skip
    low = small.amin(dim=(-2, -1), keepdim=True)
    span = small.amax(dim=(-2, -1), keepdim=True) - low
    scaled = torch.where(span > 0, (small - low) / span.clamp(min=1e-30), torch.zeros_like(small))
    tiles = (scaled * 255 + 0.5).clamp(0, 255).to(torch.uint8).reshape(panels, keypoints, tile, tile)
    return tiles.permute(1, 2, 0, 3).reshape(keypoints * tile, panels * tile).numpy()


def map_peaks(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where each ``[..., h, w]`` map peaks, ``[..., 2] (x, y)`` in pixels of an image of ``size`` ``(W, H)``
    (the centre of the argmax pixel, scaled from the map's size as predictions are; maps are ``S x S`` at
    the working size, or the target's own ``H x W`` for DIFT's matching)."""
    h, w = maps.shape[-2:]
    points = geometry.argmax_xy(maps.detach().float().cpu(), offset=0.5)
    return geometry.scale_keypoints(points.reshape(-1, 2), (w, h), size).reshape(points.shape)


def _resized(image: ImageLike, height: int) -> Image.Image:
    picture = to_pil(image)
    width = max(1, round(picture.width * height / picture.height))
    return picture.resize((width, height), Image.BILINEAR)


def _round(points: Any) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def pair_assets(
    source_image: ImageLike,
    target_image: ImageLike,
    prediction: Prediction,
    target_maps: torch.Tensor,
    target_layer_maps: Optional[torch.Tensor] = None,
    source_maps: Optional[torch.Tensor] = None,
    source_layer_maps: Optional[torch.Tensor] = None,
    keypoints: Optional[int] = None,
    height: int = 320,
    tile: int = 64,
) -> PairAssets:
    """The viewer's files of one drawn pair (see the module docstring).

    Args:
        source_image: ``[3, H_s, W_s]`` in [0, 1].
        target_image: ``[3, H_t, W_t]`` in [0, 1].
        prediction: the pair's predictions.jsonl line (its ``layer_predictions`` mark the layer panels).
        target_maps: ``[N, S, S]`` the maps behind the predictions (the mean over the read layers).
        target_layer_maps: ``[L, N, S, S]`` each read layer's map; None: only the mean panel.
        source_maps: ``[N, S, S]`` where the fitted embeddings attend in the source; None: no source panels.
        source_layer_maps: ``[L, N, S, S]`` the same per read layer.
        keypoints: maps of the first this many keypoints only; None: all.
        height: rows of the stored images.
        tile: side of each stored map in pixels.
    """
    count = len(prediction.source_keypoints)
    k = count if keypoints is None else min(keypoints, count)
    if target_maps.shape[0] != count:
        raise ValueError(f"Expected target maps for {count} keypoints but got {list(target_maps.shape)}")
    source_size = (source_image.shape[-1], source_image.shape[-2])
    target_size = (target_image.shape[-1], target_image.shape[-2])
    layers = prediction.layer_predictions
    maps, panels = [], []
    if target_layer_maps is not None and layers is not None and len(layers) == len(target_layer_maps):
        for layer, layer_maps in enumerate(target_layer_maps):
            maps.append(layer_maps[:k])
            panels.append({"side": "target", "layer": layer, "points": _round(layers[layer][:k])})
    maps.append(target_maps[:k])
    panels.append({"side": "target", "layer": None, "points": _round(prediction.predicted_keypoints[:k])})
    if source_maps is not None:
        for layer, layer_maps in enumerate(source_layer_maps if source_layer_maps is not None else []):
            maps.append(layer_maps[:k])
            panels.append({"side": "source", "layer": layer, "points": _round(map_peaks(layer_maps[:k], source_size))})
        maps.append(source_maps[:k])
        panels.append({"side": "source", "layer": None, "points": _round(map_peaks(source_maps[:k], source_size))})
    meta = {
        "pair_id": prediction.pair_id,
        "prediction": prediction.to_json(),
        "source_size": list(source_size),
        "target_size": list(target_size),
        "tile": tile,
        "keypoints": k,
        "panels": panels,
    }
    tiles = Image.fromarray(map_tiles(torch.stack([m.detach().float().cpu() for m in maps]), tile), "L")
    return PairAssets(meta, _resized(source_image, height), _resized(target_image, height), tiles)


def write_assets(run: RunFolder, assets: PairAssets) -> None:
    """Write a pair's viewer files into ``run``'s ``pictures/`` (the metadata last: it marks them complete)."""
    pair_id = assets.meta["pair_id"]
    save_picture(assets.source, run.picture_file(pair_id, "viewer-source"), quality=JPEG_QUALITY)
    save_picture(assets.target, run.picture_file(pair_id, "viewer-target"), quality=JPEG_QUALITY)
    save_picture(assets.maps, run.picture_file(pair_id, "viewer-maps"), optimize=True)
    write_json(run.picture_file(pair_id, "viewer"), assets.meta)


def read_assets(run: RunFolder) -> dict[str, dict[str, Any]]:
    """``{pair_id: meta}`` of every drawn pair of ``run`` whose viewer files are all there, each meta with
    ``"source"``, ``"target"`` and ``"maps"`` added: the files as base64 data URIs.

    Raises:
        OutputError: a ``<pair>.viewer.json`` is not readable JSON (named).
    """
    pairs = {}
    for path in run.viewer_files():
        try:
            meta = json.loads(path.read_text())
            pair_id = meta["pair_id"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OutputError(f"{path}: not a viewer file of sdcorr ({error}); delete it or redraw the pair") from error
        files = {name: run.picture_file(pair_id, f"viewer-{name}") for name in ("source", "target", "maps")}
        if all(f.is_file() for f in files.values()):
            pairs[pair_id] = {**meta, **{name: data_uri(f) for name, f in files.items()}}
    return pairs


def panel_picture(assets: PairAssets, panel: int, keypoint: int, panel_size: int = 128) -> Image.Image:
    """One panel of the viewer as a picture (for W&B tables): keypoint ``keypoint``'s map of panel ``panel``
    over its reduced image, the ground truth (source: the keypoint) a yellow star, the prediction a white ring.

    Args:
        assets: a pair's viewer files (see :func:`pair_assets`).
        panel: index into ``assets.meta["panels"]``.
        keypoint: row of the maps, ``< assets.meta["keypoints"]``.
        panel_size: longest side of the picture in pixels.
    """
    meta = assets.meta
    if not 0 <= keypoint < meta["keypoints"] or not 0 <= panel < len(meta["panels"]):
        raise ValueError(
            f"Expected a keypoint < {meta['keypoints']} and a panel < {len(meta['panels'])} "
            f"but got keypoint {keypoint}, panel {panel}"
        )
    entry, tile = meta["panels"][panel], meta["tile"]
    target = entry["side"] == "target"
    image = assets.target if target else assets.source
    width, height = meta["target_size"] if target else meta["source_size"]
    line = Prediction.from_json(meta["prediction"])
    if target:
        truth = line.target_keypoints[keypoint] if line.target_keypoints else None
    else:
        truth = line.source_keypoints[keypoint]
    scale = torch.tensor([image.width / width, image.height / height])
    tiles = np.asarray(assets.maps, dtype=np.float32)
    heatmap = tiles[keypoint * tile : (keypoint + 1) * tile, panel * tile : (panel + 1) * tile] / 255
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255
    return heatmap_plot(
        array,
        heatmap[None],
        points=None if truth is None else torch.tensor([truth]) * scale,
        predictions=torch.tensor([entry["points"][keypoint]]) * scale,
        labels=[f"{entry['side']} #{keypoint}"],
        panel_size=panel_size,
    )
