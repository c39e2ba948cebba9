"""The audit_records stream: incremental, resumable, over a newest-first log that keeps growing."""

from __future__ import annotations

import ctypes
import datetime as dt
import functools
import hashlib
import time
import typing as t
import zlib

import msgspec
from singer_sdk.exceptions import FatalAPIError
from typing_extensions import override

from tap_confluence.http.client import sent_limit
from tap_confluence.http.limits import PageSizeGovernor, RequestGate
from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.settings.rules import AUDIT_CONCURRENCY_RANGE
from tap_confluence.streams.audit.windows import SORTED_JSON, AuditWindowWalker, record_digest
from tap_confluence.streams.progress import log_progress_every

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from singer_sdk.helpers.types import Context

AUDIT_SCOPES = (frozenset({"read:audit-log:confluence"}),)
#: Windows fetched at once: enough to hide ~150 ms of latency per request (3.4 times faster
#: than sequential paging in the benchmark), few enough to keep memory flat and stay polite
#: to the API (each worker still honours 429 and Retry-After).
DEFAULT_CONCURRENCY = 5
#: Days per retention unit the audit API may answer with; others (FOREVER...) mean no floor.
RETENTION_UNIT_DAYS = {"DAYS": 1, "WEEKS": 7, "MONTHS": 31, "YEARS": 366, "DECADES": 3653}
#: Records a little older than the retention period may not be purged yet.
RETENTION_SLACK_DAYS = 31
#: The smallest page asked for after 502/504s on large pages.
MIN_PAGE_SIZE = 100


def keep_large_buffers_out_of_the_heap() -> None:
    """Have glibc map every buffer over 128 KiB on its own, so freeing one returns it.

    By default glibc raises that threshold to the largest buffer freed so far; the 0.5 MB
    audit pages then land in per-thread heaps that never shrink, and a long backfill's
    peak RSS creeps up with the number of pages read. Elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8
    mallopt(m_mmap_threshold, 128 * 1024)
    # Worker threads would each get a heap of their own, each keeping its free memory.
    mallopt(m_arena_max, 2)


class _Dated(msgspec.Struct):
    creationDate: int | None = None  # noqa: N815 (the API's spelling)


class _Envelope(msgspec.Struct):
    results: list[_Dated] = msgspec.field(default_factory=list)
    limit: int | None = None


class _Rows(msgspec.Struct):
    results: list[dict[str, t.Any]] = msgspec.field(default_factory=list)


_read_dates = msgspec.json.Decoder(_Envelope).decode


class AuditPage:
    """One audit API page kept as compressed bytes until its window is complete.

    Only the dates are decoded on arrival (the walker needs them to page on); whole records
    are built once, when the window is emitted, so windows read ahead cost little memory.
    """

    __slots__ = ("_body", "asked", "count", "echoed", "newest", "oldest", "undated")

    def __init__(self, body: bytes, asked: int) -> None:
        """Read the dates (an incomplete body raises ValueError, so it is fetched again).

        ``asked`` is the ``limit`` the request sent; the page's own ``limit`` is the echo.
        """
        envelope = _read_dates(body)
        results = envelope.results
        self.asked = asked
        self.echoed = envelope.limit
        self.count = len(results)
        dates = [r.creationDate for r in results if r.creationDate is not None]
        self.oldest = min(dates) if dates else None
        self.newest = max(dates) if dates else None
        self.undated = len(dates) < self.count
        # Level 3 shrinks these pages about 14-fold, a little faster than level 1 (which
        # shrinks them 12-fold), and zlib lets other threads run meanwhile.
        self._body = zlib.compress(body, 3)

    @classmethod
    def from_response(cls, response: requests.Response) -> AuditPage:
        """Read a page off its response, with the ``limit`` its request sent."""
        return cls(response.content, sent_limit(response) or 0)

    def digested(self) -> list[tuple[int, bytes, dict[str, t.Any]]]:
        """``(creationDate or 0, digest, record)`` per record; digests as ``record_id``'s."""
        floats: list[bool] = []

        def note_float(value: t.Any) -> float:
            floats.append(True)
            return float(value)

        rows = (
            msgspec.json.Decoder(_Rows, float_hook=note_float)
            .decode(zlib.decompress(self._body))
            .results
        )
        if floats:
            # The fast canonical encoding is exact for every value but floats: a page with
            # one takes the standard library's for all its records.
            return [(row.get("creationDate") or 0, record_digest(row), row) for row in rows]
        sha256, canonical = hashlib.sha256, SORTED_JSON.encode
        return [
            (row.get("creationDate") or 0, sha256(canonical(row)).digest(), row) for row in rows
        ]


