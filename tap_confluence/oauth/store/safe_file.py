"""Files only their owner may touch, and replacements that are read back before the rename.

Private directories, no-follow opens, a polled lock and the atomic, checked replacement; none
of it knows what the files hold: the file token store (file.py) says what a failure means.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import stat
import tempfile
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_TEMP_SUFFIX = ".tmp"


class ReadBackError(ValueError):
    """What was read back from the temp file is not what was written."""


def os_reason(exc: OSError) -> str:
    """Name an OS error in a few words, for a sentence."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 whatever the umask says."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # another run made it first; it is checked below like any other
        # mkdir's mode passes through the umask, which may take owner bits away too.
        os.chmod(path, 0o700)


def foreign_reason(info: os.stat_result) -> str | None:
    """Say why a file or directory is not this user's alone to write, or None when it is."""
    if info.st_uid != os.geteuid():
        return "not owned by the user running the tap"
    if info.st_mode & 0o022:
        return f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def open_lock_file(path: Path) -> int:
    """Open (or create, 0600) a lock file; ELOOP when a symlink stands at its name."""
    # O_NOFOLLOW: a symlink planted at the lock's name must not make the tap create or open
    # a file elsewhere.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def lock_within(lock_fd: int, timeout: float) -> bool:
    """Take an exclusive flock on ``lock_fd``, trying for ``timeout`` s; False if never free."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        else:
            return True


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def probe_writable(path: Path) -> None:
    """Create and remove a temp file beside ``path``, as a replacement would; OSError if not."""
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX)
    os.close(fd)
    os.unlink(probe)


def remove_temps(path: Path) -> None:
    """Remove the temp files that replacements of ``path`` left (ignoring any that resist)."""
    for stale in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def replace_read_back(
    path: Path, payload: bytes, check: Callable[[bytes], None] | None = None
) -> None:
    """Put ``payload`` at ``path`` atomically; on any error ``path`` stays as it was.

    The payload goes to a fresh temp file (O_EXCL, mode 0600) and is read back (and
    ``check``-ed) before the rename, so a short write on a full disk can never replace a good
    file with a cut one.
    """
    tmp: str | None = None
    try:
        # mkstemp: an unpredictable name, created with O_EXCL, so no planted file or
        # symlink is ever written through.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX)
        try:
            _write_all(fd, payload)
            os.fsync(fd)
            written = _read_all(fd)
        finally:
            os.close(fd)
        if written != payload:
            raise ReadBackError
        if check is not None:
            check(written)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power cut; OSError if that cannot be done."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def peek_json(path: Path, max_bytes: int) -> t.Any:
    """Parse a regular file of at most ``max_bytes`` as JSON, else None; follows no link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        return json.loads(_read_all(fd))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _write_all(fd: int, payload: bytes) -> None:
    """Write every byte, or raise: a full disk or a quota may make a write short silently."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
