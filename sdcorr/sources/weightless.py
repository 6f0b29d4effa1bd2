"""Building a source without its weights, so that its arguments are checked before any work (``sdcorr plan``).

Inside :func:`without_weights`, a random-weight architecture is built on PyTorch's ``meta`` device (shapes
only: no memory, no time) and a pretrained model stops with :class:`WeightsSkipped` where it would start
loading. A source's constructor therefore runs every check of its arguments up to its weights, and, for an
architecture, the checks that need the network's shape too (e.g. its number of cross-attention layers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ACTIVE: ContextVar[bool] = ContextVar("sdcorr_without_weights", default=False)


class WeightsSkipped(Exception):
    """A pretrained model was about to load inside :func:`without_weights`; the checks that need it are skipped."""


@contextmanager
def without_weights() -> Iterator[None]:
    """Build sources without weights in this block (see the module docstring)."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def weightless() -> bool:
    """Is a :func:`without_weights` block active?"""
    return _ACTIVE.get()
