"""What ``sdcorr compare`` shows besides its text table: the chart of differences with their intervals
(compare.png) and the self-contained page (compare.html). The numbers come from :mod:`sdcorr.runs.compare`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from PIL import Image, ImageDraw

from sdcorr.errors import OutputError
from sdcorr.images import data_uri, save_picture
from sdcorr.pages.plots import CORRECT, TEXT, WRONG, _font
from sdcorr.runs.compare import signed
from sdcorr.runs.folder import COMPARE_FILES, write_json, write_text
from sdcorr.stats.intervals import MIN_PAIRS

#: the colour of a row whose interval contains 0 (or the published figure)
UNDECIDED = (150, 150, 150)


def chart_panels(payload: dict[str, Any], alpha: Optional[float] = None) -> list[tuple[str, list[tuple]]]:
    """``[(title, [(label, value, low, high, outside)])]``: the rows the chart draws, in percentage points
    (B - A; against the paper, run - paper), at ``alpha`` (default: the largest compared)."""
    alpha = alpha if alpha is not None else max(payload["alphas"])
    if payload["kind"] == "paper":
        rows = [r for r in payload["rows"] if r["alpha"] == alpha and r["paper"] is not None]
        cells = [(r["category"], r["run"] - r["paper"], *_shifted(r, -r["paper"]), r["outside"]) for r in rows]
        note = "" if rows else " (no published figure recorded)"
        return [(f"run - published, PCK@{alpha:g} (points), 95% interval{note}", cells)]
    panels = []
    for comparison in payload["comparisons"]:
        rows = comparison["rows"][f"{alpha:g}"]
        cells = [(r["category"], r["difference"], r["low"], r["high"], _excludes_zero(r)) for r in rows]
        panels.append((f"B - A, PCK@{alpha:g} per image (points): B = {Path(comparison['b']).name}", cells))
    return panels


def _shifted(row: dict[str, Any], by: float) -> tuple[Optional[float], Optional[float]]:
    return (None, None) if row["low"] is None else (row["low"] + by, row["high"] + by)


def _excludes_zero(row: dict[str, Any]) -> bool:
    return row["low"] is not None and not row["low"] <= 0 <= row["high"]


def difference_chart(panels: Sequence[tuple[str, Sequence[tuple]]], width: int = 640, row: int = 20) -> Image.Image:
    """A forest plot: per row a dot at the value and a bar over its interval, around a line at 0; blue when
    the interval is above 0, orange below, grey when it contains 0."""
    label_width, margin, font = 120, 12, _font(11)
    height = sum(50 + row * len(cells) for _, cells in panels) + margin
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = margin
    for title, cells in panels:
        draw.text((margin, top), title, fill=TEXT, font=_font(12))
        top += 24
        reach = max([abs(v) for _, value, low, high, _ in cells for v in (value, low, high) if v is not None] + [1.0])
        reach *= 1.1
        left, right = margin + label_width, width - margin - 60

        def x(value: float) -> float:
            return left + (value + reach) / (2 * reach) * (right - left)

        draw.line((x(0), top, x(0), top + row * len(cells)), fill=(120, 120, 120))
        for i, (label, value, low, high, outside) in enumerate(cells):
            y = top + i * row + row / 2
            colour = (CORRECT if value > 0 else WRONG) if outside else UNDECIDED
            draw.text((margin, y - 7), str(label)[:18], fill=TEXT, font=font)
            if low is not None:  # no bar: too few pairs for an interval
                draw.line((x(low), y, x(high), y), fill=colour, width=3)
            draw.ellipse((x(value) - 4, y - 4, x(value) + 4, y + 4), fill=colour)
            draw.text((right + 8, y - 7), signed(value), fill=TEXT, font=font)
        top += row * len(cells)
        for value in (-reach, 0.0, reach):  # the axis: its ends and 0, in percentage points
            text = f"{value:+.0f}" if value else "0"
            draw.text((x(value) - draw.textlength(text, font=font) / 2, top + 2), text, fill=UNDECIDED, font=font)
        top += 26
    return canvas


def _html_table(payload: dict[str, Any]) -> str:
    if payload["kind"] == "paper":
        columns = ["category", "alpha", "pairs", "run", "low", "high", "paper", "outside"]
        tables = [(f"{payload['run']} beside {payload['paper']}", payload["rows"])]
    else:
        columns = ["category", "pairs", "a", "b", "difference", "low", "high", "p_value"]
        tables = [
            (f"PCK@{alpha}: A = {c['a']}, B = {c['b']}", rows)
            for c in payload["comparisons"]
            for alpha, rows in c["rows"].items()
        ]
    out = []
    for title, rows in tables:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c, r[c])}</td>" for c in columns) + "</tr>" for r in rows)
        out.append(f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>")
    return "".join(out)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if column == "p_value" else f"{value:.1f}"
    return html.escape(str(value))


def compare_page(payload: dict[str, Any], chart: Image.Image, table: str) -> str:
    """compare.html: the table, the chart and the warnings, CSS inline, the chart as a data URI."""
    notes = "".join(f"<p class=warn>warning: {html.escape(w)}</p>" for w in payload["warnings"])
    style = (
        "body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #b9c4d0;padding:2px 8px}th{background:#dce6f2}.warn{color:#a04000}"
        "pre{background:#f6f8fa;padding:8px;font-size:12px}"
    )
    method = html.escape(str(payload["intervals"].get("method", "")))
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>sdcorr compare</title><style>{style}</style>'
        f"</head><body><h1>sdcorr compare</h1>{notes}<p>intervals: {method}, level "
        f"{payload['intervals'].get('level')}; differences: paired (the same resampled pairs in both runs), "
        f"two-sided p-values; rows of fewer than {MIN_PAIRS} pairs: none</p><pre>{html.escape(table)}</pre>"
        f'<img src="{data_uri(chart)}" alt="differences">{_html_table(payload)}</body></html>\n'
    )


def write_comparison(payload: dict[str, Any], table: str, folder: str | Path) -> dict[str, Path]:
    """Write compare.json, compare.png and compare.html into ``folder`` (made if needed); returns their paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot write the comparison ({error}); set --output_dir") from error
    chart = difference_chart(chart_panels(payload))
    paths = {kind: folder / name for kind, name in COMPARE_FILES.items()}
    write_json(paths["json"], payload)  # each write names its file (see sdcorr.errors.writing)
    save_picture(chart, paths["chart"])
    write_text(paths["page"], compare_page(payload, chart, table))
    return paths
