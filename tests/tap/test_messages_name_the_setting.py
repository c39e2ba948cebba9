"""Errors name the setting that is wrong; every request shows up in the SDK's metrics."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import run_tap

DATA = {"users": 12, "guests": 2, "groups": 2, "audit_records": 200, "content": 20}


def closed_port_url() -> str:
    """A loopback URL nobody listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("mode", "setting"),
    [("classic_token", "site_url"), ("oauth", "auth_url"), ("scoped_token", "api_url")],
)
def test_an_unreachable_host_names_its_setting_after_two_quick_tries(
    mode: str, setting: str, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    config = sim.tap_config(mode, **{setting: closed_port_url()})
    if mode == "scoped_token":
        config.pop("site_url")  # a scoped token goes to the gateway only
    run = run_tap(tmp_path, config)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    line = last_line(run.stderr)
    assert f"check {setting}" in line, run.stderr[-2000:]
    others = {"site_url", "api_url", "auth_url"} - {setting}
    assert not any(f"check {other}" in line for other in others)
    # Connection refused is not worth eight backed-off retries.
    assert "retry 3 in" not in run.stderr


def test_a_wrong_cloud_id_says_so_and_lists_the_sites_the_token_reaches(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    wrong = "0f0f0f0f-1111-4222-8333-000000000000"
    run = run_tap(tmp_path, sim.tap_config("oauth", cloud_id=wrong))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    line = last_line(run.stderr)
    assert f"cloud_id {wrong} is not a site these credentials can reach" in line
    assert "tap-confluence-auth cloud-id" in line
    assert f"(cloud_id {sim.cloud_id})" in line, "the site the token can reach is listed"


def test_every_request_writes_the_sdk_request_metric(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    run = run_tap(tmp_path, sim.tap_config("classic_token"))
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in run.stderr.splitlines()
        if "METRIC: " in line and '"http_request_duration"' in line
    ]
    stats = sim.stats()
    # Every request but the one that tells a classic token from a scoped one, which the tap
    # makes before any stream runs (once per token, see test_real_site_limits).
    assert stats["requests"]["user_current"] == 1
    assert len(metrics) == stats["total_requests"] - 1
    streams = {m["tags"]["stream"] for m in metrics}
    assert {"users", "license_subscriptions", "audit_records", "user_activity"} <= streams
    endpoints = {(m["tags"]["stream"], m["tags"]["endpoint"]) for m in metrics}
    assert ("audit_records", "/wiki/rest/api/audit") in endpoints
    # Routes are named by their template, not by every group's id.
    members = {e for s, e in endpoints if s == "group_members"}
    assert members == {"/wiki/rest/api/group/{groupId}/membersByGroupId"}
