"""Walk the audit log in time windows, oldest to newest, each read completely before it is used.

The audit API returns records newest first and pages by offset over a log that grows while it
is read, and late records can land inside a range already paged. So each window is read by
keyset (ask for ``[w0, oldest seen]`` again after each full page, de-duplicating by id), which
no insertion can shift, with offset paging only inside a single millisecond that holds more
than a page. Window widths adapt to record density so a window holds a bounded number of
pages. This module knows nothing of Singer or HTTP, so windows could later be fetched
concurrently behind the same interface.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: fetch(start_ms, end_ms, offset, limit) -> one page of raw records, newest first.
Fetch = t.Callable[[int, int, int, int], list[dict[str, t.Any]]]


def record_id(record: dict[str, t.Any]) -> str:
    """Stable id of an audit record: sha256 hex of the canonical JSON of its API fields."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass
class Window:
    """A fully read window ``[start_ms, end_ms]`` and its records, oldest first."""

    start_ms: int
    end_ms: int
    #: (id, record) pairs sorted by (creationDate, id).
    records: list[tuple[str, dict[str, t.Any]]]


class AuditWindowWalker:
    """Reads ``[lo, hi]`` as consecutive complete windows, sized to about ``target_pages``."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        page_size: int = 1000,
        target_pages: int = 10,
        max_pages: int | None = None,
        initial_width_ms: int = 3_600_000,
        growth: int = 8,
        on_window_start: Callable[[int, int], None] | None = None,
    ) -> None:
        """``max_pages`` bounds what one window may hold before it is narrowed and re-read."""
        self._fetch = fetch
        self.page_size = page_size
        self.target_records = page_size * target_pages
        self.max_records = page_size * (max_pages or 2 * target_pages)
        self.initial_width_ms = initial_width_ms
        self.growth = growth
        self._on_window_start = on_window_start
        #: Requests sent so far (for benchmarks and tests of request economy).
        self.requests = 0
        #: Windows abandoned as too dense and re-read narrower.
        self.narrowed = 0

    def fetch(self, start_ms: int, end_ms: int, offset: int) -> list[dict[str, t.Any]]:
        """One page; counted."""
        self.requests += 1
        return self._fetch(start_ms, end_ms, offset, self.page_size)

    def walk(self, lo: int, hi: int) -> Iterator[Window]:
        """Yield complete windows covering ``[lo, hi]`` in order; nothing newer than ``hi``."""
        width = self.initial_width_ms
        w0 = lo
        while w0 <= hi:
            w1 = min(hi, w0 + width - 1)
            if self._on_window_start:
                self._on_window_start(w0, w1)
            found = self.read_window(w0, w1)
            if isinstance(found, int):
                self.narrowed += 1
                width = found
                continue
            records = sorted(found.items(), key=lambda kv: (kv[1].get("creationDate", 0), kv[0]))
            yield Window(w0, w1, records)
            width = self._next_width(w1 - w0 + 1, len(records))
            w0 = w1 + 1

    def _next_width(self, span: int, count: int) -> int:
        if count == 0:
            return span * self.growth
        wanted = span * self.target_records // count
        return max(1, min(span * self.growth, max(span // self.growth, wanted)))

    def read_window(self, w0: int, w1: int) -> dict[str, dict[str, t.Any]] | int:
        """Every record in ``[w0, w1]`` by id, or a narrower width when the window is too dense."""
        collected: dict[str, dict[str, t.Any]] = {}
        hi = w1
        while hi >= w0:
            page = self.fetch(w0, hi, 0)
            self._add(collected, page)
            if len(page) < self.page_size:
                return collected
            oldest = min(int(r.get("creationDate", hi)) for r in page)
            if oldest >= hi:
                # A whole page in one millisecond: keyset cannot split it, offsets can.
                self._read_millisecond(hi, len(page), collected)
                hi -= 1
            else:
                # Re-ask from the oldest millisecond seen: some of its records may be unread.
                hi = oldest
            if len(collected) > self.max_records and w1 > w0:
                covered = max(1, w1 - hi)
                return max(1, min(w1 - w0, covered * self.target_records // len(collected)))
        return collected

    def _read_millisecond(self, ms: int, offset: int, into: dict[str, dict[str, t.Any]]) -> None:
        while True:
            page = self.fetch(ms, ms, offset)
            self._add(into, page)
            if len(page) < self.page_size:
                return
            offset += len(page)

    @staticmethod
    def _add(into: dict[str, dict[str, t.Any]], page: list[dict[str, t.Any]]) -> None:
        for record in page:
            into.setdefault(record_id(record), record)
