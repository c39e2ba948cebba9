"""Answers of the wrong shape or size end their stream in one sentence; the rest still loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.tap_cli import run_tap

DATA = {"users": 20, "guests": 2, "groups": 3, "audit_records": 300, "content": 30}
#: Few quick retries: the answer never changes, and the point is what happens after them.
QUICK = {"max_retries": 2, "max_retry_wait_seconds": 1}


def oauth(sim: SimulatorProcess, **overrides: Any) -> dict[str, Any]:
    token = sim.control("grant", {"scopes": ALL_SCOPES})["refresh_token"]
    return sim.tap_config("oauth", refresh_token=token, **QUICK, **overrides)


@pytest.mark.parametrize(
    "case",
    [
        ("audit", "audit_records", "/wiki/rest/api/audit", [1, 2]),
        ("group", "groups", "/wiki/rest/api/group", "groups"),
        ("search", "user_activity", "/wiki/rest/api/search", [{"results": []}]),
        ("system_info", "license_subscriptions", "/wiki/rest/api/settings/systemInfo", 7),
    ],
    ids=lambda case: case[0],
)
def test_json_of_the_wrong_shape_ends_only_its_stream_after_retries(
    case: tuple[str, str, str, object],
    simulator_factory: Callable[..., SimulatorProcess],
    tmp_path: Path,
) -> None:
    route, stream, path, body = case
    sim = simulator_factory(**DATA)
    sim.control("raw", {"route": route, "body": body})
    run = run_tap(tmp_path, oauth(sim))
    assert run.returncode == 1, "a stream that could not load fails the run"
    assert "Traceback" not in run.stderr
    errors = [ln for ln in run.stderr.splitlines() if "on every retry" in ln and path in ln]
    assert errors, run.stderr[-3000:]
    assert "not what it should be" in errors[0]
    assert sim.stats()["requests"][route] >= 2, "retried first"
    others = {"users", "audit_records", "groups", "license_subscriptions"} - {stream}
    if stream == "license_subscriptions":
        others.discard("users")  # a later stream; it still runs, checked below
    assert others <= run.streams_with_records(), run.streams_with_records()
    assert "users" in run.streams_with_records()


def test_search_results_that_are_not_objects_are_counted_and_left_out(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    good = {"user": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "publicName": "Ada"}}
    sim.control("payload", {"route": "search_user", "results": [good, 5, "x", {"user": "x"}]})
    run = run_tap(tmp_path, oauth(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    users = run.records("users")
    assert [u["accountId"] for u in users] == ["5b10ac8d82e05b22cc7d4ef5"] * 2  # both listings
    assert "2 entries of a page were not JSON objects" in run.stderr
    assert "skipped 1 licensed search results without a text accountId" in run.stderr


def test_a_state_with_wrong_types_ends_only_the_source_it_belongs_to(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    state = {
        "bookmarks": {
            "user_activity": {
                "partitions": [
                    {
                        "context": {"source": "content"},
                        "replication_key": "lastActivityAt",
                        "replication_key_value": "2026-10-01T00:00:00.000Z",
                        "recent": ["5b10ac8d82e05b22cc7d4ef5"],
                    }
                ]
            }
        }
    }
    run = run_tap(tmp_path, oauth(sim), state=state)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "user_activity from content: its state is unusable ('recent' is a list" in run.stderr
    sources = {r["source"] for r in run.records("user_activity")}
    assert sources == {"audit"}, "the audit source still loads"
    assert {"users", "audit_records"} <= run.streams_with_records()


def test_an_answer_over_64_mib_fails_its_request_without_reading_it(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    sim.control("raw", {"route": "group", "pad_bytes": 65 * 1024 * 1024})
    run = run_tap(tmp_path, oauth(sim))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "the answer from" in run.stderr
    assert "is over 64 MiB" in run.stderr
    assert sim.stats()["requests"]["group"] == 1, "not retried: it would only come back as big"
    assert {"users", "audit_records"} <= run.streams_with_records()
