"""A small thread-safe LRU mapping, for the process's caches of immutable data."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """A thread-safe LRU mapping of at most ``size`` items."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Remove and return the item of ``key`` (None when absent)."""
        with self._lock:
            return self._items.pop(key, None)

    def discard_where(self, stale: Callable[[K, V], bool]) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if stale(k, v)]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)
