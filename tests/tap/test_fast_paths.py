"""The fast paths stay correct: selection, message order, concurrent windows, ids, requests."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypedDict

import pytest
from singer_sdk import singerlib as singer

from simulator.process import SimulatorProcess
from tap_confluence.records.writer import BlockWriter
from tap_confluence.streams.audit.pages import AuditPage
from tap_confluence.streams.audit.rows import Shapes, ms_to_iso, record_id, record_of
from tap_confluence.streams.audit.walker import AuditWindowWalker, _Slot
from tap_confluence.streams.audit.window_reader import Narrowed
from tap_confluence.streams.audit.windows import ListPage, Window
from tests.support.audit_log import Log
from tests.support.tap_cli import run_tap, selected_catalog


def test_deselected_top_level_and_nested_fields_never_reach_the_records(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    catalog = selected_catalog(
        tmp_path,
        simulator,
        "audit_records",
        deselect={
            ("properties", "remoteAddress"),
            ("properties", "author", "properties", "displayName"),
        },
    )
    run = run_tap(tmp_path, simulator.tap_config("classic_token"), catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    records = run.records("audit_records")
    assert records
    assert all("remoteAddress" not in r for r in records)
    assert all("displayName" not in (r.get("author") or {}) for r in records)
    # Everything else is still there.
    assert all(r["author"].get("accountId") for r in records if r.get("author"))
    assert all({"cloudId", "id", "createdAt", "summary"} <= r.keys() for r in records)
    schema = next(m for m in run.messages if m["type"] == "SCHEMA")["schema"]
    assert "remoteAddress" not in schema["properties"]


def test_fields_outside_the_schema_are_dropped_without_type_conformance(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    catalog = selected_catalog(tmp_path, simulator, "users")
    run = run_tap(tmp_path, simulator.tap_config("classic_token"), catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    schema = next(m for m in run.messages if m["type"] == "SCHEMA")["schema"]
    records = run.records("users")
    assert records
    for record in records:
        assert record.keys() <= schema["properties"].keys()


def test_records_leave_the_process_before_the_state_that_covers_them(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    writer = BlockWriter()
    writer.write_message(singer.RecordMessage(stream="s", record={"n": 1}))
    writer.write_message(singer.RecordMessage(stream="s", record={"n": 2}))
    assert capsysbinary.readouterr().out == b"", "records wait in the block"
    writer.write_message(singer.StateMessage(value={"bookmarks": {"s": {"n": 2}}}))
    lines = [json.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert [m["type"] for m in lines] == ["RECORD", "RECORD", "STATE"]
    assert [m["record"]["n"] for m in lines[:2]] == [1, 2]


def test_a_full_block_of_records_is_written_without_waiting_for_state(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    writer = BlockWriter()
    for n in range(2000):
        writer.write_message(singer.RecordMessage(stream="s", record={"n": n, "pad": "x" * 64}))
    out = capsysbinary.readouterr().out
    assert out, "a full block is written at once"
    assert out.endswith(b"\n")
    assert all(json.loads(x)["type"] == "RECORD" for x in out.splitlines())


class _FetchState(TypedDict):
    in_flight: int
    max_in_flight: int
    others: int
    held: int | None


def _slow_oldest_fetch(
    log: Log, walker_box: list[AuditWindowWalker]
) -> tuple[Callable[[int, int, int, int], list[dict[str, Any]]], _FetchState]:
    """A fetch where the first concurrent window's pages wait until later windows got theirs."""
    lock = threading.Lock()
    state: _FetchState = {"in_flight": 0, "max_in_flight": 0, "others": 0, "held": None}
    others_done = threading.Event()

    def fetch(start_ms: int, end_ms: int, offset: int, limit: int) -> list[dict[str, Any]]:
        with lock:
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            walker = walker_box[0]
            concurrent = threading.current_thread().name.startswith("audit-window")
            if concurrent and state["held"] is None:
                state["held"] = start_ms
            hold = concurrent and start_ms == state["held"]
        try:
            if hold:
                # Bounded: if nothing else runs, the walk still finishes (only slower).
                others_done.wait(timeout=10)
            return log.fetch(start_ms, end_ms, offset, limit)
        finally:
            with lock:
                state["in_flight"] -= 1
                if not hold and concurrent:
                    state["others"] += 1
                    if state["others"] >= 3 * walker.workers:
                        others_done.set()

    return fetch, state


