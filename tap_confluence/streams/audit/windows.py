"""A window of the audit log read completely: its pages, and its records handed out in order.

Pages wait as they came (newest first, an ``AuditPage`` still compressed); whoever takes the
window gets its records sorted by (date, id), each id once, a page at a time. This module
knows nothing of Singer or HTTP.
"""

from __future__ import annotations

import bisect
import operator
import typing as t

from tap_confluence.streams.audit.rows import Record, record_digest

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class Page(t.Protocol):
    """One page of the audit API: its size and date range now, its records when asked."""

    count: int
    #: The ``limit`` its request sent, and the ``limit`` the page says it served (None: absent).
    asked: int
    echoed: int | None
    #: Smallest and largest creationDate on the page; None when no record carried one.
    oldest: int | None
    newest: int | None
    #: Whether any record came without a creationDate (it sorts as 0).
    undated: bool

    def digested(self) -> list[tuple[int, bytes, Record]]:
        """Return ``(creationDate or 0, digest, record)`` per record, decoding the page once."""
        ...

    def warm(self) -> None:
        """Start whatever ``digested`` needs first (it is about to be asked), if anything."""
        ...


#: What ``Window.take_chunks`` yields: tuples that begin with (date, digest).
Entry = t.TypeVar("Entry", bound="tuple[t.Any, ...]")


class ListPage:
    """A page given as already parsed records."""

    def __init__(self, rows: list[Record], asked: int, echoed: int | None = None) -> None:
        """Keep the rows; size and oldest date come from them."""
        self._rows = rows
        self.asked = asked
        self.echoed = echoed
        self.count = len(rows)
        dates = [int(r["creationDate"]) for r in rows if r.get("creationDate") is not None]
        self.oldest = min(dates) if dates else None
        self.newest = max(dates) if dates else None
        self.undated = len(dates) < len(rows)

    def digested(self) -> list[tuple[int, bytes, Record]]:
        """``(creationDate or 0, digest, record)`` per record."""
        return [(r.get("creationDate") or 0, record_digest(r), r) for r in self._rows]

    def warm(self) -> None:
        """Nothing to prepare: the rows are here."""


class Window:
    """A fully read window ``[start_ms, end_ms]``; its records are built only when taken."""

    def __init__(
        self, start_ms: int, end_ms: int, pages: list[Page], count: int, *, trim: bool = False
    ) -> None:
        """``count`` is the records fetched, re-read duplicates included.

        ``trim`` drops records older than ``start_ms`` (pages kept from a window cut short).
        """
        self.start_ms = start_ms
        self.trim = trim
        self.end_ms = end_ms
        self.count = count
        self._pages: list[Page] | None = pages
        self._records: list[tuple[str, Record]] | None = None

    def take(self) -> Iterator[tuple[str, Record]]:
        """Yield (id, record) pairs sorted by (creationDate, id), each id once."""
        for chunk in self.take_chunks(_digested):
            for _, digest, record in chunk:
                yield digest.hex(), record

    def take_chunks(
        self,
        read: Callable[[Page], list[Entry]],
        prepare: Callable[[Page], None] | None = None,
        ahead: int = 1,
    ) -> Iterator[list[Entry]]:
        """Yield the window's entries sorted by (date, digest), each digest once.

        ``read`` turns a page into entries, ``(date, digest, ...)`` per record (``digested``
        gives ``(date, digest, record)``); the window is read once, by whoever takes it.
        ``prepare`` (``Page.warm`` by default) is called for each page before it is read
        and for the ``ahead`` pages to be read after it, so their work can start meanwhile.

        Pages arrive newest first, each a slice of time that shares at most its boundary
        millisecond with the next. So the pages are taken oldest first, each decoded once,
        and a record goes out as soon as no newer page can hold anything older: one page
        and a boundary millisecond of records in memory, whatever the window's size. The
        result is the window's full sort; a record read twice (a boundary millisecond re-read,
        or an identical event) has the same date and digest, so it meets its twin here.
        Records come in lists, about a page each, so a caller can work on them a page at a time.
        """
        pages, self._pages = self._pages or [], None
        # floors[i]: the oldest date on any page newer than page i (read before it).
        floors: list[int | None] = []
        floor: int | None = None
        for page in pages:
            floors.append(floor)
            oldest = 0 if page.undated else page.oldest
            if oldest is not None:
                floor = oldest if floor is None else min(floor, oldest)
        pending: list[Entry] = []
        last = b""
        ready_up = prepare or _warm
        while pages:
            # Oldest first, each page dropped as soon as it is decoded; the next ones are made
            # ready meanwhile (an AuditPage decompresses, which other threads can do at once,
            # or goes to a helper process).
            page = pages.pop()
            if prepare is not None:
                ready_up(page)
            for upcoming in reversed(pages[max(0, len(pages) - ahead) :]):
                ready_up(upcoming)
            entries = read(page)
            del page
            if self.trim:
                entries = [e for e in entries if e[0] >= self.start_ms]
            pending += entries
            pending.sort(key=_date_and_digest)
            bound = floors.pop()
            cut = len(pending) if bound is None else bisect.bisect_left(pending, bound, key=_date)
            ready = pending[:cut]
            del pending[:cut]
            if not ready:
                continue
            # Twins sort next to each other: keep the first of each run of equal digests.
            before = [last, *map(_digest, ready[:-1])]
            chunk = [e for e, b in zip(ready, before, strict=True) if e[1] != b]
            last = ready[-1][1]
            yield chunk

    @property
    def records(self) -> list[tuple[str, Record]]:
        """Every (id, record) pair at once (tests and small windows)."""
        if self._records is None:
            self._records = list(self.take())
        return self._records


def _digested(page: Page) -> list[tuple[int, bytes, Record]]:
    return page.digested()


def _warm(page: Page) -> None:
    page.warm()


#: Sort keys: (date, digest) and the date (C-level, called once per record).
_date_and_digest = operator.itemgetter(0, 1)
_date = operator.itemgetter(0)
_digest = operator.itemgetter(1)
