"""SIGKILL at random points, 20 times in a row, each run resumed from the last STATE it emitted."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    KEYS,
    by_key,
    kill_after_lines,
    oauth_with_groups,
    run_inprocess,
    start_process,
)

pytestmark = pytest.mark.slow

KILLS = 20


def test_twenty_kills_in_a_row_then_a_resume_deliver_every_record(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = sims(audit_records=30_000)
    config = oauth_with_groups(sim, tmp_path)
    clean = run_inprocess(tmp_path, config)
    assert clean.returncode == 0, clean.stderr[-3000:]
    expected = {name: by_key(clean.records(name), keys) for name, keys in KEYS.items()}
    assert all(expected.values())
    total_lines = len(clean.messages)

    rng = random.Random(20)
    delivered: dict[str, list[dict[str, Any]]] = {name: [] for name in KEYS}
    state = None
    kills = attempts = states_advanced = 0
    bound = total_lines
    # A resumed run prints less, so a kill point past its end lets it finish: that run still
    # counts (its state is used) and the next kill point is drawn below what it printed.
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        proc, run_dir = start_process(tmp_path, config, state=state)
        run = kill_after_lines(proc, run_dir, lines=rng.randint(1, max(1, bound)))
        if run.returncode == -9:
            kills += 1
        else:
            assert run.returncode == 0, run.stderr[-2000:]
            bound = len(run.messages) - 1
        for name in KEYS:
            delivered[name] += run.records(name)
        if run.last_state() is not None and run.last_state() != state:
            state = run.last_state()
            states_advanced += 1
    assert kills == KILLS, f"only {kills} kills landed in {attempts} runs"
    final = run_inprocess(tmp_path, config, state=state)
    assert final.returncode == 0, final.stderr[-3000:]

    compared = 0
    for name, keys in KEYS.items():
        got = by_key(delivered[name] + final.records(name), keys)
        assert got.keys() == expected[name].keys(), f"{name}: gaps after the kills"
        assert got == expected[name], f"{name}: a record differs from the clean sync"
        compared += len(got)
    assert sim.stats()["revoked_families"] == 0
    assert states_advanced > 0, "some kills landed after a STATE, so resuming was exercised"
    full = len(expected["audit_records"])
    assert len(final.records("audit_records")) < full, "the last run resumed, not restarted"
    FIGURES.add("random_kills_survived", kills)
    FIGURES.add("records_compared_after_kills", compared)
    FIGURES.notes["kills_after_which_state_advanced"] = states_advanced
