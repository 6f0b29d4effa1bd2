"""The run folder: every file a run writes, and every operation on them. Nothing else names these files.

A run folder holds (each name spelled once, below):

* ``run.json`` (:data:`MANIFEST`): the :class:`~sdcorr.runs.manifest.Manifest`: the run's fingerprint (data
  selection, source, matcher, seed, precision), the ids of the pairs it is responsible for, its alphas
  and read layers;
* ``predictions.jsonl`` (``predictions.rank<R>.jsonl`` per process under DDP): one
  :class:`~sdcorr.runs.records.Prediction` line per pair, appended and flushed as each pair is done;
* ``results.json`` (:data:`RESULTS`): the :class:`~sdcorr.runs.results.Results`, written only when every
  pair is done;
* ``evaluation.json`` (:data:`EVALUATION`): ``sdcorr evaluate``'s Results (other alphas or threshold mode);
* ``config.yaml`` (:data:`CONFIG_FILE`): the resolved command-line config of the last run in the folder;
* ``embeddings/``: optionally, the fitted embeddings of each pair;
* ``pictures/`` (:data:`PICTURES`): pair pictures and the viewer's files (see :mod:`sdcorr.pages.viewer`),
  and ``chosen.json``, the pairs chosen to be drawn; ``index.html`` (:data:`REPORT`): the page (see
  :mod:`sdcorr.pages.index`);
* ``.lock`` (:data:`LOCK`): held by the live run (:meth:`RunFolder.lock`), so a second run into the
  folder is refused; it holds the pid and host of the last run that locked the folder;
* ``compare/`` (:data:`COMPARE`): the outputs of ``sdcorr compare`` (:data:`COMPARE_FILES`), and ``match/``
  (:data:`MATCH`): those of ``sdcorr match`` (:data:`MATCH_FILES`).

Every JSON record starts with its ``format`` version (:data:`~sdcorr.runs.records.FORMAT`): a folder of
an older sdcorr is refused with one line that says so (:class:`~sdcorr.errors.OutputError`).

A new run resumes a folder whose fingerprint equals its own, and shards whose fingerprints are equal but
for the shard merge (see :mod:`sdcorr.runs.fingerprint`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Optional

from sdcorr.errors import OutputError, writing
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import FORMAT, FormatError, Prediction, check_format
from sdcorr.runs.results import Results
from sdcorr.runs.scoring import results_of
from sdcorr.stats.intervals import RESAMPLES

MANIFEST = "run.json"
#: the prediction file of a single-process run; :meth:`RunFolder.prediction_file` names those of DDP ranks
PREDICTIONS = "predictions.jsonl"
#: every prediction file of a folder (one per process under DDP)
PREDICTION_FILES = "predictions*.jsonl"
RESULTS = "results.json"
#: the default output of ``sdcorr evaluate``
EVALUATION = "evaluation.json"
#: the resolved command-line config, saved by :class:`callbacks.run_folder.RunFolderWriter`
CONFIG_FILE = "config.yaml"
EMBEDDINGS = "embeddings"
#: the folder of pair pictures (written by :class:`callbacks.pictures.PictureCallback`)
PICTURES = "pictures"
#: in ``pictures/``: the ids of the pairs chosen to be drawn (see :meth:`RunFolder.write_chosen`)
CHOSEN = "chosen.json"
#: the page of a run folder (see :mod:`sdcorr.pages.index`)
REPORT = "index.html"
#: kinds of pair pictures, in page order
PICTURE_KINDS = ("correspondence", "target-heatmaps", "source-heatmaps")
#: the files of a drawn pair for the page's viewer (see :mod:`sdcorr.pages.viewer`), kind: extension
VIEWER_FILES = {"viewer": "json", "viewer-source": "jpg", "viewer-target": "jpg", "viewer-maps": "png"}
#: the lock file of the live run (see :meth:`RunFolder.lock`)
LOCK = ".lock"
#: ``sdcorr compare``'s default output folder (in the second run's folder) and its files
COMPARE = "compare"
COMPARE_FILES = {"json": "compare.json", "chart": "compare.png", "page": "compare.html"}
#: ``sdcorr match``'s default output folder (in ``default_root_dir``) and its files
MATCH = "match"
MATCH_FILES = {"json": "match.json", "picture": "match.png", "config": CONFIG_FILE}
#: what to do with a folder whose records another version wrote
_OTHER_VERSION = "rerun into a new folder, or pass --output.overwrite true to discard it"

try:  # POSIX only: where there is no flock (Windows), folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms we test
    fcntl = None


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a crash or a full disk leaves the old file or the new one, never half
    of one (and no scratch file).

    Raises:
        OutputError: the file cannot be written, naming it (see :func:`sdcorr.errors.writing`).
    """
    scratch = path.with_name(f".{path.name}.part")
    with writing(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_text(text)
            os.replace(scratch, path)
        except OSError:
            scratch.unlink(missing_ok=True)
            raise


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (see :func:`write_text`).

    Raises ``ValueError`` for a NaN or infinite float: callers replace undefined values by None.
    """
    write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")  # NaN and Infinity are not JSON


def _safe(pair_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)[:100]


def picture_key(pair_id: str) -> str:
    """The pair part of its picture files' names (see :func:`picture_name`): ``<key>.<kind>.<extension>``."""
    if re.fullmatch(r"[a-z0-9._-]{1,100}", pair_id):
        return pair_id
    return f"{_safe(pair_id)}~{zlib.crc32(pair_id.encode()):08x}"


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
    return f"{picture_key(pair_id)}.{kind}.{VIEWER_FILES.get(kind, 'png')}"


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
        """Append one line (strict JSON: NaN and Infinity are not JSON) and flush it; an ``OSError`` (a full
        disk) is an :class:`~sdcorr.errors.OutputError` naming the file (the half-written line is cut by
        :meth:`RunFolder.repair` when the run resumes)."""
        line = json.dumps(prediction.to_json(), allow_nan=False) + "\n"
        with writing(self.path):
            self._file.write(line)
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
    def chosen_file(self) -> Path:
        return self.pictures / CHOSEN

    @property
    def compare_folder(self) -> Path:
        return self.path / COMPARE

    @property
    def match_folder(self) -> Path:
        return self.path / MATCH

    def picture_file(self, pair_id: str, kind: str) -> Path:
        """A pair picture (see :func:`picture_name`)."""
        return self.pictures / picture_name(pair_id, kind)

    def picture_files(self) -> dict[str, dict[str, Path]]:
        """The pair pictures of ``pictures/`` (not the viewer's files): ``{pair key: {kind: path}}``, sorted
        by key; a pair's key is :func:`picture_key` of its id (the file names keep no more of it)."""
        pairs: dict[str, dict[str, Path]] = {}
        for path in sorted(self.pictures.glob("*.png")):
            for kind in PICTURE_KINDS:
                suffix = f".{kind}.png"
                if path.name.endswith(suffix):
                    pairs.setdefault(path.name[: -len(suffix)], {})[kind] = path
        return pairs

    def write_chosen(self, pair_ids: Sequence[str]) -> None:
        """Record the ids of the pairs chosen to be drawn (``pictures/chosen.json``)."""
        self.pictures.mkdir(parents=True, exist_ok=True)
        write_json(self.chosen_file, {"format": FORMAT, "pair_ids": list(pair_ids)})

    def clear_pictures(self) -> None:
        """Delete ``pictures/`` (the pictures of a run being discarded, see ``--output.overwrite``)."""
        if self.pictures.exists():
            with writing(self.pictures):
                shutil.rmtree(self.pictures)

    def chosen(self) -> list[str]:
        """The ids of the pairs chosen to be drawn (:meth:`write_chosen`); [] if none were chosen."""
        try:
            payload = check_format(json.loads(self.chosen_file.read_text()), "a list of pairs to draw")
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise OutputError(
                f"{self.chosen_file}: {error}; delete it (it is written again by the next run)"
            ) from error
        return list(payload.get("pair_ids") or [])

    def undrawn(self) -> list[str]:
        """Pairs chosen to be drawn (:meth:`chosen`) without a complete set of pictures: no
        ``<pair>.viewer.json``, the file written last (see :func:`sdcorr.pages.viewer.write_assets`)."""
        return [i for i in self.chosen() if not self.picture_file(i, "viewer").is_file()]

    def delete_pictures(self, pair_id: str) -> None:
        """Delete every picture and viewer file of a pair (it is then undrawn, see :meth:`undrawn`)."""
        for kind in [*VIEWER_FILES, *PICTURE_KINDS]:  # viewer.json first: it marks the pair drawn
            with writing(self.pictures):
                self.picture_file(pair_id, kind).unlink(missing_ok=True)

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

    @staticmethod
    def of(default_root_dir: str | Path, dir: Optional[str] = None) -> RunFolder:
        """The run folder of a run: ``dir`` (environment variables expanded, e.g. ``runs/$WANDB_RUN_ID``),
        else the Trainer's ``default_root_dir``. Every callback that writes into the folder asks this."""
        return RunFolder(os.path.expandvars(dir) if dir else default_root_dir)

    # the manifest
    def read_manifest(self) -> Optional[Manifest]:
        """The folder's ``run.json``, or None if it has none.

        Raises:
            OutputError: unreadable, or written by another version of sdcorr (one line with the remedy).
        """
        if not self.manifest_file.is_file():
            return None
        try:
            return Manifest.from_json(json.loads(self.manifest_file.read_text()))
        except FormatError as error:
            raise OutputError(f"{self.path}: {error} in {MANIFEST}; {_OTHER_VERSION}") from error
        except (OSError, ValueError) as error:
            raise OutputError(f"{self.manifest_file}: unreadable run manifest ({error})") from error

    def manifest(self) -> Manifest:
        """The folder's ``run.json``; raises :class:`OutputError` when it has none (not a run folder)."""
        manifest = self.read_manifest()
        if manifest is None:
            raise OutputError(
                f"{self.path}: no {MANIFEST}; not a run folder written by `sdcorr test` or `sdcorr predict`"
            )
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_file, manifest.to_json())

    # results
    def read_results(self, path: Optional[Path] = None) -> Optional[Results]:
        """The folder's results.json (or ``path``), or None if it has none or it is not JSON.

        Raises:
            OutputError: written by another version of sdcorr, or not a results file.
        """
        path = path or self.results_file
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        try:
            return Results.from_json(payload)
        except FormatError as error:
            raise OutputError(f"{self.path}: {error} in {path.name}; {_OTHER_VERSION}") from error
        except ValueError as error:
            raise OutputError(f"{path}: not a results file of sdcorr ({error})") from error

    def write_results(self, results: Results, path: Optional[Path] = None) -> Path:
        """Write ``results`` to results.json (or ``path``); returns the path."""
        path = path or self.results_file
        write_json(path, results.to_json())
        return path

    def write_config(self, text: str) -> None:
        """Write the resolved command-line config (``config.yaml``)."""
        write_text(self.config_file, text)

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
                with writing(path), open(path, "r+") as handle:
                    handle.truncate(len(text.encode()) - len(tail.encode()))
                cut.append(path)
        return cut

    def done(self, manifest: Optional[Manifest] = None) -> list[Prediction]:
        """The resume set: the predictions of the manifest's pairs, sorted by pair id."""
        selected = set((manifest or self.manifest()).pair_ids)
        return [p for p in self.predictions() if p.pair_id in selected]

    def missing_pairs(
        self, manifest: Optional[Manifest] = None, predictions: Optional[Iterable[Prediction]] = None
    ) -> list[str]:
        """Ids of the manifest's pairs without a prediction, sorted (default: this folder's files)."""
        manifest = manifest if manifest is not None else self.manifest()
        predictions = predictions if predictions is not None else self.predictions()
        return sorted(set(manifest.pair_ids) - {p.pair_id for p in predictions})

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
        with writing(self.lock_file):
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
            handle.flush()
        return RunLock(self.lock_file, handle)

    def begin(self, manifest: Manifest, overwrite: bool = False, clear_results: bool = True) -> list[Prediction]:
        """Check the folder against a new run (rank 0), write its manifest; returns the predictions already
        done (of the manifest's pairs, sorted by pair id): the one read of the folder a run makes at its start.

        A folder of the same run is resumed (its incomplete last lines cut, see :meth:`repair`); one of a
        different run, or with predictions and no manifest, is refused unless ``overwrite`` (which
        deletes its predictions, embeddings and index.html; pictures/ is the pictures callback's, see
        :meth:`clear_pictures`). ``clear_results``: delete results.json, stale until the
        run ends.
        """
        old = None if overwrite else self.read_manifest()
        if not overwrite and self.prediction_files() and old is None:
            raise OutputError(
                f"{self.path}: holds predictions but no {MANIFEST} (not an sdcorr run folder of this version); "
                "use another output folder, or --output.overwrite true to discard them"
            )
        if not overwrite and old is not None:
            changed = old.fingerprint.differences(manifest.fingerprint)
            if changed:
                raise OutputError(
                    f"{self.path}: was made by a different run, so its predictions cannot be resumed:\n  "
                    + "\n  ".join(changed[:12])
                    + "\nuse another --trainer.default_root_dir (or --output.dir), or --output.overwrite true "
                    "to discard the old predictions"
                )
        if overwrite:  # (the PictureCallback deletes its pictures/ itself)
            for path in self.prediction_files():
                path.unlink()
            shutil.rmtree(self.path / EMBEDDINGS, ignore_errors=True)
            self.report_file.unlink(missing_ok=True)
        if clear_results or overwrite:
            self.results_file.unlink(missing_ok=True)
        self.write_manifest(manifest)
        self.repair()
        return self.done(manifest)

    def finish(
        self,
        resamples: int = RESAMPLES,
        manifest: Optional[Manifest] = None,
        predictions: Optional[Sequence[Prediction]] = None,
    ) -> Results:
        """Score every pair of the run and write results.json (intervals from ``resamples``, see
        :func:`~sdcorr.runs.scoring.score`); returns it.

        Args:
            resamples: bootstrap resamples of the intervals.
            manifest: the run's manifest; default: the folder's.
            predictions: every prediction of the run; default: the folder's.

        Raises:
            OutputError: a pair of the manifest has no prediction.
        """
        manifest = manifest if manifest is not None else self.manifest()
        predictions = predictions if predictions is not None else self.predictions()
        missing = self.missing_pairs(manifest, predictions)
        if missing:
            raise OutputError(f"{self.path}: {len(missing)} pairs have no prediction, e.g. {missing[:5]}")
        results = results_of(predictions, manifest, resamples=resamples)
        self.write_results(results)
        return results

    def rescore(
        self,
        alphas: Optional[Sequence[float]] = None,
        threshold_mode: Optional[str] = None,
        output: Optional[str | Path] = None,
        resamples: int = RESAMPLES,
    ) -> tuple[Results, Path]:
        """Score the predictions again (``sdcorr evaluate``), results.json left as the run wrote it.

        Args:
            alphas: PCK thresholds; default: those of the run.
            threshold_mode: another threshold mode of the dataset (e.g. SPair ``bbox-trg``); default: as run.
            output: where to write; default: ``evaluation.json`` in the folder.
            resamples: bootstrap resamples of the intervals (0: none).

        Returns:
            ``(results, path written)``; an unfinished run's results have ``incomplete`` and ``missing_pairs``.
        """
        manifest, predictions = self.manifest(), self.predictions()
        results = results_of(predictions, manifest, alphas, threshold_mode, resamples)
        missing = self.missing_pairs(manifest, predictions)
        if missing:
            results.incomplete, results.missing_pairs = True, missing
        path = self.write_results(results, Path(output) if output else self.evaluation_file)
        return results, path

    def holds_run(self) -> bool:
        """Whether the folder has a manifest or predictions."""
        return self.manifest_file.exists() or bool(self.prediction_files())

    @classmethod
    def merge(cls, out: str | Path, shards: Sequence[str | Path], allow_missing: bool = False) -> Results:
        """Merge shard run folders into a new folder ``out`` (predictions, run.json, results.json).

        With ``allow_missing``, results.json says what is missing: ``incomplete: true``, ``missing`` (in
        words), ``missing_shards`` and ``missing_pairs`` (the unfinished pairs of the shards given; the
        pairs of a shard not given are unknown, since only its own run.json lists them).

        Returns:
            the merged results.json.

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
            changed = first.fingerprint.differences(manifest.fingerprint, shards=False)
            if changed:
                raise OutputError(
                    f"{folder.path}: not a shard of the same run as {folders[0].path}:\n  " + "\n  ".join(changed[:12])
                )
            index, count = manifest.fingerprint.shard
            if index in given:
                raise OutputError(f"{folder.path}: shard {index}/{count} is also {given[index]}; give each shard once")
            given[index] = folder.path
        count = first.fingerprint.shard[1]
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
        manifest = Manifest.merged(manifests, [f.path for f in folders])
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
            finally:
                appender.close()
            target.write_manifest(manifest)
            results = results_of(predictions, manifest)
            if problems:
                # a shard's pairs are listed only in its own run.json: those of a shard not given are unknown here
                unknown = f"; the pairs of shards {missing_shards} are not listed (their run.json was not given)"
                results.incomplete, results.missing_shards = True, missing_shards
                results.missing, results.missing_pairs = (
                    "; ".join(problems) + (unknown if missing_shards else ""),
                    missing,
                )
            target.write_results(results)
            return results


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
        except FormatError as error:
            raise OutputError(f"{path}:{number}: {error}; {_OTHER_VERSION}") from error
        except json.JSONDecodeError as error:
            raise OutputError(f"{path}:{number}: not a JSON prediction line ({error.msg})") from error
        except ValueError as error:
            raise OutputError(f"{path}:{number}: not a prediction line ({error})") from error
    return predictions
