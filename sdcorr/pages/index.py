"""``index.html``: one self-contained page for a finished run folder.

The page holds the PCK tables of ``results.json`` (overall, per category, per group, per layer; each
figure with its 95% interval as the printed table shows it), the
histogram of pairs by the fraction of their keypoints that are correct, and the pair viewer (see
:mod:`sdcorr.pages.viewer_section`): every pair of the folder's predictions, and for the pairs drawn by
:class:`callbacks.pictures.PictureCallback` their images and maps (the viewer's files in
``<folder>/pictures/``, see :mod:`sdcorr.pages.viewer`). Pair pictures of an older sdcorr without viewer
files are shown as they are. CSS, script and pictures are inline (base64 data URIs), so the file
can be mailed or copied alone and opens offline. Pairs chosen to be drawn that have no pictures (see
:meth:`sdcorr.runs.folder.RunFolder.undrawn`) are named, with the command that draws them
(``sdcorr report RUN --draw PAIR...``). Works on any run folder,
also one without pictures or without ``results.json``::

    python -m sdcorr.pages.index runs/smoke
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from sdcorr.errors import SdcorrError
from sdcorr.images import data_uri
from sdcorr.pages.plots import histogram_plot
from sdcorr.pages.viewer import read_assets
from sdcorr.pages.viewer_section import layer_names, viewer_css, viewer_data, viewer_section
from sdcorr.runs.folder import CONFIG_FILE, PICTURE_KINDS, RESULTS, RunFolder, picture_key, write_text
from sdcorr.runs.manifest import Manifest
from sdcorr.runs.records import Prediction
from sdcorr.runs.results import BOUNDS, Histogram, Results, layer_rows, percent_text, summary_rows
from sdcorr.runs.scoring import histogram
from sdcorr.stats.intervals import MIN_PAIRS

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
    predictions: Sequence[Prediction], alpha: float = 0.1, results: Optional[Results] = None
) -> Optional[Histogram]:
    """The histogram of a run at PCK@``alpha``: the one in ``results`` when it is at this alpha, else
    computed from ``predictions`` (in the results' threshold mode); None when no pair has ground truth."""
    stored = results.histogram_at(alpha) if results is not None else None
    if stored is not None:
        return stored
    if not any(p.target_keypoints is not None for p in predictions):
        return None
    return histogram(predictions, alpha, results.threshold_mode if results is not None else None)


def _cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _figure(value: Optional[float], interval: Optional[list[Optional[float]]]) -> str:
    """A PCK cell as the printed table shows it (``45.4 ± 0.9``, see :func:`~sdcorr.runs.results.percent_text`),
    the interval's bounds in its tooltip."""
    text = html.escape(percent_text(value, interval).replace("+-", "±"))
    if interval is None or None in interval:
        return f'<td class="num">{text}</td>'
    low, high = (100 * bound for bound in interval)
    return f'<td class="num" title="95% interval {low:.1f} to {high:.1f}">{text}</td>'


def _table(columns: list[str], rows: list[list[Any]], percent_from: int) -> str:
    """A PCK table of :func:`~sdcorr.runs.results.summary_rows` or ``layer_rows`` with ``intervals``: from
    column ``percent_from`` on, each figure and its ``/low`` and ``/high`` bounds make one cell."""
    figures = range(percent_from, len(columns), 1 + len(BOUNDS))
    names = [*columns[:percent_from], *(f"{columns[i]} (%)" for i in figures)]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = []
    for row in rows:
        css = ' class="overall"' if row[0] == "overall" else ""
        cells = [_cell(v) for v in row[:percent_from]]
        cells += [_figure(row[i], row[i + 1 : i + 1 + len(BOUNDS)]) for i in figures]
        body.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _interval_note(results: Results) -> str:
    """How to read the tables' ``±`` (the printed table's ``+-``): empty when results.json has no intervals."""
    method = results.intervals or {}
    if not method:
        return ""
    how = f"{method.get('method', 'bootstrap')}, {method.get('resamples')} resamples"
    return (
        f'<p class="meta">± half the width of the {100 * method.get("level", 0.95):g}% interval ({html.escape(how)}); '
        f"hover a figure for its bounds (also in {RESULTS}). Fewer than {MIN_PAIRS} pairs: no interval.</p>"
    )


def _pair_notes(predictions: Sequence[Prediction]) -> dict[str, str]:
    """``{picture key: "pair_id (category): PCK@a k/N ..."}`` of the predictions."""
    notes = {}
    for prediction in predictions:
        scores = [f"PCK@{a} {sum(c)}/{len(c)}" for a, c in (prediction.correct_flags or {}).items()]
        notes[picture_key(prediction.pair_id)] = f"{prediction.pair_id} ({prediction.category})" + (
            ": " + ", ".join(scores) if scores else ""
        )
    return notes


def _meta(results: Results, run: RunFolder) -> str:
    """What was run, in full: the model in words, data, source and matcher settings, seed, and the
    folder's resolved ``config.yaml`` (folded) when there is one."""
    parts = [
        f"model: {results.model or 'not recorded'}",
        f"data: {results.data_summary()}",
        f"source: {json.dumps(results.source)}",
        f"matcher: {json.dumps(results.matcher or {})}",
        f"seed: {results.seed}, precision: {results.precision}",
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


def missing_note(pair_ids: list[str], folder: str | Path = "RUN_DIR") -> str:
    """What to tell the user when pairs that were to be drawn have no pictures, and the command that draws them."""
    listed = ", ".join(map(repr, pair_ids[:10])) + (f" and {len(pair_ids) - 10} more" if len(pair_ids) > 10 else "")
    command = shlex.join(["sdcorr", "report", str(folder), "--draw", *pair_ids])
    return (
        f"no pictures of {len(pair_ids)} pairs that were to be drawn: {listed}. To draw them (matched again "
        f"with the run's config and the same random draws): {command}"
    )


def _pairs_section(
    run: RunFolder,
    alpha: float,
    predictions: Sequence[Prediction],
    layers: Optional[list[str]],
    problems: list[str],
) -> list[str]:
    """The viewer of every pair (and pair pictures without viewer files, drawn without a MatchResult)."""
    parts = []
    try:
        missing = run.undrawn()
    except SdcorrError as error:
        missing, problems = [], problems + [str(error)]
    if missing:
        parts.append(f'<p class="meta"><b>Missing pictures:</b> {html.escape(missing_note(missing, run.path))}</p>')
    try:
        drawn = read_assets(run)
    except SdcorrError as error:
        drawn, problems = {}, problems + [str(error)]
    for problem in problems:
        parts.append(f'<p class="meta"><b>Not shown:</b> {html.escape(problem)}</p>')
    viewed = {picture_key(pair_id) for pair_id in drawn}
    pictures = {key: kinds for key, kinds in run.picture_files().items() if key not in viewed}
    if predictions or drawn:
        older = [p.pair_id for p in predictions if picture_key(p.pair_id) in pictures]
        parts.append(viewer_section(viewer_data(list(predictions), drawn, alpha, layers, older)))
    if pictures:
        notes = _pair_notes(predictions)
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


def histogram_picture(counts: Histogram) -> Any:
    """The histogram's picture, with its one title (the page's and W&B's)."""
    return histogram_plot(counts.bins, counts.counts, title=counts.title())


def write_report(
    folder: str | Path | RunFolder,
    alpha: float = 0.1,
    title: Optional[str] = None,
    results: Optional[Results] = None,
    predictions: Optional[Sequence[Prediction]] = None,
    manifest: Optional[Manifest] = None,
    counts: Optional[Histogram] = None,
) -> Path:
    """Write the folder's ``index.html`` and return its path.

    The run's records are taken as given (a live run hands what it holds) or read from the folder; the
    pictures are what ``pictures/`` holds (see :mod:`sdcorr.pages.viewer`). A record that cannot be
    read is named on the page, and the rest shown.

    Args:
        folder: a run folder (``results.json``, ``predictions*.jsonl``, ``pictures/``; each optional).
        alpha: the PCK threshold of the histogram and of the colours' legend.
        title: page title; default: the folder's name.
        results: the run's tables; default: the folder's results.json.
        predictions: every prediction of the run; default: the folder's.
        manifest: the run's manifest (for the layers' names); default: the folder's run.json.
        counts: the histogram at ``alpha``; default: :func:`histogram_of` the predictions and results.
    """
    run = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    problems = []
    if results is None:
        try:
            results = run.read_results()
        except SdcorrError as error:
            problems.append(str(error))
    if predictions is None:
        try:
            predictions = run.predictions()
        except (SdcorrError, OSError) as error:  # a broken folder's report shows what it can
            predictions, problems = [], problems + [str(error)]
    if manifest is None:
        try:
            manifest = run.read_manifest()
        except SdcorrError:
            manifest = None
    parts = [f"<h1>{html.escape(title or run.path.resolve().name)}</h1>"]
    if results is None:
        parts.append(f'<p class="meta">No {RESULTS} in this folder (not a finished test run).</p>')
    else:
        parts.append(_meta(results, run))
        columns, rows = summary_rows(results, intervals=True)
        parts += ["<h2>PCK</h2>", _table(columns, rows, percent_from=3), _interval_note(results)]
        columns, rows = layer_rows(results, intervals=True)
        if rows:
            parts += ["<h2>PCK of each layer's own prediction</h2>", _table(columns, rows, percent_from=1)]
    counts = counts if counts is not None else histogram_of(predictions, alpha, results)
    if counts is not None:
        parts += [
            f"<h2>{html.escape(counts.title()[:1].upper() + counts.title()[1:])}</h2>",
            f'<img src="{data_uri(histogram_picture(counts))}">',
        ]
    parts += _pairs_section(run, alpha, predictions, layer_names(manifest, results), problems)
    css = _CSS + viewer_css()
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title or run.path.name)}</title>'
        f'<link rel="icon" href="data:,"><style>{css}</style></head><body>\n' + "\n".join(parts) + "\n</body></html>\n"
    )
    write_text(run.report_file, page)
    return run.report_file
