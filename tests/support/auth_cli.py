"""Helpers for the tap-confluence-auth tests: run the CLI, drive `login` like a browser.

No tests live here; test_auth_cli_*.py import it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.process import SimulatorProcess
from tests.support.forked import run_module

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tap_confluence.auth_cli"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any TAP_CONFLUENCE_* of the caller, with a private state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE")}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def sim_env(sim: SimulatorProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Client credentials from the environment, as the issue asks, plus loopback URLs."""
    env = clean_env(
        tmp_path,
        TAP_CONFLUENCE_CLIENT_ID=sim.creds.client_id,
        TAP_CONFLUENCE_CLIENT_SECRET=sim.creds.client_secret,
        TAP_CONFLUENCE_AUTH_URL=sim.url,
        TAP_CONFLUENCE_API_URL=sim.url,
    )
    return env | extra


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m tap_confluence.auth_cli ARGS`, forked as tests/support/forked.py explains."""
    return run_module("tap_confluence.auth_cli", args, env=env, timeout=timeout)


@dataclass
class LoginProcess:
    """A running `login`; its stdout is read on a thread so the pipe never fills."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    stdout: list[str]

    def authorization_url(self, timeout: float = 60) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError("login ended before printing the address: " + self.finish()[1])
            if "/authorize?" in line:
                return line.strip()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the process; return (exit code, stdout, stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        return self.proc.returncode, "".join(self.stdout), stderr

    def stop(self) -> None:
        """Kill the process if a failed test left it running (by the pid it was started with)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.reader.join(timeout=30)  # it closes stdout once the process is gone
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.stderr.close()

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.stdout.append(line)
                self.lines.put(line)
            self.proc.stdout.close()
            self.lines.put(None)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()


def start_login(args: list[str], env: dict[str, str]) -> LoginProcess:
    proc = subprocess.Popen(
        [*CLI, "login", "--no-browser", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    login = LoginProcess(proc, queue.Queue(), [])
    login.start_reader()
    return login


def issued_secrets(sim: SimulatorProcess) -> list[str]:
    """Every token, code and static secret the simulator ever handed out."""
    listing: dict[str, Any] = sim.control("tokens")
    values = [t["token"] for t in listing["access_tokens"]]
    values += [t["token"] for t in listing["refresh_tokens"]]
    values += list(listing["codes"]) + list(listing["secrets"])
    return values
