"""Helpers for the tap's tests: run the real CLI against the simulator and read its output.

No tests live here; the other test_tap_*, test_auth_* and test_streams_* modules import it.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.forked import run_module

if TYPE_CHECKING:
    from simulator.process import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TapRun:
    """What one CLI run printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [
            m["record"]
            for m in self.messages
            if m.get("type") == "RECORD" and m.get("stream") == stream
        ]

    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m.get("type") == "STATE"]

    def final_state(self) -> dict[str, Any]:
        states = self.states()
        assert states, f"no STATE message; stderr tail: {self.stderr[-2000:]}"
        return states[-1]

    def streams_with_records(self) -> set[str]:
        return {m["stream"] for m in self.messages if m.get("type") == "RECORD"}


def parse_messages(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def tap_command(config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tap_confluence", "--config", str(config_path), *extra]


def run_tap(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> TapRun:
    """Run `python -m tap_confluence` to completion and parse stdout as Singer messages.

    The run is forked from a process that has imported the tap (tests/support/forked.py).
    """
    tag = f"{time.monotonic_ns()}"
    args = ["--config", str(write_json(tmp_path / f"config-{tag}.json", config)), *extra]
    if state is not None:
        args += ["--state", str(write_json(tmp_path / f"state-{tag}.json", state))]
    if catalog is not None:
        args += ["--catalog", str(write_json(tmp_path / f"catalog-{tag}.json", catalog))]
    proc = run_module("tap_confluence", args, env=_env() | (env or {}), timeout=timeout)
    messages = parse_messages(proc.stdout) if "--discover" not in extra else []
    return TapRun(proc.returncode, proc.stdout, proc.stderr, messages)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_tap_until_states(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    states: int,
    extra: tuple[str, ...] = (),
    timeout: float = 120,
) -> TapRun:
    """Start the CLI, SIGKILL it once it has printed ``states`` STATE lines; return what it printed.

    SIGKILL, not SIGTERM: a crash gets no chance to flush anything, which is the hard case.
    """
    config_path = write_json(tmp_path / f"config-kill-{time.monotonic_ns()}.json", config)
    args = tap_command(config_path, *extra)
    proc = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if '"type":"STATE"' in line.replace(" ", ""):
                seen += 1
                if seen >= states:
                    break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    # A partial last line can be cut by the kill; keep whole JSON lines only.
    complete = [ln for ln in lines if ln.endswith("\n")]
    stdout = "".join(complete)
    return TapRun(proc.returncode, stdout, "", parse_messages(stdout))


def select_streams(catalog: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """Return a copy of a discovered catalog with only ``names`` selected."""
    catalog = json.loads(json.dumps(catalog))
    for entry in catalog["streams"]:
        chosen = entry["tap_stream_id"] in names
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = chosen
    return catalog


_DISCOVERED: dict[str, Any] = {}


def discovered_catalog(tmp_path: Path, sim: SimulatorProcess) -> dict[str, Any]:
    """A copy of the tap's own `--discover` catalog, run once per test process.

    The catalog does not depend on the config or the site (TapConfluence.discover_streams),
    so every later call reuses the first run's output instead of starting the tap again.
    """
    if not _DISCOVERED:
        run = run_tap(tmp_path, sim.tap_config("classic_token"), extra=("--discover",))
        assert run.returncode == 0, run.stderr[-2000:]
        _DISCOVERED.update(json.loads(run.stdout))
    return copy.deepcopy(_DISCOVERED)


def selected_catalog(
    tmp_path: Path,
    sim: SimulatorProcess,
    stream: str,
    deselect: Collection[tuple[str, ...]] = (),
) -> dict[str, Any]:
    """The tap's own catalog with only ``stream`` selected and ``deselect`` breadcrumbs off."""
    catalog = discovered_catalog(tmp_path, sim)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] == stream
            elif tuple(meta["breadcrumb"]) in deselect:
                meta["metadata"]["selected"] = False
    return catalog
