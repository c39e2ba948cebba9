"""tap-confluence-auth with the PostgreSQL token store: login, status, migrate, new-key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import requests

from simulator.postgres import ThrowawayPostgres
from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.postgres_table import TABLE
from tap_confluence.oauth.store.record import TokenRecord
from tests.support.auth_cli import (
    clean_env,
    issued_secrets,
    run_cli,
    sim_env,
    start_login,
)
from tests.support.tap_cli import run_tap

SMALL = {"users": 4, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}
KEY = new_key()


@pytest.fixture
def url(postgres: ThrowawayPostgres) -> str:
    return postgres.create_database(f"cli_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    process = simulator_factory(**SMALL)
    process.control("config", {"reuse_leeway": 0})
    return process


def _stored(url: str, sim: SimulatorProcess) -> TokenRecord | None:
    store = open_store(
        cloud_id=sim.cloud_id,
        client_id=sim.creds.client_id,
        token_store_url=url,
        token_store_key=KEY,
    )
    with store.session() as session:
        return session.load()


def _states(sim: SimulatorProcess) -> dict[str, str]:
    return {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}


def _table_text(url: str) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT t::text FROM {TABLE} t").fetchall()  # noqa: S608
    return "\n".join(r[0] for r in rows)


def test_new_key_prints_only_a_usable_key_on_stdout(tmp_path: Path) -> None:
    result = run_cli(["new-key"], clean_env(tmp_path))
    assert result.returncode == 0
    key = result.stdout.strip()
    assert len(key) == 44
    open_store(cloud_id="c", client_id="x", token_store_url="postgresql://h/d", token_store_key=key)
    assert "Keep this key as a secret" in result.stderr


def test_login_stores_the_token_sealed_in_postgresql_and_the_tap_syncs_from_it(
    sim: SimulatorProcess, url: str, tmp_path: Path
) -> None:
    env = sim_env(sim, tmp_path, TAP_CONFLUENCE_TOKEN_STORE_KEY=KEY)
    login = start_login(["--port", "0", "--token-store-url", url], env)
    page = requests.get(login.authorization_url(), timeout=60)
    assert "Authorization received" in page.text
    code, out, err = login.finish()
    assert code == 0, err
    record = _stored(url, sim)
    assert record is not None
    assert _states(sim)[record.refresh_token] == "current"
    assert "TAP_CONFLUENCE_TOKEN_STORE_URL=<your token store url>" in out
    assert "TAP_CONFLUENCE_TOKEN_STORE_KEY=<your token store key>" in out
    table = _table_text(url)
    for secret in issued_secrets(sim):
        assert secret not in out + err
        assert secret not in table

    config = sim.tap_config("oauth", token_store_url=url, token_store_key=KEY)
    del config["refresh_token"]
    run = run_tap(tmp_path, config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("users")) == SMALL["users"] + SMALL["guests"]
    assert sim.stats()["revoked_families"] == 0


@pytest.mark.slow
def test_status_lists_the_rows_without_tokens_and_flags_a_wrong_key(
    sim: SimulatorProcess, url: str, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth", token_store_url=url, token_store_key=KEY)
    assert run_tap(tmp_path, config).returncode == 0
    env = sim_env(sim, tmp_path, TAP_CONFLUENCE_TOKEN_STORE_URL=url)

    ok = run_cli(["status"], env | {"TAP_CONFLUENCE_TOKEN_STORE_KEY": KEY})
    assert ok.returncode == 0, ok.stderr
    assert f"cloud {sim.cloud_id}" in ok.stdout
    assert "tokens: encrypted; token_store_key opens them" in ok.stdout
    assert "postgres@127.0.0.1" in ok.stdout

    wrong = run_cli(["status"], env | {"TAP_CONFLUENCE_TOKEN_STORE_KEY": new_key()})
    assert wrong.returncode == 1
    assert "token_store_key does not open the tokens" in wrong.stdout

    missing = run_cli(["status"], env)
    assert missing.returncode == 1
    assert "token_store_url needs token_store_key" in missing.stderr
    assert "Traceback" not in missing.stderr
    for secret in issued_secrets(sim):
        assert secret not in ok.stdout + ok.stderr + wrong.stdout + wrong.stderr


@pytest.mark.slow
def test_migrate_moves_the_file_token_unspent_and_the_tap_goes_on_from_postgresql(
    sim: SimulatorProcess, url: str, tmp_path: Path
) -> None:
    file_config = sim.tap_config("oauth")
    assert run_tap(tmp_path, file_config).returncode == 0
    store_file = tmp_path / "sim0" / "token_store.json"
    token = json.loads(store_file.read_text())["refresh_token"]
    refreshes = sim.stats()["refreshes"]

    env = sim_env(
        sim,
        tmp_path,
        TAP_CONFLUENCE_TOKEN_STORE_PATH=str(store_file),
        TAP_CONFLUENCE_TOKEN_STORE_URL=url,
        TAP_CONFLUENCE_TOKEN_STORE_KEY=KEY,
    )
    moved = run_cli(["migrate"], env)
    assert moved.returncode == 0, moved.stderr
    assert f"Moved the token for cloud {sim.cloud_id}" in moved.stdout
    assert sim.stats()["refreshes"] == refreshes  # nothing was spent
    record = _stored(url, sim)
    assert record is not None
    assert record.refresh_token == token
    assert _states(sim)[token] == "current"
    assert token not in store_file.read_text()
    assert token not in _table_text(url)

    # Running it again changes nothing and says so.
    again = run_cli(["migrate"], env)
    assert again.returncode == 1
    assert "already moved" in again.stdout

    # A run still pointed at the file is stopped before it could spend anything.
    stale = run_tap(tmp_path, file_config)
    assert stale.returncode == 1
    assert "was moved to postgresql://" in stale.stderr
    assert sim.stats()["refreshes"] == refreshes

    sim.control("expire-access-tokens", {})
    pg_config = sim.tap_config("oauth", token_store_url=url, token_store_key=KEY)
    run = run_tap(tmp_path, pg_config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sim.stats()["refreshes"] == refreshes + 1
    assert _states(sim)[token] == "rotated"
    assert sim.stats()["revoked_families"] == 0


def test_migrate_refuses_to_overwrite_a_different_stored_token(
    sim: SimulatorProcess, url: str, tmp_path: Path
) -> None:
    pg_config = sim.tap_config("oauth", token_store_url=url, token_store_key=KEY)
    assert run_tap(tmp_path, pg_config).returncode == 0
    other = sim.control("grant", {"scopes": ["read:audit-log:confluence", "offline_access"]})
    file_config = sim.tap_config("oauth", refresh_token=other["refresh_token"])
    assert run_tap(tmp_path, file_config).returncode == 0
    before = _stored(url, sim)
    env = sim_env(
        sim,
        tmp_path,
        TAP_CONFLUENCE_TOKEN_STORE_PATH=file_config["token_store_path"],
        TAP_CONFLUENCE_TOKEN_STORE_URL=url,
        TAP_CONFLUENCE_TOKEN_STORE_KEY=KEY,
    )
    refused = run_cli(["migrate"], env)
    assert refused.returncode == 1
    assert "already holds a different token" in refused.stderr
    assert "--replace" in refused.stderr
    assert _stored(url, sim) == before
