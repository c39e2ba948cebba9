"""A live audit log: records appended while a sync pages, and late records with older dates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.process import SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    by_key,
    discover,
    run_inprocess,
    select_streams,
    tap_config,
)

pytestmark = pytest.mark.slow

KEY = ("cloudId", "id")


def test_appended_and_late_records_are_all_delivered_by_the_run_or_the_next(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # Late records land 30 minutes behind the newest one: inside the default 60-minute lookback.
    sim = sims(
        users=20,
        guests=2,
        groups=4,
        audit_records=20_000,
        append_every=2,
        append_count=5,
        late_every=3,
        late_count=2,
        late_by_ms=30 * 60_000,
    )
    config = tap_config(sim, tmp_path, "classic_token")
    catalog = select_streams(discover(tmp_path, config), {"audit_records"})
    base = sim.control("info")["audit_records"]

    first = run_inprocess(tmp_path, config, catalog=catalog)
    assert first.returncode == 0, first.stderr[-3000:]
    injected = sim.stats()["faults_injected"]
    assert injected.get("append", 0) > 0
    assert injected.get("late_records", 0) > 0
    sim.control("faults", {})
    grown = sim.control("info")["audit_records"]
    assert grown > base

    second = run_inprocess(tmp_path, config, catalog=catalog, state=first.last_state())
    assert second.returncode == 0, second.stderr[-3000:]
    # A fresh full read, with the log now still, is the truth both runs together must match.
    oracle = by_key(run_inprocess(tmp_path, config, catalog=catalog).records("audit_records"), KEY)
    assert len(oracle) == grown

    run1 = by_key(first.records("audit_records"), KEY)
    both = by_key(first.records("audit_records") + second.records("audit_records"), KEY)
    assert both == oracle, "every appended and late record arrived, each exactly as stored"
    assert oracle.keys() - run1.keys(), "some records landed behind the first run's reads"
    FIGURES.add("live_log_records_compared", len(oracle))
    FIGURES.add("live_log_records_added", grown - base)
