"""The metric table: as text for people, as JSON for programs."""

from __future__ import annotations

from typing import Any


def format_table(results: dict[str, Any], alphas: list[float]) -> str:
    """A per-category table of PCK in percent, per image and per point, with the overall row last.

    Unscored pairs are counted and named below it; a PCK over no scored pair shows as ``n/a``.
    """
    columns = [f"PCK@{a:g} {kind}" for a in alphas for kind in ("img", "pt")]
    rows = list(results["per_category"].items()) + [("overall", results["overall"])]
    width = max([len("category")] + [len(name) for name, _ in rows])
    lines = [f"{'category':<{width}}  {'pairs':>6}  {'kps':>6}  " + "  ".join(f"{c:>12}" for c in columns)]
    for name, values in rows:
        cells = []
        for a in alphas:
            entry = values[f"pck@{a:g}"]
            cells += [_percent(entry["per_image"]), _percent(entry["per_point"])]
        lines.append(f"{name:<{width}}  {values['num_pairs']:>6}  {values['num_keypoints']:>6}  " + "  ".join(cells))
    if results.get("unscored_pairs"):
        ids = results.get("unscored_pair_ids") or []
        named = ": " + ", ".join(map(repr, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        named = named if ids else ""
        lines.append(f"({results['unscored_pairs']} pairs without ground truth were predicted but not scored{named})")
    return "\n".join(lines)


def _percent(value: Any) -> str:
    """A fraction as a 12-wide percent cell; ``n/a`` when undefined (no scored pair)."""
    return f"{'n/a':>12}" if value is None else f"{100 * value:12.1f}"
