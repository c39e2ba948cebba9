"""The PostgreSQL token store against a real throwaway server: sealed rows, row locks, errors."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from singer_sdk.exceptions import ConfigValidationError

from simulator.postgres import ThrowawayPostgres, free_port
from simulator.process import SimulatorProcess
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.postgres import PostgresTokenStore
from tap_confluence.oauth.store.postgres_table import TABLE, safe_location
from tap_confluence.oauth.store.record import TokenRecord, TokenStoreError, seed_fingerprint
from tap_confluence.redact import Secrets
from tap_confluence.settings.rules import check_store_settings

KEY = new_key()
EXPIRES_AT = time.time() + 3600


@pytest.fixture
def url(postgres: ThrowawayPostgres) -> str:
    """A fresh database per test, so table creation is exercised every time."""
    name = f"tok_{uuid.uuid4().hex[:10]}"
    return postgres.create_database(name)


def _store(url: str, cloud_id: str = "cloud-a", key: str = KEY, **kw: Any) -> PostgresTokenStore:
    store = open_store(
        cloud_id=cloud_id,
        client_id="fake-client-id",
        token_store_url=url,
        token_store_key=key,
        **kw,
    )
    assert isinstance(store, PostgresTokenStore)
    return store


def _record(
    token: str = "fake-rotated-token-1",  # noqa: S107
    access: str | None = "fake-access-1",
) -> TokenRecord:
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint("fake-refresh-token-seed"),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        access_token=access,
        access_token_expires_at=EXPIRES_AT if access else None,
        cloud_id="cloud-a",
    )


def _table_text(url: str) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT t::text FROM {TABLE} t").fetchall()  # noqa: S608
    return "\n".join(r[0] for r in rows)


def test_first_save_creates_the_table_and_row_and_reads_back_the_same_record(url: str) -> None:
    store = _store(url)
    with store.session() as session:
        assert session.load() is None
        session.save(_record())
    with _store(url).session() as session:
        assert session.load() == _record()


def test_tokens_are_sealed_in_the_row_and_the_metadata_stays_readable(url: str) -> None:
    with _store(url).session() as session:
        session.save(_record("fake-rotated-token-xyz", "fake-access-token-xyz"))
    text = _table_text(url)
    assert "fake-rotated-token-xyz" not in text
    assert "fake-access-token-xyz" not in text
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT document FROM {TABLE}").fetchone()  # noqa: S608
        assert row is not None
        document = row[0]
    assert document["sealed"].startswith("gAAAAA")  # a Fernet token
    assert document["rotated_at"] == "2026-11-29T00:00:00Z"
    assert "refresh_token" not in document
    assert "access_token" not in document


def test_one_row_per_app_and_site(url: str) -> None:
    for cloud, token in (("cloud-a", "fake-rt-a"), ("cloud-b", "fake-rt-b")):
        with _store(url, cloud).session() as session:
            session.save(_record(token))
    other_app = PostgresTokenStore(
        url, client_id="fake-other-client", cloud_id="cloud-a", cipher=_store(url).cipher
    )
    with other_app.session() as session:
        assert session.load() is None
        session.save(_record("fake-rt-other-app"))
    with _store(url, "cloud-b").session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-rt-b"
    with psycopg.connect(url) as conn:
        keys = conn.execute(f"SELECT client_id, cloud_id FROM {TABLE} ORDER BY 1, 2").fetchall()  # noqa: S608
    assert keys == [
        ("fake-client-id", "cloud-a"),
        ("fake-client-id", "cloud-b"),
        ("fake-other-client", "cloud-a"),
    ]


def test_many_workers_creating_the_same_row_at_once_all_succeed_with_one_row(url: str) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(10)
            with _store(url, "cloud-race").session() as session:
                if session.load() is None:
                    session.save(_record())
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()  # noqa: S608
        assert row is not None
        count = row[0]
    assert count == 1


def test_row_lock_is_held_from_load_to_save(url: str) -> None:
    with _store(url).session() as session:
        session.save(_record("fake-rt-before"))  # the row exists: only FOR UPDATE can block
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with _store(url).session() as session:
            session.load()
            order.append("first-in")
            inside.set()
            time.sleep(0.3)
            order.append("first-saves")
            session.save(_record("fake-rt-from-first"))

    worker = threading.Thread(target=first)
    worker.start()
    assert inside.wait(30)
    with _store(url).session() as session:
        seen = session.load()
        order.append("second-in")
    worker.join(30)
    assert order == ["first-in", "first-saves", "second-in"]
    # The second session waited for the commit, so it read the first one's token.
    assert seen is not None
    assert seen.refresh_token == "fake-rt-from-first"


def test_waiting_too_long_for_the_row_lock_says_another_run_holds_it(url: str) -> None:
    with _store(url).session() as session:
        session.save(_record())
    with _store(url).session() as holder:
        holder.load()
        waiter = _store(url, lock_timeout=0.2)
        with pytest.raises(TokenStoreError, match="Another tap-confluence run has held"):  # noqa: SIM117
            with waiter.session() as session:
                session.load()


def test_nothing_is_saved_when_the_session_ends_without_save(url: str) -> None:
    with _store(url).session() as session:
        session.save(_record("fake-rt-saved"))

    def fail_mid_refresh() -> None:
        with _store(url).session() as session:
            session.load()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_mid_refresh()
    with _store(url).session() as session:
        record = session.load()
    assert record is not None
    assert record.refresh_token == "fake-rt-saved"


def test_wrong_key_is_one_sentence_and_never_falls_back_to_plaintext(url: str) -> None:
    with _store(url).session() as session:
        session.save(_record())
    with pytest.raises(TokenStoreError) as info, _store(url, key=new_key()).session() as session:
        session.load()
    message = str(info.value)
    assert "token_store_key does not open the tokens" in message
    assert "fake-rotated-token-1" not in message
    assert KEY not in message


def test_new_key_first_and_old_key_after_opens_old_rows_and_reseals_with_the_new_key(
    url: str,
) -> None:
    with _store(url).session() as session:
        session.save(_record())
    fresh = new_key()
    with _store(url, key=f"{fresh},{KEY}").session() as session:
        record = session.load()
        assert record == _record()
        assert record is not None
        session.save(record)
    with _store(url, key=fresh).session() as session:
        assert session.load() == _record()
    with pytest.raises(TokenStoreError), _store(url, key=KEY).session() as session:
        session.load()


def test_url_without_key_is_refused_by_the_settings_check_and_the_store() -> None:
    config = {"token_store_url": "postgresql://tap@db.example.invalid/tokens"}
    with pytest.raises(ConfigValidationError, match="token_store_url needs token_store_key"):
        check_store_settings(config)
    with pytest.raises(TokenStoreError, match="token_store_url needs token_store_key"):
        open_store(cloud_id="c", client_id="x", token_store_url=config["token_store_url"])


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"token_store_key": "not-a-fernet-key"}, "token_store_key is not a Fernet key"),
        (
            {"token_store_key": KEY, "token_store_url": "mysql://tap@db/tokens"},
            "token_store_url must be a PostgreSQL URL",
        ),
        (
            {"token_store_key": f"{KEY},short"},
            "key 2 of 2 in token_store_key is not a Fernet key",
        ),
    ],
)
def test_bad_store_settings_are_one_sentence_without_the_key(
    config: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigValidationError) as info:
        check_store_settings(config)
    assert words in str(info.value)
    assert KEY not in str(info.value)


def test_sqlalchemy_style_urls_are_accepted_and_messages_drop_the_password() -> None:
    url = "postgresql+psycopg://tap:fake-db-password@db.example.invalid:6543/tokens?sslmode=require"
    check_store_settings({"token_store_url": url, "token_store_key": KEY})
    assert safe_location(url) == "postgresql://tap@db.example.invalid:6543/tokens"


def test_unreachable_database_is_one_sentence_without_the_password() -> None:
    url = f"postgresql://tap:fake-db-password@127.0.0.1:{free_port()}/tokens"
    store = _store(url)
    with pytest.raises(TokenStoreError) as info:
        store.check_writable()
    message = str(info.value)
    assert message.startswith("Could not connect to the token store postgresql://tap@127.0.0.1")
    assert "check token_store_url" in message
    assert "fake-db-password" not in message


def test_user_without_update_right_is_told_before_a_token_is_spent(
    url: str, postgres: ThrowawayPostgres
) -> None:
    _store(url).check_writable()  # creates the table as the owner
    reader = f"reader_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute(f"GRANT SELECT ON {TABLE} TO {reader}")
    reader_url = url.replace(f"{postgres.user}@", f"{reader}@")
    with pytest.raises(TokenStoreError, match="cannot be written"):
        _store(reader_url).check_writable()


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    process = simulator_factory(users=4, guests=1, groups=2, audit_records=10, content=2)
    # Any reuse of a rotated refresh token would revoke the whole family at once.
    process.control("config", {"reuse_leeway": 0})
    return process


def test_workers_refreshing_at_once_through_the_database_never_spend_a_token_twice(
    sim: SimulatorProcess, url: str
) -> None:
    rounds, workers = 8, 3
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    tokens_used: list[str] = []

    def worker() -> None:
        # Each worker is a separate process in real life: its own authenticator and store.
        auth = AtlassianOAuthAuthenticator(
            auth_endpoint=f"{sim.url}/oauth/token",
            client_id=sim.creds.client_id,
            client_secret=sim.creds.client_secret,
            refresh_token=sim.creds.seed_refresh_token,
            store=_store(url, sim.cloud_id),
            secrets=Secrets(),
            cloud_id=sim.cloud_id,
        )
        try:
            for _ in range(rounds):
                barrier.wait(60)
                # As after a 401: the held access token is dead, so the next use refreshes
                # unless another worker already stored a newer one.
                auth.note_rejected(auth.access_token)
                auth.update_access_token()
                tokens_used.append(str(auth.access_token))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
    assert stats["refreshes"] >= rounds
    issued = sim.control("tokens")
    current = [t for t in issued["refresh_tokens"] if t["state"] == "current"]
    assert len(current) == 1
    with _store(url, sim.cloud_id).session() as session:
        stored = session.load()
    assert stored is not None
    assert stored.refresh_token == current[0]["token"]
    assert set(tokens_used) <= {t["token"] for t in issued["access_tokens"]}
    text = _table_text(url)
    leaked = [t["token"][:8] for k in ("refresh_tokens", "access_tokens") for t in issued[k]]
    assert not [t for t in leaked if t in text]
