"""A small bounded TTL cache (LRU eviction), thread-safe, with an injectable clock
so tests move time instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError("max_entries must be >= 1 and ttl > 0")
        self.max_entries, self.ttl, self.clock = max_entries, ttl, clock
        self._items: OrderedDict[Hashable, tuple[float, V, float]] = OrderedDict()  # (expires, value, put at)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        """(hit, value): a hit may hold None (a cached negative answer)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return False, None
            expires, value, _ = entry
            if self.clock() >= expires:
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: Hashable, value: V, ttl: float | None = None) -> None:
        with self._lock:
            now = self.clock()
            self._items[key] = (now + (self.ttl if ttl is None else ttl), value, now)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def stored(self, key: Hashable) -> tuple[V | None, float] | None:
        """(value, when it was put) of the entry under ``key``, expired or not; None: no entry."""
        with self._lock:
            entry = self._items.get(key)
            return None if entry is None else (entry[1], entry[2])

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
