"""Reliability suite fixtures: simulators that feed the leak scan, and the figures summary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.reliability.harness import FIGURES, FIGURES_KEY, LEAKS, write_figures


def _stop(sim: SimulatorProcess) -> None:
    if sim.proc.poll() is None:
        LEAKS.harvest(sim)
        FIGURES.add_faults(sim.stats())
    if sim in LEAKS.live:
        LEAKS.live.remove(sim)
    sim.stop()


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators for one test; their tokens and fault counts are kept when they stop."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", **options)
        started.append(sim)
        LEAKS.live.append(sim)
        return sim

    yield start
    for sim in started:
        _stop(sim)


@pytest.fixture(scope="module")
def module_sims(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Like ``sims`` but shared by a module's tests."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path_factory.mktemp("msim"), **options)
        started.append(sim)
        LEAKS.live.append(sim)
        return sim

    yield start
    for sim in started:
        _stop(sim)


@pytest.fixture(autouse=True)
def leak_scan(tmp_path: Path) -> Iterator[None]:
    """After each test, nothing the tap wrote holds a secret; token stores are 0600 in 0700."""
    yield
    findings = LEAKS.scan_tree(tmp_path)
    FIGURES.add("leak_scans")
    assert not findings, "\n".join(findings[:20])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Report the figures when any reliability test ran: an xdist worker hands its own to the
    controller (tests/conftest.py adds them up), a serial run writes them itself."""
    if not FIGURES.counts:
        return
    FIGURES.notes["secrets_known"] = len(LEAKS.secrets)
    FIGURES.notes["files_scanned"] = LEAKS.files_scanned
    FIGURES.notes["bytes_scanned"] = LEAKS.bytes_scanned
    FIGURES.notes["token_stores_checked"] = LEAKS.stores_checked
    data = FIGURES.as_json()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[FIGURES_KEY] = data
    else:
        write_figures(data)
