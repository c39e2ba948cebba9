"""A Meltano project and pipeline runs for the end-to-end tests (fixtures: tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from simulator.postgres import ThrowawayPostgres
from simulator.process import SimulatorProcess

REPO = Path(__file__).resolve().parents[2]
MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
SEED = 42
SITE_A_CLOUD_ID = "0f0f0f0f-1111-4222-8333-444455556666"  # the simulator's default
# Prefixes of settings a developer may have exported; a test must see only its own.
FOREIGN_ENV_PREFIXES = ("TAP_CONFLUENCE", "TARGET_POSTGRES", "TARGET_DUCKDB", "MELTANO_")


@dataclass
class MeltanoProject:
    """A Meltano project copied from the repo's meltano.yml, with its plugins installed once."""

    root: Path

    def env(self, run_dir: Path, extra: dict[str, str]) -> dict[str, str]:
        """Return the environment for one isolated run: its own system DB and token files."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
        env.update(
            MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
            MELTANO_DATABASE_URI=f"sqlite:///{run_dir / 'meltano.db'}",
            NO_COLOR="1",
        )
        env.update(extra)
        return env

    def meltano(
        self, *args: str, run_dir: Path, env: dict[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `meltano ARGS` in the project; on failure, fail the test with its output."""
        proc = subprocess.run(
            [str(MELTANO), *args],
            cwd=self.root,
            env=self.env(run_dir, env),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"meltano {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}",
                pytrace=False,
            )
        return proc


@dataclass
class PipelineSite:
    """One isolated pipeline: its own PostgreSQL database, Meltano system DB and token files."""

    project: MeltanoProject
    pg: ThrowawayPostgres
    run_dir: Path
    database: str
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run meltano with this site's environment and keep its output for leak scans."""
        proc = self.project.meltano(*args, run_dir=self.run_dir, env=self.env, check=check)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def state(self, state_id: str) -> dict[str, Any]:
        """Return Meltano's stored state for `state_id`."""
        out = self.run("state", "get", state_id).stdout
        return dict(json.loads(out))

    def connect(self) -> Any:
        """Open a psycopg connection to this site's database."""
        import psycopg

        return psycopg.connect(self.pg.url(self.database), autocommit=True)


def tap_env(prefix: str, config: dict[str, Any]) -> dict[str, str]:
    """Turn tap settings into Meltano's environment variables for the plugin `prefix`."""
    env = {}
    for key, value in config.items():
        name = f"{prefix}_{key}".upper()
        env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


def site_config(sim: SimulatorProcess, cloud_id: str, refresh_token: str) -> dict[str, str]:
    """OAuth plus an API token: the set-up that reaches every stream, licence seats included."""
    return {
        "cloud_id": cloud_id,
        "api_url": sim.url,
        "auth_url": sim.url,
        "site_url": sim.url,
        "client_id": "fake-client-id",
        "client_secret": "fake-client-secret",
        "refresh_token": refresh_token,
        "email": "admin@example.com",
        "api_token": "fake-classic-api-token",
        # For user_activity's Admin API source; Meltano ignores them until meltano.yml
        # declares the settings, which test_project_files insists on once the tap has them.
        "org_id": "fake-org-id",
        "org_api_key": "fake-org-api-key",
    }
