"""Token store in PostgreSQL, for runs that land on a different machine each time.

One row per (client_id, cloud_id), created on first use. A session is one transaction that
holds the row lock (``SELECT ... FOR UPDATE``) from the read, across the refresh call, to the
commit of the rotated token, so two workers can never spend the same refresh token, and the
new token is durable before the new access token is used. The tokens are always sealed with
token_store_key, together with the row's key, so a sealed value copied to another row is
refused; the rest of the record (dates, scopes) stays readable for ``status``.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStoreError,
    decode_record,
    encode_record,
    shared_family_sentence,
)
from tap_confluence.redact import Secrets

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_confluence.oauth.store.crypto import TokenCipher

TABLE = "tap_confluence_tokens"
_CREATE = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {table} ("
    " client_id text NOT NULL,"
    " cloud_id text NOT NULL,"
    " document jsonb,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " updated_at timestamptz,"
    " PRIMARY KEY (client_id, cloud_id))"
)
_COMMENT = sql.SQL(
    "COMMENT ON TABLE {table} IS 'tap-confluence: rotating OAuth refresh tokens, one row per "
    "app and site; the tokens are Fernet-sealed in document->>''sealed'''"
)
#: Where the search path finds the table, and whether its owner is one the tap can trust:
#: the tap's own user (or a role it belongs to), a superuser, or the database's owner. A
#: table planted by anyone else in an earlier schema of the search path is refused.
_FIND = (
    "SELECT n.nspname, r.rolname, "
    "pg_has_role(c.relowner, 'MEMBER') OR r.rolsuper "
    "OR c.relowner = (SELECT datdba FROM pg_database WHERE datname = current_database()) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = to_regclass(%s)"
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


def _hold_across_the_token_call(conn: psycopg.Connection[t.Any]) -> None:
    """Keep this transaction (and its row lock) alive however long the token call takes.

    A server-side idle_in_transaction_session_timeout shorter than the HTTP call would end
    the session mid-refresh: the token spent, the new one never saved, the lock gone for a
    second worker. SET LOCAL lasts for this transaction only, so a pooled connection is left
    as it was.
    """
    conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")


class PostgresTokenStore:
    """A token store row in PostgreSQL, shared by every worker that can reach the database."""

    #: The schema-qualified table, resolved (and its owner checked) once per process and
    #: database.
    _tables: t.ClassVar[dict[str, sql.Identifier]] = {}

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
        self._table: sql.Identifier | None = None
        self._lock_timeout = lock_timeout
        self._connect_timeout = connect_timeout
        self._secrets = Secrets()
        self._secrets.add(urlsplit(self._conninfo).password)
        self._active = threading.local()

    @property
    def identity(self) -> dict[str, str]:
        """The row key, sealed with the tokens so that a value copied elsewhere is recognised."""
        return {"client_id": self.client_id, "cloud_id": self.cloud_id}

    def row_location(self) -> str:
        """Name this store's row, for messages."""
        return (
            f"the token row for client {self.client_id}, cloud {self.cloud_id} in {self.location}"
        )

    @property
    def table(self) -> sql.Identifier:
        """The schema-qualified table (resolved by the first connection)."""
        if self._table is None:
            msg = "the token table is resolved by the first connection"
            raise RuntimeError(msg)
        return self._table

    # Connections: one per session, so a long run never holds an idle connection that a
    # firewall or the server's idle timeout could cut between two hourly refreshes.

    def _connect(self) -> psycopg.Connection[t.Any]:
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=False,
                connect_timeout=self._connect_timeout,
                application_name="tap-confluence token store",
                # Keepalives let both ends notice a dead peer while the row lock is held
                # across the token call, instead of waiting on a half-open connection.
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
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
        cached = self._tables.get(self._conninfo)
        if cached is not None:
            self._table = cached
            return
        try:
            found = conn.execute(_FIND, (TABLE,)).fetchone()
            if found is None:
                schema = conn.execute("SELECT current_schema()").fetchone()
                if not schema or schema[0] is None:
                    conn.rollback()
                    msg = (
                        f"The search path of token_store_url {self._safe_url} names no schema "
                        f"to create the table {TABLE} in; create a schema for it, or set "
                        "search_path (options=-csearch_path=SCHEMA in the URL)."
                    )
                    raise TokenStoreError(msg)
                qualified = sql.Identifier(schema[0], TABLE)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK_ID,))
                conn.execute(_CREATE.format(table=qualified))
                conn.execute(_COMMENT.format(table=qualified))
                found = conn.execute(_FIND, (qualified.as_string(conn),)).fetchone()
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
        if found is None:
            msg = f"The table {TABLE} in {self._safe_url} vanished as it was created; retry."
            raise TokenStoreError(msg)
        schema_name, owner, trusted = found
        if not trusted:
            msg = (
                f"The table {schema_name}.{TABLE} that token_store_url {self._safe_url} leads "
                f"to belongs to the role {owner}, which is neither the tap's user, a superuser "
                "nor the database owner, so the tap will not keep tokens in it; drop it (or set "
                "search_path to the schema of the real table), then rerun."
            )
            raise TokenStoreError(msg)
        self._table = sql.Identifier(str(schema_name), TABLE)
        self._tables[self._conninfo] = self._table

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
            conn.execute(sql.SQL("SELECT 1 FROM {} WHERE false FOR UPDATE").format(self.table))
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
                _hold_across_the_token_call(conn)
                # Creation on first use is race-free: a second inserter waits for the first
                # one's transaction, then finds the row and does nothing.
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (client_id, cloud_id) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING"
                    ).format(self.table),
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
                sql.SQL(
                    "SELECT client_id, cloud_id, document FROM {} "
                    "WHERE document IS NOT NULL ORDER BY client_id, cloud_id"
                ).format(self.table)
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

    def _document(self) -> t.Any:
        """Lock the row (again, after a save ended the last transaction); return its document."""
        store = self._store
        try:
            _hold_across_the_token_call(self._conn)
            row = self._conn.execute(
                sql.SQL(
                    "SELECT document FROM {} WHERE client_id = %s AND cloud_id = %s FOR UPDATE"
                ).format(store.table),
                (store.client_id, store.cloud_id),
            ).fetchone()
        except psycopg.Error as exc:
            raise store.failure(exc, "reading the token row") from None
        return None if row is None else row[0]

    def load(self) -> TokenRecord | None:
        """Lock the row and decode it: sealed, and sealed for this very row."""
        store = self._store
        document = self._document()
        if document is None:
            return None
        return decode_record(
            document,
            store.row_location(),
            store.cipher,
            identity=store.identity,
            require_sealed=True,
        )

    def load_metadata(self) -> TokenRecord | None:
        """Lock the row and decode what it says about the token, without opening it."""
        document = self._document()
        if document is None:
            return None
        return decode_record(document, self._store.row_location(), None, need_tokens=False)

    def check_unshared(self, seed: str) -> None:
        """Refuse when a row under another key descends from the family of ``seed``."""
        store = self._store
        try:
            row = self._conn.execute(
                sql.SQL(
                    "SELECT client_id, cloud_id FROM {} "
                    "WHERE NOT (client_id = %s AND cloud_id = %s) AND document IS NOT NULL "
                    "AND (document->>'seed_fingerprint' = %s "
                    "OR coalesce(document->'superseded_seeds', '[]'::jsonb) ? %s) "
                    "ORDER BY client_id, cloud_id LIMIT 1"
                ).format(store.table),
                (store.client_id, store.cloud_id, seed, seed),
            ).fetchone()
        except psycopg.Error as exc:
            raise store.failure(exc, "comparing it with the other rows") from None
        if row is not None:
            other = f"row for client {row[0]}, cloud {row[1]} in {store.location}"
            here = f"the row for cloud {store.cloud_id}"
            raise TokenStoreError(shared_family_sentence(other, here, str(row[1]), same_key=False))

    def save(self, record: TokenRecord) -> None:
        """Write the sealed record and commit durably before returning."""
        store = self._store
        document = encode_record(record, store.cipher, identity=store.identity)
        try:
            # The cluster may run with synchronous_commit off; this one commit must survive
            # a crash, because the old refresh token is already spent.
            self._conn.execute("SET LOCAL synchronous_commit = on")
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (client_id, cloud_id, document, updated_at) "
                    "VALUES (%s, %s, %s, now()) ON CONFLICT (client_id, cloud_id) "
                    "DO UPDATE SET document = EXCLUDED.document, updated_at = now()"
                ).format(store.table),
                (store.client_id, store.cloud_id, Jsonb(document)),
            )
            self._conn.commit()
        except psycopg.Error as exc:
            msg = (
                f"Could not save the rotated refresh token in {store.location} "
                f"({store.describe_error(exc)}); the refresh token was spent; rerun within 10 "
                "minutes, once the database is back, while Atlassian still accepts the stored "
                "token."
            )
            raise TokenStoreError(msg) from None
