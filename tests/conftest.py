"""Shared fixtures: the Confluence Cloud simulator on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess


@pytest.fixture
def simulator_factory(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators with options (`users=10`, `rate_limit_every=3`, ...); all stop after."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", **options)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    """A fresh simulator with the default data set."""
    return simulator_factory()
