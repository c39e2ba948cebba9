"""Audit rows: each record's id, ``createdAt`` and ``cloudId``, one page at a time.

The API gives audit records no id, so the tap makes one from the record's own fields (the
sha256 of their canonical JSON); the same event read twice (a re-read millisecond, a
lookback) gets the same id.

This module imports nothing but the standard library and msgspec, so that it also runs on
its own as a helper process (``python -I rows.py``): a backfill hands it compressed pages
and gets the finished rows back, each already encoded, while the tap's own process goes on
fetching and writing (``workers.py``). The work is the same either way: ``finish_page``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import operator
import sys
import typing as t
import zlib

import msgspec

Record = dict[str, t.Any]

#: What user_activity takes from an audit record: its author's accountId (any falsy value:
#: none), the time in epoch milliseconds and what happened.
Activity = tuple[t.Any, int, str]
#: ``(date, id, record, ok, activity)``: the id is the digest in hex, which sorts as the
#: digest does; ``ok`` when the record's shape is one already checked; ``activity`` only when
#: asked for (and the record has a date). From a helper process, the record of an ``ok`` row
#: is its JSON, already encoded.
Finished = tuple[int, str, "Record | bytes", bool, "Activity | None"]
#: A record's shape: its field names and its values' types.
Shape = tuple[tuple[str, ...], tuple[type, ...]]
#: Shapes of records known to go out unchanged.
Shapes = set[Shape]

#: Encodes as ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
#: does, floats aside.
SORTED_JSON = msgspec.json.Encoder(order="sorted")
#: Encodes a record as the SDK's msgspec encoder does (for JSON values it is the default).
RECORD_JSON = msgspec.json.Encoder()


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


class _Rows(msgspec.Struct):
    results: list[dict[str, t.Any]] = msgspec.field(default_factory=list)


def decode_rows(raw: bytes) -> tuple[list[Record], bool]:
    """Decode a page's records; say whether any value in them is a float."""
    floats: list[bool] = []

    def note_float(value: t.Any) -> float:
        floats.append(True)
        return float(value)

    rows = msgspec.json.Decoder(_Rows, float_hook=note_float).decode(raw).results
    return rows, bool(floats)


def audit_activity(record: t.Mapping[str, t.Any]) -> Activity | None:
    """Return what an audit record says its author did, and when (None without a date)."""
    when = record.get("creationDate")
    if when is None:
        return None
    author = record.get("author") or {}
    obj = (record.get("affectedObject") or {}).get("name")
    summary = str(record.get("summary") or "audit record")
    return author.get("accountId"), int(when), f"{summary}: {obj}" if obj else summary


def finish_rows(
    rows: list[Record],
    floats: bool,
    cloud_id: str | None,
    good: Shapes | frozenset[Shape] | None,
    *,
    activity: bool = False,
) -> list[Finished]:
    """Each record as it goes out, with ``id``, ``createdAt`` (and ``cloudId``) set.

    One pass per record for everything a backfill does to it: the digest of its API
    fields, its id and ``createdAt``, and whether its shape is in ``good`` (``ok``; if
    not, the caller checks it field by field; ``good`` None: never, the SDK checks), and
    with ``activity``, what user_activity takes from it.
    ``ms_to_iso`` is inlined: records in time order share their day.
    """
    sha256 = hashlib.sha256
    canonical: t.Callable[[Record], bytes] = canonical_json if floats else SORTED_JSON.encode
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
            row["createdAt"] = day + minutes[minute] + seconds[rest // 1000] + millis[rest % 1000]
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
                audit_activity(row) if activity else None,
            )
        )
    return out


def finish_page(
    compressed: bytes, cloud_id: str | None, good: frozenset[Shape], *, activity: bool = False
) -> list[Finished]:
    """Return a compressed page's finished rows, each ``ok`` row already encoded as JSON.

    What a helper process does with a page: the tap writes an encoded row as it is, and
    checks any other itself (a shape it has not seen, or one learned since the page left).
    """
    rows, floats = decode_rows(zlib.decompress(compressed))
    encode = RECORD_JSON.encode
    done: list[Finished] = [
        (date, rid, encode(row), True, act) if ok else (date, rid, row, False, act)
        for date, rid, row, ok, act in finish_rows(rows, floats, cloud_id, good, activity=activity)
    ]
    # Sorted as the window sorts them (pages come newest first): the tap then merges two
    # sorted runs instead of sorting a reversed page.
    done.sort(key=_DATE_AND_ID)
    return done


_DATE_AND_ID = operator.itemgetter(0, 1)


def record_of(entry: Finished) -> Record:
    """Return the record of a finished row, decoded if a helper process sent it encoded."""
    record = entry[2]
    return t.cast("Record", msgspec.json.decode(record)) if isinstance(record, bytes) else record


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


# The helper process's side of ``workers.py``: frames of an 8-byte big-endian length and a
# msgpack body, one answer per job, in order. A job is [compressed page, cloud id, shapes as
# [[field names], [type names]]]; an answer is ["ok", finished rows] or ["error", sentence].

#: The types a shape may name (the types JSON decodes to).
TYPES: dict[str, type] = {tp.__name__: tp for tp in (str, int, float, bool, dict, list, type(None))}


class Job(msgspec.Struct, array_like=True):
    """One page for a helper process."""

    compressed: bytes
    cloud_id: str | None
    shapes: list[tuple[list[str], list[str]]]
    activity: bool = False


def job_shapes(good: Shapes) -> list[tuple[list[str], list[str]]]:
    """``good`` as a job carries it (type names); shapes of other types are left out."""
    return [
        (list(names), [tp.__name__ for tp in types])
        for names, types in good
        if all(TYPES.get(tp.__name__) is tp for tp in types)
    ]


def read_frame(stream: t.BinaryIO) -> bytes | None:
    """One frame's body, or None at the end of the stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: t.BinaryIO, body: bytes) -> None:
    """One frame, flushed."""
    stream.write(len(body).to_bytes(8, "big"))
    stream.write(body)
    stream.flush()


def serve(inbox: t.BinaryIO, outbox: t.BinaryIO) -> None:
    """Answer jobs until the tap closes the pipe (or goes away)."""
    decode_job = msgspec.msgpack.Decoder(Job).decode
    encode = msgspec.msgpack.Encoder().encode
    while (frame := read_frame(inbox)) is not None:
        try:
            job = decode_job(frame)
            good = frozenset(
                (tuple(names), tuple(TYPES[n] for n in types)) for names, types in job.shapes
            )
            done = finish_page(job.compressed, job.cloud_id, good, activity=job.activity)
            answer = encode(["ok", done])
        except Exception as error:  # noqa: BLE001 (the tap redoes the page and says why)
            answer = encode(["error", f"{type(error).__name__}: {error}"[:500]])
        write_frame(outbox, answer)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