#: Proleptic Gregorian ordinal of 1970-01-01, day 0 of epoch milliseconds.
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=64)
def _iso_day(day: int) -> str:
    return dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


#: "THH:MM:" for each minute of the day.
_ISO_MINUTES = tuple(f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60))


def ms_to_iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, e.g. 2026-01-31T09:15:02.123Z."""
    # Records in time order mostly share their day; below it, a table and plain arithmetic.
    day, ms = divmod(ms, 86_400_000)
    minute, ms = divmod(ms, 60_000)
    return f"{_iso_day(day)}{_ISO_MINUTES[minute]}{ms // 1000:02d}.{ms % 1000:03d}Z"


def iso_to_ms(value: dt.datetime) -> int:
    """Convert a datetime (naive means UTC) to epoch milliseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


class AuditFetcher:
    """Fetches audit pages for one walk: a request gate and a page size its workers share."""

    def __init__(self, audit: AuditRecordsStream, url: str, caller: ConfluenceStream) -> None:
        """Ask ``url`` at ``audit``'s page size and concurrency, as ``caller`` (its errors)."""
        self._stream = caller
        self._url = url
        self._endpoint = audit.path
        self.gate = RequestGate(audit.concurrency)
        self.governor = PageSizeGovernor(audit.page_size, MIN_PAGE_SIZE)

    def __call__(self, start_ms: int, end_ms: int, offset: int, limit: int) -> AuditPage:
        """One page of ``[start_ms, end_ms]`` from ``offset``, newest first."""
        params = {"startDate": start_ms, "endDate": end_ms, "start": offset, "limit": limit}
        page = self._stream.fetch_json(
            self._url,
            params,
            parse=AuditPage.from_response,
            gate=self.gate,
            governor=self.governor,
            endpoint=self._endpoint,
        )
        return t.cast("AuditPage", page)


