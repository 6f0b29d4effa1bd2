"""How many items go through the model at once: a fixed ``max_batch``, or ``"auto"``, which halves on GPU out-of-memory.

An item is one ``(keypoint, restart)`` of :class:`~sdcorr.matchers.prompt.PromptMatcher`; each has its own random
stream and Adam state, so a chunk of items that ran out of memory can be run again, from scratch and
in smaller chunks, with the same draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Literal, Optional, TypeVar, Union

import torch

from sdcorr.errors import DeviceMemoryError, OptionError
from sdcorr.matchers.base import WorkCounter

T = TypeVar("T")
Item = tuple[int, int]  # (keypoint, restart)

#: ``max_batch="auto"`` off CUDA: the fixed default of earlier versions (CPU speed and numbers unchanged)
AUTO_BATCH_ELSEWHERE = 10
#: ``max_batch="auto"`` on CUDA: GPU memory assumed per item at the working size :data:`AUTO_SIZE`, scaled by
#: the working area (SD 1.4 forward and backward up to layer 10 in float32, with room to spare; an
#: estimate, never measured on a GPU)
AUTO_BYTES_PER_ITEM = 2 * 2**30
#: the working size (pixels) :data:`AUTO_BYTES_PER_ITEM` is given at
AUTO_SIZE = 512
#: ``max_batch="auto"`` on CUDA: share of the free GPU memory the starting size may use
AUTO_MEMORY_SHARE = 0.8
#: ``max_batch="auto"`` on CUDA: the largest starting size
AUTO_BATCH_CAP = 64
PHASES = {"fit": "fitting", "locate": "locating"}


#: how :func:`chunks` may mix keypoints in one chunk
Chunking = Literal["items", "keypoint", "keypoints"]


def chunks(items: list[Item], size: int, how: Chunking = "items") -> list[list[Item]]:
    """``items`` in order, in chunks of at most ``size``.

    ``how``: ``"items"``: consecutive slices, whatever keypoints they hold. ``"keypoint"``: never two
    keypoints in one chunk, so a keypoint's computation (and its float rounding) is the same whichever
    other keypoints need work in this call. ``"keypoints"``: whole keypoints (a keypoint's consecutive
    items), as many as fit in ``size``, packed in order: with ``R`` items per keypoint and ``R <= size``,
    ``size // R`` keypoints per chunk, so chunk boundaries fall on keypoints and a list made of whole
    chunks of another is chunked into those same chunks; a keypoint of more than ``size`` items is
    sliced alone, as with ``"keypoint"``.

    >>> items = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    >>> chunks(items[:4], 2, "keypoint")
    [[(0, 0), (0, 1)], [(0, 2)], [(1, 0)]]
    >>> [len(c) for c in chunks(items, 7, "keypoints")], [len(c) for c in chunks(items, 7)]
    ([6, 3], [7, 2])
    """
    if how not in ("items", "keypoint", "keypoints"):
        raise ValueError(f"Expected how 'items', 'keypoint' or 'keypoints' but got {how!r}")
    if how == "items":
        return [items[i : i + size] for i in range(0, len(items), size)]
    groups = [[item for item in items if item[0] == k] for k in dict.fromkeys(k for k, _ in items)]
    out: list[list[Item]] = []
    whole = False  # whether the last chunk holds whole keypoints only (one may join it)
    for group in groups:
        if how == "keypoints" and whole and len(out[-1]) + len(group) <= size:
            out[-1] = out[-1] + group
        else:
            out += [group[i : i + size] for i in range(0, len(group), size)]
            whole = len(group) <= size
    return out


def initial_batch(device: torch.device, image_size: int) -> int:
    """The starting size of ``"auto"``: 10 off CUDA; on CUDA, :data:`AUTO_MEMORY_SHARE` of the free GPU
    memory over :data:`AUTO_BYTES_PER_ITEM` scaled by the working area, between 1 and :data:`AUTO_BATCH_CAP`
    (announced in a warning)."""
    if device.type != "cuda":
        return AUTO_BATCH_ELSEWHERE
    free, _ = torch.cuda.mem_get_info(device)
    per_item = AUTO_BYTES_PER_ITEM * (image_size / AUTO_SIZE) ** 2
    size = int(min(AUTO_BATCH_CAP, max(1, AUTO_MEMORY_SHARE * free // per_item)))
    warnings.warn(
        f"max_batch auto: starting at {size} items per model call ({free / 2**30:.1f} GiB of GPU memory "
        f"free, about {per_item / 2**30:.2f} GiB assumed per item); halved if they do not fit",
        stacklevel=2,
    )
    return size


class BatchSize:
    """The most items per model call, one per phase (``"fit"``, ``"locate"``), for a whole run.

    Args:
        max_batch: a number >= 1: always that, and out-of-memory propagates; ``"auto"``: start from
            :meth:`initial` (estimated once, on first use) and halve on ``torch.cuda.OutOfMemoryError``
            (see :meth:`batched`); a phase keeps the size it settled on for the rest of the run.
    """

    def __init__(self, max_batch: Union[int, Literal["auto"]]) -> None:
        if max_batch != "auto" and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise OptionError(self, "max_batch", f"expected 'auto' or an integer >= 1; got {max_batch!r}")
        self.max_batch = max_batch
        self.start: Optional[int] = None  # "auto": the starting estimate, once made
        self.settled: dict[str, int] = {}  # "auto": the size of each phase now

    def initial(self, device: torch.device, image_size: int) -> int:
        """The starting size of ``"auto"`` (:func:`initial_batch`; tests replace it to act as a GPU)."""
        return initial_batch(device, image_size)

    def current(self, phase: str, device: torch.device, image_size: int) -> int:
        """Most items per chunk for ``phase`` now."""
        if self.max_batch != "auto":
            return self.max_batch
        if phase not in self.settled:
            if self.start is None:
                self.start = self.initial(device, image_size)
            self.settled[phase] = self.start
        return self.settled[phase]

    def batched(
        self,
        phase: str,
        items: list[Item],
        run: Callable[[list[Item]], T],
        counter: WorkCounter,
        device: torch.device,
        image_size: int,
        how: Chunking = "items",
    ) -> Iterator[tuple[list[Item], T]]:
        """``(chunk, run(chunk))`` for ``items`` in :func:`chunks` of the current size, in order.

        ``run`` must start each chunk from scratch (its own generators and Adam state) and change
        nothing outside until it returns. With ``"auto"`` a chunk that raises
        ``torch.cuda.OutOfMemoryError`` is dropped whole: its passes are taken off ``counter``, the
        CUDA cache is emptied, the phase's size becomes half the failed chunk's length (announced in
        a warning) and the items not yet done are chunked again, from the failed chunk on. A failed
        chunk of one item raises :class:`~sdcorr.errors.DeviceMemoryError`.
        """
        remaining = list(items)
        while remaining:
            failed = None
            for chunk in chunks(remaining, self.current(phase, device, image_size), how):
                done = counter.done
                try:
                    result = run(chunk)
                except torch.cuda.OutOfMemoryError as error:
                    if self.max_batch != "auto":
                        raise
                    if len(chunk) == 1:
                        raise DeviceMemoryError(
                            f"max_batch auto: one item (one keypoint, one restart) does not fit in GPU memory "
                            f"at image_size {image_size}; try --trainer.precision bf16-mixed, a smaller "
                            "image_size or crop_cache, or a GPU with more free memory"
                        ) from error
                    counter.done, failed = done, len(chunk)
                    break  # out of the except block, so that the failed chunk's tensors can be freed
                yield chunk, result
                taken = set(chunk)
                remaining = [item for item in remaining if item not in taken]
            if failed is not None:
                torch.cuda.empty_cache()
                self.settled[phase] = failed // 2
                warnings.warn(
                    f"max_batch auto: {failed} items did not fit in GPU memory while {PHASES[phase]}; "
                    f"using {failed // 2}",
                    stacklevel=2,
                )
