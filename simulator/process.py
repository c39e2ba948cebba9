"""Start the simulator as a subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from simulator.auth import Credentials

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120
MODES = ("oauth", "scoped_token", "classic_token", "oauth_plus_token")
#: Every scope the tap can use, so that a grant of these extracts groups and memberships too.
ALL_SCOPES = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "manage:confluence-configuration",
    "search:confluence",
    "read:group:confluence",
    "read:user:confluence",
    "offline_access",
]


class SimulatorProcess:
    """A running simulator process; stop() kills it by the pid it was started with."""

    def __init__(self, tmp_dir: Path, **options: Any) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.creds = Credentials(
            **{k: str(options[k]) for k in Credentials.__dataclass_fields__ if k in options}
        )
        args = [sys.executable, "-m", "simulator", "--port", "0"]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif isinstance(value, dict):
                args += [flag, json.dumps(value)]
            elif isinstance(value, list | tuple):
                args += [flag, ",".join(str(v) for v in value)]
            elif value is not None and value is not False:
                args += [flag, str(value)]
        self.log_path = self.tmp_dir / "simulator.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        # Building a large data set takes a moment; a server that never gets ready must not
        # hang the test session.
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(
                f"simulator did not start: {line!r}; log: {self.log_path.read_text()[-2000:]}"
            )
        self.url = line.split(" ", 1)[1]
        self.cloud_id = self.creds.cloud_id

    @property
    def gateway(self) -> str:
        """Base URL of the Confluence API through the gateway (with the cloud id prefix)."""
        return f"{self.url}/ex/confluence/{self.cloud_id}"

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the control API: GET without a body, POST with one."""
        url = self.url + "/_sim/" + path.lstrip("/").removeprefix("_sim/")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """Return the server's counters."""
        return self.control("stats")  # type: ignore[no-any-return]

    def tap_config(self, mode: str = "oauth", **overrides: Any) -> dict[str, Any]:
        """Return a tap config pointing every Atlassian host at this server."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        c = self.creds
        config: dict[str, Any] = {
            "cloud_id": self.cloud_id,
            "api_url": self.url,
            "auth_url": self.url,
            "site_url": self.url,
            "token_store_path": str(self.tmp_dir / "token_store.json"),
        }
        if mode in ("oauth", "oauth_plus_token"):
            config |= {
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "refresh_token": c.seed_refresh_token,
            }
        if mode in ("classic_token", "oauth_plus_token"):
            config |= {"email": c.email, "api_token": c.classic_token}
        if mode == "scoped_token":
            config |= {"email": c.email, "api_token": c.scoped_token}
        return config | overrides

    def stop(self) -> None:
        """Kill the process this object started and wait for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refresh(sim: SimulatorProcess, refresh_token: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST a refresh_token grant with the simulator's client credentials; (status, body)."""
    body = {
        "grant_type": "refresh_token",
        "client_id": sim.creds.client_id,
        "client_secret": sim.creds.client_secret,
        "refresh_token": refresh_token or sim.creds.seed_refresh_token,
    }
    req = urllib.request.Request(
        sim.url + "/oauth/token", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
