"""Audit pages as they wait for their window, and the rows they become when it is emitted.

Kept apart from the stream so the per-record work of a backfill is in one place: decoding a
page once, the record id (sha256 of the canonical JSON), and ``createdAt``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import threading
import typing as t
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

from tap_confluence.http.client import sent_limit
from tap_confluence.streams.audit.ids import SORTED_JSON, canonical_json, record_digest

if t.TYPE_CHECKING:
    import requests


class _Dated(msgspec.Struct):
    creationDate: int | None = None  # noqa: N815 (the API's spelling)


class _Envelope(msgspec.Struct):
    results: list[_Dated] = msgspec.field(default_factory=list)
    limit: int | None = None


class _Rows(msgspec.Struct):
    results: list[dict[str, t.Any]] = msgspec.field(default_factory=list)


_read_dates = msgspec.json.Decoder(_Envelope).decode


#: ``(date, id, record, ok)``: the id is the digest in hex, which sorts as the digest does;
#: ``ok`` when the record's shape is one already checked.
Finished = tuple[int, str, dict[str, t.Any], bool]
#: Shapes (field names, value types) of records known to go out unchanged.
Shapes = set[tuple[tuple[str, ...], tuple[type, ...]]]

_unpacker: ThreadPoolExecutor | None = None
_unpacker_lock = threading.Lock()


def _unpack_soon(body: bytes) -> Future[bytes]:
    """Decompress ``body`` on a thread of its own (zlib lets the caller run meanwhile)."""
    global _unpacker  # noqa: PLW0603 (one helper thread per process, made when first needed)
    with _unpacker_lock:
        if _unpacker is None:
            _unpacker = ThreadPoolExecutor(1, thread_name_prefix="audit-unpack")
        return _unpacker.submit(zlib.decompress, body)


class AuditPage:
    """One audit API page kept as compressed bytes until its window is complete.

    Only the dates are decoded on arrival (the walker needs them to page on); whole records
    are built once, when the window is emitted, so windows read ahead cost little memory.
    """

    __slots__ = ("_body", "_raw", "asked", "count", "echoed", "newest", "oldest", "undated")

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
        self._raw: Future[bytes] | None = None

    @classmethod
    def from_response(cls, response: requests.Response) -> AuditPage:
        """Read a page off its response, with the ``limit`` its request sent."""
        return cls(response.content, sent_limit(response) or 0)

    def warm(self) -> None:
        """Start decompressing the page, to be read next, while the one before is worked on."""
        if self._raw is None:
            self._raw = _unpack_soon(self._body)

    def _rows(self) -> tuple[list[dict[str, t.Any]], bool]:
        """Decode the page's records; say whether any value in them is a float."""
        raw = self._raw.result() if self._raw is not None else zlib.decompress(self._body)
        self._raw = None
        floats: list[bool] = []

        def note_float(value: t.Any) -> float:
            floats.append(True)
            return float(value)

        rows = msgspec.json.Decoder(_Rows, float_hook=note_float).decode(raw).results
        return rows, bool(floats)

    def digested(self) -> list[tuple[int, bytes, dict[str, t.Any]]]:
        """``(creationDate or 0, digest, record)`` per record; digests as ``record_id``'s."""
        rows, floats = self._rows()
        if floats:
            # The fast canonical encoding is exact for every value but floats: a page with
            # one takes the standard library's for all its records.
            return [(row.get("creationDate") or 0, record_digest(row), row) for row in rows]
        sha256, canonical = hashlib.sha256, SORTED_JSON.encode
        return [
            (row.get("creationDate") or 0, sha256(canonical(row)).digest(), row) for row in rows
        ]

    def finished(self, cloud_id: str | None, good: Shapes | None) -> list[Finished]:
        """Each record as it goes out, with ``id``, ``createdAt`` (and ``cloudId``) set.

        One pass per record for everything a backfill does to it: the digest of its API
        fields, its id and ``createdAt``, and whether its shape is in ``good`` (``ok``; if
        not, the caller checks it field by field; ``good`` None: never, the SDK checks).
        ``ms_to_iso`` is inlined: records in time order share their day.
        """
        rows, floats = self._rows()
        sha256 = hashlib.sha256
        canonical: t.Callable[[dict[str, t.Any]], bytes] = (
            canonical_json if floats else SORTED_JSON.encode
        )
        out: list[Finished] = []
        append = out.append
        day_of, day = None, ""
        minutes, seconds, millis = _ISO_MINUTES, _ISO_SECONDS, _ISO_MILLIS
        for row in rows:
            # The id covers the API's fields only: digest before adding any.
            record_id = row["id"] = sha256(canonical(row)).hexdigest()
            created = row.get("creationDate")
            if type(created) is int:
                days, rest = divmod(created, 86_400_000)
                if days != day_of:
                    day_of, day = days, _iso_day(days)
                minute, rest = divmod(rest, 60_000)
                row["createdAt"] = (
                    day + minutes[minute] + seconds[rest // 1000] + millis[rest % 1000]
                )
            else:
                # Delivered, not dropped: the row keeps its place in the window's order
                # but cannot move the bookmark (the SDK skips null keys).
                row["createdAt"] = None
            if cloud_id is not None:
                row["cloudId"] = cloud_id
            append(
                (
                    created or 0,
                    record_id,
                    row,
                    good is not None and (tuple(row), tuple(map(type, row.values()))) in good,
                )
            )
        return out


#: Proleptic Gregorian ordinal of 1970-01-01, day 0 of epoch milliseconds.
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=64)
def _iso_day(day: int) -> str:
    return dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


#: "THH:MM:" for each minute of the day, "SS." for each second, "mmmZ" for each millisecond.
_ISO_MINUTES = tuple(f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_ISO_SECONDS = tuple(f"{s:02d}." for s in range(60))
_ISO_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def _iso_minute(minute: int) -> str:
    """``YYYY-MM-DDTHH:MM:`` of an epoch minute."""
    day, minute = divmod(minute, 1440)
    return _iso_day(day) + _ISO_MINUTES[minute]


def ms_to_iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, e.g. 2026-01-31T09:15:02.123Z."""
    # Records in time order mostly share their day; below it, tables and plain arithmetic.
    minute, ms = divmod(ms, 60_000)
    second, ms = divmod(ms, 1000)
    return _iso_minute(minute) + _ISO_SECONDS[second] + _ISO_MILLIS[ms]


def iso_to_ms(value: dt.datetime) -> int:
    """Convert a datetime (naive means UTC) to epoch milliseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)
