"""Full syncs over real sockets: each auth mode, and what each stream's records hold."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import TapRun, run_tap

GROUP_GRANT = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "read:group:confluence",
    "read:user:confluence",
    "offline_access",
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(tmp_path_factory.mktemp("sim-records"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def info(sim: SimulatorProcess) -> dict[str, Any]:
    answer: dict[str, Any] = sim.control("info")
    return answer


@pytest.fixture(scope="module")
def classic_run(sim: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> TapRun:
    """One classic-token sync: it reaches every stream, groups and licence endpoints included."""
    return run_tap(tmp_path_factory.mktemp("classic"), sim.tap_config("classic_token"))


def _keys_lead_with_cloud_id(run: TapRun) -> None:
    for message in run.messages:
        if message["type"] == "SCHEMA":
            assert message["key_properties"][0] == "cloudId", message["stream"]


EXPECTED_BY_MODE = {
    # mode: (where licensedUsers comes from, whether groups are extracted)
    "oauth": ("user_search", False),
    "scoped_token": ("user_search", False),
    "classic_token": ("license_api", True),
    "oauth_plus_token": ("license_api", False),
}


@pytest.mark.parametrize("mode", list(EXPECTED_BY_MODE))
def test_full_sync_works_in_every_auth_mode(
    sim: SimulatorProcess, info: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    seat_source, groups_extracted = EXPECTED_BY_MODE[mode]
    run = run_tap(tmp_path, sim.tap_config(mode, token_store_path=str(tmp_path / "store.json")))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("users")) == info["users"] + info["guests"]
    assert len(run.records("audit_records")) == info["audit_records"]
    (licence,) = run.records("license_subscriptions")
    assert licence["seatSource"] == seat_source
    assert bool(run.records("groups")) is groups_extracted
    if not groups_extracted:
        assert "Skipping groups" in run.stderr
    _keys_lead_with_cloud_id(run)
    for message in run.messages:
        if message["type"] == "RECORD":
            assert message["record"]["cloudId"] == sim.cloud_id


def test_users_are_licensed_and_guests_tagged_with_account_status(
    classic_run: TapRun, info: dict[str, Any]
) -> None:
    users = classic_run.records("users")
    tags = Counter(u["sitePermission"] for u in users)
    assert tags == {"licensed": info["users"], "guest": info["guests"]}
    assert all(u["isGuest"] is (u["sitePermission"] == "guest") for u in users)
    statuses = Counter(u["accountStatus"] for u in users)
    assert set(statuses) <= {"active", "inactive", "closed"}
    assert statuses["active"] > 0
    assert statuses["inactive"] + statuses["closed"] > 0
    assert len({u["accountId"] for u in users}) == len(users)
    assert all("_links" not in u for u in users)


def test_groups_and_members_are_extracted_with_their_keys(
    classic_run: TapRun, info: dict[str, Any]
) -> None:
    groups = classic_run.records("groups")
    assert len(groups) == info["groups"]
    group_ids = {g["id"] for g in groups}
    members = classic_run.records("group_members")
    assert members
    assert {m["groupId"] for m in members} <= group_ids
    assert len({(m["groupId"], m["accountId"]) for m in members}) == len(members)
    user_ids = {u["accountId"] for u in classic_run.records("users")}
    assert {m["accountId"] for m in members} <= user_ids


def test_licence_row_has_edition_title_and_seat_counts(
    classic_run: TapRun, info: dict[str, Any]
) -> None:
    (row,) = classic_run.records("license_subscriptions")
    assert row["edition"] == "standard"
    assert row["siteTitle"] == "Simulated Wiki ✨"
    assert row["licensedUsers"] == info["licensed_active"]
    assert row["purchasedSeats"] - row["licensedUsers"] == row["remainingSeats"]
    assert len(row["snapshotDate"]) == 10


def test_audit_records_carry_a_stable_hash_id_and_both_time_forms(
    classic_run: TapRun, info: dict[str, Any], sim: SimulatorProcess, tmp_path: Path
) -> None:
    records = classic_run.records("audit_records")
    assert len({r["id"] for r in records}) == len(records) == info["audit_records"]
    for r in records[:50]:
        assert isinstance(r["creationDate"], int)
        assert r["createdAt"].endswith("Z")
        assert r["createdAt"].startswith(_iso_date(r["creationDate"]))
    stamps = [(r["creationDate"], r["id"]) for r in records]
    assert stamps == sorted(stamps), "emitted oldest first"
    again = run_tap(tmp_path, sim.tap_config("classic_token"))
    assert {r["id"] for r in again.records("audit_records")} == {r["id"] for r in records}


def test_output_is_valid_singer_json_that_a_target_can_type(classic_run: TapRun) -> None:
    schemas = {m["stream"]: m["schema"] for m in classic_run.messages if m["type"] == "SCHEMA"}
    for message in classic_run.messages:
        if message["type"] != "RECORD":
            continue
        props = schemas[message["stream"]]["properties"]
        assert set(message["record"]) <= set(props), message["stream"]
    json.dumps(classic_run.messages)  # every message round-trips as JSON


def _iso_date(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
