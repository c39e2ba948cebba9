"""Under 429s, 5xx, resets, truncation, broken JSON and latency, nothing is lost or changed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    KEYS,
    by_key,
    oauth_with_groups,
    run_inprocess,
    tap_config,
)

pytestmark = pytest.mark.slow

RETRY_LINE = re.compile(r"retry \d+ in (\d+\.\d) s after HTTP (\d+)")


def _logged_waits(stderr: str) -> list[tuple[float, int]]:
    return [(float(m.group(1)), int(m.group(2))) for m in RETRY_LINE.finditer(stderr)]


def _bookmark(state: dict[str, Any] | None) -> str:
    assert state is not None, "no STATE message"
    bookmark: str = state["bookmarks"]["audit_records"]["replication_key_value"]
    return bookmark


def test_full_sync_under_every_fault_delivers_the_fault_free_record_set(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = sims(audit_records=50_000)
    config = oauth_with_groups(
        sim, tmp_path, email=sim.creds.email, api_token=sim.creds.classic_token
    )
    clean = run_inprocess(tmp_path, config)
    assert clean.returncode == 0, clean.stderr[-3000:]
    expected = {name: by_key(clean.records(name), keys) for name, keys in KEYS.items()}
    assert len(expected["audit_records"]) == 50_000
    assert all(expected.values()), "every stream has records to compare"

    sim.control("reset-stats", {})
    sim.control(
        "faults",
        {
            "rate_limit_every": 3,
            "retry_after": "1",
            "error_rate": 0.05,
            "reset_every": 11,
            "truncate_every": 13,
            "bad_json_every": 17,
            "latency_ms": 200,
        },
    )
    faulty = run_inprocess(tmp_path, config)
    stats = sim.stats()
    injected = stats["faults_injected"]
    assert faulty.crashed is None, repr(faulty.crashed)
    assert faulty.returncode == 0, faulty.stderr[-3000:]
    for kind in ("rate_limit", "reset", "truncate", "bad_json", "latency"):
        assert injected.get(kind, 0) > 0, f"no {kind} fault was injected: {injected}"
    assert sum(n for k, n in injected.items() if k.startswith("error_5")) > 0

    compared = 0
    for name, keys in KEYS.items():
        got = by_key(faulty.records(name), keys)
        assert got.keys() == expected[name].keys(), name
        assert got == expected[name], f"{name}: a record changed under faults"
        compared += len(got)
    assert _bookmark(faulty.last_state()) == _bookmark(clean.last_state())
    assert stats["revoked_families"] == 0

    waits = _logged_waits(faulty.stderr)
    rate_limited = [w for w, status in waits if status == 429]
    assert rate_limited, "the 429s were retried"
    assert set(rate_limited) == {1.0}, "each 429 waited exactly its Retry-After of 1 s"
    FIGURES.add("records_compared_under_faults", compared)
    FIGURES.add("fault_runs")


def test_absurd_retry_after_stops_the_run_cleanly_and_the_rerun_completes(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # Retrying before Retry-After only earns a longer one: an unusable 2**63 s stops the run.
    sim = sims(users=20, guests=2, groups=4, audit_records=300)
    sim.control("faults", {"rate_limit_every": 2, "retry_after": "9223372036854775807"})
    config = tap_config(sim, tmp_path, "classic_token", max_retry_wait_seconds=1)
    stopped = run_inprocess(tmp_path, config)
    line = stopped.assert_clean_failure()
    assert "Retry-After no run can wait for" in line
    assert not [w for w, status in _logged_waits(stopped.stderr) if status == 429]
    sim.control("faults", {})
    rerun = run_inprocess(tmp_path, config, state=stopped.last_state())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(rerun.records("audit_records")) == 300
    FIGURES.add("fault_runs")


def test_giving_up_ends_with_one_sentence_and_a_state_that_resumes(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = sims(users=20, guests=2, groups=4, audit_records=5_000)
    config = tap_config(sim, tmp_path, "classic_token", max_retry_wait_seconds=1)
    first = run_inprocess(tmp_path, config)
    assert first.returncode == 0, first.stderr[-3000:]
    appended = sim.control("audit/append", {"count": 300})["creationDates"]

    # An outage that outlasts every retry, on the audit log only.
    sim.control("faults", {"error_every": 1, "error_statuses": [500], "routes": ["audit"]})
    failed = run_inprocess(tmp_path, config, state=first.last_state())
    line = failed.assert_clean_failure()
    assert "audit_records: 500 from /wiki/rest/api/audit on every retry" in line
    assert "resumes from the last state" in line
    assert sim.stats()["faults_injected"]["error_500"] >= 8, "every retry was spent"
    saved = failed.last_state() or first.last_state()
    assert _bookmark(saved) == _bookmark(first.last_state()), "the bookmark did not move"

    sim.control("faults", {})
    resumed = run_inprocess(tmp_path, config, state=saved)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    every = {r["id"] for r in first.records("audit_records") + resumed.records("audit_records")}
    assert len(every) == sim.control("info")["audit_records"] == 5_300
    got_new = sorted(
        r["creationDate"] for r in resumed.records("audit_records") if r["creationDate"] in appended
    )
    assert got_new == sorted(appended)
    assert len(resumed.records("audit_records")) < 5_000, "the rerun resumed from the bookmark"
    FIGURES.add("give_up_runs")
    FIGURES.add("records_compared_after_give_up", len(every))
