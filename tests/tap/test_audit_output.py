"""audit_records a page at a time: the same records and STATE as the SDK's loop, and batch files.

One simulator of 45,000 audit records (three windows) is read four ways, once each: through
the page-at-a-time path, through the SDK's own record loop (an empty stream map forces it),
as gzip batch files, and as batch files again with the first batch run's state. The fast and
batch paths have helper processes finish their pages; the SDK's loop does not.
"""

from __future__ import annotations

import gzip
import json
import logging
import typing as t
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tap_confluence.streams.audit.output import remove_loaded_batch_files
from tap_confluence.streams.audit.rows import record_id
from tests.support.tap_cli import TapRun, run_tap, selected_catalog

FAST_PATH = "records go out a page at a time"
BATCH_PATH = "batch files go out one per window"
HELPERS = "2 helper processes finish the pages of this backfill"
RECORDS = 45_000
ADDED = ("id", "createdAt", "cloudId")


def _sdk_loop_config(sim: SimulatorProcess, **overrides: Any) -> dict[str, Any]:
    # An empty stream map changes nothing in the records but is a map: the SDK's own
    # record-by-record loop runs instead of the page-at-a-time path.
    return sim.tap_config("classic_token", stream_maps={"audit_records": {}}, **overrides)


def _batch_config(root: Path, compression: str = "gzip") -> dict[str, Any]:
    return {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": f"file://{root}", "prefix": "site-a-"},
    }


def _without_run_times(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RECORD and STATE messages less what depends on when the run was (extraction time, the
    signpost: the time the sync started)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "replication_key_signpost"}
        return value

    return [
        strip({k: v for k, v in m.items() if k != "time_extracted"})
        for m in messages
        if m["type"] in ("RECORD", "STATE", "BATCH")
    ]


def _states_in_place(messages: list[dict[str, Any]]) -> list[Any]:
    """Each STATE that moves the bookmark, with the number of records before it, and the last.

    The SDK's own loop also writes STATE every 10,000 records, mid-window, with the bookmark
    of the window before: nothing new, so those are left out.
    """
    out: list[tuple[int, Any]] = []
    records, last = 0, None
    for m in _without_run_times(messages):
        if m["type"] == "RECORD":
            records += 1
            continue
        if m["type"] == "BATCH":
            records += m["rows"]
            continue
        last = (records, m["value"])
        bookmark = m["value"]["bookmarks"]["audit_records"].get("replication_key_value")
        if bookmark is not None and (not out or out[-1][1] != bookmark):
            out.append((records, bookmark))
    return [*out, last]


def _batch_rows(url: str) -> list[dict[str, Any]]:
    path = Path(url.removeprefix("file://"))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        return [json.loads(line) for line in f]


def _read_batches(run: TapRun) -> list[dict[str, Any]]:
    """Each BATCH message's rows, read now (a later run may remove the files), in order;
    the message gets a ``rows`` count for ``_states_in_place``."""
    rows: list[dict[str, Any]] = []
    for m in run.messages:
        if m["type"] == "BATCH":
            got = [row for url in m["manifest"] for row in _batch_rows(url)]
            m["rows"] = len(got)
            rows += got
    return rows


@dataclass
class FourRuns:
    sim: SimulatorProcess
    fast: TapRun
    sdk: TapRun
    batches: TapRun
    batch_rows: list[dict[str, Any]]
    again: TapRun
    again_rows: list[dict[str, Any]]
    batch_root: Path
    first_files: list[Path]


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FourRuns]:
    tmp = tmp_path_factory.mktemp("audit-output")
    sim = SimulatorProcess(tmp / "sim", audit_records=RECORDS)
    try:
        catalog = selected_catalog(tmp, sim, "audit_records")
        # Helper processes finish the pages of the fast and batch paths (whatever the cores);
        # the SDK's loop finishes them in the tap's own process.
        config = sim.tap_config("classic_token", audit_concurrency=3, audit_helper_processes=2)
        fast = run_tap(tmp, config, catalog=catalog)
        sdk = run_tap(tmp, _sdk_loop_config(sim, audit_concurrency=3), catalog=catalog)
        root = tmp / "batches"
        batch_config = config | {"batch_config": _batch_config(root)}
        batches = run_tap(tmp, batch_config, catalog=catalog)
        batch_rows = _read_batches(batches)
        first_files = sorted(root.iterdir())
        again = run_tap(tmp, batch_config, catalog=catalog, state=batches.final_state())
        again_rows = _read_batches(again)
        yield FourRuns(sim, fast, sdk, batches, batch_rows, again, again_rows, root, first_files)
    finally:
        sim.stop()


