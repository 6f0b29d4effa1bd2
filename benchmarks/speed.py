"""Speed and memory of the ``reference`` and ``fast`` engine modes on the same pair, in one process.

Prints a markdown table: keypoints per second, peak memory, and the share of time spent in VAE
encoding, UNet forward (to the last read layer, or the whole UNet in reference mode) and backward;
then the fast/reference ratio and a parity check (same draws: embeddings and predictions agree).

Examples::

    python benchmarks/speed.py --architecture tiny
    python benchmarks/speed.py --architecture sd-v1-4 --image-size 256 --keypoints 2 --restarts 2 --steps 4 --crops 5
    python benchmarks/speed.py --architecture sd-v1-4 --device cuda --precision bf16 --keypoints 8 --restarts 5

Weights are random (no download): speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from pathlib import Path

import torch

from sdcorr import geometry
from sdcorr.images import load_image
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.sources.stable_diffusion import StableDiffusionSource

DEMO = Path(__file__).resolve().parents[1] / "datamodules" / "demo_pairs"
LAYERS = {"sd-v1-4": [7, 8, 9, 10], "tiny": [0, 1]}
DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_size(architecture: str) -> int:
    """Working image size of ``architecture`` when none is given: 512 for SD 1.4 (the paper's), 48 for tiny."""
    return 512 if architecture == "sd-v1-4" else 48


def build_source(architecture: str, size: int, device: torch.device, compile: bool = False) -> StableDiffusionSource:
    """Random weights of ``architecture`` reading :data:`LAYERS`, at working size ``size``, on ``device``."""
    source = StableDiffusionSource(
        architecture=architecture, layers=LAYERS[architecture], image_size=size, compile=compile
    )
    return source.to(device)


def demo_pair(device: torch.device) -> list[torch.Tensor]:
    """The chelsea demo pair, ``[source, target]``, each ``[3, H, W]`` in [0, 1] on ``device``."""
    return [load_image(DEMO / name).to(device) for name in ("0_chelsea_source.jpg", "0_chelsea_target.jpg")]


def demo_keypoints(count: int, device: torch.device) -> torch.Tensor:
    """The first ``count`` (at most 20) source keypoints ``[count, 2] (x, y)`` of :func:`demo_pair`, in its pixels."""
    points = torch.tensor([[114.4, 74.7], [211.5, 90.0], [174.3, 161.3], [169.6, 26.7], [66.5, 133.3]] * 4)
    return points[:count].to(device)


def warm_up(source, protocol: dict, pair: list[torch.Tensor], points: torch.Tensor) -> None:
    """One short match (1 restart, 1 step, 4 crops, one keypoint), not timed: allocator, lazy initialisation
    and kernel selection happen here instead of in the first timed call."""
    PromptMatcher(**dict(protocol, steps=1, restarts=1, locate_crops=4)).match(source, pair[0], pair[1], points[:1])


class RssPeak:
    """Peak resident memory above the start, sampled every 5 ms (CPU runs)."""

    def __enter__(self) -> RssPeak:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def used(self) -> int:
        return self.peak - self.start


class Timers:
    """Wall time of ``source.encode``, ``source.attention_maps`` and ``Tensor.backward`` calls."""

    def __init__(self, source: StableDiffusionSource, device: torch.device) -> None:
        self.source, self.device = source, device
        self.seconds = {"encode": 0.0, "forward": 0.0, "backward": 0.0}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            return out

        return timed

    @contextlib.contextmanager
    def active(self):
        encode, maps, backward = self.source.encode, self.source.attention_maps, torch.Tensor.backward
        self.source.encode = self._wrap("encode", encode)
        self.source.attention_maps = self._wrap("forward", maps)
        torch.Tensor.backward = self._wrap("backward", backward)
        try:
            yield self
        finally:
            del self.source.encode, self.source.attention_maps
            torch.Tensor.backward = backward


def run_mode(source, matcher, source_image, target_image, keypoints, device, dtype) -> dict:
    timers = Timers(source, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with RssPeak() as rss, timers.active(), autocast:
        start = time.perf_counter()
        result = matcher.match(source, source_image, target_image, keypoints, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.used
    return {"seconds": total, "memory": memory, "parts": timers.seconds, "keypoints": result.keypoints}


def parity(source, image, points, lr: float, crop_fraction: float, max_batch="auto") -> tuple[float, bool]:
    """Same seed, fp32: max |embedding difference| and whether the predictions are identical.

    Fits ``points`` (``[N, 2]`` working pixels on ``image`` ``[3, S, S]``) in both modes, 2 restarts x 2 steps,
    and locates the reference's embeddings with both (5 crops).
    """
    options = dict(restarts=2, steps=2, locate_crops=5, lr=lr, crop_fraction=crop_fraction)
    fast = PromptMatcher(**options, max_batch=max_batch)
    reference = PromptMatcher(**options, mode="reference")
    emb_fast, emb_ref = fast.fit(source, image, points, seed=0), reference.fit(source, image, points, seed=0)
    same = torch.equal(
        fast.locate(source, image, emb_ref).keypoints, reference.locate(source, image, emb_ref).keypoints
    )
    return float((emb_fast - emb_ref).abs().max()), same


def paper_crop_reuse(points: torch.Tensor, size: int = 512) -> tuple[int, int]:
    """Fitting crops the paper protocol draws for ``points`` (at ``size``) and how many are distinct.

    Pure geometry (no model): the fast mode encodes each distinct crop once, the reference every draw.
    """
    matcher = PromptMatcher()
    side, margin = matcher.crop_geometry(size)
    g = torch.Generator().manual_seed(0)
    corners = {
        geometry.sample_crop_corner(p.tolist(), side, margin, size, g)
        for p in points
        for _ in range(matcher.restarts * matcher.steps)
    }
    return len(points) * matcher.restarts * matcher.steps, len(corners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=sorted(LAYERS), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="32", help="autocast dtype of the fast mode")
    parser.add_argument("--image-size", type=int, default=None, help="working size (default: 512 SD, 48 tiny)")
    parser.add_argument("--keypoints", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--crops", type=int, default=5)
    parser.add_argument(
        "--max-batch",
        type=lambda value: value if value == "auto" else int(value),
        default="auto",
        help="items per model call, or 'auto' (10 off CUDA; halved on GPU out-of-memory)",
    )
    parser.add_argument("--lr", type=float, default=0.0023755632081200314)
    parser.add_argument("--crop-fraction", type=float, default=0.9316549)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-reference", action="store_true", help="only time the fast mode")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.image_size or default_size(args.architecture)
    source = build_source(args.architecture, size, device)
    pair = demo_pair(device)
    points = demo_keypoints(args.keypoints, device)
    protocol = dict(
        restarts=args.restarts,
        steps=args.steps,
        locate_crops=args.crops,
        lr=args.lr,
        crop_fraction=args.crop_fraction,
        max_batch=args.max_batch,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"# {args.architecture}, {size}px, {name}, fast precision {args.precision}; per keypoint: "
        f"{args.restarts} restarts x {args.steps} steps, {args.crops} target crops per restart; "
        f"{args.keypoints} keypoints; max_batch {args.max_batch}\n"
    )
    modes = ["fast"] if args.skip_reference else ["reference", "fast"]
    warm_up(source, protocol, pair, points)
    rows = {}
    for mode in modes:
        matcher = PromptMatcher(**protocol, mode=mode)
        dtype = DTYPES[args.precision] if mode == "fast" else None
        rows[mode] = run_mode(source, matcher, pair[0], pair[1], points, device, dtype)
    print("| mode | keypoints/s | s/keypoint | peak memory (GiB) | VAE encode | UNet forward | backward | other |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, row in rows.items():
        parts = row["parts"]
        other = row["seconds"] - sum(parts.values())
        shares = [f"{100 * v / row['seconds']:.0f}%" for v in (*parts.values(), other)]
        print(
            f"| {mode} | {args.keypoints / row['seconds']:.4f} | {row['seconds'] / args.keypoints:.2f} "
            f"| {row['memory'] / 2**30:.2f} | " + " | ".join(shares) + " |"
        )
    if len(rows) == 2:
        print(f"\nfast / reference keypoints per second: {rows['reference']['seconds'] / rows['fast']['seconds']:.2f}x")
        image = geometry.resize_image(pair[0], size)
        work_points = geometry.scale_keypoints(points[:2], (pair[0].shape[2], pair[0].shape[1]), (size, size))
        diff, same = parity(source, image, work_points, args.lr, args.crop_fraction, args.max_batch)
        print(f"parity (fp32, same draws, 2 steps): max |embedding diff| {diff:.2e}; identical predictions: {same}")
    demo_points = geometry.scale_keypoints(points.cpu(), (pair[0].shape[2], pair[0].shape[1]), (512, 512))
    draws, distinct = paper_crop_reuse(demo_points)
    print(
        f"paper protocol at 512 px, these {len(points)} keypoints: {draws} fitting crops drawn, {distinct} distinct "
        f"(VAE encodes: reference {draws}, fast {distinct})"
    )


if __name__ == "__main__":
    main()
