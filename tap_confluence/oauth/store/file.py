"""Durable store for Atlassian's rotating OAuth refresh token.

Atlassian disables a refresh token the moment it is used, so the rotated one must be kept
somewhere that outlives the process (Meltano deletes the config file after each run). The
file backend here keeps one JSON file per cloud_id in a directory only its user may write,
written atomically (the temp file is read back before the rename, so a full disk keeps the old
file), mode 0600, under a lock held across read-refresh-write so that two runs never spend the
same token. The file primitives (private directories, the lock, the read-back replacement)
live in safe_file.py, the record format in record.py, the PostgreSQL backend in postgres.py,
and which store the settings choose in location.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import typing as t

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
from tap_confluence.oauth.store.safe_file import (
    ReadBackError,
    foreign_reason,
    fsync_directory,
    lock_within,
    make_private_dirs,
    open_lock_file,
    os_reason,
    peek_json,
    probe_writable,
    remove_temps,
    replace_read_back,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tap_confluence.oauth.store.crypto import TokenCipher


logger = logging.getLogger("tap-confluence.token_store")

#: Sibling files larger than this are not token stores; the sharing check skips them unread.
_MAX_STORE_BYTES = 1 << 20


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
            make_private_dirs(directory)
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
        why = foreign_reason(info)
        if why is None:
            return
        msg = (
            f"{what} is {why}, so another account could replace the refresh token or redirect "
            "its writes, and the tap will not use it; make it belong to this user with no "
            "write access for others (chmod 700 for a directory, 600 for a file), or point "
            "token_store_path elsewhere."
        )
        raise TokenStoreError(msg)

    def _unwritable(self, exc: OSError) -> str:
        return (
            f"The token store {self.location} cannot be written ({os_reason(exc)}), so the tap "
            "will not spend the refresh token; point token_store_path at a writable, durable "
            "place."
        )

    def check_writable(self) -> None:
        """Create and remove a probe file beside the store, as a save would."""
        self._ensure_dir()
        try:
            probe_writable(self.path)
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
            lock_fd = open_lock_file(self._lock_path)
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
            if not lock_within(lock_fd, self._lock_timeout):
                raise TokenStoreError(
                    f"Another tap-confluence run has held the token store {self.location} "
                    f"for over {self._lock_timeout:.0f} s; let it finish, or stop it, "
                    "then retry."
                )
            self._check_file()
            # Temp files are written only under the lock, so one found now was left by a run
            # killed mid-save; it holds tokens, which must not linger beside the store.
            remove_temps(self.path)
            yield _FileSession(self)
        finally:
            # Closing the descriptor releases the flock.
            os.close(lock_fd)

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
            document = peek_json(other, _MAX_STORE_BYTES)
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
                raise ReadBackError

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

        What was written is read back and parsed (and ``check``-ed) before the rename.
        """
        self._ensure_dir()
        payload = json.dumps(document, indent=2, sort_keys=True).encode()

        def parses_to_the_document(written: bytes) -> None:
            parsed = json.loads(written)
            if parsed != document:
                raise ReadBackError
            if check is not None:
                check(parsed)

        try:
            replace_read_back(self.path, payload, parses_to_the_document)
        except (OSError, ValueError, TokenStoreError) as exc:
            raise _UnsavedError(_reason(exc), self.location) from None
        try:
            fsync_directory(self.path.parent)
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
        return os_reason(exc)
    # A short or altered write, or a record that does not open again as it was written.
    return "what was read back differs from what was written"


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
