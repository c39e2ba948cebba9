"""Run the tap, the ceiling loop and the simulator as separate processes, and measure them.

Every figure comes from a whole process: wall time from spawn to exit, peak RSS from the
kernel's own accounting (``wait4``), and request counts from the simulator's ``/_sim/stats``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.process import SimulatorProcess

REPO = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"METRIC: (\{.*\})")


@dataclass
class ProcessRun:
    """What one measured process did."""

    seconds: float
    #: Peak RSS of the process itself (its helpers' are in ``helpers_rss_mb``).
    max_rss_mb: float
    returncode: int
    stderr: str
    stdout_path: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: CPU seconds (user + system) of the process and every child it waited for.
    cpu_seconds: float = 0.0
    #: Sum of the peak RSS of each child process seen while it ran (the tap's helpers).
    helpers_rss_mb: float = 0.0
    helpers: int = 0

    @property
    def total_rss_mb(self) -> float:
        """The process's peak RSS plus each helper's: never less than the run held at once."""
        return self.max_rss_mb + self.helpers_rss_mb

    def check(self, what: str) -> None:
        """Fail loudly (with the stderr tail) if the process did not succeed."""
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}: {self.stderr[-3000:]}")


def run_measured(
    argv: list[str], *, stdout: Path | None = None, env: dict[str, str] | None = None
) -> ProcessRun:
    """Run ``argv`` to completion; stdout to ``stdout`` or /dev/null; time it and read its RSS."""
    err_path = Path(tempfile.gettempdir()) / f"bench-stderr-{os.getpid()}.log"
    out = stdout.open("wb") if stdout else open(os.devnull, "wb")  # noqa: SIM115
    with out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err, env=env)
        watcher = ChildPeaks(proc.pid)
        # wait4 reports the peak RSS of this child (ru_maxrss, KiB on Linux; a reaped child
        # of its own counts only if larger, so helpers are watched apart) and its CPU time
        # with that of the children it waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        helpers_kib = watcher.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    err_path.unlink(missing_ok=True)
    return ProcessRun(
        seconds=seconds,
        max_rss_mb=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
        stderr=stderr,
        stdout_path=stdout,
        counts=record_counts(stderr),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        helpers_rss_mb=sum(helpers_kib.values()) / 1024,
        helpers=len(helpers_kib),
    )


class ChildPeaks:
    """Watches a process's children (the tap's helpers) and keeps each one's peak RSS.

    Every 20 ms it reads ``VmHWM`` (the kernel's own peak RSS of a process) of each child in
    ``/proc``; a child's peak is missed only if it grows in its last 20 ms.
    """

    def __init__(self, pid: int) -> None:
        """Start watching the children of ``pid``."""
        self._pid = pid
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            for child in _children(self._pid):
                kib = _vm_hwm_kib(child)
                if kib:
                    self.peaks[child] = max(self.peaks.get(child, 0), kib)

    def stop(self) -> dict[int, int]:
        """Stop watching; return each child's peak RSS in KiB."""
        self._done.set()
        self._thread.join()
        return self.peaks


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _vm_hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def record_counts(stderr: str) -> dict[str, int]:
    """Sum the SDK's ``record_count`` metrics per stream from the tap's log."""
    counts: dict[str, int] = {}
    for match in METRIC.finditer(stderr):
        try:
            metric = json.loads(match.group(1))
        except ValueError:
            continue
        if metric.get("metric") == "record_count":
            stream = str(metric.get("tags", {}).get("stream", "?"))
            counts[stream] = counts.get(stream, 0) + int(metric.get("value", 0))
    return counts


class Workdir:
    """Files the benchmark writes: configs, catalogs, states, captured output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0

    def write(self, stem: str, data: Any) -> Path:
        """Write ``data`` as JSON to a fresh file and return its path."""
        self._n += 1
        path = self.root / f"{stem}-{self._n}.json"
        path.write_text(json.dumps(data))
        return path

    def path(self, stem: str) -> Path:
        """A fresh path for a file the caller will write."""
        self._n += 1
        return self.root / f"{stem}-{self._n}"


def tap_argv(config: Path, catalog: Path | None = None, state: Path | None = None) -> list[str]:
    """The tap's command line, as Meltano would run it."""
    argv = [sys.executable, "-m", "tap_confluence", "--config", str(config)]
    if catalog:
        argv += ["--catalog", str(catalog)]
    if state:
        argv += ["--state", str(state)]
    return argv


def catalog_selecting(work: Workdir, config: Path, streams: set[str]) -> Path:
    """The tap's own discovered catalog with only ``streams`` selected."""
    proc = subprocess.run(
        [*tap_argv(config), "--discover"], cwd=REPO, capture_output=True, text=True, check=True
    )
    catalog = json.loads(proc.stdout)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return work.write("catalog", catalog)


def last_state(stdout: Path) -> dict[str, Any]:
    """The last STATE message a tap wrote to ``stdout``."""
    state: dict[str, Any] = {}
    with stdout.open("rb") as f:
        for line in f:
            if line.startswith(b'{"type":"STATE"') or b'"type":"STATE"' in line[:40]:
                state = json.loads(line)["value"]
    return state


def requests_by_route(sim: SimulatorProcess) -> dict[str, int]:
    """Requests the simulator served since its last reset, per route (control routes left out)."""
    stats = sim.stats()
    return {k: v for k, v in stats["requests"].items() if not k.startswith("_sim")}


def start_simulator(root: Path, name: str, **options: Any) -> SimulatorProcess:
    """Start a simulator process with ``options`` in its own directory under ``root``."""
    return SimulatorProcess(root / name, **options)
