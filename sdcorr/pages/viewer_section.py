"""The pair viewer section of ``index.html``: every pair of the run, and the maps of the drawn ones.

The section is plain HTML plus one JSON blob and the script ``sdcorr/pages/viewer.js`` (styles:
``sdcorr/pages/viewer.css``), all inline: the page needs no server, no network and no library. The JSON
(:func:`viewer_data`) holds per pair its id, category, groups, keypoints and which are correct at the
page's alpha, and per drawn pair the viewer's files of :mod:`sdcorr.pages.viewer` as data URIs.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any, Optional

import numpy as np

from sdcorr.pages.plots import colorize
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.results import Results

__all__ = ["layer_names", "pair_entry", "viewer_css", "viewer_data", "viewer_section"]


def _asset(name: str) -> str:
    return resources.files("sdcorr.pages").joinpath(name).read_text(encoding="utf-8")


def viewer_css() -> str:
    """The viewer's styles (``sdcorr/pages/viewer.css``)."""
    return _asset("viewer.css")


def _round(points: Optional[list[list[float]]]) -> Optional[list[list[float]]]:
    return None if points is None else [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def pair_entry(prediction: Prediction, alpha: float) -> dict[str, Any]:
    """One pair of the viewer's list: ``{"id", "category", "groups", "src", "pred", "trg", "correct", "pck"}``.

    ``correct`` ``[N]`` (which predictions are correct at PCK@``alpha``, with the threshold the pair ran
    with, as :mod:`sdcorr.runs.scoring` counts them) and ``pck`` (their fraction) are None for an unscored pair.

    >>> line = {"format": 1, "pair_id": "p", "category": "cat", "source_keypoints": [[1.0, 2.0], [5.0, 5.0]],
    ...         "predicted_keypoints": [[3.0, 4.0], [9.0, 9.0]], "target_keypoints": [[3.0, 5.0], [0.0, 0.0]],
    ...         "threshold": 10.0}
    >>> entry = pair_entry(Prediction.from_json(line), 0.2)
    >>> entry["correct"], entry["pck"]
    ([True, False], 0.5)
    """
    flags = prediction.correct([alpha])
    correct = None if flags is None else [bool(v) for v in flags[:, 0].tolist()]
    return {
        "id": prediction.pair_id,
        "category": prediction.category,
        "groups": {str(k): v for k, v in (prediction.groups or {}).items()},
        "src": _round(prediction.source_keypoints),
        "pred": _round(prediction.predicted_keypoints),
        "trg": _round(prediction.target_keypoints),
        "correct": correct,
        "pck": None if not correct else sum(correct) / len(correct),
    }


def layer_names(manifest: Optional[Manifest], results: Optional[Results]) -> Optional[list[str]]:
    """The read layers' names: the run's (run.json, else results.json's source), None if neither has them."""
    return (manifest.layer_names() if manifest is not None else None) or (
        results.layer_names() if results is not None else None
    )


def viewer_data(
    predictions: list[Prediction],
    drawn: dict[str, dict[str, Any]],
    alpha: float,
    layers: Optional[list[str]] = None,
    older: Sequence[str] = (),
) -> dict[str, Any]:
    """The viewer's JSON: every pair (``predictions``, plus drawn pairs without a prediction there, e.g. a
    run without a RunFolderWriter: their own line of ``viewer.json``), sorted by id.

    Args:
        predictions: the folder's predictions.
        drawn: ``{pair_id: meta}`` of :func:`sdcorr.pages.viewer.read_assets` (with the images as data URIs).
        alpha: PCK threshold of the colours and of the pairs' PCK.
        layers: names of the read layers; None: their indices.
        older: ids of pairs with pictures of an older sdcorr but no viewer files (shown below the viewer).
    """
    by_id = {p.pair_id: p for p in predictions}
    for pair_id, meta in drawn.items():
        if pair_id not in by_id:
            by_id[pair_id] = Prediction.from_json(meta["prediction"])
    pairs = [pair_entry(by_id[key], alpha) for key in sorted(by_id)]
    lut = colorize(np.linspace(0, 1, 256, dtype=np.float32))
    return {
        "alpha": f"{alpha:g}",
        "layers": layers,
        "colormap": lut.reshape(-1).tolist(),
        "groupKeys": sorted({key for pair in pairs for key in pair["groups"]}),
        "pairs": pairs,
        "drawn": {key: {k: v for k, v in meta.items() if k != "prediction"} for key, meta in drawn.items()},
        "older": sorted(older),
    }


def viewer_section(data: dict[str, Any]) -> str:
    """The HTML of the viewer (heading, legend, list, pair, panels, the data and the script)."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")  # no "</script>"
    alpha = html.escape(data["alpha"])
    drawn = len(data["drawn"])
    return "\n".join(
        [
            "<h2>Pairs</h2>",
            f'<p class="meta">Every pair of the run; {drawn} drawn (with images and maps). Click a column '
            "heading to sort, a row to see the pair, a line or keypoint for its maps per read layer.</p>",
            f'<p class="legend">lines: <span style="color:#1f77b4">blue</span> correct at PCK@{alpha}, '
            '<span style="color:#ff7f0e">orange</span> wrong, <span style="color:#999999">grey</span> no ground '
            "truth; maps: yellow star the ground truth (source: the keypoint), white ring the prediction (source: "
            "the map's peak)</p>",
            '<div id="sdv-filters"></div>',
            '<div id="sdv-listbox"></div>',
            '<div id="sdv-pair"></div>',
            '<div id="sdv-panels"></div>',
            f'<script id="sdv-data" type="application/json">{blob}</script>',
            f"<script>{_asset('viewer.js')}</script>",
        ]
    )
