"""Token store in PostgreSQL, for runs that land on a different machine each time.

One row per (client_id, cloud_id), created on first use. A session is one transaction that
holds the row lock (``SELECT ... FOR UPDATE``) from the read, across the refresh call, to the
commit of the rotated token, so two workers can never spend the same refresh token, and the
new token is durable before the new access token is used. The tokens are always sealed with
token_store_key, together with the row's key, so a sealed value copied to another row is
refused; the rest of the record (dates, scopes) stays readable for ``status``. How the
database is reached, and which table in it is trusted, is postgres_table.py's to say.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from tap_confluence.oauth.store.postgres_table import TABLE, TokenTable, hold_across_the_token_call
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStoreError,
    decode_record,
    encode_record,
    shared_family_sentence,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_confluence.oauth.store.crypto import TokenCipher

#: Libpq's SQLSTATEs for "this connection cannot write" (hot standby, read-only transaction).
_READ_ONLY_STATES = {"25006"}


class PostgresTokenStore:
    """A token store row in PostgreSQL, shared by every worker that can reach the database."""

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
        self.table = TokenTable(url, lock_timeout=lock_timeout, connect_timeout=connect_timeout)
        self.client_id = client_id
        self.cloud_id = cloud_id
        self.cipher = cipher
        self.location = f"{self.table.safe_url} (table {TABLE})"
        self._lock_timeout = lock_timeout
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
                f"({self.table.describe_error(exc)}), so "
                "the tap will not spend the refresh token; point token_store_url at the "
                "primary server with a user that may update the table."
            )
        return TokenStoreError(
            f"The token store {self.location} failed while {doing} "
            f"({self.table.describe_error(exc)}); check the database, then retry."
        )

    def check_writable(self) -> None:
        """Raise TokenStoreError unless the row could be locked and updated right now."""
        if getattr(self._active, "conn", None) is not None:
            return  # inside a session the row lock already proves the right to update it
        conn = self.table.connect()
        try:
            # FOR UPDATE needs the UPDATE privilege and a writable server, and locks nothing
            # when it matches no row.
            conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE false FOR UPDATE").format(self.table.qualified)
            )
            conn.rollback()
        except psycopg.Error as exc:
            raise self.failure(exc, "checking it can be written") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[_PostgresSession]:
        """Hold the row lock in one transaction for the whole block; roll back what is unsaved."""
        conn = self.table.connect()
        self._active.conn = conn
        try:
            try:
                hold_across_the_token_call(conn)
                # Creation on first use is race-free: a second inserter waits for the first
                # one's transaction, then finds the row and does nothing.
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (client_id, cloud_id) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING"
                    ).format(self.table.qualified),
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
        conn = self.table.connect()
        try:
            rows = conn.execute(
                sql.SQL(
                    "SELECT client_id, cloud_id, document FROM {} "
                    "WHERE document IS NOT NULL ORDER BY client_id, cloud_id"
                ).format(self.table.qualified)
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
            hold_across_the_token_call(self._conn)
            row = self._conn.execute(
                sql.SQL(
                    "SELECT document FROM {} WHERE client_id = %s AND cloud_id = %s FOR UPDATE"
                ).format(store.table.qualified),
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
                ).format(store.table.qualified),
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
                ).format(store.table.qualified),
                (store.client_id, store.cloud_id, Jsonb(document)),
            )
            self._conn.commit()
        except psycopg.Error as exc:
            msg = (
                f"Could not save the rotated refresh token in {store.location} "
                f"({store.table.describe_error(exc)}); the refresh token was spent; rerun within "
                "10 minutes, once the database is back, while Atlassian still accepts the stored "
                "token."
            )
            raise TokenStoreError(msg) from None
