"""How much the tap asks of the API at once: requests in flight (fewer after a 429) and page size.

Workers that all wait the same Retry-After come back at the same moment and can be refused
together again, one of them every time. The gate halves the requests allowed out on a 429
and lets one more out after every run of successes, so a rate-limited backfill slows down
to what the API accepts instead of spending its retries; Retry-After itself is untouched.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: Successful requests in a row that let one more request out at once.
RECOVER_AFTER = 10


class RequestGate:
    """At most ``limit`` requests out at once: ``ceiling`` at first, halved on every 429."""

    def __init__(self, ceiling: int) -> None:
        """``ceiling``: the most requests ever out at once (the number of workers)."""
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        #: The smallest limit the gate came down to (for logs and tests).
        self.lowest = self.ceiling
        self._out = 0
        self._successes = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the requests allowed out, waiting for one if none is free."""
        with self._changed:
            while self._out >= self.limit:
                self._changed.wait()
            self._out += 1
        try:
            yield
        finally:
            with self._changed:
                self._out -= 1
                self._changed.notify_all()

    def refused(self) -> None:
        """Allow half as many requests out (at least one): the API answered 429."""
        with self._changed:
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self._successes = 0

    def answered(self) -> None:
        """Count a request that went through; after enough in a row, allow one more out."""
        with self._changed:
            self._successes += 1
            if self._successes >= RECOVER_AFTER and self.limit < self.ceiling:
                self.limit += 1
                self._successes = 0
                self._changed.notify_all()


#: Successes at a reduced page size before the governor tries a larger one again; doubled
#: after every growth the edge refuses, so a size that keeps timing out is rarely retried.
GROW_AFTER = 10


class PageSizeGovernor:
    """The page size a stream asks for: halved on a 502/504, grown back after successes.

    Large pages time out at Atlassian's edge on busy sites; connectors ask again with half
    the ``limit`` down to a floor, then grow back once smaller pages keep going through.
    """

    def __init__(self, ceiling: int, floor: int) -> None:
        """``ceiling``: the size the stream wants; ``floor``: the smallest worth asking."""
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.size = ceiling
        #: The smallest size the governor came down to (for logs and tests).
        self.lowest = ceiling
        self._successes = 0
        self._grow_after = GROW_AFTER
        self._grown = False
        self._lock = threading.Lock()

    def limit(self, wanted: int) -> int:
        """Return the ``limit`` to send for a page the stream would ask ``wanted`` of."""
        with self._lock:
            return min(wanted, self.size)

    def shrink(self, sent: int) -> bool:
        """Halve after a page of ``sent`` timed out; False when already at the floor."""
        with self._lock:
            if sent <= self.floor:
                return False
            if self._grown:
                # The last growth was refused: wait twice as long before the next one.
                self._grow_after *= 2
            self.size = max(self.floor, min(self.size, sent // 2))
            self.lowest = min(self.lowest, self.size)
            self._successes = 0
            self._grown = False
            return True

    def succeeded(self) -> None:
        """Count a page that went through; after enough, try twice the size again."""
        with self._lock:
            # A page went through at the current size: the last growth (if any) held.
            self._grown = False
            if self.size >= self.ceiling:
                return
            self._successes += 1
            if self._successes >= self._grow_after:
                self.size = min(self.ceiling, self.size * 2)
                self._successes = 0
                self._grown = True
