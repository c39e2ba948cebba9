"""Rate limits, server errors and broken answers are retried; the records match a clean run."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import TapRun, run_tap

SMALL = {"users": 30, "guests": 4, "groups": 5, "audit_records": 2_500}


def _fingerprint(run: TapRun) -> dict[str, set[Any]]:
    return {
        "users": {u["accountId"] for u in run.records("users")},
        "groups": {g["id"] for g in run.records("groups")},
        "group_members": {(m["groupId"], m["accountId"]) for m in run.records("group_members")},
        "audit_records": {r["id"] for r in run.records("audit_records")},
        "license": {
            (r["licensedUsers"], r["purchasedSeats"]) for r in run.records("license_subscriptions")
        },
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[Any]]:
    """What a run without faults extracts (the data set is deterministic for its options)."""
    tmp = tmp_path_factory.mktemp("clean")
    sim = SimulatorProcess(tmp / "sim", **SMALL)
    try:
        run = run_tap(tmp, sim.tap_config("classic_token"))
    finally:
        sim.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    return _fingerprint(run)


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"rate_limit_every": 4, "retry_after": "1"}, id="429-retry-after"),
        pytest.param({"error_every": 4, "retry_after": "0"}, id="5xx"),
        pytest.param({"reset_every": 5, "bad_json_every": 7}, id="reset-and-bad-json"),
    ],
)
@pytest.mark.slow
def test_faults_are_retried_and_the_records_match_a_clean_run(
    simulator_factory: Callable[..., SimulatorProcess],
    tmp_path: Path,
    clean: dict[str, set[Any]],
    faults: dict[str, Any],
) -> None:
    sim = simulator_factory(**SMALL, **faults)
    run = run_tap(tmp_path, sim.tap_config("classic_token"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sum(sim.stats()["faults_injected"].values()) >= 2
    assert "retry" in run.stderr
    assert _fingerprint(run) == clean


def test_a_retry_after_longer_than_the_cap_is_never_retried_early(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path, clean: dict[str, set[Any]]
) -> None:
    # Atlassian answers a retry sent before Retry-After with the same or a longer wait, and
    # has sent 2**63 - 1: the run stops at once with its work kept, and a later run resumes.
    sim = simulator_factory(**SMALL, rate_limit_every=5, retry_after="9223372036854775807")
    config = sim.tap_config("classic_token", max_retry_wait_seconds=1)
    stopped = run_tap(tmp_path, config)
    assert stopped.returncode == 1
    last = stopped.stderr.strip().splitlines()[-1]
    assert "with a Retry-After no run can wait for" in last, last
    assert "retry 1 in" not in stopped.stderr, "nothing was retried before Retry-After"
    # Requests already in flight may be refused too; none is sent after the first refusal.
    assert sim.stats()["faults_injected"]["rate_limit"] <= 5
    sim.control("faults", {})
    resumed = run_tap(tmp_path, config, state=stopped.states()[-1] if stopped.states() else None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    both = _fingerprint(stopped)
    for name, values in _fingerprint(resumed).items():
        both[name] |= values
    assert both == clean


@pytest.mark.slow
def test_retry_after_is_honoured_exactly_without_jitter(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL, rate_limit_every=8, retry_after="2")
    run = run_tap(tmp_path, sim.tap_config("classic_token"))
    assert run.returncode == 0, run.stderr[-3000:]
    waits = {float(w) for w in re.findall(r"retry \d+ in ([0-9.]+) s after HTTP 429", run.stderr)}
    assert waits == {2.0}


def test_token_endpoint_rate_limit_is_retried_without_spending_the_token_twice(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL, rate_limit_every=2, retry_after="0", routes=["oauth_token"])
    sim.control("config", {"reuse_leeway": 0})
    run = run_tap(tmp_path, sim.tap_config("oauth"))
    assert run.returncode == 0, run.stderr[-3000:]
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refreshes"] >= 1
