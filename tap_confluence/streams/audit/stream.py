"""The audit_records stream: incremental, resumable, over a newest-first log that keeps growing."""

from __future__ import annotations

import ctypes
import datetime as dt
import time
import typing as t

from typing_extensions import override

from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.streams.audit.finisher import PageFinisher
from tap_confluence.streams.audit.output import PageOutput, WindowDone, WindowStart
from tap_confluence.streams.audit.reader import (
    AUDIT_PATH,
    AUDIT_SCOPES,
    PAGE_SIZE,
    AuditReader,
    audit_concurrency,
)
from tap_confluence.streams.audit.rows import iso_to_ms, ms_to_iso, record_of
from tap_confluence.streams.audit.workers import helpers_wanted
from tap_confluence.streams.progress import log_progress_every

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_confluence.sdk_compat import BaseBatchFileEncoding, BatchConfig
    from tap_confluence.streams.audit.rows import Finished, Shapes


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


class AuditRecordsStream(ConfluenceStream, PageOutput):
    """Audit log events (who did what, when); the record's hash is its id."""

    name = "audit_records"
    path = AUDIT_PATH
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
    page_size = PAGE_SIZE
    # A backfill is what batch files are for (one per window, see get_batches).
    writes_batches = True

    #: The newest dated record emitted since the bookmark last moved.
    _newest_dated: dict[str, t.Any] | None = None

    @override
    def note_record(self, latest_record: dict[str, t.Any], context: Context | None) -> None:
        """Note the record; the bookmark moves once a window is out (``advance_bookmark``).

        Records leave each window oldest first, so the SDK's bookmark after any record would
        be that record's date; moving it per window instead saves that bookkeeping on every
        record, and a STATE the SDK writes mid-window keeps the last window's bookmark,
        which only re-reads more after a kill.
        """
        if latest_record.get("createdAt") is not None:
            self._newest_dated = latest_record

    @override
    def advance_bookmark(self) -> None:
        """Move the bookmark to the newest record emitted (the SDK's own bookkeeping)."""
        if self._newest_dated is not None:
            self.advance_state(self._newest_dated, None)
            self._newest_dated = None

    @property
    def concurrency(self) -> int:
        """How many audit windows are fetched at once (``audit_concurrency``, 1 to 16)."""
        return audit_concurrency(self.config)

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

    @override
    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Walk complete windows oldest to newest; emit each sorted, then a STATE message."""
        # The SDK's own loop checks each record's shape and adds cloudId (post_process).
        for item in self.finished_chunks(context, cloud_id=None, good=None):
            if isinstance(item, WindowDone):
                # Resumed only after the SDK wrote the window's last record and noted it.
                self.window_done()
            elif not isinstance(item, WindowStart):
                yield from map(record_of, item)

    @override
    def window_done(self) -> None:
        """Move the bookmark past a window whose records are all out, and write STATE."""
        self.advance_bookmark()
        self.write_state()

    @override
    def site_id(self) -> str:
        """Return the cloudId every record carries."""
        return self.cloud_id

    @override
    def writes_own_records(self) -> bool:
        """Tell whether records go out a page at a time, not through the SDK record by record.

        The SDK's loop costs several SDK and tap calls per record (post-processing, child
        contexts, maps, bookkeeping, one message each): for a backfill, more than the records'
        own work. ``PageOutput.write_record_pages`` does the same a page at a time. Anything it
        does not cover (a stream map, a nested field deselected, the SDK's record limit of
        ``--test``, a context, the SDK's own batches) takes the SDK's own loop.
        """
        return self.selected and self.ABORT_AT_RECORD_COUNT is None and self.fast_records()

    @override
    def write_own_records(self) -> None:
        """Write every window's records a page at a time, STATE after each window."""
        self.write_record_pages()

    @override
    def get_batches(
        self, batch_config: BatchConfig, context: Context | None = None
    ) -> Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """One JSONL file per window (gzip or plain), written as fast as RECORD messages.

        The SDK's own batcher cuts every 10,000 records of its record-by-record loop, so
        its STATE after a batch can land mid-window; here each window is one file and its
        STATE follows its BATCH message, so a killed run resumes as the record path does.
        Files earlier runs left and the incoming state shows loaded are removed first.
        Other formats (parquet) and whatever the fast path does not cover take the SDK's.
        """
        encoding = batch_config.encoding
        if (
            context is None
            and self.writes_own_records()
            and encoding.format == "jsonl"
            and (encoding.compression or "none") in ("gzip", "none")
        ):
            yield from self.write_batch_files(batch_config)
            return
        yield from super().get_batches(batch_config, context)

    @override
    def note_newest(self, chunk: list[Finished]) -> None:
        """Note the newest dated record of a chunk written (the bookmark moves per window)."""
        # Records are in date order, undated first: the last dated one is the newest.
        newest = record_of(chunk[-1])
        if newest["createdAt"] is not None:
            self._newest_dated = newest
        elif dated := [r for r in map(record_of, chunk) if r["createdAt"] is not None]:
            self._newest_dated = dated[-1]

    @override
    def finished_chunks(
        self, context: Context | None, *, cloud_id: str | None, good: Shapes | None
    ) -> Iterator[list[Finished] | WindowStart | WindowDone]:
        """Read every window: its ``WindowStart``, its records a page at a time, ``WindowDone``.

        Records come as ``AuditPage.finished`` makes them (``cloud_id`` and ``good`` are
        passed on). The caller writes a window's records, and on ``WindowDone`` makes them
        count (``window_done``: bookmark and STATE; or a batch file first).
        """
        lo, until = self.window_bounds(context)
        # user_activity takes each author's latest from this same read, so a run that selects
        # both streams reads the log once; without user_activity there is nothing to offer.
        # The range is the one asked for: the log holds nothing before the retention floor.
        shared = self.site.shared_audit
        if shared:
            shared.begin(lo, until)
        reader = AuditReader(self)
        lo = reader.start(lo, until)
        keep_large_buffers_out_of_the_heap()
        progress = log_progress_every(5.0)
        emitted = 0

        def on_window(w0: int, w1: int) -> None:
            if progress():
                self.logger.info(
                    "audit_records: %d records so far; reading %s to %s.",
                    emitted,
                    ms_to_iso(w0),
                    ms_to_iso(w1),
                )

        walker = reader.walker(on_window)
        self.logger.info(
            "audit_records: reading %s to %s (frozen at sync start).",
            ms_to_iso(lo),
            ms_to_iso(until),
        )

        finisher = PageFinisher(
            cloud_id,
            good,
            helpers=helpers_wanted(self.config),
            activity=shared is not None,
            logger=self.logger,
        )
        reader.fetch.observers.append(finisher.saw)
        for window in walker.walk(lo, until):
            yield WindowStart(window.start_ms, window.end_ms)
            finisher.start(window)
            undated = 0
            for entries in window.take_chunks(finisher.read, finisher.prepare, finisher.ahead):
                if entries and not entries[0][0]:
                    # Undated records sort first (as 0).
                    undated += sum(record_of(e)["createdAt"] is None for e in entries)
                if shared:
                    # Taken from each record before it went out (selection may strip fields).
                    for entry in entries:
                        shared.add(entry[4])
                emitted += len(entries)
                yield entries
            if undated:
                self.logger.warning(
                    "audit_records: %d records without a creationDate delivered with "
                    "createdAt null; they are in the table but cannot be placed in time.",
                    undated,
                )
            done = WindowDone(window.start_ms, window.end_ms)
            # Drop the window before the walker builds the next one: one window of records
            # in memory at a time, however long the backfill.
            del window
            yield done
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
            reader.fetch.gate.ceiling,
            reader.fetch.gate.lowest,
            walker.cap or self.page_size,
            ", as the API caps them" if walker.cap else "",
        )
        if reader.fetch.governor.lowest < self.page_size:
            self.logger.info(
                "audit_records: large pages timed out, so pages of down to %d were asked for.",
                reader.fetch.governor.lowest,
            )
