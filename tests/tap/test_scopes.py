"""Streams whose scope or permission is missing end with one sentence; the others carry on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import run_tap

SEED = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "offline_access",
]
SMALL = {"users": 15, "guests": 2, "groups": 5, "audit_records": 120}


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return simulator_factory(**SMALL)


def test_groups_are_skipped_with_one_warning_when_the_scope_is_missing(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    run = run_tap(tmp_path, sim.tap_config("oauth"))
    assert run.returncode == 0, run.stderr[-2000:]
    warnings = [line for line in run.stderr.splitlines() if "Skipping groups" in line]
    assert len(warnings) == 1
    assert "read:group:confluence" in warnings[0]
    assert "WARNING" in warnings[0]
    assert not run.records("groups")
    assert not run.records("group_members")
    assert "group" not in sim.stats()["requests"], "no request is spent on a skipped stream"
    # The seed's scopes are enough for users, licence and audit.
    assert {"users", "license_subscriptions", "audit_records"} <= run.streams_with_records()


def test_groups_are_extracted_once_the_group_scope_is_granted(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    token = sim.control(
        "grant", {"scopes": [*SEED, "read:group:confluence", "read:user:confluence"]}
    )
    run = run_tap(tmp_path, sim.tap_config("oauth", refresh_token=token["refresh_token"]))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Skipping groups" not in run.stderr
    assert len(run.records("groups")) == SMALL["groups"]
    assert run.records("group_members")


def test_audit_without_admin_permission_ends_that_stream_and_fails_the_run_at_the_end(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    token = sim.control("grant", {"scopes": SEED, "admin": False})
    run = run_tap(tmp_path, sim.tap_config("oauth", refresh_token=token["refresh_token"]))
    assert run.returncode == 1
    assert "audit_records needs the Confluence Administrator global permission" in run.stderr
    assert "Traceback" not in run.stderr
    # The streams after it still ran (streams sync in name order: audit_records is first).
    assert {"users", "license_subscriptions"} <= run.streams_with_records()
    assert not run.records("audit_records")


def test_scoped_token_without_the_group_scope_skips_groups_with_a_warning(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    config = sim.tap_config("scoped_token")
    config.pop("site_url")
    run = run_tap(tmp_path, config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Skipping groups: it needs the scope read:group:confluence" in run.stderr
    assert {"users", "license_subscriptions", "audit_records"} <= run.streams_with_records()
