"""Walk the audit log in time windows, oldest to newest, each read completely before it is used.

The audit API returns records newest first and pages by offset over a log that grows while it
is read, and late records can land inside a range already paged. So each window is read by
keyset (ask for ``[w0, oldest seen]`` again after each full page, de-duplicating by id), which
no insertion can shift, with offset paging only inside a single millisecond that holds more
than a page. Window widths adapt to record density so a window holds a bounded number of
pages, and a window that turns out far denser than planned is abandoned after its first
pages, not its last. Several windows can be read at once by worker threads; they are still
handed out strictly oldest first, so whoever emits them can trust a bookmark after each one.
This module knows nothing of Singer or HTTP.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import json
import operator
import threading
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Record = dict[str, t.Any]


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

#: fetch(start_ms, end_ms, offset, limit) -> one page of records, newest first.
Fetch = t.Callable[[int, int, int, int], "list[Record] | Page"]

#: Encodes as ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
#: does, floats aside.
SORTED_JSON = msgspec.json.Encoder(order="sorted")


def canonical_json(record: Record, *, has_floats: bool = True) -> bytes:
    """Encode an audit record's API fields as the canonical JSON its id is the sha256 of.

    Canonical JSON is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``;
    msgspec's sorted encoder writes the same bytes, about ten times faster, for every value
    but floats (it spells exponents differently), so floats keep the standard library.
    """
    if has_floats:
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode()
    return SORTED_JSON.encode(record)


def record_digest(record: Record, *, has_floats: bool = True) -> bytes:
    """sha256 of the canonical JSON of an audit record's API fields (``record_id`` in bytes)."""
    return hashlib.sha256(canonical_json(record, has_floats=has_floats)).digest()


