"""``index.html``: one self-contained page for a finished run folder.

The page holds the PCK tables of ``results.json`` (overall, per category, per group, per layer), the
histogram of pairs by the fraction of their keypoints that are correct, and the pair viewer (see
:mod:`sdcorr.pages.viewer_section`): every pair of the folder's predictions, and for the pairs drawn by
:class:`callbacks.pictures.PictureCallback` their images and maps (the viewer's files in
``<folder>/pictures/``, see :mod:`sdcorr.pages.viewer`). Pair pictures of an older sdcorr without viewer
files are shown as they are. CSS, script and pictures are inline (base64 data URIs), so the file
can be mailed or copied alone and opens offline. Works on any run folder, also one without pictures
or without ``results.json``::

    python -m sdcorr.pages.index runs/smoke
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

from sdcorr.errors import SdcorrError
from sdcorr.images import data_uri
from sdcorr.pages.plots import histogram_plot
from sdcorr.pages.viewer import read_assets
from sdcorr.pages.viewer_section import layer_names, viewer_css, viewer_data, viewer_section
from sdcorr.runs.folder import CONFIG_FILE, PICTURE_KINDS, RESULTS, RunFolder, picture_name
from sdcorr.runs.records import Prediction
from sdcorr.runs.scoring import histogram, layer_rows, summary_rows

__all__ = ["KINDS", "histogram_of", "missing_note", "write_report"]

#: picture kinds of a pair (see :data:`sdcorr.runs.folder.PICTURE_KINDS`), in page order, with their headings
KINDS = dict(zip(PICTURE_KINDS, ["correspondences", "target attention", "source attention"]))

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1e1e1e; background: #ffffff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th { background: #dce6f2; text-align: left; }
th, td { border: 1px solid #b9c4d0; padding: 3px 9px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.overall td { font-weight: bold; background: #f1f4f8; }
img { max-width: 100%; display: block; margin: 4px 0; border: 1px solid #d0d0d0; }
.meta { color: #555555; font-size: 13px; overflow-wrap: anywhere; }
pre { font-size: 12px; background: #f6f8fa; padding: 8px; }
.legend span { padding: 0 6px; font-weight: bold; }
"""


