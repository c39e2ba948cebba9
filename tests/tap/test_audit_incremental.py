"""audit_records across runs: bookmarks, new and late records, and resuming a killed run."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.support.tap_cli import TapRun, discovered_catalog, run_tap, run_tap_until_states


def _audit_catalog(tmp_path: Path, sim: SimulatorProcess) -> dict[str, Any]:
    """A catalog selecting only audit_records (from the tap's own --discover)."""
    catalog = discovered_catalog(tmp_path, sim)
    for entry in catalog["streams"]:
        selected = entry["tap_stream_id"] == "audit_records"
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = selected
    return catalog


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def _bookmark(run: TapRun) -> str:
    bookmark: str = run.final_state()["bookmarks"]["audit_records"]["replication_key_value"]
    return bookmark


def test_second_run_emits_only_new_records_and_the_lookback(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("classic_token")
    catalog = _audit_catalog(tmp_path, simulator)
    first = run_tap(tmp_path, config, catalog=catalog)
    assert first.returncode == 0, first.stderr[-2000:]
    records = first.records("audit_records")
    bookmark = _bookmark(first)
    assert bookmark == max(r["createdAt"] for r in records)

    appended = simulator.control("audit/append", {"count": 7})["creationDates"]
    second = run_tap(tmp_path, config, catalog=catalog, state=first.final_state())
    assert second.returncode == 0, second.stderr[-2000:]
    again = second.records("audit_records")

    lookback_start = _ms(bookmark) - 60 * 60_000
    re_read = {r["id"] for r in records if r["creationDate"] >= lookback_start}
    new = [r for r in again if r["id"] not in {x["id"] for x in records}]
    assert sorted(r["creationDate"] for r in new) == sorted(appended)
    # Apart from the new records, only the lookback window was read again.
    assert {r["id"] for r in again} - {r["id"] for r in new} == re_read
    assert _bookmark(second) == max(r["createdAt"] for r in again)


def test_late_records_inside_the_lookback_are_picked_up_next_run(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("classic_token", audit_lookback_minutes=30)
    catalog = _audit_catalog(tmp_path, simulator)
    first = run_tap(tmp_path, config, catalog=catalog)
    seen = {r["id"] for r in first.records("audit_records")}
    # Two records land 10 minutes before the newest one, after the first run read past them.
    late = simulator.control("audit/append", {"count": 2, "late_by_ms": 10 * 60_000})
    second = run_tap(tmp_path, config, catalog=catalog, state=first.final_state())
    found = [r for r in second.records("audit_records") if r["id"] not in seen]
    assert sorted(r["creationDate"] for r in found) == sorted(late["creationDates"])


@pytest.mark.slow
def test_run_killed_mid_stream_resumes_from_its_last_state_without_losing_records(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=40_000)
    config = sim.tap_config("classic_token")
    catalog = _audit_catalog(tmp_path, sim)
    clean = run_tap(tmp_path, config, catalog=catalog)
    assert clean.returncode == 0, clean.stderr[-2000:]
    every_id = {r["id"] for r in clean.records("audit_records")}
    assert len(every_id) == 40_000
    assert len(clean.states()) >= 3, "several windows, so a kill can land between them"

    catalog_path = tmp_path / "catalog-kill.json"
    catalog_path.write_text(json.dumps(catalog))
    killed = run_tap_until_states(
        tmp_path, config, states=2, extra=("--catalog", str(catalog_path))
    )
    first_part = {r["id"] for r in killed.records("audit_records")}
    assert 0 < len(first_part) < len(every_id), "the kill landed mid-stream"
    last_state = killed.final_state()

    resumed = run_tap(tmp_path, config, catalog=catalog, state=last_state)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rest = {r["id"] for r in resumed.records("audit_records")}
    assert first_part | rest == every_id
    assert len(rest) < len(every_id), "the rerun started from the saved bookmark, not from scratch"


@pytest.mark.slow
def test_each_state_bookmarks_only_records_already_emitted_and_the_last_the_newest(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # Enough records for several windows of about 20 pages.
    sim = simulator_factory(audit_records=90_000)
    catalog = _audit_catalog(tmp_path, sim)
    run = run_tap(tmp_path, sim.tap_config("classic_token"), catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    newest = ""
    bookmarks: list[str] = []
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "audit_records":
            newest = max(newest, message["record"]["createdAt"])
        elif message["type"] == "STATE":
            mark = message["value"]["bookmarks"].get("audit_records", {})
            if "replication_key_value" in mark:
                # Never ahead of what the target has been sent, and never going back.
                assert mark["replication_key_value"] <= newest
                assert not bookmarks or mark["replication_key_value"] >= bookmarks[-1]
                bookmarks.append(mark["replication_key_value"])
    assert len(set(bookmarks)) >= 2, "the bookmark moved window by window"
    assert bookmarks[-1] == newest
