"""``sdcorr test`` on a small stand-in for SPair-71k, timed pair by pair (the end-to-end section of gpu_check.py).

The stand-in is ``tests/fixtures_spair.py``'s dataset (2 categories, SPair's official layout) with random
weights of a Stable Diffusion architecture; the run is the ``sdcorr`` command itself, in this process
(``sdcorr.cli.main.main`` takes the argument list). Each pair's time is when its line reaches
``predictions.jsonl`` (appended and flushed per pair), so model building and the first pair's warm-up are
left out of the per-pair figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sdcorr.cli.main import main as sdcorr
from sdcorr.matchers.prompt import PromptMatcher
from tests.fixtures_spair import write_spair

REPO = Path(__file__).resolve().parents[1]


class LineClock:
    """Records when each whole line reaches ``path`` (a file that grows by whole lines), polling every 5 ms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, dict]] = []  # (time.perf_counter(), the parsed line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self._read()

    def _read(self) -> None:
        if self.path.exists():
            for line in self.path.read_text().splitlines(keepends=True)[len(self.lines) :]:
                if line.endswith("\n"):
                    self.lines.append((time.perf_counter(), json.loads(line)))

    def __enter__(self) -> LineClock:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()


def pair_passes(lines: list[dict], protocol: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Model passes and fitting passes of each prediction line, in order, as ``PromptMatcher`` counts them with
    fit reuse: a source keypoint is fitted in the first pair that has it (pair ids ``<n>-<source>-<target>:<c>``)."""
    matcher, seen, passes, fit_passes = PromptMatcher(**protocol), set(), [], []
    for line in lines:
        source = line["pair_id"].split("-")[1]
        keys = {(source, *point) for point in map(tuple, line["source_keypoints"])}
        passes.append(matcher.cost(len(line["source_keypoints"]), fits=len(keys - seen)))
        fit_passes.append(matcher.restarts * matcher.steps * len(keys - seen))
        seen |= keys
    return passes, fit_passes


def time_test_run(
    architecture: str,
    image_size: int,
    layers: list[int],
    accelerator: str,
    precision: str,
    protocol: dict[str, Any],
    pairs_per_category: int,
) -> dict[str, Any]:
    """Run ``sdcorr test --config configs/spair.yaml`` on the stand-in, 1 device, no pictures, and time it.

    Args:
        architecture: random weights of this architecture (``--model.source.init_args.architecture``).
        image_size: working size in pixels.
        layers: cross-attention layers read.
        accelerator: ``gpu`` or ``cpu`` (``--trainer.accelerator``).
        precision: ``--trainer.precision``, e.g. ``32-true`` or ``bf16-mixed``.
        protocol: ``PromptMatcher`` options (``restarts``, ``steps``, ``locate_crops``, ...).
        pairs_per_category: pairs of each of the 2 categories (see ``tests/fixtures_spair.py``).

    Returns:
        ``pairs``, ``seconds_total`` (the whole command), ``seconds_per_pair`` and ``seconds_per_pass`` (after
        the first pair), ``passes`` per pair, ``steady_passes`` (after the first pair) and ``fit_share`` (of
        them, the fitting passes).
    """
    with tempfile.TemporaryDirectory(prefix="sdcorr-stand-in-") as tmp:
        root = write_spair(Path(tmp) / "spair", pairs_per_category=pairs_per_category, splits=("test",))
        out = Path(tmp) / "run"
        args = [
            "test", "--config", str(REPO / "configs" / "spair.yaml"), "--data.root", str(root),
            "--trainer.default_root_dir", str(out), "--trainer.logger", "false", "--pictures.num_pairs", "0",
            "--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.precision", precision,
            "--model.source.init_args.architecture", architecture,
            "--model.source.init_args.image_size", str(image_size),
            "--model.source.init_args.layers", json.dumps(layers),
            *[f"--model.matcher.init_args.{key}={value}" for key, value in protocol.items()],
        ]  # fmt: skip
        log = io.StringIO()
        start = time.perf_counter()
        with LineClock(out / "predictions.jsonl") as clock, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):  # fmt: skip
            try:
                sdcorr(args)
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    raise RuntimeError(f"sdcorr test exited with {exit_.code}: {log.getvalue()[-2000:]}") from None
        total = time.perf_counter() - start
    if len(clock.lines) < 2:
        raise RuntimeError(f"sdcorr test wrote {len(clock.lines)} prediction lines; expected at least 2")
    passes, fit_passes = pair_passes([line for _, line in clock.lines], protocol)
    steady = clock.lines[-1][0] - clock.lines[0][0]  # from the end of the first pair (warm-up there) to the last
    return dict(
        pairs=len(passes),
        seconds_total=total,
        seconds_per_pair=steady / (len(passes) - 1),
        seconds_per_pass=steady / sum(passes[1:]),
        passes=passes,
        steady_passes=sum(passes[1:]),
        fit_share=sum(fit_passes[1:]) / sum(passes[1:]),
    )
