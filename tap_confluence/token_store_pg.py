"""Token store in PostgreSQL, for runs that land on a different machine each time.

One row per (client_id, cloud_id), created on first use. A session is one transaction that
holds the row lock (``SELECT ... FOR UPDATE``) from the read, across the refresh call, to the
commit of the rotated token, so two workers can never spend the same refresh token, and the
new token is durable before the new access token is used. The tokens are always sealed with
token_store_key; the rest of the record (dates, scopes) stays readable for ``status``.
"""

# The only name formatted into SQL is the module constant TABLE; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import threading
import typing as t
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from tap_confluence.errors import Secrets
from tap_confluence.token_store import (
    TokenRecord,
    TokenStoreError,
    decode_record,
    encode_record,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_confluence.crypto import TokenCipher

TABLE = "tap_confluence_tokens"
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    client_id   text NOT NULL,
    cloud_id    text NOT NULL,
    document    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz,
    PRIMARY KEY (client_id, cloud_id)
)
"""
_COMMENT = (
    f"COMMENT ON TABLE {TABLE} IS 'tap-confluence: rotating OAuth refresh tokens, one row per "
    "app and site; the tokens are Fernet-sealed in document->>''sealed'''"
)
#: Serialises first-time table creation across workers (CREATE TABLE IF NOT EXISTS is not
#: safe against itself running concurrently).
_CREATE_LOCK_ID = 0x7461_7063_6F6E_66  # "tapconf"
#: Libpq's SQLSTATEs for "this connection cannot write" (hot standby, read-only transaction).
_READ_ONLY_STATES = {"25006"}


def conninfo_of(url: str) -> str:
    """Accept SQLAlchemy spellings too (postgresql+psycopg://), as MELTANO_DATABASE_URI uses."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def safe_location(url: str) -> str:
    """Return the URL without password or query, for messages (user, host and db stay)."""
    parts = urlsplit(conninfo_of(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PostgresTokenStore:
    """A token store row in PostgreSQL, shared by every worker that can reach the database."""

    #: Table creation is checked once per process and database.
    _tables_ready: t.ClassVar[set[str]] = set()

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        cloud_id: str,
        cipher: TokenCipher | None,
        lock_timeout: float = 300.0,
        connect_timeout: int = 30,
    ) -> None:
        """Point at the database; nothing connects until a session or check needs it."""
        if cipher is None:
            # check_store_settings says this first; kept so no caller can store plaintext.
            msg = (
                "token_store_url needs token_store_key as well, because tokens in a shared "
                "database are always encrypted; generate one with `tap-confluence-auth new-key`."
            )
            raise TokenStoreError(msg)
        self._conninfo = conninfo_of(url)
        self._safe_url = safe_location(url)
        self.client_id = client_id
        self.cloud_id = cloud_id
        self.cipher = cipher
        self.location = f"{self._safe_url} (table {TABLE})"
        self._lock_timeout = lock_timeout
        self._connect_timeout = connect_timeout
        self._secrets = Secrets()
        self._secrets.add(urlsplit(self._conninfo).password)
        self._active = threading.local()

    # Connections: one per session, so a long run never holds an idle connection that a
    # firewall or the server's idle timeout could cut between two hourly refreshes.

    def _connect(self) -> psycopg.Connection[t.Any]:
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=False,
                connect_timeout=self._connect_timeout,
                application_name="tap-confluence token store",
            )
        except psycopg.Error as exc:
            msg = (
                f"Could not connect to the token store {self._safe_url} "
                f"({self.describe_error(exc)}); "
                "check token_store_url and that the database accepts connections from here."
            )
            raise TokenStoreError(msg) from None
        try:
            conn.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")
            self._ensure_table(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def describe_error(self, exc: psycopg.Error) -> str:
        """Return the driver's last line about ``exc``, short and without the password."""
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return self._secrets.redact(text)[:200]

    def _ensure_table(self, conn: psycopg.Connection[t.Any]) -> None:
        if self._conninfo in self._tables_ready:
            return
        try:
            found = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
            if not found or found[0] is None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK_ID,))
                conn.execute(_CREATE)
                conn.execute(_COMMENT)
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            msg = (
                f"Could not create the table {TABLE} in {self._safe_url} "
                f"({self.describe_error(exc)}); "
                "create it once as a user with CREATE on the schema (see the README), or grant "
                "that right to the tap's user."
            )
            raise TokenStoreError(msg) from None
        self._tables_ready.add(self._conninfo)

    def failure(self, exc: psycopg.Error, doing: str) -> TokenStoreError:
        """One sentence for a database error met while ``doing`` something with the row."""
        if isinstance(exc, pg_errors.LockNotAvailable):
            return TokenStoreError(
                f"Another tap-confluence run has held the token row for cloud {self.cloud_id} in "
                f"{self.location} for over {self._lock_timeout:.0f} s; let it finish, or stop "
                "it, then retry."
            )
        if isinstance(exc, pg_errors.InsufficientPrivilege) or exc.sqlstate in _READ_ONLY_STATES:
            return TokenStoreError(
                f"The token store {self.location} cannot be written "
                f"({self.describe_error(exc)}), so "
                "the tap will not spend the refresh token; point token_store_url at the "
                "primary server with a user that may update the table."
            )
        return TokenStoreError(
            f"The token store {self.location} failed while {doing} ({self.describe_error(exc)}); "
            "check the database, then retry."
        )

    def check_writable(self) -> None:
        """Raise TokenStoreError unless the row could be locked and updated right now."""
        if getattr(self._active, "conn", None) is not None:
            return  # inside a session the row lock already proves the right to update it
        conn = self._connect()
        try:
            # FOR UPDATE needs the UPDATE privilege and a writable server, and locks nothing
            # when it matches no row.
            conn.execute(f"SELECT 1 FROM {TABLE} WHERE false FOR UPDATE")
            conn.rollback()
        except psycopg.Error as exc:
            raise self.failure(exc, "checking it can be written") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[_PostgresSession]:
        """Hold the row lock in one transaction for the whole block; roll back what is unsaved."""
        conn = self._connect()
        self._active.conn = conn
        try:
            try:
                # Creation on first use is race-free: a second inserter waits for the first
                # one's transaction, then finds the row and does nothing.
                conn.execute(
                    f"INSERT INTO {TABLE} (client_id, cloud_id) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (self.client_id, self.cloud_id),
                )
            except psycopg.Error as exc:
                raise self.failure(exc, "creating the row") from None
            yield _PostgresSession(self, conn)
        finally:
            self._active.conn = None
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()

    def list_documents(self) -> list[tuple[str, str, t.Any]]:
        """Every row's (client_id, cloud_id, document), for ``status``; no lock is taken."""
        conn = self._connect()
        try:
            rows = conn.execute(
                f"SELECT client_id, cloud_id, document FROM {TABLE} "
                "WHERE document IS NOT NULL ORDER BY client_id, cloud_id"
            ).fetchall()
        except psycopg.Error as exc:
            raise self.failure(exc, "listing its rows") from None
        finally:
            conn.close()
        return [(str(a), str(b), doc) for a, b, doc in rows]


