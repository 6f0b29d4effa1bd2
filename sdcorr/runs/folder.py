"""The run folder: every file a run writes, and every operation on them. Nothing else names these files.

A run folder holds:

* ``run.json`` (:data:`MANIFEST`): the manifest: the run's fingerprint (data selection, source, matcher,
  seed, precision), the ids of the pairs it is responsible for, its alphas and read layers;
* ``predictions.jsonl`` (``predictions.rank<R>.jsonl`` per process under DDP): one
  :class:`~sdcorr.runs.records.Prediction` line per pair, appended and flushed as each pair is done;
* ``results.json`` (:data:`RESULTS`): the metric tables, written only when every pair is done;
* ``evaluation.json`` (:data:`EVALUATION`): ``sdcorr evaluate``'s tables (other alphas or threshold mode);
* ``config.yaml`` (:data:`CONFIG_FILE`): the resolved command-line config of the last run in the folder;
* ``embeddings/``: optionally, the fitted embeddings of each pair;
* ``pictures/`` and ``index.html``: pair pictures and the page (see :mod:`sdcorr.pages.index`);
* ``.lock`` (:data:`LOCK`): held by the live run (:meth:`RunFolder.lock`), so a second run into the
  folder is refused; it holds the pid and host of the last run that locked the folder.

A new run resumes a folder whose fingerprint equals its own, and shards whose fingerprints are equal but
for the shard merge (see :mod:`sdcorr.runs.fingerprint`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Optional

from sdcorr.errors import OutputError
from sdcorr.runs.fingerprint import differences, shardless
from sdcorr.runs.records import Prediction
from sdcorr.runs.scoring import results_payload
from sdcorr.stats.intervals import RESAMPLES

MANIFEST = "run.json"
#: the prediction file of a single-process run; :meth:`RunFolder.prediction_file` names those of DDP ranks
PREDICTIONS = "predictions.jsonl"
#: every prediction file of a folder (one per process under DDP)
PREDICTION_FILES = "predictions*.jsonl"
RESULTS = "results.json"
#: the default output of ``sdcorr evaluate``
EVALUATION = "evaluation.json"
#: the resolved command-line config, saved by :class:`sdcorr.cli.main.RunFolderConfig`
CONFIG_FILE = "config.yaml"
EMBEDDINGS = "embeddings"
#: the folder of pair pictures, and the histogram picture in it
PICTURES = "pictures"
HISTOGRAM_FILE = "histogram.png"
#: the page of a run folder (see :mod:`sdcorr.pages.index`)
REPORT = "index.html"
#: kinds of pair pictures, in page order
PICTURE_KINDS = ("correspondence", "target-heatmaps", "source-heatmaps")
#: the files of a drawn pair for the page's viewer (see :mod:`sdcorr.pages.viewer`), kind: extension
VIEWER_FILES = {"viewer": "json", "viewer-source": "jpg", "viewer-target": "jpg", "viewer-maps": "png"}
#: the lock file of the live run (see :meth:`RunFolder.lock`)
LOCK = ".lock"

try:  # POSIX only: where there is no flock (Windows), folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms we test
    fcntl = None


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one.

    Raises ``ValueError`` for a NaN or infinite float: callers replace undefined values by None.
    """
    scratch = path.with_name(f".{path.name}.part")
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"  # NaN and Infinity are not JSON
    try:
        scratch.write_text(text)
        os.replace(scratch, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error})") from error


def _safe(pair_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)[:100]


