"""An in-memory audit log served the way /wiki/rest/api/audit serves it, for walker tests."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any


class Log:
    """An append-only audit log served newest first."""

    def __init__(self, dates: list[int]) -> None:
        self.records = [{"creationDate": d, "n": i} for i, d in enumerate(dates)]
        # Kept sorted oldest first, ties by insertion, for bisecting the date bounds.
        self._keys = sorted((r["creationDate"], r["n"]) for r in self.records)
        self.on_fetch: Callable[[Log], None] | None = None

    def fetch(self, start_ms: int, end_ms: int, offset: int, limit: int) -> list[dict[str, Any]]:
        if self.on_fetch:
            self.on_fetch(self)
        lo = bisect.bisect_left(self._keys, (start_ms, -1))
        hi = bisect.bisect_left(self._keys, (end_ms + 1, -1))
        # Newest first; among equal dates the later-added record first (as the simulator).
        chosen = self._keys[lo:hi][::-1][offset : offset + limit]
        return [dict(self.records[n]) for _, n in chosen]

    def append(self, date: int) -> None:
        n = len(self.records)
        self.records.append({"creationDate": date, "n": n})
        bisect.insort(self._keys, (date, n))
