"""What has never been measured on a GPU, in one command: speed by mode and precision, memory per item,
chunking of fits, ``compile``, and an end-to-end ``sdcorr test`` with a projection for SPair-71k.

Random weights of the ``sd-v1-4`` architecture at 512 px (no download; speed and memory do not depend on
the weights). Sections, in this order (each writes its rows into the JSON as soon as it is done):

1. ``modes``: the reference and the fast mode on the same pair and draws (seed 0), the fast mode in float32,
   bf16 and fp16 (autocast; the reference always runs float32); keypoints per second and whether the
   fast mode's predictions equal the reference's (identical; agree: all within 5% of the target image's
   longer side; else differ). Timed with ``benchmarks/speed.py``'s ``run_mode``.
2. ``memory``: peak memory of one fitting call and one locating call holding ``b`` items, at two ``b``;
   per item = the slope, against ``max_batch auto``'s assumption (``AUTO_BYTES_PER_ITEM``, 2 GiB at
   512 px), and the largest batch that would fit in the free GPU memory, *extrapolated* from slope and
   intercept (not run). On the CPU the peak is the growth of resident memory (noisy).
3. ``chunking``: the same N keypoints x R restarts x S steps fitted twice by ``PromptMatcher.fit``: with
   keys (the ``reuse_fits`` path with ``fit_batching="keypoint"``: ``chunks(..., "keypoint")``, one
   keypoint's R restarts per model call) and without (the ``reuse_fits=False`` path: chunks of up to
   ``max_batch`` items across keypoints, about what the default ``fit_batching="source_image"`` gives
   for the keypoints of one source image); model passes per second.
4. ``end_to_end`` (``stand_in.py``): ``sdcorr test`` (in-process, ``sdcorr.cli.main.main``) on a stand-in
   in SPair's layout (``tests/fixtures_spair.py``) on this device, 1 device; seconds per pair and per model pass
   after the first pair (timed as lines reach ``predictions.jsonl``), and a PROJECTION for SPair-71k's
   test list: the documented 12.1M model passes (paper preset with fit reuse; ``sdcorr plan`` on the real
   list, docs/benchmarks.md) times the measured seconds per pass.
5. ``compile``: the source's ``compile=True`` against ``compile=False`` on the same short match; the first
   call (compiling) timed apart. Last, because compiling takes long; off CUDA only with ``--sections``
   naming it (inductor's C++ build takes about a minute on a small CPU).

Example (on a machine with a GPU; sized to finish within 8 minutes on one H100, see ``--budget``; not yet
run on one)::

    python benchmarks/gpu_check.py --output gpu_check.json

Without CUDA the defaults are ``--device cpu --architecture tiny`` and the run takes under a minute (a
check that the script works; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))  # this checkout's sdcorr, and tests/fixtures_spair.py for stand_in.py

import speed  # noqa: E402  (benchmarks/speed.py, beside this file)
import stand_in  # noqa: E402

from sdcorr import geometry  # noqa: E402
from sdcorr.matchers.batching import (  # noqa: E402
    AUTO_BYTES_PER_ITEM,
    AUTO_MEMORY_SHARE,
    AUTO_SIZE,
    chunks,
    initial_batch,
)
from sdcorr.matchers.prompt import PromptMatcher  # noqa: E402

SECTIONS = ("modes", "memory", "chunking", "end_to_end", "compile")
#: per architecture: the sizes of each section, and a guess of the seconds each needs (never measured on a GPU;
#: a section starts only when at least that much of ``--budget`` is left)
SIZES: dict[str, dict[str, Any]] = {
    "sd-v1-4": dict(
        keypoints=4, restarts=5, steps=8, crops=5, memory_batches=(2, 8), chunk_keypoints=8, chunk_steps=4,
        e2e_pairs=4, e2e_restarts=5, e2e_steps=15, e2e_crops=20,
        need={"modes": 90, "memory": 45, "chunking": 45, "end_to_end": 120, "compile": 150},
    ),
    "tiny": dict(
        keypoints=2, restarts=2, steps=2, crops=5, memory_batches=(2, 8), chunk_keypoints=4, chunk_steps=2,
        e2e_pairs=2, e2e_restarts=2, e2e_steps=4, e2e_crops=4,
        need={"modes": 5, "memory": 5, "chunking": 5, "end_to_end": 15, "compile": 60},
    ),
}  # fmt: skip
#: tiny preset of configs/model/tiny.yaml; the paper's for SD 1.4 (speed does not depend on them)
RATES = {"tiny": dict(lr=1.0, crop_fraction=0.75), "sd-v1-4": dict(lr=0.0023755632081200314, crop_fraction=0.9316549)}
TRAINER_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
NAMES = {"32": "float32", "bf16": "bf16", "fp16": "fp16"}
#: SPair-71k test, paper preset, fit reuse: `sdcorr plan --config configs/spair.yaml` (docs/benchmarks.md)
SPAIR = dict(pairs=12_234, keypoints=88_328, fits=5_109, passes=12.1e6, fit_passes=5_109 * 5 * 129)
GIB = 2**30
#: the H100 time limit this is sized for
LIMIT_S = 480


@dataclass
class Context:
    """What every section reads: the options, the device, the main source and the demo pair."""

    args: argparse.Namespace
    device: torch.device
    source: Any
    pair: list[torch.Tensor]
    sizes: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.source.image_size

    @property
    def rates(self) -> dict[str, float]:
        return RATES[self.args.architecture]

    def work_points(self, count: int) -> torch.Tensor:
        """``count`` demo keypoints ``[count, 2]`` in working pixels of the source image."""
        h, w = self.pair[0].shape[-2:]
        return geometry.scale_keypoints(speed.demo_keypoints(count, self.device), (w, h), (self.size, self.size))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """``(seconds, fn())``, synchronised on CUDA."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out


