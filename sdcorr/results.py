"""The metric table: as text for people, as JSON for programs."""

from __future__ import annotations

from typing import Any


def format_table(results: dict[str, Any], alphas: list[float]) -> str:
    """A per-category table of PCK in percent, per image and per point, with the overall row last."""
    columns = [f"PCK@{a:g} {kind}" for a in alphas for kind in ("img", "pt")]
    rows = list(results["per_category"].items()) + [("overall", results["overall"])]
    width = max([len("category")] + [len(name) for name, _ in rows])
    lines = [f"{'category':<{width}}  {'pairs':>6}  {'kps':>6}  " + "  ".join(f"{c:>12}" for c in columns)]
    for name, values in rows:
        cells = []
        for a in alphas:
            entry = values[f"pck@{a:g}"]
            cells += [f"{100 * entry['per_image']:12.1f}", f"{100 * entry['per_point']:12.1f}"]
        lines.append(f"{name:<{width}}  {values['num_pairs']:>6}  {values['num_keypoints']:>6}  " + "  ".join(cells))
    if results.get("unscored_pairs"):
        lines.append(f"({results['unscored_pairs']} pairs without ground truth were predicted but not scored)")
    return "\n".join(lines)