def record_id(record: Record, *, has_floats: bool = True) -> str:
    """Stable id of an audit record: sha256 hex of the canonical JSON of its API fields."""
    return record_digest(record, has_floats=has_floats).hex()


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

    def take_chunks(self, read: Callable[[Page], list[Entry]]) -> Iterator[list[Entry]]:
        """Yield the window's entries sorted by (date, digest), each digest once.

        ``read`` turns a page into entries, ``(date, digest, ...)`` per record (``digested``
        gives ``(date, digest, record)``); the window is read once, by whoever takes it.

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
        while pages:
            # Oldest first, each page dropped as soon as it is decoded; the next one is made
            # ready meanwhile (an AuditPage decompresses, which other threads can do at once).
            page = pages.pop()
            if pages:
                pages[-1].warm()
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


#: Sort keys: (date, digest) and the date (C-level, called once per record).
_date_and_digest = operator.itemgetter(0, 1)
_date = operator.itemgetter(0)
_digest = operator.itemgetter(1)


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


class _Slot:
    """A stretch of the log in the plan: a window being read (future) or still to plan."""

    __slots__ = ("end", "future", "kept", "split", "start")

    def __init__(
        self,
        start: int,
        end: int,
        future: Future[Window | Narrowed] | None = None,
        *,
        kept: bool = False,
        split: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.future = future
        #: Already read (compressed pages of a window cut short): takes no worker.
        self.kept = kept
        #: Part of the last stretch, already cut one window per worker.
        self.split = split


class AuditWindowWalker:
    """Reads ``[lo, hi]`` as consecutive complete windows, sized to about ``target_pages``."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        page_size: int = 1000,
        target_pages: int = 10,
        max_pages: int | None = None,
        initial_width_ms: int | None = None,
        growth: int = 8,
        workers: int = 1,
        on_window_start: Callable[[int, int], None] | None = None,
    ) -> None:
        """``max_pages`` bounds one window; ``workers`` windows are read at once at most.

        Without ``initial_width_ms`` the first window is the whole range: one request when
        little is new (an incremental run), and the density to plan by when much is.
        """
        self._fetch = fetch
        self.page_size = page_size
        self.target_records = page_size * target_pages
        self.max_records = page_size * (max_pages or 2 * target_pages)
        self.initial_width_ms = initial_width_ms
        self.growth = growth
        self.workers = max(1, workers)
        self._on_window_start = on_window_start
        self._lock = threading.Lock()
        #: Requests sent so far (for benchmarks and tests of request economy).
        self.requests = 0
        #: Windows abandoned as too dense and re-read narrower.
        self.narrowed = 0
        #: The most records the API serves per page when it serves fewer than asked (echoed,
        #: or learned when a short page turned out not to be the last); None: not capped.
        self.cap: int | None = None
        #: A page as large as asked came back: the API does not cap below our page size.
        self._uncapped = False
        #: The largest page seen: the cap is at least this, so shorter pages are ends.
        self._largest = 0
        #: Requests sent only to tell a short page from a capped one.
        self.verifications = 0
        self._seen_records = False

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

    def walk(self, lo: int, hi: int) -> Iterator[Window]:
        """Yield complete windows covering ``[lo, hi]`` in order; nothing newer than ``hi``."""
        width = self.initial_width_ms or max(1, hi - lo + 1)
        w0 = lo
        kept: list[Window] = []  # stretches already read, newest first, each after the rest
        # One window at a time until records turn up (empty windows cost one request each
        # and tell how wide to go next); then, with a density to plan by, several at once.
        while w0 <= hi:
            bound = kept[-1].start_ms - 1 if kept else hi
            if w0 > bound:
                done = kept.pop()
                yield done
                w0 = done.end_ms + 1
                continue
            w1 = min(bound, w0 + width - 1)
            found = self._read(w0, w1)
            if isinstance(found, Narrowed):
                self.narrowed += 1
                width = found.width
                kept.append(found.kept)
                if self.workers > 1:
                    # The density is known now: read on several windows at once.
                    yield from self._walk_concurrently(w0, hi, width, kept)
                    return
                continue
            yield found
            width = self._next_width(w1 - w0 + 1, found.count)
            w0 = w1 + 1
            if found.count and self.workers > 1:
                yield from self._walk_concurrently(w0, hi, width, kept)
                return

    def _walk_concurrently(
        self, lo: int, hi: int, width: int, kept: list[Window]
    ) -> Iterator[Window]:
        # The plan is a queue of slots in time order. A worker that finishes a window starts
        # the next one at once, even while the oldest is still being read or emitted; at
        # most `workers` windows are read and one more held at once, which bounds memory.
        # The oldest is always being read, and a window found too dense goes back into the
        # plan as a stretch to cut narrower.
        plan: collections.deque[_Slot] = collections.deque()
        for stretch in reversed(kept):  # newest first; each starts after the one before
            if lo < stretch.start_ms:
                plan.append(_Slot(lo, stretch.start_ms - 1))
            ready: Future[Window | Narrowed] = Future()
            ready.set_result(stretch)
            plan.append(_Slot(stretch.start_ms, stretch.end_ms, ready, kept=True))
            lo = stretch.end_ms + 1
        if lo <= hi:
            plan.append(_Slot(lo, hi))
        # Reentrant: a window that is done before its callback is added runs it at once.
        lock = threading.RLock()
        # The width to plan by; the last width measured from records (0 until then: an
        # empty stretch only widens the plan); whether windows may still be started.
        measured = width if self._seen_records else 0
        planning = {"width": width, "measured": measured, "open": True}

        with ThreadPoolExecutor(self.workers, thread_name_prefix="audit-window") as pool:

            def refill(done: Future[Window | Narrowed]) -> None:
                with lock:
                    if planning["open"] and not done.cancelled() and done.exception() is None:
                        self._replan_narrowed(plan, planning)
                        self._fill(plan, pool, planning, refill)

            try:
                while True:
                    with lock:
                        if not plan:
                            break
                        self._fill(plan, pool, planning, refill)
                        head = plan[0]
                    # _fill always starts the oldest slot, so the head has a future.
                    found = t.cast("Future[Window | Narrowed]", head.future).result()
                    with lock:
                        self._replan_narrowed(plan, planning)
                        if plan[0] is not head or not isinstance(found, Window):
                            continue  # it was too dense: its stretch is planned again
                        plan.popleft()
                        span = head.end - head.start + 1
                        # Windows planned ahead may be wider than this one: an empty one
                        # only ever widens the plan.
                        if found.count == 0:
                            planning["width"] = max(planning["width"], span * self.growth)
                        else:
                            planning["width"] = self._next_width(span, found.count)
                            planning["measured"] = planning["width"]
                    yield found
            finally:
                with lock:
                    planning["open"] = False
                    for slot in plan:
                        if slot.future is not None:
                            slot.future.cancel()

    def _replan_narrowed(self, plan: collections.deque[_Slot], planning: dict[str, int]) -> None:
        """Plan again every stretch whose window was found too dense, at a narrower width.

        The part already read (newest end) stays in the plan as a window of its own, right
        after the stretch still to read, which the next fill cuts at the narrower width.
        """
        i = 0
        while i < len(plan):
            slot = plan[i]
            future = slot.future
            if future is not None and not slot.kept and future.done():
                found = None if future.cancelled() or future.exception() else future.result()
                if isinstance(found, Narrowed):
                    self.narrowed += 1
                    planning["width"] = planning["measured"] = found.width
                    done: Future[Window | Narrowed] = Future()
                    done.set_result(found.kept)
                    plan[i] = _Slot(slot.start, found.kept.start_ms - 1)
                    plan.insert(i + 1, _Slot(found.kept.start_ms, slot.end, done, kept=True))
                    i += 1
            i += 1

    def _fill(
        self,
        plan: collections.deque[_Slot],
        pool: ThreadPoolExecutor,
        planning: dict[str, int],
        on_done: Callable[[Future[Window | Narrowed]], None],
    ) -> None:
        """Start windows oldest first while workers are free and little is held unread.

        At most ``workers`` windows are being read and one more is held finished; the
        oldest slot always runs.
        """
        reading = held = 0
        for slot in plan:
            if slot.future is not None and not slot.kept:
                if slot.future.done():
                    held += 1
                else:
                    reading += 1
        started: list[Future[Window | Narrowed]] = []
        i = 0
        while i < len(plan):
            slot = plan[i]
            if slot.future is None:
                busy = reading >= self.workers or reading + held > self.workers
                if busy and i > 0:
                    break
                span = slot.end - slot.start + 1
                width, measured = planning["width"], planning["measured"]
                last = all(
                    later.future is not None for later in itertools.islice(plan, i + 1, None)
                )
                if last and not slot.split and span < measured * self.workers:
                    # The last stretch, too short to keep every worker busy: cut it in equal
                    # windows, one per worker, so the backfill does not end with one worker
                    # reading alone.
                    part = -(-span // self.workers)
                    for n, start in enumerate(range(slot.start + part, slot.end + 1, part)):
                        piece = _Slot(start, min(slot.end, start + part - 1), split=True)
                        plan.insert(i + 1 + n, piece)
                    slot.end, slot.split = slot.start + part - 1, True
                # A piece of the last stretch is one window whatever the width says now.
                w1 = slot.end if slot.split else min(slot.end, slot.start + width - 1)
                window = _Slot(slot.start, w1, pool.submit(self._read, slot.start, w1))
                started.append(t.cast("Future[Window | Narrowed]", window.future))
                if w1 >= slot.end:
                    plan[i] = window
                else:
                    slot.start = w1 + 1
                    plan.insert(i, window)
                reading += 1
            i += 1
        # Only now: a window already done runs its callback here, which plans again.
        for future in started:
            future.add_done_callback(on_done)

    def _next_width(self, span: int, count: int) -> int:
        if count == 0:
            # Once records have turned up, an empty stretch is a gap before them, not the
            # distant past: widen gently so as not to overshoot into them again.
            return span * (4 if self._seen_records else self.growth)
        wanted = span * self.target_records // count
        return max(1, min(span * self.growth, max(span // self.growth, wanted)))

    def _read(self, w0: int, w1: int) -> Window | Narrowed:
        if self._on_window_start:
            self._on_window_start(w0, w1)
        return self.read_window(w0, w1)

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
            self._seen_records = True
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