def picture_name(pair_id: str, kind: str) -> str:
    """File name of a pair picture in ``pictures/``: ``<pair>.<kind>.png`` (a viewer file: its
    extension from :data:`VIEWER_FILES`), unique per pair id.

    An id of lowercase letters, digits, ``.``, ``_`` and ``-`` (up to 100) is used as it is; any other
    is made file-safe and followed by ``~`` and the CRC-32 of the id, so ``cat 1``, ``cat_1`` and
    ``Cat_1`` get different files, also on case-insensitive file systems (``~`` never occurs in a
    name used as it is).

    >>> picture_name("p0", "correspondence"), picture_name("cat 1", "correspondence")
    ('p0.correspondence.png', 'cat_1~0c888ef2.correspondence.png')
    """
    if kind not in PICTURE_KINDS and kind not in VIEWER_FILES:
        raise ValueError(f"Expected a picture kind in {[*PICTURE_KINDS, *VIEWER_FILES]} but got {kind!r}")
    extension = VIEWER_FILES.get(kind, "png")
    if re.fullmatch(r"[a-z0-9._-]{1,100}", pair_id):
        return f"{pair_id}.{kind}.{extension}"
    return f"{_safe(pair_id)}~{zlib.crc32(pair_id.encode()):08x}.{kind}.{extension}"


