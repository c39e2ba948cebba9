"""Durable store for Atlassian's rotating OAuth refresh token.

Atlassian disables a refresh token the moment it is used, so the rotated one must be kept
somewhere that outlives the process (Meltano deletes the config file after each run). The
file backend here keeps one JSON file per cloud_id in a directory only its user may write,
written atomically (the temp file is read back before the rename, so a full disk keeps the old
file), mode 0600, under a lock held across read-refresh-write so that two runs never spend the
same token. The record format lives in record.py, the PostgreSQL backend in postgres.py,
and which store the settings choose in location.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import logging
import os
import stat
import tempfile
import time
import typing as t
from pathlib import Path

from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStoreError,
    TokenStoreSession,
    corrupt_sentence,
    decode_record,
    encode_record,
    lineage_of,
    shared_family_sentence,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_confluence.oauth.store.crypto import TokenCipher


logger = logging.getLogger("tap-confluence.token_store")

#: Sibling files larger than this are not token stores; the sharing check skips them unread.
_MAX_STORE_BYTES = 1 << 20


def _make_private_dirs(directory: Path) -> None:
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


class _ReadBackError(ValueError):
    """What was read back from the temp file is not what was written."""


class FileTokenStore:
    """JSON file per site: temp file + fsync + read back + rename, 0600 in a 0700 directory.

    A flock on a sidecar lock file serialises read-refresh-write across runs. The directory and
    the file must belong to the user and be writable by nobody else, so no other account can
    swap a file in or redirect a write through a symlink.
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = 300.0,
        cipher: TokenCipher | None = None,
        client_id: str | None = None,
        cloud_id: str | None = None,
    ) -> None:
        """Use the file at ``path``; wait up to ``lock_timeout`` s for another run's lock.

        With a ``cipher`` the tokens are written sealed; a plaintext file is still read (and
        sealed at its next save), so turning encryption on needs no migration. ``client_id``
        and ``cloud_id`` say whose token this is, for the check against sibling stores.
        """
        self.path = path
        self.location = str(path)
        self.cipher = cipher
        self.client_id = client_id
        self.cloud_id = cloud_id
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_timeout = lock_timeout
        self._warned_mode = False

    # Safety of the directory and the file.

    def _ensure_dir(self) -> None:
        directory = self.path.parent
        try:
            _make_private_dirs(directory)
            info = os.stat(directory)
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise TokenStoreError(self._unwritable(NotADirectoryError(errno.ENOTDIR, "")))
        self._refuse_foreign(f"The token store directory {directory}", info)

    def _check_file(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        self._refuse_foreign(f"The token store {self.location}", info)
        if stat.S_IMODE(info.st_mode) & 0o077 and not self._warned_mode:
            self._warned_mode = True
            logger.warning(
                "The token store %s can be read by other users (mode %o, not 0600); run "
                "`chmod 600 %s` (the next save writes it 0600 anyway).",
                self.location,
                stat.S_IMODE(info.st_mode),
                self.location,
            )

    @staticmethod
    def _refuse_foreign(what: str, info: os.stat_result) -> None:
        if info.st_uid != os.geteuid():
            why = "not owned by the user running the tap"
        elif info.st_mode & 0o022:
            why = f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
        else:
            return
        msg = (
            f"{what} is {why}, so another account could replace the refresh token or redirect "
            "its writes, and the tap will not use it; make it belong to this user with no "
            "write access for others (chmod 700 for a directory, 600 for a file), or point "
            "token_store_path elsewhere."
        )
        raise TokenStoreError(msg)

    def _unwritable(self, exc: OSError) -> str:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return (
            f"The token store {self.location} cannot be written ({reason}), so the tap will not "
            "spend the refresh token; point token_store_path at a writable, durable place."
        )

    def check_writable(self) -> None:
        """Create and remove a probe file beside the store, as a save would."""
        self._ensure_dir()
        try:
            fd, probe = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        self._check_file()
        if self.path.exists() and not os.access(self.path, os.R_OK):
            raise TokenStoreError(
                f"The token store {self.location} exists but cannot be read; fix its owner "
                "or permissions (it should be 0600 and owned by the user running the tap)."
            )

    # The lock.

    @contextlib.contextmanager
    def session(self) -> Iterator[TokenStoreSession]:
        """Hold an exclusive flock on the sidecar lock file for the whole block."""
        self._ensure_dir()
        try:
            # O_NOFOLLOW: a symlink planted at the lock's name must not make the tap create
            # or open a file elsewhere.
            lock_fd = os.open(
                self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                msg = (
                    f"The lock file {self._lock_path} is a symbolic link, which the tap never "
                    "makes (it could redirect the tap's writes), so the tap will not use the "
                    "store; remove the link and rerun."
                )
                raise TokenStoreError(msg) from None
            raise TokenStoreError(self._unwritable(exc)) from None
        try:
            self._acquire(lock_fd)
            self._check_file()
            self._remove_stale_temps()
            yield _FileSession(self)
        finally:
            # Closing the descriptor releases the flock.
            os.close(lock_fd)

    def _remove_stale_temps(self) -> None:
        # Temp files are written only under the lock, so one found now was left by a run
        # killed mid-save; it holds tokens, which must not linger beside the store.
        for stale in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _acquire(self, lock_fd: int) -> None:
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TokenStoreError(
                        f"Another tap-confluence run has held the token store {self.location} "
                        f"for over {self._lock_timeout:.0f} s; let it finish, or stop it, "
                        "then retry."
                    ) from None
                time.sleep(0.05)
            else:
                return

    # Sibling stores.

    def check_unshared(self, seed: str) -> None:
        """Refuse when another store file beside this one is for the same site or family."""
        try:
            own = self.path.resolve()
            siblings = sorted(self.path.parent.glob("*.json"))
        except OSError:
            return
        for other in siblings:
            try:
                if other.name.startswith(".") or other.resolve() == own:
                    continue
            except (OSError, RuntimeError):  # a symlink loop is nobody's token store
                continue
            document = _peek(other)
            # Only token stores count: a tap config beside them has client_id and cloud_id
            # too, and a file moved to PostgreSQL holds no token any more.
            if (
                not isinstance(document, dict)
                or not isinstance(document.get("seed_fingerprint"), str)
                or not ("refresh_token" in document or "sealed" in document)
            ):
                continue
            same_key = bool(
                self.client_id
                and self.cloud_id
                and document.get("client_id") == self.client_id
                and document.get("cloud_id") == self.cloud_id
            )
            if same_key or seed in lineage_of(document):
                cloud = str(document.get("cloud_id") or "not recorded")
                raise TokenStoreError(
                    shared_family_sentence(str(other), self.location, cloud, same_key=same_key)
                )

    # Reading and writing.

    def read(self, *, need_tokens: bool = True) -> TokenRecord | None:
        """Read the record without locking (callers hold the lock through session())."""
        data = self.read_document()
        if data is None:
            return None
        return decode_record(data, self.location, self.cipher, need_tokens=need_tokens)

    def read_document(self) -> t.Any:
        """Return the stored JSON document as it is on disk (tokens sealed or not), or None."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise TokenStoreError(corrupt_sentence(self.location, "it is not UTF-8 text")) from None
        except OSError as exc:
            reason = os.strerror(exc.errno or 0)
            raise TokenStoreError(corrupt_sentence(self.location, reason)) from None
        try:
            data = json.loads(text)
        except ValueError:
            raise TokenStoreError(corrupt_sentence(self.location, "it is not valid JSON")) from None
        return data

    def write(self, record: TokenRecord) -> None:
        """Atomically replace the store file with ``record``, read back before the rename."""

        def opens_to_the_record(document: t.Any) -> None:
            if decode_record(document, self.location, self.cipher) != record:
                raise _ReadBackError

        try:
            self.write_document(encode_record(record, self.cipher), check=opens_to_the_record)
        except _UnsavedError as exc:
            msg = (
                f"Could not save the rotated refresh token in {self.location} ({exc.reason}), "
                "so the file there was kept as it was; the refresh token was spent; rerun "
                "within 10 minutes, once the file can be written, while Atlassian still "
                "accepts the kept token."
            )
            raise TokenStoreError(msg) from None

    def write_document(
        self, document: dict[str, t.Any], *, check: Callable[[t.Any], None] | None = None
    ) -> None:
        """Atomically replace the store file with a JSON document; the old file survives errors.

        The payload goes to a fresh temp file (O_EXCL, mode 0600) and is read back and parsed
        (and ``check``-ed) before the rename, so a short write on a full disk can never replace
        a good file with a cut one.
        """
        self._ensure_dir()
        payload = json.dumps(document, indent=2, sort_keys=True).encode()
        tmp: str | None = None
        try:
            # mkstemp: an unpredictable name, created with O_EXCL, so no planted file or
            # symlink is ever written through.
            fd, tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            try:
                _write_all(fd, payload)
                os.fsync(fd)
                written = _read_all(fd)
            finally:
                os.close(fd)
            if written != payload or json.loads(written) != document:
                raise _ReadBackError
            if check is not None:
                check(json.loads(written))
            os.replace(tmp, self.path)
            tmp = None
        except (OSError, ValueError, TokenStoreError) as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise _UnsavedError(_reason(exc), self.location) from None
        self._sync_directory()

    def _sync_directory(self) -> None:
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # The new file is in place; only its survival of a power cut is uncertain.
            logger.warning(
                "Could not sync the directory of %s (%s); the saved token may not survive a "
                "power cut.",
                self.location,
                os.strerror(exc.errno or 0),
            )


class _UnsavedError(TokenStoreError):
    """A write that kept the old file; ``reason`` says why in a few words."""

    def __init__(self, reason: str, location: str) -> None:
        super().__init__(
            f"Could not write the token store {location} ({reason}), so the file there was "
            "kept as it was; make room or fix its permissions, then retry."
        )
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    # A short or altered write, or a record that does not open again as it was written.
    return "what was read back differs from what was written"


def _peek(path: Path) -> t.Any:
    """Parse a sibling store file for its metadata, or None (never raises, follows no link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_STORE_BYTES:
            return None
        return json.loads(_read_all(fd))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


class _FileSession:
    def __init__(self, store: FileTokenStore) -> None:
        self._store = store

    def load(self) -> TokenRecord | None:
        return self._store.read()

    def load_metadata(self) -> TokenRecord | None:
        document = self._store.read_document()
        if document is None:
            return None
        # No cipher: sealed tokens stay sealed (empty here) whatever key is at hand.
        return decode_record(document, self._store.location, None, need_tokens=False)

    def save(self, record: TokenRecord) -> None:
        self._store.write(record)

    def check_unshared(self, seed: str) -> None:
        self._store.check_unshared(seed)
