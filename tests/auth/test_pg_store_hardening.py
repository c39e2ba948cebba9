"""The PostgreSQL token store against a strict server, edited rows and a planted table.

A real throwaway PostgreSQL (simulator/postgres.py) and a tiny loopback token server; nothing is
mocked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import psycopg
import pytest

from simulator.postgres import ThrowawayPostgres
from tap_confluence.oauth.store.postgres_table import TABLE
from tap_confluence.oauth.store.record import TokenRecord, TokenStoreError, seed_fingerprint
from tests.support.pg_store import TokenServer, pg_auth, pg_store


def _record(token: str) -> TokenRecord:
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint(token),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        cloud_id="cloud-a",
    )


def _execute(token_db_url: str, statement: str, params: tuple[str, ...] = ()) -> None:
    with psycopg.connect(token_db_url, autocommit=True) as conn:
        conn.execute(statement, params)


# ---- item 8: a strict idle-in-transaction timeout never cuts a refresh in half ---------------


def test_a_short_idle_in_transaction_timeout_does_not_lose_the_rotated_token(
    token_db_url: str, token_server: Callable[..., TokenServer]
) -> None:
    database = token_db_url.rsplit("/", 1)[1]
    # Shorter than the token call below: the row lock's transaction sits idle across it.
    _execute(
        token_db_url, f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 1000'
    )
    server = token_server(delay=2.5)
    auth = pg_auth(server.url, pg_store(token_db_url))
    auth.update_access_token()
    assert len(server.received) == 1
    with pg_store(token_db_url).session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-refresh-pg-1"
    assert auth.access_token == "fake-access-pg-1"


# ---- item 9: rows are sealed, sealed for their own key, in a table the tap can trust -------


def test_an_unencrypted_row_is_refused_when_a_key_is_set(token_db_url: str) -> None:
    with pg_store(token_db_url).session() as session:
        session.save(_record("fake-refresh-sealed-1"))
    planted = _record("fake-refresh-planted-plaintext").to_json()
    _execute(
        token_db_url,
        f"UPDATE {TABLE} SET document = %s::jsonb WHERE cloud_id = 'cloud-a'",  # noqa: S608
        (json.dumps(planted),),
    )
    with pytest.raises(TokenStoreError) as info, pg_store(token_db_url).session() as session:
        session.load()
    message = str(info.value)
    assert "clear text" in message
    assert "fake-refresh-planted-plaintext" not in message


@pytest.mark.parametrize(("cloud", "client"), [("cloud-b", "fake-client-id"),
                                               ("cloud-a", "fake-other-client")])  # fmt: skip
def test_a_row_copied_to_another_key_is_refused(token_db_url: str, cloud: str, client: str) -> None:
    with pg_store(token_db_url, cloud, client).session() as session:
        session.save(_record("fake-refresh-of-the-other-key"))
    with pg_store(token_db_url).session() as session:
        session.save(_record("fake-refresh-of-cloud-a"))
    _execute(
        token_db_url,
        f"UPDATE {TABLE} SET document = (SELECT document FROM {TABLE} "  # noqa: S608
        "WHERE cloud_id = %s AND client_id = %s) WHERE cloud_id = 'cloud-a' "
        "AND client_id = 'fake-client-id'",
        (cloud, client),
    )
    with pytest.raises(TokenStoreError) as info, pg_store(token_db_url).session() as session:
        session.load()
    message = str(info.value)
    assert "cloud-a" in message
    assert "sealed for" in message
    assert "fake-refresh-of-the-other-key" not in message


def test_a_token_table_planted_by_another_role_is_refused(
    token_db_url: str, postgres: ThrowawayPostgres
) -> None:
    tag = uuid.uuid4().hex[:6]
    tap_user, intruder = f"tapuser_{tag}", f"intruder_{tag}"
    _execute(token_db_url, f"CREATE ROLE {tap_user} LOGIN")
    _execute(token_db_url, f"CREATE ROLE {intruder} LOGIN")
    # A schema named after the tap's user comes first in its default search_path ("$user").
    _execute(token_db_url, f"CREATE SCHEMA {tap_user} AUTHORIZATION {intruder}")
    _execute(token_db_url, f"GRANT USAGE ON SCHEMA {tap_user} TO {tap_user}")
    intruder_url = token_db_url.replace(f"{postgres.user}@", f"{intruder}@")
    _execute(
        intruder_url,
        f"CREATE TABLE {tap_user}.{TABLE} (client_id text NOT NULL, cloud_id text NOT NULL, "
        "document jsonb, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz, "
        "PRIMARY KEY (client_id, cloud_id))",
    )
    _execute(intruder_url, f"GRANT ALL ON {tap_user}.{TABLE} TO {tap_user}")
    tap_url = token_db_url.replace(f"{postgres.user}@", f"{tap_user}@")

    with pytest.raises(TokenStoreError) as info, pg_store(tap_url).session() as session:
        session.save(_record("fake-refresh-for-the-intruder"))
    message = str(info.value)
    assert intruder in message
    assert f"{tap_user}.{TABLE}" in message
    with psycopg.connect(intruder_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {tap_user}.{TABLE}").fetchone()  # noqa: S608
        assert row is not None
        rows = row[0]
    assert rows == 0


def test_a_table_an_administrator_created_serves_the_tap_user(
    token_db_url: str, postgres: ThrowawayPostgres
) -> None:
    pg_store(token_db_url).check_writable()  # the table, created by the superuser
    tap_user = f"tapuser_{uuid.uuid4().hex[:6]}"
    _execute(token_db_url, f"CREATE ROLE {tap_user} LOGIN")
    _execute(token_db_url, f"GRANT SELECT, INSERT, UPDATE ON {TABLE} TO {tap_user}")
    tap_url = token_db_url.replace(f"{postgres.user}@", f"{tap_user}@")
    with pg_store(tap_url).session() as session:
        session.save(_record("fake-refresh-tap-user"))
    with pg_store(tap_url).session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-refresh-tap-user"