Row = tuple[str, str, str, str, str]  # section, measurement, value, parity, note


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (``32``: none) on ``device``'s type."""
    dtype = speed.DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def agreement(predicted: torch.Tensor, reference: torch.Tensor, image: torch.Tensor) -> tuple[str, float]:
    """``identical``, ``agree`` (every point within 5% of ``image``'s longer side) or ``differ``; max distance."""
    distance = float((predicted.float() - reference.float()).norm(dim=-1).max())
    if torch.equal(predicted, reference):
        return "identical", distance
    return ("agree" if distance <= 0.05 * max(image.shape[-2:]) else "differ"), distance


# ---------------------------------------------------------------------------------------------- sections


def modes(ctx: Context) -> tuple[list[Row], dict]:
    s = ctx.sizes
    protocol = dict(restarts=s["restarts"], steps=s["steps"], locate_crops=s["crops"], **ctx.rates)
    points = speed.demo_keypoints(s["keypoints"], ctx.device)
    speed.warm_up(ctx.source, protocol, ctx.pair, points)
    run = lambda mode, dtype: speed.run_mode(  # noqa: E731
        ctx.source, PromptMatcher(**protocol, mode=mode), ctx.pair[0], ctx.pair[1], points, ctx.device, dtype
    )
    reference = run("reference", None)
    ref_rate = len(points) / reference["seconds"]
    rows = [("modes", "reference, float32: keypoints/s", f"{ref_rate:.4f}", "(reference)", "whole UNet, 1 item")]
    data = {"protocol": dict(protocol, keypoints=len(points)), "rows": []}
    data["rows"].append(dict(mode="reference", precision="32", keypoints_per_s=ref_rate, memory=reference["memory"]))
    for precision in ("32", "bf16", "fp16"):
        fast = run("fast", speed.DTYPES[precision])
        rate = len(points) / fast["seconds"]
        verdict, distance = agreement(fast["keypoints"], reference["keypoints"], ctx.pair[1])
        peak = fast["memory"] / GIB
        note = f"{rate / ref_rate:.2f}x the reference; max distance {distance:.1f} px; peak {peak:.2f} GiB"
        rows.append(("modes", f"fast, {NAMES[precision]}: keypoints/s", f"{rate:.4f}", verdict, note))
        data["rows"].append(
            dict(mode="fast", precision=precision, keypoints_per_s=rate, speedup=rate / ref_rate,
                 parity=verdict, max_distance_px=distance, memory=fast["memory"])
        )  # fmt: skip
    return rows, data


def peak_bytes(ctx: Context, fn: Callable[[], Any]) -> int:
    """Peak memory ``fn`` adds: CUDA's max allocated above what was allocated before; elsewhere resident growth."""
    if ctx.device.type != "cuda":
        with speed.RssPeak() as rss:
            fn()
        return rss.used
    ctx.sync()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(ctx.device)
    before = torch.cuda.memory_allocated(ctx.device)
    fn()
    ctx.sync()
    return torch.cuda.max_memory_allocated(ctx.device) - before