def test_concurrent_windows_are_emitted_oldest_first_even_when_later_ones_finish_first() -> None:
    rng = random.Random(11)
    dates = sorted(rng.randrange(0, 50_000_000) for _ in range(20_000))
    one = AuditWindowWalker(Log(dates).fetch, page_size=100, target_pages=5, workers=1)
    expected = [rid for w in one.walk(0, 50_000_000) for rid, _ in w.records]

    box: list[AuditWindowWalker] = []
    fetch, state = _slow_oldest_fetch(Log(dates), box)
    walker = AuditWindowWalker(fetch, page_size=100, target_pages=5, workers=4)
    box.append(walker)
    windows = list(walker.walk(0, 50_000_000))
    got = [rid for w in windows for rid, _ in w.records]

    assert state["max_in_flight"] >= 2, "windows were read concurrently"
    assert state["others"] >= 3 * walker.workers, "later windows finished while one was held"
    assert got == expected
    assert len(set(got)) == len(dates)
    for before, after in itertools.pairwise(windows):
        assert after.start_ms == before.end_ms + 1, "windows are contiguous and in order"


def test_concurrent_walk_holds_at_most_its_workers_windows_at_once() -> None:
    rng = random.Random(12)
    dates = sorted(rng.randrange(0, 50_000_000) for _ in range(20_000))
    log = Log(dates)
    walker = AuditWindowWalker(log.fetch, page_size=100, target_pages=5, workers=3)
    held: list[int] = []
    original = walker._fill

    def watched_fill(
        plan: collections.deque[_Slot],
        pool: ThreadPoolExecutor,
        planning: dict[str, int],
        on_done: Callable[[Future[Window | Narrowed]], None],
    ) -> None:
        original(plan, pool, planning, on_done)
        held.append(sum(1 for slot in plan if slot.future is not None and not slot.kept))

    walker._fill = watched_fill  # type: ignore[method-assign]
    assert sum(len(w.records) for w in walker.walk(0, 50_000_000)) == len(dates)
    assert held, "the concurrent planner ran"
    # Being read, or read and waiting to be emitted: the workers' windows and one more.
    assert max(held) <= walker.workers + 1


def test_fast_record_ids_equal_the_canonical_json_dumps_ids() -> None:
    rng = random.Random(7)
    alphabet = ["a", "Å", "李", "🚀", '"', "\\", "\n", "\x00", "\x7f", "\u2028", " "]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))

    def value(depth: int = 0) -> object:
        kind = rng.randrange(6 if depth < 3 else 3)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.randrange(-(2**62), 2**62)
        if kind == 2:
            return rng.choice([True, False, None])
        if kind == 3:
            return {text(): value(depth + 1) for _ in range(rng.randrange(4))}
        return [value(depth + 1) for _ in range(rng.randrange(4))]

    for _ in range(3000):
        record = {text(): value() for _ in range(rng.randrange(1, 6))}
        assert record_id(record, has_floats=False) == record_id(record)


def test_audit_page_ids_keep_floats_on_the_standard_library_path() -> None:
    body = b'{"results":[{"creationDate":5,"score":1e16,"author":{"n":0.5}}]}'
    ((date, rid, record),) = AuditPage(body, 1000).digested()
    assert date == 5
    assert rid.hex() == record_id(record)  # the json.dumps form: "1e+16", not msgspec's "1e16"
    assert rid.hex() != record_id(record, has_floats=False)