def test_page_at_a_time_records_and_states_equal_the_sdk_loops(four_runs: FourRuns) -> None:
    fast, sdk = four_runs.fast, four_runs.sdk
    assert fast.returncode == sdk.returncode == 0, fast.stderr[-2000:] + sdk.stderr[-2000:]
    assert FAST_PATH in fast.stderr
    assert FAST_PATH not in sdk.stderr
    assert HELPERS in fast.stderr
    assert HELPERS not in sdk.stderr
    records = fast.records("audit_records")
    assert len(records) == RECORDS
    assert all(r["id"] == record_id({k: r[k] for k in r if k not in ADDED}) for r in records[:500])
    # Same records in the same order, field for field, and the same STATE after each window
    # (the SDK's loop also repeats the last one every 10,000 records, mid-window).
    assert _without_run_times(fast.messages)[:3] == _without_run_times(sdk.messages)[:3]
    assert records == sdk.records("audit_records")
    assert _states_in_place(fast.messages) == _states_in_place(sdk.messages)
    assert len(_states_in_place(fast.messages)) > 2, "several windows, each with its STATE"


def test_batch_files_hold_the_records_of_the_record_path_one_file_per_window(
    four_runs: FourRuns,
) -> None:
    run = four_runs.batches
    assert run.returncode == 0, run.stderr[-2000:]
    assert BATCH_PATH in run.stderr
    assert HELPERS in run.stderr
    assert not run.records("audit_records"), "batches instead of RECORD messages"
    batches = [m for m in run.messages if m["type"] == "BATCH"]
    assert len(batches) >= 3
    assert all(m["encoding"] == {"format": "jsonl", "compression": "gzip"} for m in batches)
    assert four_runs.batch_rows == four_runs.fast.records("audit_records")
    # Each file is followed by the STATE covering it: the bookmark of the record path's
    # window, after exactly as many records.
    assert _states_in_place(run.messages) == _states_in_place(four_runs.fast.messages)
    kinds = [m["type"] for m in run.messages if m["type"] in ("BATCH", "STATE")]
    assert kinds[0] == "BATCH" or kinds[:2] == ["STATE", "BATCH"]
    assert all(kinds[i + 1] == "STATE" for i, kind in enumerate(kinds) if kind == "BATCH"), (
        "a BATCH message is always followed by its STATE"
    )


def test_a_later_run_removes_the_batch_files_its_state_shows_loaded(four_runs: FourRuns) -> None:
    run = four_runs.again
    assert run.returncode == 0, run.stderr[-2000:]
    bookmark = four_runs.batches.final_state()["bookmarks"]["audit_records"]
    left = set(four_runs.batch_root.iterdir())
    removed = [p for p in four_runs.first_files if p not in left]
    kept = [p for p in four_runs.first_files if p in left]
    # Every window but the last ends before the newest record: loaded, so removed. The last
    # window ends at the first run's start, after its bookmark: kept until a later state.
    assert len(removed) == len(four_runs.first_files) - 1
    assert len(kept) == 1
    assert "removed" in run.stderr
    assert bookmark["replication_key_value"]
    # The second run read only the look-back: a few records, one small file of its own.
    assert 0 < len(four_runs.again_rows) < 100