def free_bytes(ctx: Context) -> Optional[int]:
    """Free GPU memory now (after emptying the cache); None off CUDA."""
    if ctx.device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(ctx.device)[0]


def memory(ctx: Context) -> tuple[list[Row], dict]:
    image = geometry.resize_image(ctx.pair[0], ctx.size)
    small, large = ctx.sizes["memory_batches"]
    dim = (ctx.source.num_tokens, ctx.source.unet.config.cross_attention_dim)
    assumed = AUTO_BYTES_PER_ITEM * (ctx.size / AUTO_SIZE) ** 2
    free = free_bytes(ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # initial_batch announces itself on CUDA
        auto_start = initial_batch(ctx.device, ctx.size)

    def call(phase: str, items: int) -> Callable[[], Any]:
        # one model call of `items` items: reuse off, so fit chunks across keypoints; 1 restart per keypoint
        matcher = PromptMatcher(restarts=1, steps=2, locate_crops=4, max_batch=items, crop_cache=0, **ctx.rates)
        if phase == "fit":
            return lambda: matcher.fit(ctx.source, image, ctx.work_points(items), seed=0)
        embeddings = torch.randn(items, 1, *dim, device=ctx.device)
        return lambda: matcher.locate(ctx.source, image, embeddings, seed=0)

    rows, data = [], {"assumed_bytes_per_item": assumed, "auto_start": auto_start, "free_bytes": free, "rows": []}
    where = "GPU max allocated" if ctx.device.type == "cuda" else "CPU resident growth"
    for precision in ("32", "bf16"):
        for phase in ("fit", "locate"):
            with autocast(ctx.device, precision):
                call(phase, small)()  # warm-up: lazy allocations are not per item
                peaks = [peak_bytes(ctx, call(phase, items)) for items in (small, large)]
            slope = (peaks[1] - peaks[0]) / (large - small)
            fixed = peaks[0] - small * slope
            fits = None if free is None or slope <= 0 else max(0, math.floor((free - fixed) / slope))
            note = (
                f"{where}: {peaks[0] / GIB:.2f} GiB at {small} items, {peaks[1] / GIB:.2f} at {large}; "
                f"max_batch auto assumes {assumed / GIB:.2f} GiB per item at {ctx.size} px"
            )
            rows.append(("memory", f"{phase}, {NAMES[precision]}: GiB per item", f"{slope / GIB:.3f}", "", note))
            largest = "n/a (off CUDA)" if fits is None else str(fits)
            note = f"EXTRAPOLATED (not run) from {free / GIB:.1f} GiB free" if free is not None else "no GPU"
            rows.append(("memory", f"{phase}, {NAMES[precision]}: largest batch", largest, "", note))
            data["rows"].append(
                dict(phase=phase, precision=precision, batches=[small, large], peak_bytes=peaks,
                     bytes_per_item=slope, fixed_bytes=fixed, largest_batch_extrapolated=fits)
            )  # fmt: skip
    rows.append(("memory", "max_batch auto: starting batch", str(auto_start), "", "what `auto` would start at here"))
    return rows, data


def largest_fit(ctx: Context, precision: str) -> Optional[int]:
    """The memory section's extrapolated largest fitting batch at ``precision`` (fp16: bf16's), if it ran."""
    wanted = "bf16" if precision == "fp16" else precision
    for row in ctx.results.get("memory", {}).get("rows", []):
        if row["phase"] == "fit" and row["precision"] == wanted:
            return row["largest_batch_extrapolated"]
    return None


def chunking(ctx: Context) -> tuple[list[Row], dict]:
    s, restarts = ctx.sizes, ctx.sizes["restarts"]
    image = geometry.resize_image(ctx.pair[0], ctx.size)
    points = ctx.work_points(s["chunk_keypoints"])
    items = len(points) * restarts
    fits = largest_fit(ctx, ctx.args.precision)  # on CUDA, stay within max_batch auto's share of the free memory
    batch = min(items, 64, items if fits is None else max(1, int(AUTO_MEMORY_SHARE * fits)))
    protocol = dict(restarts=restarts, steps=s["chunk_steps"], max_batch=batch, **ctx.rates)

    def fit(per_keypoint: bool, steps: int) -> Callable[[], Any]:
        matcher = PromptMatcher(**dict(protocol, steps=steps), reuse_fits=per_keypoint)  # fresh: cold caches
        keys = matcher.fit_keys(image, points, 0) if per_keypoint else None
        return lambda: matcher.fit(ctx.source, image, points, seed=0, keys=keys)

    rows, data = [], {"keypoints": len(points), "restarts": restarts, "steps": s["chunk_steps"], "max_batch": batch}
    rates = {}
    with autocast(ctx.device, ctx.args.precision):
        for per_keypoint in (True, False):
            fit(per_keypoint, 1)()  # warm-up with the same chunk shapes
            seconds, _ = ctx.timed(fit(per_keypoint, s["chunk_steps"]))
            rates[per_keypoint] = items * s["chunk_steps"] / seconds
            sizes = [len(c) for c in chunks([(k, r) for k in range(len(points)) for r in range(restarts)], batch,
                                            "keypoint" if per_keypoint else "items")]  # fmt: skip
            name = "per-keypoint chunks (reuse_fits)" if per_keypoint else "mixed chunks (reuse_fits=False)"
            note = f"{len(sizes)} model calls of up to {max(sizes)} items per step; {NAMES[ctx.args.precision]}"
            rows.append(("chunking", f"{name}: fitting passes/s", f"{rates[per_keypoint]:.2f}", "", note))
            data["per_keypoint" if per_keypoint else "mixed"] = dict(passes_per_s=rates[per_keypoint], chunks=sizes)
    ratio = rates[False] / rates[True]
    rows.append(("chunking", "mixed / per-keypoint", f"{ratio:.2f}x", "", "same items and steps, other chunks"))
    data["ratio"] = ratio
    return rows, data


def compiled(ctx: Context) -> tuple[list[Row], dict]:
    s = ctx.sizes
    protocol = dict(restarts=s["restarts"], steps=s["chunk_steps"], locate_crops=4, **ctx.rates)
    points = speed.demo_keypoints(2, ctx.device)
    built = speed.build_source(ctx.args.architecture, ctx.size, ctx.device, compile=True)

    def match(source, seed: int) -> Callable[[], Any]:
        return lambda: PromptMatcher(**protocol).match(source, ctx.pair[0], ctx.pair[1], points, seed=seed).keypoints

    with autocast(ctx.device, ctx.args.precision):
        first, _ = ctx.timed(match(built, 0))  # compiles
        on, on_points = ctx.timed(match(built, 1))
        match(ctx.source, 0)()  # warm
        off, off_points = ctx.timed(match(ctx.source, 1))
    verdict, distance = agreement(on_points, off_points, ctx.pair[1])
    del built
    torch.compiler.reset()
    rows = [
        ("compile", "off: keypoints/s", f"{len(points) / off:.4f}", "(reference)", NAMES[ctx.args.precision]),
        ("compile", "on: keypoints/s", f"{len(points) / on:.4f}", verdict,
         f"{off / on:.2f}x off; max distance {distance:.1f} px"),
        ("compile", "on: first call (compiling) s", f"{first:.1f}", "", "paid once per process and shape"),
    ]  # fmt: skip
    data = dict(protocol, keypoints=len(points), seconds_off=off, seconds_on=on, seconds_first=first, parity=verdict)
    return rows, data


def end_to_end(ctx: Context) -> tuple[list[Row], dict]:
    s, precision = ctx.sizes, TRAINER_PRECISION[ctx.args.precision]
    protocol = dict(restarts=s["e2e_restarts"], steps=s["e2e_steps"], locate_crops=s["e2e_crops"])
    run = stand_in.time_test_run(
        ctx.args.architecture, ctx.size, speed.LAYERS[ctx.args.architecture], "gpu" if ctx.device.type == "cuda"
        else "cpu", precision, dict(protocol, **ctx.rates), s["e2e_pairs"],
    )  # fmt: skip
    projected = SPAIR["passes"] * run["seconds_per_pass"]
    spair_share = SPAIR["fit_passes"] / SPAIR["passes"]
    protocol_text = f"{protocol['restarts']} restarts x {protocol['steps']} steps, {protocol['locate_crops']} crops"
    rows = [
        ("end_to_end", "s per pair (stand-in, after the first)", f"{run['seconds_per_pair']:.2f}", "",
         f"{run['pairs']} pairs in SPair's layout, {protocol_text}; whole command {run['seconds_total']:.0f} s"),
        ("end_to_end", "ms per model pass", f"{1000 * run['seconds_per_pass']:.2f}", "",
         f"{run['steady_passes']} passes after the first pair, {100 * run['fit_share']:.0f}% fitting (SPair: "
         f"{100 * spair_share:.0f}%)"),
        ("end_to_end", "PROJECTION: SPair-71k test, hours", f"{projected / 3600:.1f}", "",
         f"12.1M passes (docs/benchmarks.md) x measured s/pass; {precision}, 1 device"),
    ]  # fmt: skip
    return rows, dict(run, projection_spair_hours=projected / 3600, spair=SPAIR)


RUNNERS = {"modes": modes, "memory": memory, "chunking": chunking, "end_to_end": end_to_end, "compile": compiled}


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="default: cuda when available, else cpu")
    parser.add_argument(
        "--architecture",
        choices=sorted(SIZES),
        default=None,
        help="random weights of this architecture; default: sd-v1-4 (512 px) on CUDA, tiny (48 px) elsewhere",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(speed.DTYPES),
        default="32",
        help="autocast of the chunking, compile and end-to-end sections (modes and memory try several)",
    )
    parser.add_argument(
        "--sections",
        default=None,
        help=f"comma-separated, from {', '.join(SECTIONS)}; default: all on CUDA, all but compile elsewhere",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=LIMIT_S,
        help="seconds: a section starts only with at least its guessed need left (else skipped with a note); "
        "a section that has started is not interrupted",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file to write; default: a new temporary folder (printed)"
    )
    args = parser.parse_args(argv)
    args.sections_given = args.sections is not None
    args.architecture = args.architecture or ("sd-v1-4" if args.device.startswith("cuda") else "tiny")
    chosen = args.sections.split(",") if args.sections else [s for s in SECTIONS if cuda or s != "compile"]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: expected names from {', '.join(SECTIONS)}; got {', '.join(unknown)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def machine(device: torch.device, architecture: str, size: int) -> dict[str, Any]:
    """Where this ran, for the JSON and the header."""
    if device.type == "cuda":
        name, total = torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory
    else:
        name, total = f"CPU ({torch.get_num_threads()} threads)", None
    return dict(device=name, memory_bytes=total, torch=torch.__version__, architecture=architecture, image_size=size)


def print_table(rows: list[Row]) -> None:
    print("| section | measurement | value | parity | note |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: Optional[list[str]] = None) -> None:
    started = time.perf_counter()
    args = parse_arguments(argv)
    output = args.output or Path(tempfile.mkdtemp(prefix="sdcorr-gpu-check-")) / "gpu_check.json"
    device = torch.device(args.device)
    sizes = SIZES[args.architecture]
    print(
        f"# gpu_check: sized to finish within {LIMIT_S // 60} minutes on one H100 (sd-v1-4, 512 px); budget "
        f"{args.budget:.0f} s: a section is skipped when less than its guessed need is left; JSON: {output}",
        flush=True,
    )
    size = speed.default_size(args.architecture)
    source = speed.build_source(args.architecture, size, device)
    ctx = Context(args, device, source, speed.demo_pair(device), sizes)
    report = {"machine": machine(device, args.architecture, size), "budget_s": args.budget, "sections": {}}
    print(f"# {report['machine']['device']}, {args.architecture} at {size} px, torch {torch.__version__}", flush=True)
    rows: list[Row] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    for name in SECTIONS:
        left = args.budget - (time.perf_counter() - started)
        if name not in args.sections:
            default = "" if args.sections_given else " (by default off CUDA: inductor takes about a minute on a CPU)"
            outcome = {"skipped": "not among --sections" + default}
        elif left < sizes["need"][name]:
            outcome = {"skipped": f"{left:.0f} s of --budget left, it needs about {sizes['need'][name]} s (a guess)"}
        else:
            print(f"# {name} ...", flush=True)
            begin = time.perf_counter()
            try:
                section_rows, outcome = RUNNERS[name](ctx)
                rows += section_rows
            except Exception as error:  # a failed section must not cost the others their device time
                traceback.print_exc()
                outcome = {"error": f"{type(error).__name__}: {str(error).strip()[:500]}"}
            outcome["seconds"] = time.perf_counter() - begin
            ctx.results[name] = outcome
        if "skipped" in outcome or "error" in outcome:
            rows.append((name, "(not measured)", "-", "", outcome.get("skipped") or outcome["error"][:200]))
        report["sections"][name] = outcome
        report["seconds"] = time.perf_counter() - started
        output.write_text(json.dumps(report, indent=1, default=str))  # after every section: a timeout keeps the rest
    print()
    print_table(rows)
    print(f"\n{report['seconds']:.0f} s in all; JSON: {output}")


if __name__ == "__main__":
    main()
