"""Durable store for Atlassian's rotating OAuth refresh token.

Atlassian disables a refresh token the moment it is used, so the rotated one must be kept
somewhere that outlives the process (Meltano deletes the config file after each run). The
file backend here keeps one JSON file per cloud_id, written atomically, mode 0600, under a
lock held across read-refresh-write so that two runs never spend the same token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import os
import time
import typing as t
from pathlib import Path

from tap_confluence.config import fail
from tap_confluence.crypto import KeyFormatError, TokenCipher
from tap_confluence.errors import TapUserError

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

STORE_FORMAT_VERSION = 1


class TokenStoreError(TapUserError):
    """The token store cannot be read, written or locked; the message is one sentence."""


def seed_fingerprint(refresh_token: str) -> str:
    """Identify a configured refresh token without keeping it (the store compares these)."""
    digest = hashlib.sha256(b"tap-confluence/seed/v1\0" + refresh_token.encode()).hexdigest()
    return digest[:32]


@dataclasses.dataclass
class TokenRecord:
    """What the store keeps for one site: the live refresh token and where it came from."""

    refresh_token: str
    #: seed_fingerprint() of the configured refresh_token this token descends from.
    seed_fingerprint: str
    scopes: list[str]
    #: ISO 8601 UTC time of the last successful refresh.
    rotated_at: str
    #: ISO 8601 UTC time the family was first used here (Atlassian expires it after 365 days).
    family_started_at: str
    access_token: str | None = None
    #: Epoch seconds at which access_token expires.
    access_token_expires_at: float | None = None
    #: The site this token is for (absent in records written before it was kept).
    cloud_id: str | None = None
    #: seed_fingerprint() of configured tokens that a later consent replaced: a configured
    #: refresh_token listed here is stale, so the stored token wins over it.
    superseded_seeds: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, t.Any]:
        """Serialise with a format version so later backends can migrate."""
        return {"version": STORE_FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: t.Any, location: str) -> TokenRecord:
        """Parse a stored record, or raise one sentence naming the file and the fix."""
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {"refresh_token", "seed_fingerprint", "rotated_at", "family_started_at"}
        if (
            not isinstance(data, dict)
            or not required <= data.keys()
            or not isinstance(data.get("refresh_token"), str)
        ):
            raise TokenStoreError(_corrupt_sentence(location, "it lacks the token fields"))
        values = {k: v for k, v in data.items() if k in fields}
        values.setdefault("scopes", [])
        return cls(**values)


#: The record fields that are secrets; with a key they are kept only inside ``sealed``.
_SEALED_FIELDS = ("refresh_token", "access_token")


def encode_record(record: TokenRecord, cipher: TokenCipher | None) -> dict[str, t.Any]:
    """Turn a record into the stored document, its tokens sealed when there is a key."""
    data = record.to_json()
    if cipher is None:
        return data
    tokens = {name: data.pop(name) for name in _SEALED_FIELDS}
    data["sealed"] = cipher.seal(json.dumps(tokens).encode())
    return data


def decode_record(
    data: t.Any, location: str, cipher: TokenCipher | None, *, need_tokens: bool = True
) -> TokenRecord:
    """Parse a stored document, opening sealed tokens, or raise one sentence.

    With ``need_tokens=False`` a sealed document whose key is absent still yields its
    metadata (for ``status``), with an empty refresh_token.
    """
    if isinstance(data, dict) and "moved_to" in data:
        raise TokenStoreError(
            f"The token store {location} was moved to {data['moved_to']} on "
            f"{data.get('moved_at', 'an earlier date')}; set token_store_url (and "
            "token_store_key) so the tap uses the moved token, never this file."
        )
    if isinstance(data, dict) and "sealed" in data:
        tokens = _open_sealed(data, location, cipher, need_tokens=need_tokens)
        data = {k: v for k, v in data.items() if k != "sealed"} | tokens
    return TokenRecord.from_json(data, location)


def _open_sealed(
    data: dict[str, t.Any], location: str, cipher: TokenCipher | None, *, need_tokens: bool
) -> dict[str, t.Any]:
    if cipher is None:
        if not need_tokens:
            return {"refresh_token": "", "access_token": None}
        raise TokenStoreError(
            f"The tokens in {location} are encrypted but token_store_key is not set; set it "
            "to the key they were written with."
        )
    opened = cipher.open(str(data["sealed"]))
    if opened is None:
        raise TokenStoreError(
            f"token_store_key does not open the tokens in {location} (they were sealed with "
            "another key, or altered); set the key they were written with, or list the new "
            "key first and the old one after it, comma-separated."
        )
    try:
        tokens = json.loads(opened)
    except ValueError:
        tokens = None
    if not isinstance(tokens, dict):
        raise TokenStoreError(_corrupt_sentence(location, "its sealed tokens are not JSON"))
    return {name: tokens.get(name) for name in _SEALED_FIELDS}


def cipher_setting(token_store_key: str | None) -> TokenCipher | None:
    """Parse token_store_key, or raise TokenStoreError with the sentence saying what is wrong."""
    try:
        return TokenCipher.from_setting(token_store_key)
    except KeyFormatError as exc:
        raise TokenStoreError(str(exc)) from None


def check_store_settings(config: Mapping[str, t.Any]) -> None:
    """Check token_store_url and token_store_key before any request (one sentence if wrong)."""
    url = str(config.get("token_store_url") or "").strip()
    key = str(config.get("token_store_key") or "").strip()
    try:
        cipher_setting(key)
    except TokenStoreError as exc:
        fail(str(exc))
    if not url:
        return
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.split("+", 1)[0] not in {"postgresql", "postgres"}:
        fail(
            "token_store_url must be a PostgreSQL URL like postgresql://user@host:5432/dbname "
            f"(it starts with {scheme or 'no scheme'!r}); leave it unset to keep tokens in a file."
        )
    if not key:
        fail(
            "token_store_url needs token_store_key as well, because tokens in a shared database "
            "are always encrypted; generate a key with `tap-confluence-auth new-key` and keep "
            "it with your other secrets."
        )


def open_store(
    *,
    cloud_id: str,
    client_id: str | None,
    token_store_path: str | None = None,
    token_store_url: str | None = None,
    token_store_key: str | None = None,
    lock_timeout: float = 300.0,
) -> TokenStore:
    """Return the store the settings choose: PostgreSQL when token_store_url is set, else a file."""
    cipher = cipher_setting(token_store_key)
    if token_store_url and token_store_url.strip():
        # Imported here so that file-store users never load the PostgreSQL driver.
        from tap_confluence.token_store_pg import PostgresTokenStore  # noqa: PLC0415

        return PostgresTokenStore(
            token_store_url.strip(),
            client_id=client_id or "",
            cloud_id=cloud_id,
            cipher=cipher,
            lock_timeout=lock_timeout,
        )
    path = store_path_for(token_store_path, cloud_id)
    return FileTokenStore(path, lock_timeout=lock_timeout, cipher=cipher)


def _corrupt_sentence(location: str, why: str) -> str:
    return (
        f"The token store {location} is unreadable ({why}); move it aside and set "
        "refresh_token to a fresh token from the OAuth consent flow, which starts a new store."
    )


class TokenStoreSession(t.Protocol):
    """A locked view of one site's record: load, then save a new record before using it."""

    def load(self) -> TokenRecord | None:
        """Return the stored record, or None when there is none yet."""

    def save(self, record: TokenRecord) -> None:
        """Persist the record durably before returning."""


