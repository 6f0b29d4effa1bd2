"""``run.json``: what a run is (its :class:`Fingerprint`) and which pairs it answers for.

A :class:`Manifest` is built when a run starts (:meth:`Manifest.new`), written by
:class:`~sdcorr.runs.folder.RunFolder` and read back (:meth:`Manifest.from_json`) by everything that
works on the folder afterwards: resume, merge, evaluate, compare, the page. Nobody else indexes its JSON.

>>> fingerprint = Fingerprint(data={"datamodule": "PairsDataModule", "shard": [1, 3], "num_pairs": 2},
...                           source={"class": "S"}, matcher={"class": "M"}, seed=0, precision="32-true")
>>> manifest = Manifest(fingerprint, pair_ids=["a", "b"], alphas=[0.1])
>>> Manifest.from_json(manifest.to_json()) == manifest, fingerprint.shard, list(manifest.to_json())[:2]
(True, (1, 3), ['format', 'fingerprint'])
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from sdcorr.runs.fingerprint import differences, model_description, settings_of
from sdcorr.runs.records import FORMAT, check_format

#: keys of the fingerprint that are not about shards: what shards of one run share
SHARD_KEYS = ("shard", "num_pairs")


def _require(payload: dict[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [key for key in keys if key not in payload]
    if missing:
        raise ValueError(f"expected the keys {list(keys)} in {what} but {missing} are missing")


@dataclasses.dataclass
class Fingerprint:
    """What makes two runs the same run (see :mod:`sdcorr.runs.fingerprint`): equal fingerprints, equal predictions.

    Attributes:
        data: the datamodule's selection (:meth:`datamodules.base.PairDataModule.describe`: ``datamodule``,
            ``root``, ``categories``, ``subsample``, ``shard``, ``num_pairs``, ``skipped``, ...).
        source: the feature source, as :func:`~sdcorr.runs.fingerprint.settings_of` records it.
        matcher: the matcher, described the same way.
        seed: the run's seed.
        precision: the Trainer's precision (``"32-true"``, ``"bf16-mixed"``...).
        embeddings: the run folder whose saved embeddings were reused (``model.embeddings``), or None.
        extra: keys this version does not know, kept.
    """

    data: dict[str, Any]
    source: dict[str, Any]
    matcher: dict[str, Any]
    seed: int
    precision: str
    embeddings: Optional[str] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "source": self.source,
            "matcher": self.matcher,
            "seed": self.seed,
            "precision": self.precision,
            "embeddings": self.embeddings,
            **self.extra,
        }

    @classmethod
    def from_json(cls, payload: Any) -> Fingerprint:
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object (fingerprint) but got {type(payload).__name__}")
        _require(payload, ("data", "source", "matcher", "seed", "precision"), "the fingerprint")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in payload.items() if k in known},
            extra={k: v for k, v in payload.items() if k not in known},
        )

    @property
    def shard(self) -> tuple[int, int]:
        """``(index, count)`` of the run's shard; ``(0, 1)``: not sharded."""
        index, count = self.data.get("shard") or (0, 1)
        return int(index), int(count)

    @property
    def threshold_mode(self) -> Optional[str]:
        """The dataset's threshold mode the run was scored in (datasets with several), else None."""
        return self.data.get("threshold_mode")

    def shardless(self) -> dict[str, Any]:
        """The fingerprint as JSON without what differs between shards of one run."""
        payload = copy.deepcopy(self.to_json())
        for key in SHARD_KEYS:
            payload["data"].pop(key, None)
        return payload

    def differences(self, other: Fingerprint, shards: bool = True) -> list[str]:
        """``path: old -> new`` lines where ``other`` differs (``shards``: also in shard and pair count)."""
        if shards:
            return differences(_resolved(self.to_json()), _resolved(other.to_json()))
        return differences(_resolved(self.shardless()), _resolved(other.shardless()))


