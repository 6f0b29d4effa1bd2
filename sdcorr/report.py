"""``index.html``: one self-contained page for a finished run folder.

The page holds the PCK tables of ``results.json`` (overall, per category, per group, per layer), the
histogram of pairs by the fraction of their keypoints that are correct, and every pair picture found
in ``<folder>/pictures/`` (written by :class:`callbacks.pictures.PictureCallback`). CSS is inline and
pictures are embedded as base64 data URIs, so the file can be mailed or copied alone. Works on any
run folder, also one without pictures or without ``results.json``::

    python -m sdcorr.report runs/smoke
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import zlib
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from sdcorr.errors import SdcorrError
from sdcorr.evaluate import histogram, read_predictions
from sdcorr.plots import histogram_plot
from sdcorr.runfolder import CONFIG_FILE

__all__ = [
    "HISTOGRAM_FILE",
    "KINDS",
    "PICTURES",
    "histogram_of",
    "layer_rows",
    "missing_note",
    "picture_name",
    "pck_columns",
    "summary_rows",
    "write_report",
]

#: the folder of pair pictures inside a run folder
PICTURES = "pictures"
#: the histogram picture inside :data:`PICTURES`
HISTOGRAM_FILE = "histogram.png"
#: picture kinds of a pair, in page order, with their headings
KINDS = {
    "correspondence": "correspondences",
    "target-heatmaps": "target attention",
    "source-heatmaps": "source attention",
}

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


def picture_name(pair_id: str, kind: str) -> str:
    """File name of a pair picture in ``pictures/``: ``<pair>.<kind>.png``, unique per pair id.

    An id of lowercase letters, digits, ``.``, ``_`` and ``-`` (up to 100) is used as it is; any other
    is made file-safe and followed by ``~`` and the CRC-32 of the id, so ``cat 1``, ``cat_1`` and
    ``Cat_1`` get different files, also on case-insensitive file systems (``~`` never occurs in a
    name used as it is).
    """
    if kind not in KINDS:
        raise ValueError(f"Expected a picture kind in {list(KINDS)} but got {kind!r}")
    if re.fullmatch(r"[a-z0-9._-]{1,100}", pair_id):
        return f"{pair_id}.{kind}.png"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)[:100]
    return f"{safe}~{zlib.crc32(pair_id.encode()):08x}.{kind}.png"


def pck_columns(alphas: list[float]) -> list[str]:
    """``["pck@0.05/per_image", "pck@0.05/per_point", ...]``: the value columns of the tables."""
    return [f"pck@{a:g}/{kind}" for a in alphas for kind in ("per_image", "per_point")]


def _values(entry: dict[str, Any], alphas: list[float]) -> list[Optional[float]]:
    return [(entry.get(f"pck@{a:g}") or {}).get(kind) for a in alphas for kind in ("per_image", "per_point")]


def summary_rows(results: dict[str, Any], groups: bool = True) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the PCK table: one row per category, (per group,) then ``overall``.

    Values are fractions in [0, 1] as in ``results.json``; a group row is named ``key=value``.
    """
    alphas = list(results.get("alphas") or [])
    columns = ["category", "pairs", "keypoints", *pck_columns(alphas)]
    entries = list((results.get("per_category") or {}).items())
    if groups:
        entries += list((results.get("per_group") or {}).items())
    entries.append(("overall", results.get("overall") or {}))
    rows = [[name, e.get("num_pairs"), e.get("num_keypoints"), *_values(e, alphas)] for name, e in entries]
    return columns, rows