class _PostgresSession:
    def __init__(self, store: PostgresTokenStore, conn: psycopg.Connection[t.Any]) -> None:
        self._store = store
        self._conn = conn

    def load(self) -> TokenRecord | None:
        """Lock the row (again, after a save ended the last transaction) and decode it."""
        store = self._store
        try:
            row = self._conn.execute(
                f"SELECT document FROM {TABLE} WHERE client_id = %s AND cloud_id = %s FOR UPDATE",
                (store.client_id, store.cloud_id),
            ).fetchone()
        except psycopg.Error as exc:
            raise store.failure(exc, "reading the token row") from None
        if row is None or row[0] is None:
            return None
        return decode_record(row[0], store.location, store.cipher)

    def save(self, record: TokenRecord) -> None:
        """Write the sealed record and commit durably before returning."""
        store = self._store
        document = encode_record(record, store.cipher)
        try:
            # The cluster may run with synchronous_commit off; this one commit must survive
            # a crash, because the old refresh token is already spent.
            self._conn.execute("SET LOCAL synchronous_commit = on")
            self._conn.execute(
                f"INSERT INTO {TABLE} (client_id, cloud_id, document, updated_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (client_id, cloud_id) "
                "DO UPDATE SET document = EXCLUDED.document, updated_at = now()",
                (store.client_id, store.cloud_id, Jsonb(document)),
            )
            self._conn.commit()
        except psycopg.Error as exc:
            msg = (
                f"Could not save the rotated refresh token in {store.location} "
                f"({store.describe_error(exc)}); rerun within 10 minutes, while Atlassian still "
                "accepts the stored token, once the database is back."
            )
            raise TokenStoreError(msg) from None