class AuditRecordsStream(ConfluenceStream):
    """Audit log events (who did what, when); the record's hash is its id."""

    name = "audit_records"
    path = "/wiki/rest/api/audit"
    primary_keys = ("cloudId", "id")
    replication_key = "createdAt"
    # Each window is emitted oldest first, after it has been read completely, so the
    # bookmark only ever moves past fully read time.
    is_sorted = True
    # The lookback re-reads records older than the saved bookmark on purpose.
    check_sorted = False
    required_scopes = AUDIT_SCOPES
    permission_hint = (
        "the Confluence Administrator global permission for the account that granted the token"
    )
    page_size = 1000
    #: Pages per window the walker aims for: each window ends in one part-filled page, so
    #: 20 keeps requests within a few percent of the minimum; windows wait as compressed
    #: pages, so even several in flight stay small.
    target_pages = 20

    #: The newest dated record emitted since the bookmark last moved.
    _newest_dated: dict[str, t.Any] | None = None

    @override
    def _increment_stream_state(
        self, latest_record: dict[str, t.Any], *, context: Context | None = None
    ) -> None:
        """Note the record; the bookmark moves once a window is out (``_advance_bookmark``).

        Records leave each window oldest first, so the SDK's bookmark after any record would
        be that record's date; moving it per window instead saves that bookkeeping on every
        record, and a STATE the SDK writes mid-window keeps the last window's bookmark,
        which only re-reads more after a kill.
        """
        if latest_record.get("createdAt") is not None:
            self._newest_dated = latest_record

    def _advance_bookmark(self) -> None:
        """Move the bookmark to the newest record emitted (the SDK's own bookkeeping)."""
        if self._newest_dated is not None:
            super()._increment_stream_state(self._newest_dated)
            self._newest_dated = None

    @property
    def concurrency(self) -> int:
        """How many audit windows are fetched at once (``audit_concurrency``, 1 to 16)."""
        low, high = AUDIT_CONCURRENCY_RANGE
        wanted = int(self.config.get("audit_concurrency", DEFAULT_CONCURRENCY))
        return max(low, min(high, wanted))

    def window_bounds(self, context: Context | None) -> tuple[int, int]:
        """``[lo, until]``: from the bookmark less the lookback (never before start_date) to now."""
        until = int(time.time() * 1000)
        start = self.get_starting_timestamp(context)
        lookback_ms = int(self.config.get("audit_lookback_minutes", 60)) * 60_000
        lo = iso_to_ms(start) - lookback_ms if start else 0
        if self.config.get("start_date"):
            floor = iso_to_ms(dt.datetime.fromisoformat(str(self.config["start_date"])))
            lo = max(lo, floor)
        return max(lo, 0), until

    def retention_floor(self, until: int) -> int:
        """Oldest time the log can still hold: its retention period plus a month of slack.

        Confluence deletes records older than the retention period, so a backfill need not
        probe decades of empty log for where the records begin. 0 when unknown.
        """
        try:
            body = self.fetch_json(f"{self.url_base}{self.path}/retention")
        except FatalAPIError:
            return 0
        days = RETENTION_UNIT_DAYS.get(str(body.get("units", "")).upper())
        number = body.get("number")
        if days is None or not isinstance(number, int) or number <= 0:
            return 0
        return max(0, until - int((number * days + RETENTION_SLACK_DAYS) * 86_400_000))

    def page_fetcher(self, caller: ConfluenceStream | None = None) -> AuditFetcher:
        """Fetch audit pages for one walk, as this stream or as ``caller`` (user_activity)."""
        return AuditFetcher(self, f"{self.url_base}{self.path}", caller or self)

    @override
    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Walk complete windows oldest to newest; emit each sorted, then a STATE message."""
        lo, until = self.window_bounds(context)
        # user_activity takes each author's latest from this same read, so a run that selects
        # both streams reads the log once; without user_activity there is nothing to offer.
        # The range is the one asked for: the log holds nothing before the retention floor.
        shared = self.site.shared_audit
        if shared:
            shared.begin(lo, until)
        if until - lo > 366 * 86_400_000:
            # Only a first run or one after a long pause can reach past the retention period.
            lo = max(lo, self.retention_floor(until))
        keep_large_buffers_out_of_the_heap()
        progress = log_progress_every(5.0)
        emitted = 0
        undated = 0

        fetch = self.page_fetcher()
        gate = fetch.gate

        def on_window(w0: int, w1: int) -> None:
            if progress():
                self.logger.info(
                    "audit_records: %d records so far; reading %s to %s.",
                    emitted,
                    ms_to_iso(w0),
                    ms_to_iso(w1),
                )

        walker = AuditWindowWalker(
            fetch,
            page_size=self.page_size,
            target_pages=self.target_pages,
            workers=self.concurrency,
            on_window_start=on_window,
        )
        self.logger.info(
            "audit_records: reading %s to %s (frozen at sync start).",
            ms_to_iso(lo),
            ms_to_iso(until),
        )
        for window in walker.walk(lo, until):
            for record_key, row in window.take():
                # Before the row goes out: selection may strip fields from it.
                if shared:
                    shared.add(row)
                row["id"] = record_key
                created = row.get("creationDate")
                if type(created) is int:
                    row["createdAt"] = ms_to_iso(created)
                else:
                    # Delivered, not dropped: the row keeps its place in the window's
                    # order but cannot move the bookmark (the SDK skips null keys).
                    row["createdAt"] = None
                    undated += 1
                emitted += 1
                yield row
            if undated:
                self.logger.warning(
                    "audit_records: %d records without a creationDate delivered with "
                    "createdAt null; they are in the table but cannot be placed in time.",
                    undated,
                )
                undated = 0
            # Drop the window before the walker builds the next one: one window of records
            # in memory at a time, however long the backfill.
            del window
            self._advance_bookmark()
            # The generator resumes here only after the SDK has written the window's last
            # record and moved the bookmark, so this STATE covers exactly the read windows.
            self._write_state_message()
        if shared:
            shared.finish()
        self.logger.info(
            "audit_records: %d records in %d requests (%d windows narrowed, %d asked only to "
            "tell a short page from a capped one; at most %d requests at once, %d while "
            "rate-limited; pages of %s records%s).",
            emitted,
            walker.requests,
            walker.narrowed,
            walker.verifications,
            gate.ceiling,
            gate.lowest,
            walker.cap or self.page_size,
            ", as the API caps them" if walker.cap else "",
        )
        if fetch.governor.lowest < self.page_size:
            self.logger.info(
                "audit_records: large pages timed out, so pages of down to %d were asked for.",
                fetch.governor.lowest,
            )
