"""Walk the audit log in time windows, oldest to newest, each read completely before it is used.

Window widths adapt to record density so a window holds a bounded number of pages (each read
by ``WindowReader``), and a window found too dense is planned again narrower. Several windows
can be read at once by worker threads; they are still handed out strictly oldest first, so
whoever emits them can trust a bookmark after each one. This module knows nothing of Singer
or HTTP.
"""

from __future__ import annotations

import collections
import itertools
import threading
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

from tap_confluence.streams.audit.window_reader import Narrowed, WindowReader
from tap_confluence.streams.audit.windows import Window

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_confluence.streams.audit.window_reader import Fetch


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
        self.page_size = page_size
        self.target_records = page_size * target_pages
        self.max_records = page_size * (max_pages or 2 * target_pages)
        self.initial_width_ms = initial_width_ms
        self.growth = growth
        self.workers = max(1, workers)
        self._on_window_start = on_window_start
        #: Reads each window; its counters are the walk's (requests, cap, verifications).
        self.reader = WindowReader(
            fetch,
            page_size=page_size,
            target_records=self.target_records,
            max_records=self.max_records,
        )
        #: Windows abandoned as too dense and re-read narrower.
        self.narrowed = 0

    @property
    def requests(self) -> int:
        """Requests sent so far (for benchmarks and tests of request economy)."""
        return self.reader.requests

    @property
    def cap(self) -> int | None:
        """The most records the API serves per page, when fewer than asked; None: not capped."""
        return self.reader.cap

    @property
    def verifications(self) -> int:
        """Requests sent only to tell a short page from a capped one."""
        return self.reader.verifications

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
        measured = width if self.reader.seen_records else 0
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
            return span * (4 if self.reader.seen_records else self.growth)
        wanted = span * self.target_records // count
        return max(1, min(span * self.growth, max(span // self.growth, wanted)))

    def _read(self, w0: int, w1: int) -> Window | Narrowed:
        if self._on_window_start:
            self._on_window_start(w0, w1)
        return self.reader.read_window(w0, w1)
