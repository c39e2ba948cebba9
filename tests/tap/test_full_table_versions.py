"""users, groups and group_members: versioned records, then one ACTIVATE_VERSION per run.

Singer's convention for full-table streams: every record of a run carries the run's version,
and ACTIVATE_VERSION after the last of them tells the target that rows of older versions are
gone from the source (MeltanoLabs target-postgres then sets their `_sdc_deleted_at`). It is
sent only after a complete read: a stream that ended early must not delete what it did not
read. license_subscriptions never gets one, so its daily history stays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.tap_cli import TapRun, run_tap, select_streams

VERSIONED = ("users", "groups", "group_members")
UNVERSIONED = ("license_subscriptions", "audit_records", "user_activity")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(
        tmp_path_factory.mktemp("sim-versions"),
        users=30,
        guests=3,
        groups=5,
        audit_records=40,
        content=10,
    )
    yield process
    process.stop()


def granted_config(sim: SimulatorProcess, store: Path) -> dict[str, Any]:
    """OAuth with every scope the tap uses granted, so groups and memberships are read."""
    token = sim.control("grant", {"scopes": ALL_SCOPES})["refresh_token"]
    return sim.tap_config("oauth", refresh_token=token, token_store_path=str(store / "t.json"))


@pytest.fixture(scope="module")
def granted_run(sim: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> TapRun:
    """One full sync with groups granted: every stream, memberships included."""
    tmp = tmp_path_factory.mktemp("granted")
    run = run_tap(tmp, granted_config(sim, tmp))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def of_stream(run: TapRun, stream: str, kind: str) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, m)
        for i, m in enumerate(run.messages)
        if m.get("type") == kind and m.get("stream") == stream
    ]


def test_group_members_sends_its_schema_once_per_run_not_once_per_group(
    sim: SimulatorProcess, granted_run: TapRun
) -> None:
    groups = sim.control("info")["groups"]
    assert groups >= 2
    assert len(granted_run.records("groups")) == groups
    assert len(of_stream(granted_run, "group_members", "SCHEMA")) == 1
    # Every stream: one SCHEMA, before its first record.
    for stream in VERSIONED + UNVERSIONED:
        schemas = of_stream(granted_run, stream, "SCHEMA")
        assert len(schemas) == 1, stream
        records = of_stream(granted_run, stream, "RECORD")
        assert records, stream
        assert schemas[0][0] < records[0][0], stream


@pytest.mark.parametrize("stream", VERSIONED)
def test_full_table_stream_sends_one_version_and_activates_it_after_its_records(
    granted_run: TapRun, stream: str
) -> None:
    records = of_stream(granted_run, stream, "RECORD")
    versions = {m.get("version") for _, m in records}
    assert len(versions) == 1, versions
    (version,) = versions
    assert isinstance(version, int)
    activations = of_stream(granted_run, stream, "ACTIVATE_VERSION")
    assert [m["version"] for _, m in activations] == [version]
    assert activations[0][0] > records[-1][0], "ACTIVATE_VERSION must follow every record"


@pytest.mark.parametrize("stream", UNVERSIONED)
def test_license_history_and_incremental_streams_are_never_activated(
    granted_run: TapRun, stream: str
) -> None:
    assert of_stream(granted_run, stream, "ACTIVATE_VERSION") == []
    assert all("version" not in m for _, m in of_stream(granted_run, stream, "RECORD"))


def test_a_later_run_activates_a_newer_version(
    sim: SimulatorProcess, granted_run: TapRun, tmp_path: Path
) -> None:
    first = of_stream(granted_run, "users", "ACTIVATE_VERSION")[0][1]["version"]
    # Versions count seconds, as the SDK's do: the next run must start in a later second than
    # the first did (usually long past by now, so this rarely waits at all).
    while time.time() < first + 1:
        time.sleep(0.05)
    again = run_tap(tmp_path, granted_config(sim, tmp_path))
    second = of_stream(again, "users", "ACTIVATE_VERSION")[0][1]["version"]
    assert second > first


def test_streams_that_end_early_are_not_activated(sim: SimulatorProcess, tmp_path: Path) -> None:
    # The seed OAuth grant lacks the group scopes: groups and group_members are skipped.
    run = run_tap(tmp_path, sim.tap_config("oauth"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records("groups") == []
    assert of_stream(run, "groups", "ACTIVATE_VERSION") == []
    assert of_stream(run, "group_members", "ACTIVATE_VERSION") == []
    assert len(of_stream(run, "users", "ACTIVATE_VERSION")) == 1


def test_emit_activate_version_messages_false_turns_versions_off(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = granted_config(sim, tmp_path) | {"emit_activate_version_messages": False}
    run = run_tap(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not any(m["type"] == "ACTIVATE_VERSION" for m in run.messages)
    assert all("version" not in m for m in run.messages if m["type"] == "RECORD")


def test_license_subscriptions_is_never_activated_even_when_asked_for_every_stream(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = granted_config(sim, tmp_path) | {"emit_activate_version_messages": True}
    run = run_tap(tmp_path, config)
    assert of_stream(run, "license_subscriptions", "ACTIVATE_VERSION") == []
    assert len(of_stream(run, "users", "ACTIVATE_VERSION")) == 1


@pytest.mark.slow
def test_users_cut_short_by_the_search_cap_are_not_activated(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # search/user stops at 10,000 users: the ones past the cap were not read, not removed.
    big = simulator_factory(users=10_050, guests=2, audit_records=5, groups=1, content=1)
    config = big.tap_config("classic_token")
    discovered = json.loads(run_tap(tmp_path, config, extra=("--discover",)).stdout)
    run = run_tap(tmp_path, config, catalog=select_streams(discovered, {"users"}))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("users")) == 10_002
    assert of_stream(run, "users", "ACTIVATE_VERSION") == []


def test_test_mode_reads_a_sample_and_activates_nothing(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    run = run_tap(tmp_path, granted_config(sim, tmp_path), extra=("--test",))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("users")) == 1
    assert not any(m["type"] == "ACTIVATE_VERSION" for m in run.messages)


def test_memberships_are_not_activated_when_the_group_list_ended_early(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # group_members' own requests would all succeed; only its parent's listing breaks. Had
    # the child activated its version, the target would soft-delete every membership.
    sim = simulator_factory(users=20, guests=2, groups=3, audit_records=40, content=10)
    sim.control("raw", {"route": "group", "body": ["not", "an", "object"]})
    config = granted_config(sim, tmp_path) | {"max_retries": 2, "max_retry_wait_seconds": 1}
    run = run_tap(tmp_path, config)
    assert run.returncode == 1, "a stream that could not load fails the run"
    assert "on every retry" in run.stderr
    assert of_stream(run, "groups", "ACTIVATE_VERSION") == []
    assert of_stream(run, "group_members", "ACTIVATE_VERSION") == []
    assert len(of_stream(run, "users", "ACTIVATE_VERSION")) == 1
