"""Stand-ins for the pictures and viewer tests: a module, a drawn pair and a Trainer without a model, and
the viewer's data read back from an index.html."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from datamodules.base import PairDataModule
from sdcorr.matchers.base import MatchResult
from sdcorr.runs.records import FORMAT, Prediction


class FakeModule:
    """Stands in for CorrespondenceModule: records which source maps its test step made (2 read layers)."""

    alphas = [0.05, 0.1]

    def __init__(self):
        self.calls = []
        self.source_map_requests = {}

    def source_maps(self, sample, result, keypoints=None):
        n = len(result.embeddings[:keypoints])
        self.calls.append((sample["pair_id"], n))
        layers = torch.rand(2, n, 8, 8)
        return MatchResult(keypoints=torch.rand(n, 2) * 8, heatmaps=layers.mean(0), layer_heatmaps=layers)

    def outputs(self, sample, prediction, match):
        """What CorrespondenceModule.test_step returns for a batch of this one pair."""
        pair_id = sample["pair_id"]
        located = self.source_maps(sample, match, self.source_map_requests[pair_id]) if (
            pair_id in self.source_map_requests) else None  # fmt: skip
        return {"predictions": [prediction], "matches": [match], "source_maps": [located]}


def selection(pair_ids):
    """A PairDataModule whose run selected ``pair_ids`` (one source image each), without reading any data."""
    datamodule = PairDataModule.__new__(PairDataModule)
    datamodule.selected = [{"pair_id": p, "source_group": p, "num_keypoints": 5} for p in pair_ids]
    return datamodule


def fake_pair(pair_id, n=5, category="cat", groups=None):
    """A drawn pair of 2 read layers: the last keypoint is wrong at PCK@0.1 (the threshold is 20 px)."""
    points = torch.rand(n, 2) * 30
    predicted = points.clone()
    predicted[-1] += 5.0  # 7 px off: wrong at 0.1 (2 px), and at 0.05
    sample = {"pair_id": pair_id, "source_image": torch.rand(3, 30, 40), "target_image": torch.rand(3, 30, 40)}
    record = {
        "format": FORMAT,
        "pair_id": pair_id,
        "category": category,
        "source_keypoints": points.tolist(),
        "predicted_keypoints": predicted.tolist(),
        "target_keypoints": points.tolist(),
        "threshold": 20.0,
        "groups": groups or {},
        "layer_predictions": [predicted.tolist(), (predicted + 1).tolist()],
        "correct": {"0.05": [True] * (n - 1) + [False], "0.1": [True] * (n - 1) + [False]},
    }
    layers = torch.rand(2, n, 8, 8)
    match = MatchResult(
        keypoints=predicted, heatmaps=layers.mean(0), embeddings=torch.rand(n, 2, 3, 4), layer_heatmaps=layers
    )
    return sample, Prediction.from_json(record), match


def fake_trainer(folder, rank_zero=True, pair_ids=None):
    """A Trainer without other callbacks, whose datamodule selected ``pair_ids`` (None: no datamodule, so
    the first pairs matched are drawn, without source maps)."""
    return SimpleNamespace(
        is_global_zero=rank_zero,
        world_size=1,
        loggers=[],
        callbacks=[],
        default_root_dir=str(folder),
        global_step=0,
        datamodule=None if pair_ids is None else selection(pair_ids),
    )


def viewer_json(page: str | Path) -> dict:
    """The viewer's data embedded in an index.html."""
    (blob,) = re.findall(r'<script id="sdv-data" type="application/json">(.*?)</script>', Path(page).read_text())
    return json.loads(blob)