def _resolved(payload: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint's JSON with a relative ``data.root`` (recorded by sdcorr before roots were recorded
    absolute) resolved from the working directory, so that it compares equal to the same folder."""
    root = payload.get("data", {}).get("root")
    if isinstance(root, str) and not Path(root).is_absolute():
        payload = {**payload, "data": {**payload["data"], "root": str(Path(root).resolve())}}
    return payload


@dataclasses.dataclass
class Manifest:
    """The content of ``run.json``.

    Attributes:
        fingerprint: what was run.
        pair_ids: the pairs the run answers for (its selection and shard), in run order.
        alphas: the PCK thresholds the run scores at.
        model: the model in words (:func:`~sdcorr.runs.fingerprint.model_description`).
        layers: names of the read layers, if the source has them.
        merged_from: the shard folders of a merged run (``sdcorr merge``), else None.
        extra: keys this version does not know, kept.
    """

    fingerprint: Fingerprint
    pair_ids: list[str]
    alphas: list[float]
    model: Optional[str] = None
    layers: Optional[list[Any]] = None
    merged_from: Optional[list[str]] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def new(
        cls,
        data: dict[str, Any],
        source: Any,
        matcher: Any,
        seed: int,
        precision: str,
        pair_ids: Sequence[str],
        alphas: Sequence[float],
        embeddings: Optional[str] = None,
    ) -> Manifest:
        """The manifest of a run starting now.

        Args:
            data: the datamodule's ``describe()``.
            source: the feature source object (described, its model in words, its ``layers``).
            matcher: the matcher object (described).
            seed: the run's seed.
            precision: the Trainer's precision, as a string.
            pair_ids: the datamodule's ``selected_ids()``.
            alphas: the module's PCK alphas.
            embeddings: the module's ``embeddings`` folder, if any.
        """
        fingerprint = Fingerprint(data, settings_of(source), settings_of(matcher), seed, precision, embeddings)
        layers = (getattr(source, "hparams", None) or {}).get("layers")
        return cls(fingerprint, list(pair_ids), list(alphas), model_description(source), layers)

    def to_json(self) -> dict[str, Any]:
        """``format`` first, then the keys in the order written since the first version."""
        payload = {
            "format": FORMAT,
            "fingerprint": self.fingerprint.to_json(),
            "model": self.model,
            "pair_ids": self.pair_ids,
            "alphas": self.alphas,
            "layers": self.layers,
        }
        if self.merged_from is not None:
            payload["merged_from"] = self.merged_from
        return {**payload, **self.extra}

    @classmethod
    def from_json(cls, payload: Any) -> Manifest:
        """Raises ``ValueError`` (:class:`~sdcorr.runs.records.FormatError` for another format); the caller
        names the file."""
        check_format(payload, "a run manifest")
        _require(payload, ("fingerprint", "pair_ids", "alphas"), "the run manifest")
        known = ("format", "fingerprint", "model", "pair_ids", "alphas", "layers", "merged_from")
        return cls(
            fingerprint=Fingerprint.from_json(payload["fingerprint"]),
            pair_ids=list(payload["pair_ids"]),
            alphas=list(payload["alphas"]),
            model=payload.get("model"),
            layers=payload.get("layers"),
            merged_from=payload.get("merged_from"),
            extra={k: v for k, v in payload.items() if k not in known},
        )

    @classmethod
    def merged(cls, manifests: Sequence[Manifest], folders: Sequence[Any]) -> Manifest:
        """The manifest of shards merged into one run: the first's, as one shard of all their pairs."""
        pair_ids = sorted({pair for manifest in manifests for pair in manifest.pair_ids})
        manifest = copy.deepcopy(manifests[0])
        manifest.fingerprint.data.update(shard=[0, 1], num_pairs=len(pair_ids))
        manifest.pair_ids = pair_ids
        manifest.merged_from = [str(f) for f in folders]
        return manifest

    def layer_names(self) -> Optional[list[str]]:
        """The read layers' names (``layers``, else the source's ``layers``), None if neither has them."""
        for layers in (self.layers, self.fingerprint.source.get("layers")):
            if isinstance(layers, list) and layers:
                return [str(layer) for layer in layers]
        return None
