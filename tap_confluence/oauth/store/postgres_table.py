"""Where the PostgreSQL token store keeps its rows: the connection, and the one table trusted.

A connection carries the settings a row lock held across an HTTP call needs; the table is
found (or created) once per process and database, and refused when a stranger owns it. The
database is named in messages without its password.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tap_confluence.oauth.store.record import TokenStoreError
from tap_confluence.redact import Secrets

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


def hold_across_the_token_call(conn: psycopg.Connection[t.Any]) -> None:
    """Keep this transaction (and its row lock) alive however long the token call takes.

    A server-side idle_in_transaction_session_timeout shorter than the HTTP call would end
    the session mid-refresh: the token spent, the new one never saved, the lock gone for a
    second worker. SET LOCAL lasts for this transaction only, so a pooled connection is left
    as it was.
    """
    conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")


class TokenTable:
    """The token table of one database: connections to it, and its schema-qualified name."""

    #: The schema-qualified table, resolved (and its owner checked) once per process and
    #: database.
    _resolved: t.ClassVar[dict[str, sql.Identifier]] = {}

    def __init__(self, url: str, *, lock_timeout: float, connect_timeout: int) -> None:
        """Point at the database; nothing connects until connect() is called."""
        self._conninfo = conninfo_of(url)
        self.safe_url = safe_location(url)
        self._lock_timeout = lock_timeout
        self._connect_timeout = connect_timeout
        self._qualified: sql.Identifier | None = None
        self._secrets = Secrets()
        self._secrets.add(urlsplit(self._conninfo).password)

    @property
    def qualified(self) -> sql.Identifier:
        """The schema-qualified table (resolved by the first connection)."""
        if self._qualified is None:
            msg = "the token table is resolved by the first connection"
            raise RuntimeError(msg)
        return self._qualified

    # One connection per session, so a long run never holds an idle connection that a
    # firewall or the server's idle timeout could cut between two hourly refreshes.

    def connect(self) -> psycopg.Connection[t.Any]:
        """Open a connection (no autocommit) with the table resolved, or raise one sentence."""
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
                f"Could not connect to the token store {self.safe_url} "
                f"({self.describe_error(exc)}); "
                "check token_store_url and that the database accepts connections from here."
            )
            raise TokenStoreError(msg) from None
        try:
            conn.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")
            self._resolve(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def describe_error(self, exc: psycopg.Error) -> str:
        """Return the driver's last line about ``exc``, short and without the password."""
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return self._secrets.redact(text)[:200]

    def _resolve(self, conn: psycopg.Connection[t.Any]) -> None:
        cached = self._resolved.get(self._conninfo)
        if cached is not None:
            self._qualified = cached
            return
        try:
            found = conn.execute(_FIND, (TABLE,)).fetchone()
            if found is None:
                schema = conn.execute("SELECT current_schema()").fetchone()
                if not schema or schema[0] is None:
                    conn.rollback()
                    msg = (
                        f"The search path of token_store_url {self.safe_url} names no schema "
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
                f"Could not create the table {TABLE} in {self.safe_url} "
                f"({self.describe_error(exc)}); "
                "create it once as a user with CREATE on the schema (see the README), or grant "
                "that right to the tap's user."
            )
            raise TokenStoreError(msg) from None
        if found is None:
            msg = f"The table {TABLE} in {self.safe_url} vanished as it was created; retry."
            raise TokenStoreError(msg)
        schema_name, owner, trusted = found
        if not trusted:
            msg = (
                f"The table {schema_name}.{TABLE} that token_store_url {self.safe_url} leads "
                f"to belongs to the role {owner}, which is neither the tap's user, a superuser "
                "nor the database owner, so the tap will not keep tokens in it; drop it (or set "
                "search_path to the schema of the real table), then rerun."
            )
            raise TokenStoreError(msg)
        self._qualified = sql.Identifier(str(schema_name), TABLE)
        self._resolved[self._conninfo] = self._qualified
