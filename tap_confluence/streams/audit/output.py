"""audit_records out of the process a page at a time: as RECORD messages, or as batch files.

The SDK's loop handles each record on its own (post-processing, maps, bookkeeping, one
message each), which for a backfill cost more than the records' own work. Here a page of
finished records is shaped and encoded in one go, with the SDK's record counter, sync
timer and state handling, and the same records, in the same order, with the same STATE
after each window (tested against the SDK's loop).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import datetime as dt
import gzip
import re
import typing as t
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

from singer_sdk.contrib.msgspec import encoder as sdk_encoder

from tap_confluence.records.shaping import ShapedRecords
from tap_confluence.records.writer import BlockWriter
from tap_confluence.sdk_compat import OwnRecordLoop
from tap_confluence.streams.audit.rows import iso_to_ms

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_confluence.sdk_compat import BaseBatchFileEncoding, BatchConfig, StorageTarget
    from tap_confluence.streams.audit.rows import Finished, Shapes

#: zlib level of gzip batch files: level 1 is several times faster than gzip's default 9
#: and these files live only until they are loaded.
BATCH_GZIP_LEVEL = 1
#: Encoded pages handed to the batch file's writer thread and not yet written, at most.
BATCH_PAGES_AHEAD = 4


class WindowStart(t.NamedTuple):
    """Marks the start of a window's records in ``finished_chunks``: none is newer than end."""

    start_ms: int
    end_ms: int


class WindowDone(t.NamedTuple):
    """Marks the end of a window's records in ``finished_chunks``."""

    start_ms: int
    end_ms: int


class PageOutput(OwnRecordLoop, ShapedRecords):
    """Stream mix-in: write ``finished_chunks`` as RECORD messages or JSONL batch files."""

    @abc.abstractmethod
    def finished_chunks(
        self, context: Context | None, *, cloud_id: str | None, good: Shapes | None
    ) -> Iterator[list[Finished] | WindowStart | WindowDone]:
        """Yield each window's ``WindowStart``, finished records, then ``WindowDone``."""

    @abc.abstractmethod
    def window_done(self) -> None:
        """Move the bookmark past the window just written and write STATE."""

    @abc.abstractmethod
    def note_newest(self, chunk: list[Finished]) -> None:
        """Note the newest dated record of a chunk written."""

    @abc.abstractmethod
    def advance_bookmark(self) -> None:
        """Move the bookmark to the newest record noted (no STATE written)."""

    @abc.abstractmethod
    def site_id(self) -> str:
        """Return the cloudId every record carries."""

    @abc.abstractmethod
    def guarded(self, items: Iterable[t.Any]) -> Iterator[t.Any]:
        """Yield ``items``; lacking access ends only this stream."""

    def _shaped(self, chunk: list[Finished]) -> list[dict[str, t.Any] | bytes]:
        # A shape seen before goes out as is (encoded already, if a helper finished it);
        # any other is checked (and remembered).
        return [
            e[2] if e[3] else self._selected_record(t.cast("dict[str, t.Any]", e[2])) for e in chunk
        ]

    def write_record_pages(self) -> None:
        """Write every record as RECORD messages, a page at a time, with STATE per window."""
        writer = t.cast("BlockWriter", self.message_writer)
        self.logger.info("%s: records go out a page at a time (the fast path).", self.name)
        record_counter = self.get_record_counter()
        timer = self.get_sync_timer()
        with record_counter, timer:
            record_counter.with_context({})
            timer.with_context({})
            self.begin_own()
            good = self.good_shapes()
            chunks = self.finished_chunks(None, cloud_id=self.site_id(), good=good)
            for item in self.guarded(chunks):
                if isinstance(item, WindowDone):
                    self.window_done()
                    continue
                if isinstance(item, WindowStart) or not item:
                    continue
                rows = self._shaped(item)
                writer.write_records(self.name, rows, self.table_version, dt.datetime.now(dt.UTC))
                self.note_unflushed()
                self.note_newest(item)
                record_counter.increment(len(rows))
            self.end_own()
        self.finalize_own()
        self.write_state()

    def write_batch_files(
        self, batch_config: BatchConfig
    ) -> Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        """Write one JSONL file (gzip or plain) per window; yield each for its BATCH message.

        The SDK writes the BATCH message, then STATE (with the bookmark moved past the
        window), after each file, so a killed run resumes as the record path does. The
        lines are the records RECORD messages would carry, encoded the same way.
        """
        encoding, storage = batch_config.encoding, batch_config.storage
        stem = f"{storage.prefix or ''}{self.name}-{_safe(self.site_id())}"
        remove_loaded_batch_files(self, storage.root, stem)
        self.logger.info("%s: batch files go out one per window (the fast path).", self.name)
        record_counter = self.get_record_counter()
        timer = self.get_sync_timer()
        with (
            record_counter,
            timer,
            WindowFiles(storage, stem, gzipped=encoding.compression == "gzip") as files,
        ):
            record_counter.with_context({})
            timer.with_context({})
            self.begin_own()
            good = self.good_shapes()
            chunks = self.finished_chunks(None, cloud_id=self.site_id(), good=good)
            window_end = 0
            for item in self.guarded(chunks):
                if isinstance(item, WindowStart):
                    window_end = item.end_ms
                elif isinstance(item, WindowDone):
                    url = files.finish()
                    if url is not None:  # an empty window makes no file
                        self.advance_bookmark()
                        yield encoding, [url]
                elif item:
                    rows = self._shaped(item)
                    files.write(window_end, jsonl(rows))
                    self.note_newest(item)
                    record_counter.increment(len(rows))
            self.end_own()
        self.finalize_own()


