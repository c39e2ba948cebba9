"""Read one window of the audit log completely, from its newest end, whatever the log does.

The audit API returns records newest first and pages by offset over a log that grows while it
is read, and late records can land inside a range already paged. So a window is read by
keyset (ask for ``[w0, oldest seen]`` again after each full page, de-duplicating by id), which
no insertion can shift, with offset paging only inside a single millisecond that holds more
than a page. A window that turns out far denser than planned is abandoned after its first
pages, not its last. Pages shorter than asked are told apart from the end of a query on the
way (the API may cap ``limit``). This module knows nothing of Singer or HTTP.
"""

from __future__ import annotations

import threading
import typing as t

from tap_confluence.streams.audit.windows import ListPage, Window

if t.TYPE_CHECKING:
    from tap_confluence.streams.audit.rows import Record
    from tap_confluence.streams.audit.windows import Page

#: fetch(start_ms, end_ms, offset, limit) -> one page of records, newest first.
Fetch = t.Callable[[int, int, int, int], "list[Record] | Page"]


class Narrowed:
    """A window found too dense: the width to retry with, and the stretch already read.

    ``kept`` holds the pages of ``(hi, w1]``, complete (keyset paging reads a window from
    its newest end), as a window of its own to emit after ``[w0, hi]``: nothing read is
    thrown away, and being compressed pages, keeping it costs little.
    """

    def __init__(self, width: int, kept: Window) -> None:
        """``kept`` starts just after the part still to read."""
        self.width = width
        self.kept = kept


class WindowReader:
    """Reads windows by keyset; counts requests and learns the API's page cap as it goes."""

    def __init__(
        self, fetch: Fetch, *, page_size: int, target_records: int, max_records: int
    ) -> None:
        """Ask ``fetch`` for ``page_size`` records a page; a window past ``max_records`` narrows."""
        self._fetch = fetch
        self.page_size = page_size
        self.target_records = target_records
        self.max_records = max_records
        self._lock = threading.Lock()
        #: Requests sent so far (for benchmarks and tests of request economy).
        self.requests = 0
        #: The most records the API serves per page when it serves fewer than asked (echoed,
        #: or learned when a short page turned out not to be the last); None: not capped.
        self.cap: int | None = None
        #: A page as large as asked came back: the API does not cap below our page size.
        self._uncapped = False
        #: The largest page seen: the cap is at least this, so shorter pages are ends.
        self._largest = 0
        #: Requests sent only to tell a short page from a capped one.
        self.verifications = 0
        #: A window held more than a page: later empty stretches are gaps, not the past.
        self.seen_records = False

    def fetch(self, start_ms: int, end_ms: int, offset: int) -> Page:
        """One page; counted."""
        with self._lock:
            self.requests += 1
        got = self._fetch(start_ms, end_ms, offset, self.page_size)
        return ListPage(got, self.page_size) if isinstance(got, list) else got

    def more_after(self, page: Page) -> bool | None:
        """Tell whether records may follow ``page`` in its query: yes, no, or None (unknown).

        Atlassian documents ``limit`` as "may be restricted by fixed system limits", so a
        page shorter than asked ends the query only when the API says so: a page as full as
        asked, or as full as an echoed ``limit`` below the one asked, is followed by more;
        a page shorter than the cap, or than a page already seen, is the end. A short page
        of a size never seen is unknown until the next offset is asked for (``learn``).
        """
        with self._lock:
            count = page.count
            if page.echoed is not None and 0 < page.echoed < page.asked:
                self.cap = page.echoed if self.cap is None else min(self.cap, page.echoed)
            self._largest = max(self._largest, count)
            if count >= page.asked and count > 0:
                if page.asked >= self.page_size:
                    self._uncapped = True
                return True
            if count == 0 or self._uncapped:
                return False
            if self.cap is not None:
                return count >= min(self.cap, page.asked)
            return None if count >= self._largest else False

    def learn(self, short: Page, following: Page) -> bool:
        """``following`` was asked for right after the unknown ``short`` page: learn the cap.

        Records there mean the API capped ``short`` at its size; none mean it was the end.
        """
        with self._lock:
            self.verifications += 1
            if following.count:
                self.cap = short.count if self.cap is None else min(self.cap, short.count)
                return True
            return False

    def read_window(self, w0: int, w1: int) -> Window | Narrowed:
        """Every record in ``[w0, w1]``, or what was read and a narrower width if too dense."""
        pages: list[Page] = []
        count = 0
        hi = w1
        top = w1
        while hi >= w0:
            page = self.fetch(w0, hi, 0)
            if not pages and page.newest is not None:
                # Nothing is newer than the first page's newest record: measure density
                # from there, or an empty stretch at the top makes the window look sparse.
                top = page.newest
            pages.append(page)
            count += page.count
            more = self.more_after(page)
            if more is None:
                # Maybe capped below what was asked: the next offset of the same query
                # tells (newest first, an insertion can only repeat a record, never skip one).
                following = self.fetch(w0, hi, page.count)
                more = self.learn(page, following)
                if more:
                    pages.append(following)
                    count += following.count
                    page = following
                    more = self.more_after(page)
            if not more:
                return Window(w0, w1, pages, count)
            oldest = page.oldest if page.oldest is not None else hi
            if oldest >= hi:
                # A whole page in one millisecond: keyset cannot split it, offsets can.
                count += self._read_millisecond(hi, page.count, pages)
                hi -= 1
            else:
                # Re-ask from the oldest millisecond seen: some of its records may be unread.
                hi = oldest
            self.seen_records = True
            if w1 > w0 and hi >= w0:
                covered = max(1, top - hi)
                # What the whole window will hold at the density read so far; stop early
                # rather than read many pages only to throw them away.
                projected = count * (top - w0 + 1) // covered
                if count > self.max_records or projected > self.max_records:
                    width = max(1, min(hi - w0 + 1, covered * self.target_records // count))
                    return Narrowed(width, Window(hi + 1, w1, pages, count, trim=True))
        return Window(w0, w1, pages, count)

    def _read_millisecond(self, ms: int, offset: int, into: list[Page]) -> int:
        added = 0
        unknown: Page | None = None
        while True:
            page = self.fetch(ms, ms, offset)
            into.append(page)
            added += page.count
            if unknown is not None:
                self.learn(unknown, page)
            more = self.more_after(page)
            if not page.count or more is False:
                return added
            # Full, or maybe capped: the next offset is asked either way, and tells which.
            unknown = page if more is None else None
            offset += page.count