def histogram_of(
    folder: str | Path | RunFolder, alpha: float = 0.1, results: Optional[dict[str, Any]] = None
) -> Optional[dict[str, Any]]:
    """``{"alpha", "bins", "counts"}`` of a run folder: from its results (``results``, else its
    results.json) when they have this alpha, else computed from its predictions; None when neither gives one."""
    run = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    results = results if results is not None else run.read_results() or {}
    stored = results.get("histogram")
    if stored and abs(float(stored.get("alpha", -1)) - alpha) < 1e-9:
        return stored
    try:
        predictions = run.predictions()
    except (SdcorrError, OSError):  # a broken folder's report shows what it can
        return None
    if not any(p.target_keypoints is not None for p in predictions):
        return None
    return histogram(predictions, alpha, results.get("threshold_mode"))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{100 * value:.1f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(columns: list[str], rows: list[list[Any]], percent_from: int) -> str:
    head = "".join(f"<th>{html.escape(c)}{' (%)' if i >= percent_from else ''}</th>" for i, c in enumerate(columns))
    body = []
    for row in rows:
        css = ' class="overall"' if row[0] == "overall" else ""
        body.append(f"<tr{css}>" + "".join(_cell(v) for v in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pair_pictures(run: RunFolder) -> dict[str, dict[str, Path]]:
    """``{file-safe pair id: {kind: path}}`` of the pair pictures in ``pictures/``, sorted by pair."""
    pairs: dict[str, dict[str, Path]] = {}
    for path in run.picture_files():
        for kind in KINDS:
            suffix = f".{kind}.png"
            if path.name.endswith(suffix):
                pairs.setdefault(path.name[: -len(suffix)], {})[kind] = path
    return pairs


def _key(pair_id: str) -> str:
    """The file-safe name of a pair's pictures (``<key>.<kind>.png``)."""
    return picture_name(pair_id, "correspondence")[: -len(".correspondence.png")]


def _pair_notes(run: RunFolder) -> dict[str, str]:
    """``{file-safe pair id: "pair_id (category): PCK@a k/N ..."}`` from the predictions, if readable."""
    try:
        predictions = run.predictions()
    except (SdcorrError, OSError):  # the pictures are still worth showing
        return {}
    notes = {}
    for prediction in predictions:
        scores = [f"PCK@{a} {sum(c)}/{len(c)}" for a, c in (prediction.correct_flags or {}).items()]
        notes[_key(prediction.pair_id)] = f"{prediction.pair_id} ({prediction.category})" + (
            ": " + ", ".join(scores) if scores else ""
        )
    return notes


def _meta(results: dict[str, Any], run: RunFolder) -> str:
    """What was run, in full: the model in words, data, source and matcher settings, seed, and the
    folder's resolved ``config.yaml`` (folded) when there is one."""
    data = results.get("data") or {}
    parts = [
        f"model: {results.get('model') or 'not recorded (a run folder of an older sdcorr)'}",
        f"data: {data.get('datamodule', '?')}"
        + "".join(f", {k} {data[k]}" for k in ("split", "threshold_mode") if data.get(k)),
        f"source: {json.dumps(results.get('source'))}",
        f"matcher: {json.dumps(results.get('matcher') or {})}",
        f"seed: {results.get('seed')}, precision: {results.get('precision')}",
    ]
    out = "".join(f'<p class="meta">{html.escape(p)}</p>' for p in parts)
    config = run.config_file
    if config.is_file():
        note = "the resolved command-line config; arguments a source did not use (e.g. pretrained beside architecture) "
        note += "are listed as given, the model line above says which weights ran"
        out += (
            f'<details><summary>{CONFIG_FILE}</summary><p class="meta">{note}</p>'
            f"<pre>{html.escape(config.read_text())}</pre></details>"
        )
    return out


def missing_note(pair_ids: list[str]) -> str:
    """What to tell the user when pairs that were to be drawn have no pictures, and how to redraw them."""
    listed = ", ".join(map(repr, pair_ids[:10])) + (f" and {len(pair_ids) - 10} more" if len(pair_ids) > 10 else "")
    return (
        f"no pictures of {len(pair_ids)} pairs that were to be drawn: {listed}. They were finished by an "
        "earlier run of this folder that did not draw them (pictures deleted, or other --pictures options). "
        "To draw them, delete their lines from predictions*.jsonl and rerun the same command: those pairs "
        "are matched again, with the same random draws, and drawn."
    )


def _predictions(run: RunFolder) -> tuple[list[Prediction], Optional[str]]:
    """The folder's predictions, and why there are none when they cannot be read."""
    try:
        return run.predictions(), None
    except (SdcorrError, OSError) as error:  # a broken folder's report shows what it can
        return [], str(error)


def _pairs_section(
    run: RunFolder, alpha: float, results: Optional[dict[str, Any]], missing: Optional[list[str]]
) -> list[str]:
    """The viewer of every pair (and pair pictures of an older sdcorr that have no viewer files)."""
    parts = []
    if missing:
        parts.append(f'<p class="meta"><b>Missing pictures:</b> {html.escape(missing_note(missing))}</p>')
    predictions, problem = _predictions(run)
    try:
        drawn = read_assets(run)
    except SdcorrError as error:
        drawn, problem = {}, str(error)
    if problem:
        parts.append(f'<p class="meta"><b>Not shown:</b> {html.escape(problem)}</p>')
    viewed = {_key(pair_id) for pair_id in drawn}
    pictures = {key: kinds for key, kinds in _pair_pictures(run).items() if key not in viewed}
    if predictions or drawn:
        try:
            manifest = run.read_manifest()
        except SdcorrError:
            manifest = None
        older = [p.pair_id for p in predictions if _key(p.pair_id) in pictures]
        parts.append(viewer_section(viewer_data(predictions, drawn, alpha, layer_names(manifest, results), older)))
    if pictures:
        notes = _pair_notes(run)
        parts += [
            "<h2>Pair pictures</h2>",
            f'<p class="legend">lines: <span style="color:#1f77b4">blue</span> correct at PCK@{alpha:g}, '
            '<span style="color:#ff7f0e">orange</span> wrong, <span style="color:#999999">grey</span> '
            "no ground truth; heatmaps: yellow star the ground truth (source: the keypoint), white ring the "
            "prediction</p>",
        ]
        for key, kinds in pictures.items():
            parts.append(f"<h3>{html.escape(notes.get(key, key))}</h3>")
            for kind, heading in KINDS.items():
                if kind in kinds:
                    parts.append(f'<p class="meta">{heading}</p><img src="{data_uri(kinds[kind])}" alt="{kind}">')
    return parts


def write_report(
    folder: str | Path | RunFolder,
    alpha: float = 0.1,
    title: Optional[str] = None,
    missing: Optional[list[str]] = None,
    results: Optional[dict[str, Any]] = None,
) -> Path:
    """Write the folder's ``index.html`` and return its path.

    Args:
        folder: a run folder (``results.json``, ``predictions*.jsonl``, ``pictures/``; each optional).
        alpha: the PCK threshold of the histogram and of the colours' legend.
        title: page title; default: the folder's name.
        missing: ids of pairs that were to be drawn but have no pictures (see :func:`missing_note`).
        results: the run's tables (the content of results.json); default: read from the folder.
    """
    run = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    results = results if results is not None else run.read_results()
    parts = [f"<h1>{html.escape(title or run.path.resolve().name)}</h1>"]
    if results is None:
        parts.append(f'<p class="meta">No {RESULTS} in this folder (not a finished test run).</p>')
    else:
        parts.append(_meta(results, run))
        columns, rows = summary_rows(results)
        parts += ["<h2>PCK</h2>", _table(columns, rows, percent_from=3)]
        columns, rows = layer_rows(results)
        if rows:
            parts += ["<h2>PCK of each layer's own prediction</h2>", _table(columns, rows, percent_from=1)]
    counts = histogram_of(run, alpha, results)
    if counts is not None:
        picture = histogram_plot(counts["bins"], counts["counts"], title=f"pairs by keypoints correct at PCK@{alpha:g}")
        parts += [
            f"<h2>Pairs by fraction of keypoints correct at PCK@{alpha:g}</h2>",
            f'<img src="{data_uri(picture)}">',
        ]
    parts += _pairs_section(run, alpha, results, missing)
    css = _CSS + viewer_css()
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title or run.path.name)}</title>'
        f'<link rel="icon" href="data:,"><style>{css}</style></head><body>\n' + "\n".join(parts) + "\n</body></html>\n"
    )
    run.report_file.write_text(page)
    return run.report_file