def _listing(ids: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(map(repr, ids[:limit])) + more


class PredictionAppender:
    """A prediction file open for appending: each :meth:`write` adds one line and flushes it, so a crash
    loses at most the line being written (see :meth:`RunFolder.repair`)."""

    def __init__(self, path: Path, hint: str = "") -> None:
        self.path = path
        try:
            self._file: Optional[IO[str]] = open(path, "a")
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error}){hint}") from error

    def write(self, prediction: Prediction) -> None:
        """Append one line (strict JSON: NaN and Infinity are not JSON) and flush it."""
        self._file.write(json.dumps(prediction.to_json(), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RunLock:
    """The lock of a run folder, held from :meth:`RunFolder.lock` until :meth:`release` (or the end of the
    process, however it ends). A context manager; ``held`` is False where the OS has no flock."""

    def __init__(self, path: Path, handle: Optional[IO[str]]) -> None:
        self.path = path
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Let another run into the folder (closing the file releases the flock; the file stays)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class RunFolder:
    """One run folder (see the module docstring): its file paths and what is done with them.

    Args:
        path: the folder; need not exist yet.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # the files
    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS

    @property
    def evaluation_file(self) -> Path:
        return self.path / EVALUATION

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT

    @property
    def pictures(self) -> Path:
        return self.path / PICTURES

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def histogram_file(self) -> Path:
        return self.pictures / HISTOGRAM_FILE

    def picture_file(self, pair_id: str, kind: str) -> Path:
        """A pair picture (see :func:`picture_name`)."""
        return self.pictures / picture_name(pair_id, kind)

    def picture_files(self) -> list[Path]:
        """The pair pictures of ``pictures/`` (not the histogram nor the viewer's files), sorted by name."""
        return [
            p for p in sorted(self.pictures.glob("*.png")) if p.name.endswith(tuple(f".{k}.png" for k in PICTURE_KINDS))
        ]

    def viewer_files(self) -> list[Path]:
        """The viewer metadata files (``<pair>.viewer.json``) of ``pictures/``, one per drawn pair, sorted by name."""
        return sorted(self.pictures.glob("*.viewer.json"))

    def embedding_file(self, pair_id: str) -> Path:
        """Where the fitted embeddings of a pair are saved: a file-system-safe name, unique per pair id."""
        return self.path / EMBEDDINGS / f"{_safe(pair_id)}-{zlib.crc32(pair_id.encode()):08x}.pt"

    def prediction_file(self, rank: int = 0, world_size: int = 1) -> Path:
        """The prediction file process ``rank`` of ``world_size`` appends to."""
        return self.path / (PREDICTIONS if world_size == 1 else f"predictions.rank{rank}.jsonl")

    def prediction_files(self) -> list[Path]:
        """Every prediction file of the folder, sorted."""
        return sorted(self.path.glob(PREDICTION_FILES))

    # the manifest
    def read_manifest(self) -> Optional[dict[str, Any]]:
        """The folder's ``run.json``, or None if it has none."""
        if not self.manifest_file.is_file():
            return None
        try:
            return json.loads(self.manifest_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise OutputError(f"{self.manifest_file}: unreadable run manifest ({error})") from error

    def manifest(self) -> dict[str, Any]:
        """The folder's ``run.json``; raises :class:`OutputError` when it has none (not a run folder)."""
        manifest = self.read_manifest()
        if manifest is None:
            raise OutputError(
                f"{self.path}: no {MANIFEST}; not a run folder written by `sdcorr test` or `sdcorr predict`"
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_file, manifest)

    # predictions
    def predictions(self) -> list[Prediction]:
        """Every prediction of the folder (all ``predictions*.jsonl``), sorted by ``pair_id``. Reads only.

        Raises:
            OutputError: a line is not a prediction (named by file and line), the last line of a file is
                incomplete (see :meth:`repair`), or one pair has two different predictions.
        """
        by_id: dict[str, Prediction] = {}
        for path in self.prediction_files():
            for prediction in _read_lines(path):
                old = by_id.get(prediction.pair_id)
                if old is not None and old.predicted_keypoints != prediction.predicted_keypoints:
                    raise OutputError(f"{self.path}: pair {prediction.pair_id!r} has two different predictions")
                by_id[prediction.pair_id] = prediction
        return [by_id[key] for key in sorted(by_id)]

    def repair(self) -> list[Path]:
        """Cut a final line left incomplete by a crash from every prediction file (that pair is then
        simply not done); returns the files cut."""
        cut = []
        for path in self.prediction_files():
            text = path.read_text()
            tail = text.split("\n")[-1]  # "" when the file ends with a newline
            if tail.strip():
                with open(path, "r+") as handle:
                    handle.truncate(len(text.encode()) - len(tail.encode()))
                cut.append(path)
        return cut

    def done(self, manifest: Optional[dict[str, Any]] = None) -> list[str]:
        """The resume set: ids of the manifest's pairs that have a prediction, sorted."""
        selected = set((manifest or self.manifest())["pair_ids"])
        return [p.pair_id for p in self.predictions() if p.pair_id in selected]

    def missing_pairs(
        self, manifest: Optional[dict[str, Any]] = None, predictions: Optional[Iterable[Prediction]] = None
    ) -> list[str]:
        """Ids of the manifest's pairs without a prediction, sorted (default: this folder's files)."""
        manifest = manifest if manifest is not None else self.manifest()
        predictions = predictions if predictions is not None else self.predictions()
        return sorted(set(manifest["pair_ids"]) - {p.pair_id for p in predictions})

    def appender(self, rank: int = 0, world_size: int = 1) -> PredictionAppender:
        """Process ``rank``'s prediction file, open for appending lines."""
        return PredictionAppender(self.prediction_file(rank, world_size), hint="; set --output.dir")

    # a run in the folder
    def lock(self) -> RunLock:
        """Take the folder for this process (creating it): a second run into it is refused at once.

        An OS advisory lock (``flock``) on ``.lock``: the kernel drops it when the process ends, even by
        SIGKILL, so a crashed run never blocks its resume. The file records the holder's pid and host,
        for the message. Where flock is missing (Windows) or the file system refuses it, nothing is
        locked (``held`` is False). Under DDP only rank 0 takes it.

        Raises:
            OutputError: another live process holds the folder (named with its pid and host), or the
                folder cannot be written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_file, "a+")
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output folder ({error})") from error
        if fcntl is None:
            handle.close()
            return RunLock(self.lock_file, None)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                who = "pid {pid} on host {host}".format(**json.loads(holder))
            except (ValueError, TypeError, KeyError):
                who = "pid unknown"
            raise OutputError(
                f"{self.path}: another sdcorr run ({who}) is writing this folder; "
                "wait for it or use another --trainer.default_root_dir"
            ) from None
        except OSError:  # a file system without flock (some network mounts): run unlocked
            handle.close()
            return RunLock(self.lock_file, None)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        handle.flush()
        return RunLock(self.lock_file, handle)

    def begin(self, manifest: dict[str, Any], overwrite: bool = False, clear_results: bool = True) -> list[str]:
        """Check the folder against a new run (rank 0), write its manifest; returns the pair ids already done.

        A folder of the same run is resumed (its incomplete last lines cut, see :meth:`repair`); one of a
        different run, or with predictions and no manifest, is refused unless ``overwrite`` (which
        deletes its predictions and embeddings). ``clear_results``: delete results.json, stale until the
        run ends.
        """
        old = self.read_manifest()
        if not overwrite and self.prediction_files() and old is None:
            raise OutputError(
                f"{self.path}: holds predictions but no {MANIFEST} (not an sdcorr run folder of this version); "
                "use another output folder, or --output.overwrite true to discard them"
            )
        if not overwrite and old is not None:
            changed = differences(old["fingerprint"], manifest["fingerprint"])
            if changed:
                raise OutputError(
                    f"{self.path}: was made by a different run, so its predictions cannot be resumed:\n  "
                    + "\n  ".join(changed[:12])
                    + "\nuse another --trainer.default_root_dir (or --output.dir), or --output.overwrite true "
                    "to discard the old predictions"
                )
        if overwrite:
            for path in self.prediction_files():
                path.unlink()
            shutil.rmtree(self.path / EMBEDDINGS, ignore_errors=True)
        if clear_results or overwrite:
            self.results_file.unlink(missing_ok=True)
        self.write_manifest(manifest)
        self.repair()
        return self.done(manifest)

    def read_results(self) -> Optional[dict[str, Any]]:
        """The folder's results.json, or None if it has none (or it is unreadable)."""
        try:
            return json.loads(self.results_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def finish(self, resamples: int = RESAMPLES) -> dict[str, Any]:
        """Score every pair of the folder and write results.json (intervals from ``resamples``, see
        :func:`~sdcorr.runs.scoring.score`); returns its content.

        Raises:
            OutputError: a pair of the manifest has no prediction.
        """
        manifest, predictions = self.manifest(), self.predictions()
        missing = self.missing_pairs(manifest, predictions)
        if missing:
            raise OutputError(f"{self.path}: {len(missing)} pairs have no prediction, e.g. {missing[:5]}")
        payload = results_payload(predictions, manifest, resamples=resamples)
        write_json(self.results_file, payload)
        return payload

    def rescore(
        self,
        alphas: Optional[Sequence[float]] = None,
        threshold_mode: Optional[str] = None,
        output: Optional[str | Path] = None,
        resamples: int = RESAMPLES,
    ) -> tuple[dict[str, Any], Path]:
        """Score the predictions again (``sdcorr evaluate``), results.json left as the run wrote it.

        Args:
            alphas: PCK thresholds; default: those of the run.
            threshold_mode: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
            output: where to write; default: ``evaluation.json`` in the folder.
            resamples: bootstrap resamples of the intervals (0: none).

        Returns:
            ``(payload, path written)``; an unfinished run's payload has ``incomplete`` and ``missing_pairs``.
        """
        manifest, predictions = self.manifest(), self.predictions()
        payload = results_payload(predictions, manifest, alphas, threshold_mode, resamples)
        missing = self.missing_pairs(manifest, predictions)
        if missing:
            payload.update(incomplete=True, missing_pairs=missing)
        path = Path(output) if output else self.evaluation_file
        write_json(path, payload)
        return payload, path

    def holds_run(self) -> bool:
        """Whether the folder has a manifest or predictions."""
        return self.manifest_file.exists() or bool(self.prediction_files())

    @staticmethod
    def merged_manifest(manifests: Sequence[dict[str, Any]], folders: Sequence[Path]) -> dict[str, Any]:
        """The manifest of shards merged into one run: the first's, as one shard of all their pairs."""
        pair_ids = sorted({pair for manifest in manifests for pair in manifest["pair_ids"]})
        manifest = copy.deepcopy(manifests[0])
        manifest["fingerprint"]["data"].update(shard=[0, 1], num_pairs=len(pair_ids))
        manifest["pair_ids"] = pair_ids
        manifest["merged_from"] = [str(f) for f in folders]
        return manifest

    @classmethod
    def merge(cls, out: str | Path, shards: Sequence[str | Path], allow_missing: bool = False) -> dict[str, Any]:
        """Merge shard run folders into a new folder ``out`` (predictions, run.json, results.json).

        With ``allow_missing``, results.json says what is missing: ``incomplete: true``, ``missing`` (in
        words), ``missing_shards`` and ``missing_pairs`` (the unfinished pairs of the shards given; the
        pairs of a shard not given are unknown, since only its own run.json lists them).

        Returns:
            the content of the merged results.json.

        Raises:
            OutputError: folders of different runs, a shard given twice, pairs predicted by two shards,
                missing shards or pairs (unless ``allow_missing``), or an ``out`` that already holds a run.
        """
        target, folders = cls(out), [cls(f) for f in shards]
        if not folders:
            raise OutputError("merge: give at least one shard folder")
        manifests = [f.manifest() for f in folders]
        first = manifests[0]
        given: dict[int, Path] = {}
        for folder, manifest in zip(folders, manifests):
            changed = differences(shardless(first), shardless(manifest))
            if changed:
                raise OutputError(
                    f"{folder.path}: not a shard of the same run as {folders[0].path}:\n  " + "\n  ".join(changed[:12])
                )
            index, count = manifest["fingerprint"]["data"]["shard"]
            if index in given:
                raise OutputError(f"{folder.path}: shard {index}/{count} is also {given[index]}; give each shard once")
            given[index] = folder.path
        count = first["fingerprint"]["data"]["shard"][1]
        predictions, owner = [], {}
        for folder in folders:
            for prediction in folder.predictions():
                if prediction.pair_id in owner:
                    raise OutputError(
                        f"{folder.path}: pair {prediction.pair_id!r} is also predicted in {owner[prediction.pair_id]}; "
                        "shards must not overlap"
                    )
                owner[prediction.pair_id] = folder.path
                predictions.append(prediction)
        manifest = cls.merged_manifest(manifests, [f.path for f in folders])
        missing = target.missing_pairs(manifest, predictions)
        missing_shards = sorted(set(range(count)) - set(given))
        problems = []
        if missing_shards:
            problems.append(f"shards {missing_shards} of {count} were not given")
        if missing:
            problems.append(f"{len(missing)} pairs have no prediction: {_listing(missing)}")
        if problems and not allow_missing:
            raise OutputError("merge: " + "; ".join(problems) + " (finish those runs, or pass --allow_missing)")
        with target.lock():  # a live run writing the target is named; a finished one holds a run
            if target.holds_run():
                raise OutputError(f"{target.path}: already holds a run; merge into a new folder")
            appender = PredictionAppender(target.prediction_file())
            try:
                for prediction in sorted(predictions, key=lambda p: p.pair_id):
                    appender.write(prediction)
            except OSError as error:
                raise OutputError(f"{appender.path}: cannot write ({error})") from error
            finally:
                appender.close()
            target.write_manifest(manifest)
            payload = results_payload(predictions, manifest)
            if problems:
                # a shard's pairs are listed only in its own run.json: those of a shard not given are unknown here
                unknown = f"; the pairs of shards {missing_shards} are not listed (their run.json was not given)"
                summary = "; ".join(problems) + (unknown if missing_shards else "")
                payload.update(incomplete=True, missing=summary, missing_pairs=missing, missing_shards=missing_shards)
            write_json(target.results_file, payload)
            return payload


def _read_lines(path: Path) -> list[Prediction]:
    """The predictions of one file; refuses a malformed line and an incomplete last one (see ``repair``)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise OutputError(f"{path}: cannot read ({error})") from error
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # ``tail`` is "" when the file ends with a newline
    if tail.strip():
        raise OutputError(f"{path}:{len(lines)}: last line is incomplete (interrupted run?); rerun to resume")
    predictions = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            predictions.append(Prediction.from_json(json.loads(line)))
        except json.JSONDecodeError as error:
            raise OutputError(f"{path}:{number}: not a JSON prediction line ({error.msg})") from error
        except ValueError as error:
            raise OutputError(f"{path}:{number}: not a prediction line ({error})") from error
    return predictions
