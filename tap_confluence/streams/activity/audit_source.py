"""user_activity from the audit log: the newest record each user authored.

When audit_records is selected too, its read of this run's log is reused, and only what lies
before it (a bookmark older than audit_records' own) is read here.
"""

from __future__ import annotations

import time
import typing as t

from tap_confluence.errors import StreamAccessError
from tap_confluence.streams.activity.ledger import Latest
from tap_confluence.streams.activity.source import ActivitySource
from tap_confluence.streams.audit.reader import AuditReader
from tap_confluence.streams.audit.rows import ms_to_iso

if t.TYPE_CHECKING:
    from tap_confluence.http.stream import ConfluenceStream
    from tap_confluence.streams.activity.ledger import SharedAuditRead


class AuditSource(ActivitySource):
    """Each user's newest audit record from ``lower`` on, read here or reused from audit_records."""

    name = "audit"
    needs = "the Confluence Administrator global permission and read:audit-log:confluence"

    def __init__(self, client: ConfluenceStream, shared: SharedAuditRead | None) -> None:
        """Read as ``client``; ``shared`` is audit_records' read of this run, if any."""
        super().__init__(client)
        self._shared = shared

    def read(self, lower: int | None) -> Latest:
        """Each user's newest audit record at or after ``lower`` (None: the whole log)."""
        lo = max(lower or 0, 0)
        shared = self._shared
        if shared is not None and shared.covers_up_from(lo):
            # audit_records read this run's log already: reuse it, reading only what lies
            # before its start (when this stream's bookmark is older than its own).
            latest, until = shared.latest, shared.end_ms
            gap_requests = (
                self._walk(latest, lo, shared.start_ms - 1) if lo < shared.start_ms else 0
            )
            self.logger.info(
                "user_activity: audit: reused audit_records' read of %s to %s; %d requests "
                "for the part before it.",
                ms_to_iso(shared.start_ms),
                ms_to_iso(until),
                gap_requests,
            )
            return latest
        latest, until = Latest(), int(time.time() * 1000)
        requests_sent = self._walk(latest, lo, until)
        self.logger.info(
            "user_activity: audit: read %s (or the retention floor) to %s in %d requests.",
            ms_to_iso(lo),
            ms_to_iso(until),
            requests_sent,
        )
        return latest

    def _walk(self, latest: Latest, lo: int, until: int) -> int:
        """Offer every record in ``[lo, until]`` to ``latest``; return the requests sent."""
        # Read as audit_records reads: retention floor, compact pages, concurrent windows.
        reader = AuditReader(self.client)
        lo = reader.start(lo, until)
        walker = reader.walker()
        try:
            for window in walker.walk(lo, until):
                latest.offer_audit(record for _, record in window.take())
        except StreamAccessError as exc:
            raise self.access_error(exc) from None
        return reader.probes + walker.requests
