"""The token store as tap-confluence-auth uses it: records it writes, the tap runs from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.auth import SEED_SCOPES
from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import store_files
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint
from tap_confluence.settings.auth import AuthMode, resolve_auth
from tests.support.tap_cli import run_tap

SMALL = {"users": 4, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}


def _login_record(refresh_token: str, cloud_id: str, superseded: list[str]) -> TokenRecord:
    """A record shaped as `tap-confluence-auth login` writes it (no access token)."""
    return TokenRecord(
        refresh_token=refresh_token,
        seed_fingerprint=seed_fingerprint(refresh_token),
        scopes=sorted(SEED_SCOPES),
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-29T00:00:00Z",
        cloud_id=cloud_id,
        superseded_seeds=superseded,
    )


def test_records_written_before_cloud_id_was_kept_still_load(tmp_path: Path) -> None:
    old = {
        "version": 1,
        "refresh_token": "fake-rotated-9",
        "seed_fingerprint": "ab" * 16,
        "scopes": [],
        "rotated_at": "2026-11-01T00:00:00Z",
        "family_started_at": "2026-10-01T00:00:00Z",
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(old))
    record = FileTokenStore(path).read()
    assert record is not None
    assert record.cloud_id is None
    assert record.superseded_seeds == []


def test_store_files_lists_store_json_files_of_a_directory_or_one_file(tmp_path: Path) -> None:
    for name in ("b.json", "a.json", ".a.json.123.tmp", "a.json.lock", ".hidden.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in store_files(str(tmp_path))] == ["a.json", "b.json"]
    assert store_files(str(tmp_path / "a.json")) == [tmp_path / "a.json"]
    assert store_files(str(tmp_path / "missing.json")) == []


def test_oauth_without_refresh_token_is_a_valid_combination() -> None:
    plan = resolve_auth({"cloud_id": "c1", "client_id": "x", "client_secret": "fake-secret"})
    assert plan.mode is AuthMode.OAUTH


def test_tap_syncs_from_a_login_written_store_without_refresh_token(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    token = sim.control("grant", {"scopes": SEED_SCOPES})["refresh_token"]
    store_path = tmp_path / "store.json"
    with FileTokenStore(store_path).session() as session:
        session.save(_login_record(token, sim.cloud_id, []))
    config = sim.tap_config("oauth", token_store_path=str(store_path))
    del config["refresh_token"]
    run = run_tap(tmp_path, config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("users")) == SMALL["users"] + SMALL["guests"]
    rotated = FileTokenStore(store_path).read()
    assert rotated is not None
    assert rotated.refresh_token != token
    assert rotated.seed_fingerprint == seed_fingerprint(token)
    assert rotated.cloud_id == sim.cloud_id


def test_tap_without_refresh_token_or_store_says_to_run_login(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("oauth", token_store_path=str(tmp_path / "empty.json"))
    del config["refresh_token"]
    run = run_tap(tmp_path, config)
    assert run.returncode != 0
    assert "holds no refresh token" in run.stderr
    assert "tap-confluence-auth login" in run.stderr
    assert "Traceback" not in run.stderr


def test_configured_token_replaced_by_a_later_consent_is_not_spent(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    seed = sim.creds.seed_refresh_token
    token = sim.control("grant", {"scopes": SEED_SCOPES})["refresh_token"]
    store_path = tmp_path / "store.json"
    with FileTokenStore(store_path).session() as session:
        session.save(_login_record(token, sim.cloud_id, [seed_fingerprint(seed)]))
    run = run_tap(tmp_path, sim.tap_config("oauth", token_store_path=str(store_path)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "older than the one a later consent stored" in run.stderr
    states = {r["token"]: r["state"] for r in sim.control("tokens")["refresh_tokens"]}
    assert states[seed] == "current"  # the stale configured token was never sent
    assert states[token] == "rotated"


@pytest.mark.parametrize("stale", [False, True])
def test_a_configured_token_new_to_the_store_still_wins(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path, stale: bool
) -> None:
    sim = simulator_factory(**SMALL)
    seed = sim.creds.seed_refresh_token
    token = sim.control("grant", {"scopes": SEED_SCOPES})["refresh_token"]
    store_path = tmp_path / "store.json"
    superseded = ["cd" * 16] if stale else []
    with FileTokenStore(store_path).session() as session:
        session.save(_login_record(token, sim.cloud_id, superseded))
    run = run_tap(tmp_path, sim.tap_config("oauth", token_store_path=str(store_path)))
    assert run.returncode == 0, run.stderr[-2000:]
    states = {r["token"]: r["state"] for r in sim.control("tokens")["refresh_tokens"]}
    assert states[seed] == "rotated"
    assert states[token] == "current"
