"""What fit reuse saves: model passes on an SPair-shaped test list, and wall time of a tiny-model run.

1. A generated pair list shaped like SPair-71k's test split (481 images in 18 categories; every
   ordered pair of a category's images that shares a visible keypoint; a pair's source keypoints are
   those visible in both). Prints the plan with and without reuse (paper preset) and the ratio.
2. With ``--spair-dir DIR``: writes that list in SPair's official layout (pair JSONs, layout file,
   JPEGs) and times ``sdcorr plan`` on it, the command a user runs to price a real SPair run.
3. Unless ``--skip-run``: a tiny random model matches a generated set with shared sources (windows
   of the demo photos; known translation, so PCK is measured), reuse on vs off, timed.

Examples::

    python benchmarks/reuse.py
    python benchmarks/reuse.py --spair-dir /tmp/spair-shaped --skip-run

Pass counts are exact counts of the algorithm's work; times are this machine's.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.schedule import GROUP, GROUP_KEYPOINTS, add_group_keypoints
from sdcorr.images import load_image
from sdcorr.matchers.batching import chunks
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.runs.plan import make_plan
from sdcorr.sources.stable_diffusion import StableDiffusionSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datamodules" / "demo_pairs"
CATEGORIES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
]  # fmt: skip
IMAGE_SIZE = (500, 375)  # W, H


def spair_shaped(seed: int = 0, images: int = 481, visible: float = 0.68) -> tuple[list[dict], dict]:
    """Images with a random visible subset of their category's keypoints, and SPair-style test pairs.

    Each category has 10 to 25 keypoint kinds (SPair's range); a kind is visible in an image with
    probability ``visible`` (0.68 gives SPair's ratios: about 10.6 visible per image, 7.2 shared per pair).

    Returns:
        ``(pairs, image_points)``: plan records, and per image name ``{kind: (x, y)}``.
    """
    rng = random.Random(seed)
    per_category = [images // len(CATEGORIES) + (i < images % len(CATEGORIES)) for i in range(len(CATEGORIES))]
    pairs, points = [], {}
    for ci, (category, count) in enumerate(zip(CATEGORIES, per_category)):
        kinds = rng.randint(10, 25)
        names = [f"2010_{100 * ci + i:06d}" for i in range(count)]
        for name in names:
            seen = [k for k in range(kinds) if rng.random() < visible] or [rng.randrange(kinds)]
            points[name] = {k: (rng.randrange(IMAGE_SIZE[0]), rng.randrange(IMAGE_SIZE[1])) for k in seen}
        for src in names:
            for trg in names:
                shared = sorted(set(points[src]) & set(points[trg]))
                if src == trg or not shared:
                    continue
                pairs.append(
                    {
                        "pair_id": f"{len(pairs) + 1:06d}-{src}-{trg}:{category}",
                        "category": category,
                        "source": src,
                        "target": trg,
                        "kinds": shared,
                        GROUP: src,
                        "num_keypoints": len(shared),
                        "source_keypoints": torch.tensor([points[src][k] for k in shared], dtype=torch.float32),
                    }
                )
    return pairs, points


def fitting_calls(pairs: list[dict], restarts: int, max_batch: int) -> dict[str, tuple[int, float]]:
    """Model calls of the fits of ``pairs`` with fit reuse, and the average items per call, for each
    ``fit_batching``: ``{"keypoint": (calls, items per call), "source_image": (...)}``.

    ``"keypoint"``: a keypoint's restarts, ``ceil(restarts / max_batch)`` calls per distinct keypoint.
    ``"source_image"``: the ``M`` distinct keypoints of each source image in chunks of whole keypoints
    (:func:`~sdcorr.matchers.batching.chunks`), ``ceil(M / (max_batch // restarts))`` calls per image
    when ``restarts <= max_batch``. Counted for a whole run on one process (each chunk once).
    """
    add_group_keypoints(pairs)
    distinct = {pair[GROUP]: len(pair[GROUP_KEYPOINTS]) for pair in pairs}
    items = restarts * sum(distinct.values())
    calls = {
        "keypoint": sum(distinct.values()) * -(-restarts // max_batch),
        "source_image": sum(
            len(chunks([(k, r) for k in range(m) for r in range(restarts)], max_batch, "keypoints"))
            for m in distinct.values()
        ),
    }
    return {how: (count, items / count) for how, count in calls.items()}


def write_spair_layout(root: Path, pairs: list[dict], points: dict) -> None:
    """The pair list in SPair-71k's official layout (test split, large layout)."""
    w, h = IMAGE_SIZE
    rng = np.random.default_rng(0)
    for name in points:
        category = CATEGORIES[int(name[5:]) // 100]
        path = root / "JPEGImages" / category / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=70)
    folder = root / "PairAnnotation" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for pair in pairs:
        src, trg = pair["source"], pair["target"]
        content = {
            "pair_id": int(pair["pair_id"][:6]),
            "src_imname": f"{src}.jpg",
            "trg_imname": f"{trg}.jpg",
            "src_imsize": [w, h, 3],
            "trg_imsize": [w, h, 3],
            "src_bndbox": [0, 0, w - 1, h - 1],
            "trg_bndbox": [0, 0, w - 1, h - 1],
            "category": pair["category"],
            "src_kps": [list(points[src][k]) for k in pair["kinds"]],
            "trg_kps": [list(points[trg][k]) for k in pair["kinds"]],
            "kps_ids": [str(k) for k in pair["kinds"]],
            "viewpoint_variation": 0,
            "scale_variation": 0,
            "truncation": 0,
            "occlusion": 0,
            "mirror": 0,
            "filename": f"{pair['pair_id']}.json",
        }
        (folder / f"{pair['pair_id']}.json").write_text(json.dumps(content))
        lines.append(pair["pair_id"])
    layout = root / "Layout" / "large" / "test.txt"
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text("".join(f"{line}\n" for line in lines))


def windows() -> list[dict]:
    """Pairs of 160 px windows of two demo photos: 4 sources x 3 targets, 4 keypoints each, known shift."""
    offsets = [(0, 0), (40, 30), (80, 10), (20, 60), (60, 50)]
    pairs = []
    for photo_name in ("0_chelsea_target.jpg", "2_astronaut_source.jpg"):
        photo = load_image(DEMO / photo_name)
        for s, (sx, sy) in enumerate(offsets[:2]):
            source = photo[:, sy : sy + 160, sx : sx + 160]
            keypoints = torch.tensor([[50.0, 40.0], [90.0, 70.0], [110.0, 120.0], [60.0, 110.0]])
            for tx, ty in offsets[2:]:
                target = photo[:, ty : ty + 160, tx : tx + 160]
                truth = keypoints + torch.tensor([sx - tx, sy - ty], dtype=torch.float32)
                pair_id = f"{photo_name[:-4]}-{s}-{tx}_{ty}"
                pairs.append({"pair_id": pair_id, "source": source, "target": target, "kps": keypoints, "truth": truth})
    return pairs


def tiny_run(reuse: bool, pairs: list[dict], source: StableDiffusionSource) -> dict:
    # the tiny-model protocol of configs/smoke.yaml
    matcher = PromptMatcher(lr=1.0, crop_fraction=0.75, restarts=2, steps=30, locate_crops=6, reuse_fits=reuse)
    correct = total = 0
    start = time.perf_counter()
    for pair in pairs:
        result = matcher.match(
            source, pair["source"], pair["target"], pair["kps"], seed=(0, pair["pair_id"]), fit_seed=0
        )
        correct += int(((result.keypoints - pair["truth"]).norm(dim=-1) <= 0.1 * 160).sum())
        total += len(pair["kps"])
    seconds = time.perf_counter() - start
    records = [
        {"pair_id": p["pair_id"], "source_keypoints": p["kps"], GROUP: p["pair_id"].rsplit("-", 1)[0]} for p in pairs
    ]
    plan = make_plan(records, matcher)
    return {"seconds": seconds, "fits": matcher.counts["fits"], "passes": plan.passes, "pck": correct / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--spair-dir", type=Path, default=None, help="write the SPair-shaped list here and time `sdcorr plan`"
    )
    parser.add_argument("--skip-run", action="store_true", help="skip the tiny-model timing")
    args = parser.parse_args()

    pairs, points = spair_shaped()
    reuse, per_pair = make_plan(pairs, PromptMatcher()), make_plan(pairs, PromptMatcher(reuse_fits=False))
    print(f"# SPair-shaped test list: {len(points)} images, {len(CATEGORIES)} categories; paper preset")
    print(f"with reuse:    {reuse}")
    print(f"without reuse: {per_pair}")
    print(
        f"model passes: {per_pair.passes / reuse.passes:.2f}x fewer with reuse; "
        f"fitting passes {per_pair.fit_passes:,} -> {reuse.fit_passes:,}; "
        f"work in forward-pass equivalents {per_pair.work / reuse.work:.2f}x less"
    )

    print("\nfitting calls with reuse (paper preset, 5 restarts), by max_batch:")
    print("| max_batch | calls, by keypoint | items per call | calls, by source image | items per call |")
    print("|---|---|---|---|---|")
    for size in (10, 31, 55, 64):  # CPU auto; auto's start on an 80 GB and a 141 GB GPU; auto's cap
        calls = fitting_calls(pairs, 5, size)
        (k_calls, k_items), (i_calls, i_items) = calls["keypoint"], calls["source_image"]
        print(f"| {size} | {k_calls:,} | {k_items:.1f} | {i_calls:,} | {i_items:.1f} |")

    if args.spair_dir is not None:
        write_spair_layout(args.spair_dir, pairs, points)
        command = [sys.executable, "-m", "sdcorr.cli.main", "plan", "--config", "configs/spair.yaml",
                   "--data.init_args.root", str(args.spair_dir)]  # fmt: skip
        start = time.perf_counter()
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        print(f"\n`sdcorr plan` on the written layout: {time.perf_counter() - start:.1f} s\n{out}")

    if not args.skip_run:
        torch.manual_seed(0)
        source = StableDiffusionSource(architecture="tiny", layers=[0, 1], image_size=48)
        pairs = windows()
        print(f"\n# tiny model, CPU ({torch.get_num_threads()} threads): {len(pairs)} pairs sharing 4 source windows")
        print("| reuse | fits | model passes | wall time (s) | PCK@0.1 |")
        print("|---|---|---|---|---|")
        rows = {flag: tiny_run(flag, pairs, source) for flag in (False, True)}
        for flag, row in rows.items():
            print(
                f"| {'on' if flag else 'off'} | {row['fits']} | {row['passes']:,} | {row['seconds']:.1f} "
                f"| {100 * row['pck']:.1f} |"
            )
        print(f"\nwall time: {rows[False]['seconds'] / rows[True]['seconds']:.2f}x faster with reuse")


if __name__ == "__main__":
    main()