def layer_rows(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-layer table (each read layer's own prediction); no rows if absent."""
    alphas = list(results.get("alphas") or [])
    rows = [[str(layer), *_values(entry, alphas)] for layer, entry in (results.get("per_layer") or {}).items()]
    return ["layer", *pck_columns(alphas)], rows


def histogram_of(folder: str | Path, alpha: float = 0.1) -> Optional[dict[str, Any]]:
    """``{"alpha", "bins", "counts"}`` of a run folder: from results.json when it has this alpha,
    else computed from its predictions; None when neither gives one."""
    folder = Path(folder)
    results = _read_results(folder) or {}
    stored = results.get("histogram")
    if stored and abs(float(stored.get("alpha", -1)) - alpha) < 1e-9:
        return stored
    try:
        records = read_predictions(folder)
    except (SdcorrError, OSError):  # a broken folder's report shows what it can
        return None
    if not any(r.get("target_keypoints") is not None for r in records):
        return None
    return histogram(records, alpha, results.get("threshold_mode"))


def _read_results(folder: Path) -> Optional[dict[str, Any]]:
    path = folder / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _data_uri(image: Image.Image | Path) -> str:
    if isinstance(image, Path):
        data = image.read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


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


def _pair_pictures(folder: Path) -> dict[str, dict[str, Path]]:
    """``{file-safe pair id: {kind: path}}`` of the pictures in ``pictures/``, sorted by pair."""
    pairs: dict[str, dict[str, Path]] = {}
    for path in sorted((folder / PICTURES).glob("*.png")):
        for kind in KINDS:
            suffix = f".{kind}.png"
            if path.name.endswith(suffix):
                pairs.setdefault(path.name[: -len(suffix)], {})[kind] = path
    return pairs


def _pair_notes(folder: Path) -> dict[str, str]:
    """``{file-safe pair id: "pair_id (category): PCK@a k/N ..."}`` from the predictions, if readable."""
    try:
        records = read_predictions(folder)
    except (SdcorrError, OSError):  # the pictures are still worth showing
        return {}
    notes = {}
    for record in records:
        scores = [f"PCK@{a} {sum(c)}/{len(c)}" for a, c in (record.get("correct") or {}).items()]
        key = picture_name(record["pair_id"], "correspondence")[: -len(".correspondence.png")]
        notes[key] = f"{record['pair_id']} ({record.get('category')})" + (": " + ", ".join(scores) if scores else "")
    return notes


def _meta(results: dict[str, Any], folder: Path) -> str:
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
    config = folder / CONFIG_FILE
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


def write_report(
    folder: str | Path, alpha: float = 0.1, title: Optional[str] = None, missing: Optional[list[str]] = None
) -> Path:
    """Write ``<folder>/index.html`` and return its path.

    Args:
        folder: a run folder (``results.json``, ``predictions*.jsonl``, ``pictures/``; each optional).
        alpha: the PCK threshold of the histogram and of the colours' legend.
        title: page title; default: the folder's name.
        missing: ids of pairs that were to be drawn but have no pictures (see :func:`missing_note`).
    """
    folder = Path(folder)
    results = _read_results(folder)
    parts = [f"<h1>{html.escape(title or folder.resolve().name)}</h1>"]
    if results is None:
        parts.append('<p class="meta">No results.json in this folder (not a finished test run).</p>')
    else:
        parts.append(_meta(results, folder))
        columns, rows = summary_rows(results)
        parts += ["<h2>PCK</h2>", _table(columns, rows, percent_from=3)]
        columns, rows = layer_rows(results)
        if rows:
            parts += ["<h2>PCK of each layer's own prediction</h2>", _table(columns, rows, percent_from=1)]
    counts = histogram_of(folder, alpha)
    if counts is not None:
        picture = histogram_plot(counts["bins"], counts["counts"], title=f"pairs by keypoints correct at PCK@{alpha:g}")
        parts += [
            f"<h2>Pairs by fraction of keypoints correct at PCK@{alpha:g}</h2>",
            f'<img src="{_data_uri(picture)}">',
        ]
    pictures = _pair_pictures(folder)
    if missing:
        parts.append(f'<p class="meta"><b>Missing pictures:</b> {html.escape(missing_note(missing))}</p>')
    if pictures:
        notes = _pair_notes(folder)
        parts += [
            "<h2>Pairs</h2>",
            f'<p class="legend">lines: <span style="color:#1f77b4">blue</span> correct at PCK@{alpha:g}, '
            '<span style="color:#ff7f0e">orange</span> wrong, <span style="color:#999999">grey</span> '
            "no ground truth; heatmaps: yellow star the ground truth (source: the keypoint), white ring the "
            "prediction</p>",
        ]
        for key, kinds in pictures.items():
            parts.append(f"<h3>{html.escape(notes.get(key, key))}</h3>")
            for kind, heading in KINDS.items():
                if kind in kinds:
                    parts.append(f'<p class="meta">{heading}</p><img src="{_data_uri(kinds[kind])}" alt="{kind}">')
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title or folder.name)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    path = folder / "index.html"
    path.write_text(page)
    return path
