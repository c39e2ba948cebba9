"""Helper processes finish a backfill's audit pages: same records, same state, nothing lost.

The helpers are real processes (``rows.py`` run by this interpreter) fed over real pipes; the
tap runs as its CLI against the simulator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tap_confluence.records.writer import BlockWriter, message_frame
from tap_confluence.streams.audit.output import jsonl
from tap_confluence.streams.audit.rows import (
    Finished,
    Shapes,
    decode_rows,
    finish_page,
    finish_rows,
    record_of,
)
from tap_confluence.streams.audit.workers import HelperError, PagePool
from tests.support.tap_cli import (
    REPO_ROOT,
    TapRun,
    parse_messages,
    run_tap,
    select_streams,
    tap_command,
    write_json,
)

#: More than a few full pages in one window: a backfill, so helpers start.
BACKFILL = 12_000
#: Three windows or so, read one at a time.
KILLED_BACKFILL = 60_000
HELPER_LINE = "helper processes finish the pages of this backfill"


def _page(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"results": rows, "limit": 1000, "size": len(rows)}).encode()


ODD_ROWS: list[dict[str, Any]] = [
    {"creationDate": 1_767_225_600_000, "summary": "plain", "author": {"accountId": "a"}},
    {"creationDate": 1_767_225_600_001, "summary": "ünïcødé ✓ \u2028", "category": "x"},
    {"creationDate": 1_767_225_600_002, "summary": "float", "score": 0.1, "big": 1e300},
    {"creationDate": 1_767_225_600_003, "summary": "nested", "changedValues": [{"k": [1, None]}]},
    {"summary": "undated"},
    {"creationDate": 1_767_225_600_004, "summary": 'quote " and \\ backslash', "n": -7},
]


def _shapes_of(rows: list[Finished]) -> Shapes:
    return {(tuple(r), tuple(map(type, r.values()))) for r in map(record_of, rows)}


def _written(rows: list[dict[str, Any] | bytes], capsys: pytest.CaptureFixture[bytes]) -> bytes:
    writer = BlockWriter()
    extracted = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    writer.write_records("audit_records", rows, 7, extracted)
    writer.flush()
    return capsys.readouterr().out


def test_a_helpers_rows_are_written_byte_for_byte_as_the_taps_own(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    body = _page(ODD_ROWS)
    # The window's order, (date, id): a helper sends a page's rows sorted so.
    here = sorted(finish_rows(*decode_rows(body), "cloud", None), key=lambda e: (e[0], e[1]))
    good = _shapes_of(here)
    pool = PagePool(1)
    try:
        helped = pool.submit(zlib.compress(body), "cloud", good).result(timeout=30)
    finally:
        pool.close()
    # Every shape was known good, so every row came back encoded, in the window's order.
    assert all(isinstance(e[2], bytes) and e[3] for e in helped)
    assert [(e[0], e[1]) for e in helped] == [(e[0], e[1]) for e in here]
    as_dicts: list[dict[str, Any] | bytes] = [record_of(e) for e in here]
    as_bytes: list[dict[str, Any] | bytes] = [e[2] for e in helped]
    assert _written(as_bytes, capsysbinary) == _written(as_dicts, capsysbinary)
    assert jsonl(as_bytes) == jsonl(as_dicts)
    # A mix (a shape the helper did not know comes back decoded) writes the same bytes too.
    mixed = finish_page(zlib.compress(body), "cloud", frozenset(list(good)[:2]))
    assert {type(e[2]) for e in mixed} == {bytes, dict}
    assert _written([e[2] for e in mixed], capsysbinary) == _written(as_dicts, capsysbinary)


@pytest.mark.parametrize("version", [None, 3])
@pytest.mark.parametrize("extracted", [None, dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC)])
def test_the_message_frame_around_an_encoded_record_is_the_sdk_encoding(
    version: int | None, extracted: dt.datetime | None, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    message: dict[str, Any] = {"type": "RECORD", "stream": "audit_records", "record": None}
    if version is not None:
        message["version"] = version
    if extracted is not None:
        message["time_extracted"] = extracted
    head, tail = message_frame(message)
    writer = BlockWriter()
    writer.write_records("audit_records", [{"a": 1}], version, extracted)
    writer.flush()
    assert head + b'{"a":1}' + tail == capsysbinary.readouterr().out


def test_a_page_a_helper_cannot_finish_fails_alone_and_the_pool_goes_on() -> None:
    # msgpack has no integer above 2**64: the helper answers with an error for this page.
    huge = _page([{"creationDate": 1, "summary": "huge", "n": 2**70}])
    pool = PagePool(1)
    try:
        with pytest.raises(HelperError, match="could not finish a page"):
            pool.submit(zlib.compress(huge), None, set()).result(timeout=30)
        assert pool.usable
        fine = pool.submit(zlib.compress(_page(ODD_ROWS[:1])), None, set()).result(timeout=30)
        assert record_of(fine[0])["summary"] == "plain"
    finally:
        pool.close()


def test_a_helper_gone_fails_its_pages_and_stops_the_pool() -> None:
    pool = PagePool(1)
    try:
        helper = pool._helpers[0]
        helper.proc.kill()
        helper.proc.wait(10)
        with pytest.raises(HelperError, match="ended unexpectedly"):
            pool.submit(zlib.compress(_page(ODD_ROWS)), None, set()).result(timeout=30)
        assert not pool.usable
    finally:
        pool.close()


def _catalog(tmp_path: Path, sim: SimulatorProcess, *streams: str) -> dict[str, Any]:
    discovered = run_tap(tmp_path, sim.tap_config("classic_token"), extra=("--discover",))
    return select_streams(json.loads(discovered.stdout), set(streams or ("audit_records",)))


def _run(tmp_path: Path, sim: SimulatorProcess, helpers: int, *streams: str) -> TapRun:
    config = sim.tap_config("classic_token", audit_helper_processes=helpers)
    run = run_tap(
        tmp_path, config, catalog=_catalog(tmp_path, sim, *(streams or ("audit_records",)))
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _bookmarks(run: TapRun) -> list[Any]:
    """Each STATE's audit bookmark (the signpost is the run's own start time)."""
    return [s["bookmarks"]["audit_records"]["replication_key_value"] for s in run.states()]


@pytest.mark.slow
def test_a_backfill_with_helpers_emits_the_records_and_states_of_one_without(
    simulator_factory: Any, tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=BACKFILL, users=20)
    helped = _run(tmp_path, sim, 2)
    alone = _run(tmp_path, sim, 0)
    assert HELPER_LINE in helped.stderr
    assert HELPER_LINE not in alone.stderr
    records = helped.records("audit_records")
    assert len(records) == BACKFILL
    assert records == alone.records("audit_records")
    assert _bookmarks(helped) == _bookmarks(alone)
    assert len(_bookmarks(helped)) > 1, "a STATE after each window"

    # Record lines differ at most in time_extracted.
    def lines(run: TapRun) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in m.items() if k != "time_extracted"}
            for m in run.messages
            if m["type"] == "RECORD"
        ]

    assert lines(helped) == lines(alone)


@pytest.mark.slow
def test_a_nightly_run_starts_no_helper(simulator_factory: Any, tmp_path: Path) -> None:
    small = simulator_factory(audit_records=800, users=20)
    run = _run(tmp_path, small, 2)
    assert HELPER_LINE not in run.stderr
    assert len(run.records("audit_records")) == 800


@pytest.mark.slow
def test_a_backfill_read_for_user_activity_too_gives_the_same_activity_with_helpers(
    simulator_factory: Any, tmp_path: Path
) -> None:
    sim = simulator_factory(audit_records=BACKFILL, users=20)
    helped = _run(tmp_path, sim, 2, "audit_records", "user_activity")
    alone = _run(tmp_path, sim, 0, "audit_records", "user_activity")
    # user_activity takes each author's latest from audit_records' read, helped or not.
    assert HELPER_LINE in helped.stderr
    assert "reused audit_records' read" in helped.stderr
    activity = helped.records("user_activity")
    assert activity
    assert any(r.get("source") == "audit" for r in activity)
    assert activity == alone.records("user_activity")
    assert helped.records("audit_records") == alone.records("audit_records")


def _helpers_of(pid: int, wanted: int, deadline: float) -> list[int]:
    """Pids of the helper processes of ``pid``, once there are ``wanted`` (or those at the
    deadline: the helpers start one after the other)."""
    found: list[int] = []
    while time.monotonic() < deadline:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
                if ppid == pid and b"rows.py" in cmdline:
                    found.append(int(entry.name))
        if len(found) >= wanted:
            break
        time.sleep(0.02)
    return found


@pytest.mark.slow
def test_helpers_get_no_secret_and_one_killed_mid_backfill_loses_no_record(
    simulator_factory: Any, tmp_path: Path
) -> None:
    # Slow answers and one window at a time: the helpers start with the first window, and
    # the next window's pages come long after one of them is killed.
    sim = simulator_factory(audit_records=KILLED_BACKFILL, users=20, latency_ms=50)
    catalog = _catalog(tmp_path, sim, "audit_records")
    config = sim.tap_config("classic_token", audit_helper_processes=2, audit_concurrency=1)
    secret = "fake-secret-in-the-environment-0000"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE_")}
    env["TAP_CONFLUENCE_CLIENT_SECRET"] = secret
    out = tmp_path / "killed.jsonl"
    command = tap_command(
        write_json(tmp_path / "config-killed.json", config),
        "--catalog",
        str(write_json(tmp_path / "catalog-killed.json", catalog)),
    )
    with (
        out.open("wb") as sink,
        subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.PIPE, env=env
        ) as proc,
    ):
        try:
            helpers = _helpers_of(proc.pid, 2, time.monotonic() + 60)
            assert len(helpers) == 2, "the backfill started its two helpers"
            for pid in helpers:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert secret.encode() not in environ
                assert b"TAP_CONFLUENCE_" not in environ
            os.kill(helpers[0], signal.SIGKILL)
            _, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = stderr.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "a helper process ended unexpectedly (exit code -9)" in text
    assert "nothing is lost" in text
    assert secret not in text
    killed = [m["record"] for m in parse_messages(out.read_text()) if m["type"] == "RECORD"]
    clean = _run(tmp_path, sim, 0)
    assert len(killed) == KILLED_BACKFILL
    assert killed == clean.records("audit_records")