class TokenStore(t.Protocol):
    """Where rotated refresh tokens live; shared by the tap and the tap-confluence-auth CLI."""

    #: Human-readable location for messages (never contains a secret).
    location: str

    def check_writable(self) -> None:
        """Raise TokenStoreError unless a new record could be saved right now."""

    def session(self) -> contextlib.AbstractContextManager[TokenStoreSession]:
        """Hold the store's lock for a whole read-refresh-write."""


def default_store_dir() -> Path:
    """Return $XDG_STATE_HOME/tap-confluence, falling back to ~/.local/state/tap-confluence."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tap-confluence"


def store_files(token_store_path: str | None) -> list[Path]:
    """List the store files a token_store_path setting (file or directory) or the default holds."""
    path = Path(token_store_path).expanduser() if token_store_path else default_store_dir()
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file() and not p.name.startswith("."))
    return [path] if path.is_file() else []


def store_path_for(token_store_path: str | None, cloud_id: str) -> Path:
    """Resolve the store file: the setting as a file or a directory, else the default."""
    if not token_store_path:
        return default_store_dir() / f"{cloud_id}.json"
    path = Path(token_store_path).expanduser()
    if path.is_dir() or token_store_path.endswith(os.sep):
        return path / f"{cloud_id}.json"
    return path


class FileTokenStore:
    """JSON file per site: temp file + fsync + rename + directory fsync, 0600, flock'd sidecar."""

    def __init__(
        self, path: Path, *, lock_timeout: float = 300.0, cipher: TokenCipher | None = None
    ) -> None:
        """Use the file at ``path``; wait up to ``lock_timeout`` s for another run's lock.

        With a ``cipher`` the tokens are written sealed; a plaintext file is still read (and
        sealed at its next save), so turning encryption on needs no migration.
        """
        self.path = path
        self.location = str(path)
        self.cipher = cipher
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_timeout = lock_timeout

    def _ensure_dir(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        if not directory.is_dir():
            raise TokenStoreError(self._unwritable(NotADirectoryError(errno.ENOTDIR, "")))

    def _unwritable(self, exc: OSError) -> str:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return (
            f"The token store {self.location} cannot be written ({reason}), so the tap will not "
            "spend the refresh token; point token_store_path at a writable, durable place."
        )

    def check_writable(self) -> None:
        """Create and remove a probe file beside the store, as a save would."""
        self._ensure_dir()
        probe = self.path.with_name(f".{self.path.name}.probe.{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        if self.path.exists() and not os.access(self.path, os.R_OK):
            raise TokenStoreError(
                f"The token store {self.location} exists but cannot be read; fix its owner "
                "or permissions (it should be 0600 and owned by the user running the tap)."
            )

    @contextlib.contextmanager
    def session(self) -> Iterator[TokenStoreSession]:
        """Hold an exclusive flock on the sidecar lock file for the whole block."""
        self._ensure_dir()
        try:
            lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenStoreError(self._unwritable(exc)) from None
        try:
            self._acquire(lock_fd)
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
            raise TokenStoreError(
                _corrupt_sentence(self.location, "it is not UTF-8 text")
            ) from None
        except OSError as exc:
            reason = os.strerror(exc.errno or 0)
            raise TokenStoreError(_corrupt_sentence(self.location, reason)) from None
        try:
            data = json.loads(text)
        except ValueError:
            raise TokenStoreError(
                _corrupt_sentence(self.location, "it is not valid JSON")
            ) from None
        return data

    def write(self, record: TokenRecord) -> None:
        """Atomically replace the store file with ``record``."""
        self.write_document(encode_record(record, self.cipher))

    def write_document(self, document: dict[str, t.Any]) -> None:
        """Atomically replace the store file with a JSON document."""
        self._ensure_dir()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = json.dumps(document, indent=2, sort_keys=True).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TokenStoreError(self._unwritable(exc)) from None


class _FileSession:
    def __init__(self, store: FileTokenStore) -> None:
        self._store = store

    def load(self) -> TokenRecord | None:
        return self._store.read()

    def save(self, record: TokenRecord) -> None:
        self._store.write(record)