def jsonl(rows: list[dict[str, t.Any] | bytes]) -> bytes:
    """Encode the rows as JSON lines as the SDK's encoder does; encoded rows go as they are."""
    if not any(type(row) is bytes for row in rows):
        return sdk_encoder.encode_lines(rows)
    out = bytearray()
    for row in rows:
        if type(row) is bytes:
            out += row
        else:
            sdk_encoder.encode_into(row, out, -1)
        out += b"\n"
    return bytes(out)


class WindowFiles:
    """One batch file per window, compressed and written by a thread of its own.

    zlib lets the thread that encodes the next page go on meanwhile, on another core: with
    compression in the encoding thread, batch files took twice as long as RECORD messages.
    """

    def __init__(self, storage: StorageTarget, stem: str, *, gzipped: bool) -> None:
        """Files go to ``storage`` named ``{stem}-{window end}-{run}-{n}.jsonl[.gz]``."""
        self._storage = storage
        self._stem = stem
        self._gzipped = gzipped
        self._run = uuid.uuid4().hex[:12]
        self._written = 0
        self._name = ""
        self._files = contextlib.ExitStack()
        self._sink: t.IO[bytes] | gzip.GzipFile | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="batch-file")
        #: Pages handed to the writer and not yet written, oldest first.
        self._pending: collections.deque[Future[int]] = collections.deque()

    def write(self, window_end: int, data: bytes) -> None:
        """Queue ``data`` for the current window's file, opening it first if need be."""
        if self._sink is None:
            self._written += 1
            # The window's end is in the name: a later run removes the file once its state
            # shows everything up to there loaded.
            suffix = ".jsonl.gz" if self._gzipped else ".jsonl"
            self._name = f"{self._stem}-{window_end}-{self._run}-{self._written:05d}{suffix}"
            raw = self._files.enter_context(self._storage.open(self._name, "wb"))
            self._sink = raw
            if self._gzipped:
                self._sink = self._files.enter_context(
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=BATCH_GZIP_LEVEL)
                )
        self._pending.append(self._writer.submit(self._sink.write, data))
        if len(self._pending) > BATCH_PAGES_AHEAD:
            self._pending.popleft().result()

    def finish(self) -> str | None:
        """Complete the current window's file; return its URL (None: the window had none)."""
        if self._sink is None:
            return None
        self._drain()
        self._files.close()  # the file is complete (and committed) only now
        self._sink = None
        return self._storage.get_url(self._name)

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()  # every page written, or its error raised

    def __enter__(self) -> WindowFiles:
        """Start with no file open."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Let queued pages finish, close any file still open, stop the writer thread."""
        try:
            if exc[0] is None:
                self._drain()
        finally:
            self._writer.shutdown(wait=True)
            self._files.close()


_BATCH_NAME = re.compile(r"-(?P<end>-?\d+)-[0-9a-f]{12}-\d{5}\.jsonl(\.gz)?$")


def _safe(text: str) -> str:
    """``text`` with anything but letters, digits, ``-`` and ``_`` replaced, for file names."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def remove_loaded_batch_files(stream: PageOutput, root: str, stem: str) -> None:
    """Remove batch files of earlier runs that the incoming state shows loaded.

    A target writes STATE only after loading what came before it: a file whose window ends
    at or before the bookmark the run starts from was loaded (each name holds the end of
    its window, after every record in it). Nothing
    else is touched (a run that stopped early leaves files newer than its
    state; they are read again anyway, and removed once a later state covers them). The
    SDK leaves batch files in place (meltano/sdk#3064), so this is where they go. Only
    local ``file://`` roots are tidied.
    """
    bookmark = stream.get_context_state(None).get("replication_key_value")
    parts = urlsplit(root)
    if not bookmark or parts.scheme not in ("", "file"):
        return
    try:
        loaded_until = iso_to_ms(dt.datetime.fromisoformat(str(bookmark).replace("Z", "+00:00")))
    except ValueError:
        return
    folder = Path(unquote(parts.path))
    head, _, tail = stem.rpartition("/")
    folder, name = (folder / head, tail) if head else (folder, stem)
    removed = 0
    with contextlib.suppress(OSError):
        for path in folder.glob(f"{glob_escape(name)}-*.jsonl*"):
            found = _BATCH_NAME.search(path.name)
            if found and path.name.startswith(name) and int(found["end"]) <= loaded_until:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    if removed:
        stream.logger.info(
            "%s: removed %d batch files of earlier runs, loaded as the state shows.",
            stream.name,
            removed,
        )


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)
