"""The PostgreSQL token store against a strict server, edited rows and a planted table.

A real throwaway PostgreSQL (simulator/postgres.py) and a tiny loopback token server; nothing is
mocked.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from tap_confluence.auth import AtlassianOAuthAuthenticator
from tap_confluence.crypto import new_key
from tap_confluence.errors import Secrets
from tap_confluence.token_store import TokenRecord, TokenStoreError, open_store, seed_fingerprint
from tap_confluence.token_store_pg import TABLE, PostgresTokenStore
from tests.e2e.conftest import postgres  # noqa: F401  (the session's throwaway server)

KEY = new_key()
SEED = "fake-refresh-token-seed-pg"


@pytest.fixture
def url(postgres):  # noqa: F811
    return postgres.create_database(f"tokh_{uuid.uuid4().hex[:10]}")


class _TokenServer:
    """Answers every refresh with fresh fake tokens after ``delay`` seconds; records bodies."""

    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[dict] = []
        counter = itertools.count(1)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append(json.loads(self.rfile.read(length)))
                time.sleep(delay)
                n = next(counter)
                data = json.dumps(
                    {
                        "access_token": f"fake-access-pg-{n}",
                        "refresh_token": f"fake-refresh-pg-{n}",
                        "expires_in": 3600,
                        "scope": "read:audit-log:confluence offline_access",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def token_server() -> Iterator[type[_TokenServer]]:
    started: list[_TokenServer] = []

    def start(delay: float = 0.0) -> _TokenServer:
        server = _TokenServer(delay)
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        server.stop()


def _store(url: str, cloud_id: str = "cloud-a", client_id: str = "fake-client-id"):
    store = open_store(
        cloud_id=cloud_id, client_id=client_id, token_store_url=url, token_store_key=KEY
    )
    assert isinstance(store, PostgresTokenStore)
    return store


def _auth(endpoint: str, store, cloud_id: str = "cloud-a", seed: str = SEED):
    return AtlassianOAuthAuthenticator(
        auth_endpoint=endpoint,
        client_id="fake-client-id",
        client_secret="fake-client-secret",
        refresh_token=seed,
        store=store,
        secrets=Secrets(),
        cloud_id=cloud_id,
    )


def _record(token: str) -> TokenRecord:
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint(token),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        cloud_id="cloud-a",
    )


def _execute(url: str, statement: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


# ---- item 8: a strict idle-in-transaction timeout never cuts a refresh in half ---------------


def test_a_short_idle_in_transaction_timeout_does_not_lose_the_rotated_token(url, token_server):
    database = url.rsplit("/", 1)[1]
    # Shorter than the token call below: the row lock's transaction sits idle across it.
    _execute(url, f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 1000')
    server = token_server(delay=2.5)
    auth = _auth(server.url, _store(url))
    auth.update_access_token()
    assert len(server.received) == 1
    with _store(url).session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-refresh-pg-1"
    assert auth.access_token == "fake-access-pg-1"


# ---- item 9: rows are sealed, sealed for their own key, in a table the tap can trust -------


def test_an_unencrypted_row_is_refused_when_a_key_is_set(url):
    with _store(url).session() as session:
        session.save(_record("fake-refresh-sealed-1"))
    planted = _record("fake-refresh-planted-plaintext").to_json()
    _execute(
        url,
        f"UPDATE {TABLE} SET document = %s::jsonb WHERE cloud_id = 'cloud-a'",  # noqa: S608
        (json.dumps(planted),),
    )
    with pytest.raises(TokenStoreError) as info, _store(url).session() as session:
        session.load()
    message = str(info.value)
    assert "clear text" in message
    assert "fake-refresh-planted-plaintext" not in message


@pytest.mark.parametrize(("cloud", "client"), [("cloud-b", "fake-client-id"),
                                               ("cloud-a", "fake-other-client")])  # fmt: skip
def test_a_row_copied_to_another_key_is_refused(url, cloud, client):
    with _store(url, cloud, client).session() as session:
        session.save(_record("fake-refresh-of-the-other-key"))
    with _store(url).session() as session:
        session.save(_record("fake-refresh-of-cloud-a"))
    _execute(
        url,
        f"UPDATE {TABLE} SET document = (SELECT document FROM {TABLE} "  # noqa: S608
        "WHERE cloud_id = %s AND client_id = %s) WHERE cloud_id = 'cloud-a' "
        "AND client_id = 'fake-client-id'",
        (cloud, client),
    )
    with pytest.raises(TokenStoreError) as info, _store(url).session() as session:
        session.load()
    message = str(info.value)
    assert "cloud-a" in message
    assert "sealed for" in message
    assert "fake-refresh-of-the-other-key" not in message


def test_a_token_table_planted_by_another_role_is_refused(url, postgres):  # noqa: F811
    tag = uuid.uuid4().hex[:6]
    tap_user, intruder = f"tapuser_{tag}", f"intruder_{tag}"
    _execute(url, f"CREATE ROLE {tap_user} LOGIN")
    _execute(url, f"CREATE ROLE {intruder} LOGIN")
    # A schema named after the tap's user comes first in its default search_path ("$user").
    _execute(url, f"CREATE SCHEMA {tap_user} AUTHORIZATION {intruder}")
    _execute(url, f"GRANT USAGE ON SCHEMA {tap_user} TO {tap_user}")
    intruder_url = url.replace(f"{postgres.user}@", f"{intruder}@")
    _execute(
        intruder_url,
        f"CREATE TABLE {tap_user}.{TABLE} (client_id text NOT NULL, cloud_id text NOT NULL, "
        "document jsonb, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz, "
        "PRIMARY KEY (client_id, cloud_id))",
    )
    _execute(intruder_url, f"GRANT ALL ON {tap_user}.{TABLE} TO {tap_user}")
    tap_url = url.replace(f"{postgres.user}@", f"{tap_user}@")

    with pytest.raises(TokenStoreError) as info, _store(tap_url).session() as session:
        session.save(_record("fake-refresh-for-the-intruder"))
    message = str(info.value)
    assert intruder in message
    assert f"{tap_user}.{TABLE}" in message
    with psycopg.connect(intruder_url) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {tap_user}.{TABLE}").fetchone()[0]  # noqa: S608
    assert rows == 0


def test_a_table_an_administrator_created_serves_the_tap_user(url, postgres):  # noqa: F811
    _store(url).check_writable()  # the table, created by the superuser
    tap_user = f"tapuser_{uuid.uuid4().hex[:6]}"
    _execute(url, f"CREATE ROLE {tap_user} LOGIN")
    _execute(url, f"GRANT SELECT, INSERT, UPDATE ON {TABLE} TO {tap_user}")
    tap_url = url.replace(f"{postgres.user}@", f"{tap_user}@")
    with _store(tap_url).session() as session:
        session.save(_record("fake-refresh-tap-user"))
    with _store(tap_url).session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-refresh-tap-user"
