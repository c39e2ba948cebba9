"""Helpers for the user_activity tests: credentials, a cached catalog, a run, its rows by user."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.tap_cli import TapRun, discovered_catalog, run_tap

if TYPE_CHECKING:
    from simulator.process import SimulatorProcess

CLASSIC = ("admin@example.com", "fake-classic-api-token")
ORG = {"org_id": "fake-org-id", "org_api_key": "fake-org-api-key"}
SMALL = {"users": 40, "guests": 4, "audit_records": 800, "content": 120}


def catalog(tmp_path: Path, sim: SimulatorProcess, *streams: str) -> dict[str, Any]:
    """The tap's own catalog (it does not depend on the config) with only ``streams`` selected."""
    found = discovered_catalog(tmp_path, sim)
    for entry in found["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return found


def sync(
    tmp_path: Path,
    sim: SimulatorProcess,
    config: dict[str, Any],
    cat: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> TapRun:
    """Run the tap once and assert it succeeded."""
    run = run_tap(tmp_path, config, catalog=cat, state=state)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def rows(run: TapRun, source: str | None = None) -> dict[str, dict[str, Any]]:
    """user_activity rows of one source by accountId (asserting one row per user and source)."""
    found = [r for r in run.records("user_activity") if source in (None, r["source"])]
    keys = Counter((r["accountId"], r["source"]) for r in found)
    assert all(n == 1 for n in keys.values()), "a user got two rows from one source in one run"
    return {r["accountId"]: r for r in found}
