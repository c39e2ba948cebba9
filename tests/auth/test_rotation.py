"""OAuth with rotating refresh tokens, over real sockets: persisted, never spent twice."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess, refresh
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint
from tap_confluence.redact import Secrets
from tests.support.tap_cli import REPO_ROOT, run_tap, tap_command, write_json

SMALL = {"users": 20, "guests": 3, "groups": 4, "audit_records": 300}


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    process = simulator_factory(**SMALL)
    # Any reuse of a rotated refresh token would revoke the whole family at once.
    process.control("config", {"reuse_leeway": 0})
    return process


def _token_state(sim: SimulatorProcess, token: str) -> tuple[str, str]:
    """(family, state) the simulator holds for a refresh token."""
    for entry in sim.control("tokens")["refresh_tokens"]:
        if entry["token"] == token:
            return entry["family"], entry["state"]
    raise AssertionError("the store holds a refresh token the simulator never issued")


def _stored(config: dict[str, Any]) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(Path(config["token_store_path"]).read_text())
    return stored


def test_rotated_token_is_persisted_and_used_by_the_next_run(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth")
    first = run_tap(tmp_path, config)
    assert first.returncode == 0, first.stderr[-2000:]
    stored_after_first = _stored(config)["refresh_token"]
    assert stored_after_first != config["refresh_token"]
    assert sim.stats()["refreshes"] == 1

    # The access token saved by run 1 dies; run 2 gets a 401, refreshes once with the
    # rotated token from the store and carries on.
    sim.control("expire-access-tokens", {})
    second = run_tap(tmp_path, config)
    assert second.returncode == 0, second.stderr[-2000:]
    stats = sim.stats()
    assert stats["refreshes"] == 2
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
    stored_after_second = _stored(config)["refresh_token"]
    family, state = _token_state(sim, stored_after_second)
    assert state == "current"
    assert _token_state(sim, stored_after_first) == (family, "rotated")
    assert len(second.records("audit_records")) == SMALL["audit_records"]


def test_second_run_within_the_hour_reuses_the_stored_access_token(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth")
    assert run_tap(tmp_path, config).returncode == 0
    assert run_tap(tmp_path, config).returncode == 0
    assert sim.stats()["refreshes"] == 1


def _authenticator(sim: SimulatorProcess, store_path: Path) -> AtlassianOAuthAuthenticator:
    return AtlassianOAuthAuthenticator(
        auth_endpoint=f"{sim.url}/oauth/token",
        client_id=sim.creds.client_id,
        client_secret=sim.creds.client_secret,
        refresh_token=sim.creds.seed_refresh_token,
        store=FileTokenStore(store_path),
        secrets=Secrets(),
        cloud_id=sim.cloud_id,
    )


@pytest.mark.parametrize(("seconds_left", "refreshes"), [(60, 1), (3000, 0)])
def test_stored_access_token_is_refreshed_ahead_of_expiry(
    sim: SimulatorProcess, tmp_path: Path, seconds_left: int, refreshes: int
) -> None:
    status, body = refresh(sim)
    assert status == 200
    now = time.time()
    store = FileTokenStore(tmp_path / "store.json")
    with store.session() as session:
        session.save(
            TokenRecord(
                refresh_token=body["refresh_token"],
                seed_fingerprint=seed_fingerprint(sim.creds.seed_refresh_token),
                scopes=body["scope"].split(),
                rotated_at=time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600 + seconds_left)
                ),
                family_started_at="2026-11-01T00:00:00Z",
                access_token=body["access_token"],
                access_token_expires_at=now + seconds_left,
            )
        )
    sim.control("reset-stats", {})
    auth = _authenticator(sim, store.path)
    auth.update_access_token()
    # A one-hour token with a minute left is inside the 5-minute margin: refreshed first.
    assert sim.stats()["refreshes"] == refreshes
    assert (auth.access_token != body["access_token"]) is bool(refreshes)


def test_new_configured_refresh_token_wins_over_the_store(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth")
    assert run_tap(tmp_path, config).returncode == 0
    old_family, _ = _token_state(sim, _stored(config)["refresh_token"])

    seed_scopes = [
        "read:content-details:confluence",
        "read:audit-log:confluence",
        "read:configuration:confluence",
        "offline_access",
    ]
    fresh = sim.control("grant", {"scopes": seed_scopes, "admin": True})["refresh_token"]
    run = run_tap(tmp_path, {**config, "refresh_token": fresh})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "is new to the token store" in run.stderr
    new_family, state = _token_state(sim, _stored(config)["refresh_token"])
    assert new_family != old_family
    assert state == "current"
    assert _token_state(sim, fresh)[1] == "rotated"
    assert sim.stats()["revoked_families"] == 0


def test_unwritable_store_fails_before_the_refresh_token_is_spent(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = sim.tap_config("oauth", token_store_path=str(blocker / "store.json"))
    run = run_tap(tmp_path, config)
    assert run.returncode == 1
    assert "cannot be written" in run.stderr
    assert "Traceback" not in run.stderr
    assert sim.stats()["refreshes"] == 0
    assert _token_state(sim, config["refresh_token"])[1] == "current"


def test_corrupt_store_gives_one_sentence_and_spends_nothing(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth")
    Path(config["token_store_path"]).write_text("{definitely not json")
    run = run_tap(tmp_path, config)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert any(config["token_store_path"] in line and "move it aside" in line for line in errors)
    assert "Traceback" not in run.stderr
    assert sim.stats()["refreshes"] == 0


def test_refused_refresh_token_says_to_run_the_consent_flow_again(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("oauth", refresh_token="fake-refresh-token-never-issued")
    run = run_tap(tmp_path, config)
    assert run.returncode == 1
    assert "Atlassian refused the configured refresh_token" in run.stderr
    assert "run the OAuth consent flow again" in run.stderr
    assert "Traceback" not in run.stderr


def test_two_runs_at_once_never_spend_the_same_refresh_token(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config_path = write_json(tmp_path / "config.json", sim.tap_config("oauth"))
    procs = [
        subprocess.Popen(
            tap_command(config_path),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for proc in procs:
        if proc.stderr:
            proc.stderr.close()
    assert [code for code, _ in results] == [0, 0], results[0][1][-2000:]
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
    # The lock made the second run adopt the first one's fresh access token.
    assert stats["refreshes"] == 1
