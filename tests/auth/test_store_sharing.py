"""One refresh-token family, one store: a second store for the same site or seed is refused.

As Meltano's inherited plugins meet it: `tap-confluence--site-b` inherits site A's settings
and gets its own token file beside site A's. Every run here is the real tap CLI against the
simulator; "nothing spent" is read from the simulator's own token ledger.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from simulator.auth import SEED_SCOPES
from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.postgres_table import TABLE
from tap_confluence.oauth.store.record import TokenStoreError
from tests.support.pg_store import TokenServer, pg_auth, pg_store
from tests.support.tap_cli import run_tap

SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}
OTHER_CLOUD = "0b0b0b0b-2222-4333-8444-555566667777"


def _token_states(sim: SimulatorProcess) -> dict[str, str]:
    return {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}


@pytest.mark.slow
def test_a_second_store_descending_from_the_same_refresh_token_is_refused(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # No reuse leeway: spending site A's rotated seed again would revoke A's family.
    sim = simulator_factory(reuse_leeway=0, **SMALL)
    tokens = tmp_path / "tokens"
    site_a = sim.tap_config("oauth", token_store_path=str(tokens / "tap-confluence.json"))
    first = run_tap(tmp_path, site_a)
    assert first.returncode == 0, first.stderr[-2000:]

    # Site B inherited site A's refresh_token; only its cloud_id and token file are its own.
    site_b = site_a | {
        "cloud_id": OTHER_CLOUD,
        "token_store_path": str(tokens / "tap-confluence--site-b.json"),
    }
    refreshes = sim.stats()["refreshes"]
    second = run_tap(tmp_path, site_b)
    assert second.returncode != 0
    assert "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert str(tokens / "tap-confluence.json") in last
    assert "nothing was spent" in last
    assert sim.stats()["refreshes"] == refreshes
    assert sim.stats()["revoked_families"] == 0
    assert not (tokens / "tap-confluence--site-b.json").exists()

    # Site A is untouched and still runs.
    sim.control("expire-access-tokens", {})
    again = run_tap(tmp_path, site_a)
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_second_store_for_the_same_client_and_site_is_refused(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    tokens = tmp_path / "tokens"
    site_a = sim.tap_config("oauth", token_store_path=str(tokens / "tap-confluence.json"))
    first = run_tap(tmp_path, site_a)
    assert first.returncode == 0, first.stderr[-2000:]

    # Site B kept site A's cloud_id but got a refresh token of its own (a second consent).
    own_token = sim.control("grant", {"scopes": SEED_SCOPES, "admin": True})
    site_b = site_a | {
        "refresh_token": own_token["refresh_token"],
        "token_store_path": str(tokens / "tap-confluence--site-b.json"),
    }
    second = run_tap(tmp_path, site_b)
    assert second.returncode != 0
    last = second.stderr.strip().splitlines()[-1]
    assert sim.cloud_id in last
    assert str(tokens / "tap-confluence.json") in last
    assert "nothing was spent" in last
    assert _token_states(sim)[own_token["refresh_token"]] == "current"
    assert not (tokens / "tap-confluence--site-b.json").exists()
    # The store records whose client it holds a token for, which is what made this visible.
    stored = json.loads((tokens / "tap-confluence.json").read_text())
    assert stored["client_id"] == sim.creds.client_id


@pytest.mark.slow
def test_sites_with_their_own_cloud_id_and_token_share_a_directory(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim_a = simulator_factory(**SMALL)
    sim_b = simulator_factory(
        cloud_id=OTHER_CLOUD, seed_refresh_token="fake-refresh-token-b", **SMALL
    )
    tokens = tmp_path / "tokens"
    for sim, name in ((sim_a, "tap-confluence"), (sim_b, "tap-confluence--site-b")):
        config = sim.tap_config("oauth", token_store_path=str(tokens / f"{name}.json"))
        run = run_tap(tmp_path, config)
        assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in tokens.glob("*.json")) == [
        "tap-confluence--site-b.json",
        "tap-confluence.json",
    ]


# The same in PostgreSQL: one seed, one row key.


def test_a_second_row_descending_from_the_same_seed_is_refused_before_spending(
    token_db_url: str,
    token_server: Callable[..., TokenServer],
) -> None:
    server = token_server()
    pg_auth(server.url, pg_store(token_db_url, "cloud-a"), "cloud-a").update_access_token()
    assert len(server.received) == 1
    # Site B inherited site A's refresh_token; its row key differs only by cloud_id.
    with pytest.raises(TokenStoreError) as info:
        pg_auth(server.url, pg_store(token_db_url, "cloud-b"), "cloud-b").update_access_token()
    message = str(info.value)
    assert "cloud-a" in message
    assert "nothing was spent" in message
    assert len(server.received) == 1, "the shared seed was spent a second time"
    with psycopg.connect(token_db_url) as conn:
        documents = conn.execute(
            f"SELECT cloud_id FROM {TABLE} WHERE document IS NOT NULL"  # noqa: S608
        ).fetchall()
    assert documents == [("cloud-a",)]
