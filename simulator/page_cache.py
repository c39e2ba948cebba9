"""Encoded audit pages kept in memory, so a warm page costs a dict lookup."""

from __future__ import annotations

import threading
from collections import OrderedDict


class PageCache:
    """An LRU of encoded audit pages bounded by bytes: a warm page costs a dict lookup."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[int, ...], tuple[bytes, int]] = OrderedDict()

    def get(self, key: tuple[int, ...]) -> tuple[bytes, int] | None:
        """Return a cached page and mark it recently used."""
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key: tuple[int, ...], value: tuple[bytes, int]) -> None:
        """Store a page, dropping the least recently used ones beyond the byte budget."""
        with self.lock:
            if key in self.items:
                return
            self.items[key] = value
            self.bytes += len(value[0])
            while self.bytes > self.max_bytes and self.items:
                _, (old, _) = self.items.popitem(last=False)
                self.bytes -= len(old)