def test_other_streams_send_record_messages_when_batches_are_configured(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    catalog = selected_catalog(tmp_path, simulator, "users")
    config = simulator.tap_config("classic_token", batch_config=_batch_config(tmp_path / "b"))
    run = run_tap(tmp_path, config, catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.records("users")
    assert not [m for m in run.messages if m["type"] == "BATCH"]


def test_plain_jsonl_batches_hold_the_same_records(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    catalog = selected_catalog(tmp_path, simulator, "audit_records")
    plain = simulator.tap_config(
        "classic_token", batch_config=_batch_config(tmp_path / "b", compression="none")
    )
    run = run_tap(tmp_path, plain, catalog=catalog)
    records = run_tap(tmp_path, simulator.tap_config("classic_token"), catalog=catalog)
    assert run.returncode == records.returncode == 0, run.stderr[-2000:]
    batches = [m for m in run.messages if m["type"] == "BATCH"]
    assert batches
    assert all(url.endswith(".jsonl") for m in batches for url in m["manifest"])
    assert _read_batches(run) == records.records("audit_records")


class _Stream:
    """What remove_loaded_batch_files asks of a stream: its state, name and logger."""

    name = "audit_records"
    logger = logging.getLogger("test")

    def __init__(self, bookmark: str | None) -> None:
        self.state = {"replication_key_value": bookmark} if bookmark else {}

    def get_context_state(self, context: Any) -> dict[str, Any]:
        return self.state


def test_only_batch_files_the_state_shows_loaded_are_removed(tmp_path: Path) -> None:
    stem = "p-audit_records-cloud_a"
    bookmark_ms = 1_780_000_000_000
    names = {
        f"{stem}-{bookmark_ms - 1}-0123456789ab-00001.jsonl.gz": True,
        f"{stem}-{bookmark_ms}-0123456789ab-00002.jsonl.gz": True,
        f"{stem}-{bookmark_ms}-0123456789ab-00003.jsonl": True,
        f"{stem}-{bookmark_ms + 1}-0123456789ab-00004.jsonl.gz": False,  # not yet loaded
        f"p-audit_records-cloud_b-{bookmark_ms - 1}-0123456789ab-00001.jsonl.gz": False,
        f"q-audit_records-cloud_a-{bookmark_ms - 1}-0123456789ab-00001.jsonl.gz": False,
        f"{stem}-{bookmark_ms - 1}-notarunid-00001.jsonl.gz": False,
        f"{stem}-{bookmark_ms - 1}-0123456789ab-00001.parquet": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"{}\n")
    stream = _Stream("2026-05-28T20:26:40.000Z")  # bookmark_ms
    remove_loaded_batch_files(stream, f"file://{tmp_path}", stem)  # type: ignore[arg-type]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {name for name, loaded in names.items() if not loaded}
    # Without a bookmark nothing is known to be loaded: nothing goes.
    remove_loaded_batch_files(_Stream(None), f"file://{tmp_path}", stem)  # type: ignore[arg-type]
    assert {p.name for p in tmp_path.iterdir()} == left


def test_page_at_a_time_path_treats_odd_records_as_the_sdk_loop_does(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    base = {
        "author": {"type": "user", "accountId": "5b1", "displayName": "A"},
        "remoteAddress": "10.0.0.1",
        "summary": "User added to group",
        "description": "",
        "category": "Users and groups",
        "sysAdmin": False,
        "superAdmin": False,
        "affectedObject": {"name": "g", "objectType": "Group"},
        "changedValues": [],
        "associatedObjects": [],
    }
    t0 = 1_780_000_000_000
    rows = [{**base, "creationDate": t0 + n} for n in range(1500)]
    rows += [
        {**base, "creationDate": t0 + 2000, "brandNew": "a field the schema lacks"},
        {**base, "creationDate": t0 + 2001, "summary": 5},  # a type the schema forbids
        {**base, "creationDate": t0 + 2002, "id": "the API sent one"},
        {**base, "creationDate": t0 + 2003, "score": 0.5},  # a float: stdlib canonical JSON
        {**base, "creationDate": t0 + 2004},
        {**base, "creationDate": t0 + 2004},  # an identical event: one row, one id
        {**base, "summary": "no date"},  # no creationDate
    ]
    # Newest first, as the API answers.
    rows.sort(key=lambda r: int(t.cast("int", r.get("creationDate", 0))), reverse=True)
    sim = simulator_factory(audit_records=10)
    sim.control("payload", {"route": "audit", "results": rows})
    catalog = selected_catalog(tmp_path, sim, "audit_records")
    config = sim.tap_config("classic_token", start_date="2026-01-01T00:00:00Z")
    fast = run_tap(tmp_path, config, catalog=catalog)
    sdk = run_tap(
        tmp_path, _sdk_loop_config(sim, start_date="2026-01-01T00:00:00Z"), catalog=catalog
    )
    assert fast.returncode == sdk.returncode == 0, fast.stderr[-2000:] + sdk.stderr[-2000:]
    assert FAST_PATH in fast.stderr
    assert fast.records("audit_records") == sdk.records("audit_records")
    assert _states_in_place(fast.messages) == _states_in_place(sdk.messages)
    by_date = {r["creationDate"]: r for r in fast.records("audit_records") if "creationDate" in r}
    assert "brandNew" not in by_date[t0 + 2000]
    assert by_date[t0 + 2001]["summary"] is None
    sent_id = {**base, "creationDate": t0 + 2002, "id": "the API sent one"}
    assert by_date[t0 + 2002]["id"] == record_id(sent_id)
    assert by_date[t0 + 2003]["id"] == record_id({**base, "creationDate": t0 + 2003, "score": 0.5})
    assert "score" not in by_date[t0 + 2003]
    assert [r["creationDate"] for r in fast.records("audit_records") if "creationDate" in r].count(
        t0 + 2004
    ) == 1
    undated = [r for r in fast.records("audit_records") if "creationDate" not in r]
    assert undated
    assert all(r["createdAt"] is None for r in undated)
    assert "without a creationDate" in fast.stderr
