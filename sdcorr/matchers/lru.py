"""A bounded memory of computed tensors, shared across pairs: least recently used entries go first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Optional, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """At most ``capacity`` entries; reading or writing an entry makes it the most recent.

    Args:
        capacity: most entries kept; 0 keeps nothing (every ``get`` misses).

    Attributes:
        hits: ``get`` calls that found their entry.
        misses: ``get`` calls that did not.

    >>> cache = LRU(2)
    >>> cache.put("a", 1); cache.put("b", 2); _ = cache.get("a"); cache.put("c", 3)
    >>> sorted(cache.keys()), cache.hits, cache.misses
    (['a', 'c'], 1, 0)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"Expected capacity >= 0 but got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def get(self, key: Hashable) -> Optional[V]:
        """The entry of ``key`` (now the most recent), or None."""
        if key not in self._entries:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Hashable, value: V) -> None:
        """Remember ``value`` under ``key``, forgetting the least recently used entry when full."""
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
