"""The demo's embedded loader (target-duckdb) lands every row, and the report reads it back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.data import Dataset
from simulator.options import DataOptions
from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.meltano import (
    REPO,
    SEED,
    SITE_A_CLOUD_ID,
    MeltanoProject,
    site_config,
    tap_env,
)

pytestmark = pytest.mark.slow

NEW_AUDIT_RECORDS = 7


def report(project: MeltanoProject, database: Path, *args: str) -> str:
    python = project.root / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
    return subprocess.run(
        [str(python), str(REPO / "demo" / "report.py"), str(database), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_duckdb_demo_loader_lands_every_row_twice_without_duplicates_and_reports_seats(
    meltano_project: MeltanoProject,
    start_simulator: Callable[..., SimulatorProcess],
    tmp_path: Path,
) -> None:
    sim = start_simulator(seed=SEED)
    token = sim.control("grant", {"scopes": ALL_SCOPES, "admin": True})["refresh_token"]
    database = tmp_path / "demo.duckdb"
    env = tap_env("TAP_CONFLUENCE", site_config(sim, SITE_A_CLOUD_ID, token))
    env["TAP_CONFLUENCE_TOKEN_STORE_PATH"] = str(tmp_path / "token.json")
    env["TARGET_DUCKDB_FILEPATH"] = str(database)

    meltano_project.meltano("run", "tap-confluence", "target-duckdb", run_dir=tmp_path, env=env)
    first = json.loads(report(meltano_project, database, "--counts-json"))
    data = Dataset(DataOptions(seed=SEED))
    expected = {
        "users": data.n_total,
        "groups": len(data.groups),
        "group_members": sum(len(m) for m in data.members),
        "audit_records": data.audit_total(),
        "license_subscriptions": 1,
    }
    assert {k: first.get(k) for k in expected} == expected

    sim.control("audit/append", {"count": NEW_AUDIT_RECORDS})
    meltano_project.meltano("run", "tap-confluence", "target-duckdb", run_dir=tmp_path, env=env)
    second = json.loads(report(meltano_project, database, "--counts-json"))
    expected["audit_records"] += NEW_AUDIT_RECORDS
    assert {k: second.get(k) for k in expected} == expected

    text = report(meltano_project, database)
    assert f"used {data.licensed_active()}" in text
    assert f"of {data.licensed_active()} seat holders" in text
    categories = text.split("Audit records by category", 1)[1].split()
    assert sum(int(n) for n in categories if n.isdigit()) == expected["audit_records"]
