"""A run forked from the test fork server prints what `python -m` prints (tests/support/forked.py).

Most tests start the tap and tap-confluence-auth through that server; these hold it to the
interpreter it stands in for: the same messages, exit codes and sentences, and a run that
changes a start-up variable or outlasts its timeout is never left to the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.support.auth_cli import clean_env
from tests.support.forked import REPO_ROOT, ForkServer, run_module, run_started_afresh
from tests.support.tap_cli import _env, parse_messages, write_json


@pytest.fixture(scope="module")
def forks() -> Iterator[ForkServer]:
    """A fork server of this module's own, so TAP_TESTS_FORK=0 leaves these tests as they are."""
    started = ForkServer()
    yield started
    started.stop()


def both_ways(
    forks: ForkServer, module: str, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    assert forks.accepts(module, env)
    forked = forks.run(module, args, env=env, cwd=cwd, timeout=120)
    real = run_started_afresh(module, args, env=env, cwd=cwd, timeout=120)
    return forked, real


def by_type(stdout: str) -> dict[str, list[Any]]:
    kinds: dict[str, list[Any]] = {}
    for message in parse_messages(stdout):
        kinds.setdefault(message["type"], []).append(
            # A table's version is the run's start time in milliseconds.
            {k: v for k, v in message.items() if k not in ("time_extracted", "version")}
        )
    return kinds


STAMP = re.compile(r"^(\d{4}-\d\d-\d\d[T ])?\d\d:\d\d:\d\d[,.]\d+Z? ")


def stderr_sentences(stderr: str) -> list[str]:
    """Stderr's lines without the timestamps that differ between any two runs."""
    return [STAMP.sub("", line) for line in stderr.splitlines()]


def test_a_forked_sync_prints_the_same_messages_and_exit_code_as_python_dash_m(
    forks: ForkServer, simulator_factory: Any, tmp_path: Path
) -> None:
    sim: SimulatorProcess = simulator_factory(
        users=30, guests=3, groups=4, audit_records=400, content=5
    )
    # A classic token is not rotated, so both runs see the same site.
    config = write_json(tmp_path / "config.json", sim.tap_config("classic_token"))
    forked, real = both_ways(forks, "tap_confluence", ["--config", str(config)], _env())
    assert real.returncode == forked.returncode == 0, real.stderr[-2000:]
    got, want = by_type(forked.stdout), by_type(real.stdout)
    assert len(want["RECORD"]) > 400
    assert got["SCHEMA"] == want["SCHEMA"]
    assert sorted(map(json.dumps, got["RECORD"])) == sorted(map(json.dumps, want["RECORD"]))
    assert got["STATE"][-1] == want["STATE"][-1]
    assert len(got["ACTIVATE_VERSION"]) == len(want["ACTIVATE_VERSION"]) > 0


@pytest.mark.parametrize(
    ("module", "args"),
    [
        # A settings error: the tap's sentence, last on stderr, exit 1. The path is
        # relative, so the run must be in the test's directory to find the file.
        ("tap_confluence", ["--config", "bad.json"]),
        ("tap_confluence", ["--about", "--format=json"]),
        # No token store yet: the auth CLI's sentence and its exit code.
        ("tap_confluence.auth_cli", ["status"]),
        ("tap_confluence.auth_cli", ["--help"]),
    ],
)
def test_forked_and_real_runs_end_alike(
    forks: ForkServer, module: str, args: list[str], tmp_path: Path
) -> None:
    write_json(tmp_path / "bad.json", {"cloud_id": "not-a-cloud-id", "client_id": "x"})
    forked, real = both_ways(forks, module, args, clean_env(tmp_path), cwd=tmp_path)
    assert forked.returncode == real.returncode
    assert forked.stdout == real.stdout
    assert stderr_sentences(forked.stderr) == stderr_sentences(real.stderr)
    assert forked.returncode != 0 or forked.stdout, "each case prints something to compare"


def test_a_run_that_changes_a_start_up_variable_is_started_afresh(
    forks: ForkServer, tmp_path: Path
) -> None:
    env = clean_env(tmp_path)
    assert forks.accepts("tap_confluence", env)
    assert not forks.accepts("tap_confluence", env | {"PYTHONHASHSEED": "7"})
    assert not forks.accepts("tap_confluence", env | {"LC_ALL": "C"})
    assert not forks.accepts("tap_confluence", env | {"TZ": "America/Denver"})
    assert not forks.accepts("simulator", env)
    # The fallback is a real interpreter: its start-up sees the variable.
    proc = run_module(
        "tap_confluence",
        ["--about", "--format=json"],
        env=env | {"PYTHONWARNINGS": "error::DeprecationWarning"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["name"] == "tap-confluence"


def test_a_forked_run_past_its_timeout_is_killed(
    forks: ForkServer, simulator_factory: Any, tmp_path: Path
) -> None:
    sim: SimulatorProcess = simulator_factory(users=5, audit_records=10)
    sim.control("faults", {"latency_ms": 20_000})
    config = write_json(tmp_path / "config.json", sim.tap_config("classic_token"))
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forks.run("tap_confluence", ["--config", str(config)], env=_env(), cwd=REPO_ROOT, timeout=3)
    assert time.monotonic() - started < 15
    # The child the server forked for it is gone: no tap outlives the timeout.
    deadline = time.monotonic() + 10
    while children(forks.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children(forks.proc.pid) == []


def children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append(int(entry))
    return found
