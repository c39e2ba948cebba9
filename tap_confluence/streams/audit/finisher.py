"""Where a window's pages are finished: in the tap's own process, or in helper processes.

Helpers start as soon as a read turns out to be a backfill: with its first full page (1,000
records: they boot while the first window is still being read), or its first window of
``HELPER_MIN_RECORDS`` (where the API serves smaller pages); and only when records go out
the fast way (``good`` given). When user_activity shares the read, each row
also carries what it takes from the record (``activity``). A page a helper could not finish
is finished here, with one warning, and from then on every page is.
"""

from __future__ import annotations

import threading
import typing as t

from tap_confluence.streams.audit.reader import PAGE_SIZE
from tap_confluence.streams.audit.workers import HELPER_MIN_RECORDS, HelperError, shared_pool

if t.TYPE_CHECKING:
    import logging

    from tap_confluence.streams.audit.pages import AuditPage
    from tap_confluence.streams.audit.rows import Finished, Shapes
    from tap_confluence.streams.audit.windows import Page, Window
    from tap_confluence.streams.audit.workers import PagePool


class PageFinisher:
    """Finishes pages for ``Window.take_chunks``: ``prepare`` ahead, ``read`` in turn."""

    def __init__(
        self,
        cloud_id: str | None,
        good: Shapes | None,
        *,
        helpers: int,
        activity: bool,
        logger: logging.Logger,
    ) -> None:
        """Give records ``cloud_id``; ``helpers``: how many helper processes to use (or 0)."""
        self._cloud_id = cloud_id
        self._good = good
        self._activity = activity
        self._helpers = helpers if good is not None else 0
        self._logger = logger
        self._pool: PagePool | None = None
        self._warned = False
        self._lock = threading.Lock()

    def saw(self, page: AuditPage) -> None:
        """Start the helpers if ``page`` is full: the read is a backfill (any thread)."""
        if self._helpers and page.count >= PAGE_SIZE:
            self._start()

    def start(self, window: Window) -> None:
        """Start the helpers if ``window`` is the first of a backfill."""
        if self._helpers and window.count >= HELPER_MIN_RECORDS:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if not self._helpers:
                return
            size, self._helpers = self._helpers, 0  # asked once
            self._pool = shared_pool(size)
        if self._pool is not None and self._pool.usable:
            self._logger.info(
                "audit_records: %d helper processes finish the pages of this backfill.",
                self._pool.size,
            )

    @property
    def ahead(self) -> int:
        """Pages to prepare after the one being read: enough to keep every helper busy."""
        pool = self._pool
        return pool.size + 1 if pool is not None and pool.usable else 1

    def prepare(self, page: Page) -> None:
        """Send ``page`` to a helper, or start decompressing it here."""
        pool = self._pool
        if pool is not None and pool.usable and self._good is not None:
            t.cast("AuditPage", page).finish_soon(
                pool, self._cloud_id, self._good, activity=self._activity
            )
        else:
            page.warm()

    def read(self, page: Page) -> list[Finished]:
        """``page``'s finished rows, from its helper or made here."""
        audit_page = t.cast("AuditPage", page)
        try:
            return audit_page.finished(self._cloud_id, self._good, activity=self._activity)
        except HelperError as failure:
            if not self._warned:
                self._warned = True
                self._logger.warning(
                    "audit_records: %s; the tap finishes the pages itself from here on "
                    "(slower; nothing is lost).",
                    failure,
                )
            return audit_page.finished(self._cloud_id, self._good, activity=self._activity)
