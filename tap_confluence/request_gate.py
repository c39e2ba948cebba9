"""How many requests concurrent workers may have out at once, fewer while the API says 429.

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
