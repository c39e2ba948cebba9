"""Helper processes that finish audit pages while the tap's own process fetches and writes.

A backfill's per-record work (decoding, the id's canonical JSON and sha256, ``createdAt``,
encoding) held the interpreter lock for most of the tap's time, so a second core sat idle.
Each helper is ``rows.py`` run on its own (the standard library and msgspec, nothing else;
no setting, no token, only the pages' bytes go to it); the tap hands it compressed pages
and gets finished, encoded rows back, in order. If a helper cannot start or goes away, the
tap finishes the pages itself, as it does when there is no second core: slower, same rows.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import subprocess
import sys
import threading
import typing as t
from concurrent.futures import Future
from typing import TYPE_CHECKING

import msgspec

from tap_confluence.settings.rules import AUDIT_HELPERS_RANGE
from tap_confluence.streams.audit import rows
from tap_confluence.streams.audit.rows import Finished, Job, Shapes, job_shapes

if TYPE_CHECKING:
    from collections.abc import Mapping

#: At most this many helpers, however many cores (the tap's own thread becomes the limit).
MAX_HELPERS = 4
#: Helpers start for the first window of at least this many records (three full pages): a
#: backfill. A nightly run's few records are not worth starting processes for.
HELPER_MIN_RECORDS = 3000
#: The only environment variables a helper gets.
HELPER_ENVIRONMENT = frozenset({"PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR"})
#: Seconds a helper has to exit once its pipe is closed, before it is killed.
EXIT_WAIT = 5.0

_Row = tuple[t.Any, str, bytes | dict[str, t.Any], bool, tuple[t.Any, int, str] | None]
_Answer = tuple[str, list[_Row] | str]
_decode_answer = msgspec.msgpack.Decoder(_Answer).decode
_encode_job = msgspec.msgpack.Encoder().encode


class HelperError(Exception):
    """A helper did not finish a page; the sentence says why. The tap finishes it itself."""


def helpers_wanted(config: Mapping[str, t.Any]) -> int:
    """Helpers to start: ``audit_helper_processes`` (0 to 8), else one per core up to 4.

    None on one core: the tap's own process would share it with them.
    """
    low, high = AUDIT_HELPERS_RANGE
    value = config.get("audit_helper_processes")
    if isinstance(value, int) and not isinstance(value, bool):
        return max(low, min(high, value))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, MAX_HELPERS)


class _Helper:
    """One helper process, and the thread that hands it jobs one at a time."""

    def __init__(self, index: int, pool: PagePool) -> None:
        self._pool = pool
        self.proc = subprocess.Popen(  # noqa: S603 (this interpreter, our own module)
            [sys.executable, "-I", rows.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # Nothing of the tap's environment (Meltano puts secrets there) but what an
            # interpreter may need to start.
            env={k: v for k, v in os.environ.items() if k in HELPER_ENVIRONMENT},
        )
        self.jobs: queue.SimpleQueue[tuple[bytes, Future[list[Finished]]] | None] = (
            queue.SimpleQueue()
        )
        self._count = threading.Lock()
        self.queued = 0
        self.thread = threading.Thread(target=self._drive, name=f"audit-helper-{index}")
        self.thread.daemon = True
        self.thread.start()

    def _drive(self) -> None:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None  # noqa: S101 (a pipe)
        assert stdout is not None  # noqa: S101 (a pipe)
        while (item := self.jobs.get()) is not None:
            frame, future = item
            try:
                rows.write_frame(t.cast("t.BinaryIO", stdin), frame)
                answer = rows.read_frame(t.cast("t.BinaryIO", stdout))
            except (OSError, ValueError):
                answer = None
            with self._count:
                self.queued -= 1
            if answer is None:
                try:
                    code: int | None = self.proc.wait(EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    code = None
                self._pool.fail(
                    "a helper process ended unexpectedly"
                    + (f" (exit code {code})" if code is not None else "")
                )
                future.set_exception(HelperError(self._pool.failure or "helper gone"))
                continue
            try:
                status, body = _decode_answer(answer)
            except msgspec.DecodeError as error:
                future.set_exception(HelperError(f"a helper's answer was unreadable: {error}"))
                continue
            if status == "ok" and isinstance(body, list):
                future.set_result(t.cast("list[Finished]", body))
            else:
                future.set_exception(HelperError(f"a helper could not finish a page: {body}"))

    def submit(self, frame: bytes) -> Future[list[Finished]]:
        future: Future[list[Finished]] = Future()
        with self._count:
            self.queued += 1
        self.jobs.put((frame, future))
        return future

    def hang_up(self) -> None:
        """Tell the helper no job follows (it exits after the one it has)."""
        self.jobs.put(None)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def close(self) -> None:
        self.hang_up()
        try:
            self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(EXIT_WAIT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class PagePool:
    """Helpers that finish compressed audit pages; jobs go to the least busy one."""

    def __init__(self, size: int) -> None:
        """Start ``size`` helpers (none if they cannot start: ``failure`` says why)."""
        self._lock = threading.Lock()
        #: Why the pool stopped taking pages (None while it takes them).
        self.failure: str | None = None
        self._helpers: list[_Helper] = []
        try:
            for index in range(size):
                self._helpers.append(_Helper(index, self))
        except OSError as error:
            self.fail(f"a helper process could not start ({error.strerror or error})")

    @property
    def size(self) -> int:
        """Helpers started."""
        return len(self._helpers)

    @property
    def usable(self) -> bool:
        """Whether pages may be handed to the helpers."""
        return self.failure is None and bool(self._helpers)

    def fail(self, reason: str) -> None:
        """Take no more pages (the first reason is kept)."""
        with self._lock:
            if self.failure is None:
                self.failure = reason

    def submit(
        self, compressed: bytes, cloud_id: str | None, good: Shapes, *, activity: bool = False
    ) -> Future[list[Finished]]:
        """Finish a compressed page in a helper; its future fails with ``HelperError``."""
        frame = _encode_job(Job(compressed, cloud_id, job_shapes(good), activity))
        helper = min(self._helpers, key=lambda h: h.queued)
        return helper.submit(frame)

    def close(self) -> None:
        """Let the helpers exit (each finishes the job it has) and wait for them."""
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.hang_up()  # all at once: they exit side by side
        for helper in helpers:
            helper.close()


_shared: PagePool | None = None
_shared_lock = threading.Lock()


def shared_pool(size: int) -> PagePool | None:
    """Return this process's helpers, ``size`` of them started when first asked for."""
    global _shared  # noqa: PLW0603 (one pool per process, made when a backfill needs it)
    with _shared_lock:
        if _shared is None:
            if size < 1:
                return None
            _shared = PagePool(size)
            atexit.register(close_shared_pool)
        return _shared


def close_shared_pool() -> None:
    """Stop this process's helpers, if any were started."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()
