"""Audit pages as they wait for their window, and the rows they become when it is emitted.

A page waits compressed; when its window is emitted it is decoded once and each record gets
its id, ``createdAt`` and ``cloudId`` (``rows.py``), here or in a helper process.
"""

from __future__ import annotations

import hashlib
import threading
import typing as t
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

from tap_confluence.http.client import sent_limit
from tap_confluence.streams.audit.rows import (
    SORTED_JSON,
    Finished,
    Shapes,
    decode_rows,
    finish_rows,
    record_digest,
)

if t.TYPE_CHECKING:
    import requests

    from tap_confluence.streams.audit.workers import PagePool


class _Dated(msgspec.Struct):
    creationDate: int | None = None  # noqa: N815 (the API's spelling)


class _Envelope(msgspec.Struct):
    results: list[_Dated] = msgspec.field(default_factory=list)
    limit: int | None = None


_read_dates = msgspec.json.Decoder(_Envelope).decode

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

    __slots__ = (
        "_body",
        "_done",
        "_raw",
        "asked",
        "count",
        "echoed",
        "newest",
        "oldest",
        "undated",
    )

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
        #: The page's finished rows, coming from a helper process (``finish_soon``).
        self._done: Future[list[Finished]] | None = None

    @classmethod
    def from_response(cls, response: requests.Response) -> AuditPage:
        """Read a page off its response, with the ``limit`` its request sent."""
        return cls(response.content, sent_limit(response) or 0)

    def warm(self) -> None:
        """Start decompressing the page, to be read next, while the one before is worked on."""
        if self._raw is None and self._done is None:
            self._raw = _unpack_soon(self._body)

    def finish_soon(
        self, pool: PagePool, cloud_id: str | None, good: Shapes, *, activity: bool
    ) -> None:
        """Have a helper process finish the page (once), for ``finished`` to collect."""
        if self._done is None and self._raw is None and pool.usable:
            self._done = pool.submit(self._body, cloud_id, good, activity=activity)

    def _rows(self) -> tuple[list[dict[str, t.Any]], bool]:
        """Decode the page's records; say whether any value in them is a float."""
        raw = self._raw.result() if self._raw is not None else zlib.decompress(self._body)
        self._raw = None
        return decode_rows(raw)

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

    def finished(
        self, cloud_id: str | None, good: Shapes | None, *, activity: bool = False
    ) -> list[Finished]:
        """Each record as it goes out, with ``id``, ``createdAt`` (and ``cloudId``) set.

        ``rows.finish_rows`` does it, here, or in a helper process if ``finish_soon`` sent
        the page to one (its ``ok`` records then come encoded). A helper's failure raises
        ``HelperError``; ``finished`` again then does the work here.
        """
        done, self._done = self._done, None
        if done is not None:
            return done.result()
        rows, floats = self._rows()
        return finish_rows(rows, floats, cloud_id, good, activity=activity)