@pytest.mark.parametrize(
    "body",
    [b'{"results":[{"creationDate":1', b'{"results":[{"creationDate":1}', b"<html>busy</html>"],
)
def test_an_incomplete_audit_page_is_refused_so_it_is_fetched_again(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (DecodeError is a ValueError: retried)
        AuditPage(body, 1000)


@pytest.mark.slow
def test_concurrent_backfill_under_rate_limits_emits_every_record_once_in_order(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=30_000, rate_limit_every=9, retry_after=0)
    config = sim.tap_config("classic_token", audit_concurrency=4)
    run = run_tap(tmp_path, config, catalog=selected_catalog(tmp_path, sim, "audit_records"))
    assert run.returncode == 0, run.stderr[-2000:]
    stats = sim.stats()
    assert stats["faults_injected"].get("rate_limit", 0) >= 3, stats["faults_injected"]
    records = run.records("audit_records")
    assert len(records) == 30_000
    assert len({r["id"] for r in records}) == 30_000
    created = [r["createdAt"] for r in records]
    assert created == sorted(created), "oldest first across concurrently read windows"


@pytest.mark.slow
def test_backfill_requests_stay_near_records_per_page(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=60_000)
    catalog = selected_catalog(tmp_path, sim, "audit_records")
    sim.control("reset-stats", {})
    run = run_tap(tmp_path, sim.tap_config("classic_token"), catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    requests = sim.stats()["requests"]
    assert len(run.records("audit_records")) == 60_000
    minimum = 60_000 // 1000 + 1
    # Each window ends in one part-filled page; a few empty probes find where the log starts.
    assert requests["audit"] <= minimum * 1.1 + 3, requests
    assert requests.get("audit_retention", 0) == 1


@pytest.mark.slow
def test_incremental_run_with_nothing_new_costs_at_most_three_audit_requests(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=20_000)
    catalog = selected_catalog(tmp_path, sim, "audit_records")
    config = sim.tap_config("classic_token")
    first = run_tap(tmp_path, config, catalog=catalog)
    assert first.returncode == 0, first.stderr[-2000:]
    sim.control("reset-stats", {})
    second = run_tap(tmp_path, config, catalog=catalog, state=first.final_state())
    assert second.returncode == 0, second.stderr[-2000:]
    requests = sim.stats()["requests"]
    assert requests.get("audit", 0) + requests.get("audit_retention", 0) <= 3, requests


@pytest.mark.parametrize("seed", range(40))
def test_a_window_emitted_page_by_page_equals_its_full_sort_without_twins(seed: int) -> None:
    # Pages as keyset paging reads them: newest first, each re-reading its boundary
    # millisecond, some whole pages inside one millisecond, some records in several copies.
    rng = random.Random(seed)
    dates = sorted(rng.choice(range(100, 100 + rng.randrange(5, 400))) for _ in range(600))
    log: list[dict[str, int | None]]
    log = [{"creationDate": d, "n": rng.randrange(3)} for d in dates]  # identical events too
    if seed % 4 == 0:
        log += [{"n": 9}, {"creationDate": None, "n": 8}]  # undated, as a fault may send
    size = rng.randrange(2, 60)
    newest_first = sorted(log, key=lambda r: r.get("creationDate") or 0, reverse=True)
    pages, at = [], 0
    while at < len(newest_first):
        page = newest_first[at : at + size]
        pages.append(page)
        # The next page starts again inside this page's oldest millisecond (keyset re-read),
        # always at least one record further on.
        oldest = page[-1].get("creationDate") or 0
        begun, at = at, min(at + size, len(newest_first))
        while at - 1 > begun and (newest_first[at - 1].get("creationDate") or 0) == oldest:
            if rng.random() < 0.3:
                break
            at -= 1
    start = dates[0] + rng.randrange(0, 5) if seed % 3 == 0 else 0
    trim = start > 0
    window = Window(
        start, 10_000, [ListPage([dict(r) for r in p], 1000) for p in pages], 0, trim=trim
    )
    got = list(window.take())
    expected = sorted(
        {
            record_id(r): r for r in log if not (trim and (r.get("creationDate") or 0) < start)
        }.items(),
        key=lambda pair: ((pair[1].get("creationDate") or 0), bytes.fromhex(pair[0])),
    )
    assert [rid for rid, _ in got] == [rid for rid, _ in expected]
    assert [rec for _, rec in got] == [rec for _, rec in expected]


def test_block_writer_records_are_byte_for_byte_the_sdk_msgspec_lines(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    from singer_sdk.contrib.msgspec import MsgSpecWriter

    moment = dt.datetime(2026, 11, 29, 19, 30, 1, 123456, tzinfo=dt.UTC)
    messages = [
        singer.RecordMessage(stream="s", record={"n": 1, "é": ["x", None, 2.5]}),
        singer.RecordMessage(stream="s", record={"n": 2}, version=7, time_extracted=moment),
    ]
    sdk = MsgSpecWriter()
    expected = b"".join(bytes(sdk.format_message(m)) for m in messages)
    writer = BlockWriter()
    for message in messages:
        writer.write_message(message)
    writer.flush()
    assert capsysbinary.readouterr().out == expected
    # The streams' own path hands the writer plain values, with an aware UTC time.
    for message in messages:
        at = message.time_extracted or moment
        writer.write_record(message.stream, message.record, message.version, at)
    writer.flush()
    lines = capsysbinary.readouterr().out.splitlines()
    assert lines[1] == expected.splitlines()[1]
    assert json.loads(lines[0]) == {
        **json.loads(expected.splitlines()[0]),
        "time_extracted": at_iso(moment),
    }


def at_iso(moment: dt.datetime) -> str:
    """How msgspec writes an aware UTC datetime."""
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("seed", range(5))
def test_audit_dates_are_the_iso_form_of_their_epoch_milliseconds(seed: int) -> None:
    rng = random.Random(seed)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for ms in [
        0,
        86_399_999,
        86_400_000,
        *(rng.randrange(0, 253_402_300_799_999) for _ in range(2000)),
    ]:
        moment = epoch + dt.timedelta(milliseconds=ms)
        assert ms_to_iso(ms) == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def test_finished_page_records_carry_the_ids_and_dates_digested_gives() -> None:
    rows = [
        {"creationDate": 1_767_225_600_000 + n * 37_003, "summary": f"s{n}", "author": {"n": n}}
        for n in range(300)
    ]
    rows.append({"summary": "undated"})
    body = json.dumps({"results": rows}).encode()
    digested = AuditPage(body, 1000).digested()
    finished = AuditPage(body, 1000).finished("cloud", {(("x",), (str,))})
    # The id in hex sorts as the digest does: the window's order is the same either way.
    assert [(d, g.hex()) for d, g, _ in digested] == [(e[0], e[1]) for e in finished]
    assert sorted(g for _, g, _ in digested) == [
        bytes.fromhex(h) for h in sorted(e[1] for e in finished)
    ]
    for (_, digest, api_row), entry in zip(digested, finished, strict=True):
        row, ok = record_of(entry), entry[3]
        assert row["id"] == digest.hex() == record_id(api_row)
        expected = ms_to_iso(api_row["creationDate"]) if "creationDate" in api_row else None
        assert row["createdAt"] == expected
        assert row["cloudId"] == "cloud"
        assert ok is False  # no shape is known good yet
    # A shape once known good is recognised.
    row = record_of(finished[0])
    good: Shapes = {(tuple(row), tuple(map(type, row.values())))}
    again = AuditPage(body, 1000).finished("cloud", good)
    assert all(e[3] for e in again[:300])
    assert not again[300][3]
