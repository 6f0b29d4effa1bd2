"""Independent, reproducible random streams.

Each item of work (a keypoint and a restart, a pair) gets its own ``torch.Generator`` seeded from
the run seed and the item's name. Results therefore do not depend on batching, on the order of
pairs, on sharding or on the number of processes.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys: object) -> int:
    """A 63-bit seed from any printable keys, stable across Python processes (unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def content_key(tensor: torch.Tensor) -> str:
    """A short digest of a tensor's shape, dtype and values: equal for equal content on any device.

    Identifies an image by what it holds rather than by its file name (benchmarks ship byte-identical
    copies of one image under two names).
    """
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(data.shape)}/{data.dtype}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:20]
