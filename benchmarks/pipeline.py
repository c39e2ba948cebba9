"""End to end: `meltano run` into a throwaway PostgreSQL, with RECORD messages and with batches.

A Meltano project is made from the repo's meltano.yml (the tap installed editable from this
checkout) and its plugins installed once with uv; then `meltano run tap-confluence
target-postgres` (RECORD messages, as shipped) and `meltano run tap-confluence--batch
target-postgres` (one gzip JSONL batch file per audit window) each load the same simulated
site into a PostgreSQL server of their own. Loader settings are those meltano.yml ships (COPY,
validation and `_sdc_` columns on). Rows are counted and checked for duplicates.

target-postgres for the tap-alone figures comes from that project; `target_postgres()` also
finds (or builds) one for other scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import (
    REPO,
    Workdir,
    catalog_selecting,
    run_measured,
    start_simulator,
    tap_argv,
)
from simulator.postgres import ThrowawayPostgres

PLUGIN_VENV = REPO / ".meltano" / "loaders" / "target-postgres" / "venv"
OWN_VENV = REPO / ".tools" / "bench-target-postgres"
MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
#: Prefixes of settings a developer may have exported; a run must see only its own.
FOREIGN_ENV = ("TAP_CONFLUENCE", "TARGET_POSTGRES", "TARGET_DUCKDB", "MELTANO_")


def target_postgres() -> Path:
    """Path of a target-postgres executable, installing one with uv if there is none."""
    for venv in (PLUGIN_VENV, OWN_VENV):
        exe = venv / "bin" / "target-postgres"
        if exe.is_file():
            return exe
    pin = "meltanolabs-target-postgres==0.8.1"
    text = (REPO / "meltano.yml").read_text()
    if m := re.search(r"pip_url: (meltanolabs-target-postgres\S*)", text):
        pin = m.group(1)
    uv = REPO / ".venv" / "bin" / "uv"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(OWN_VENV)],
                   check=True)  # fmt: skip
    subprocess.run(
        [str(uv), "pip", "install", "--quiet", "--python", str(OWN_VENV / "bin" / "python"), pin],
        check=True,
    )
    return OWN_VENV / "bin" / "target-postgres"


@dataclass
class MeltanoRun:
    """One `meltano run` into its own database."""

    seconds: float
    rows: int
    distinct_ids: int
    column_types: dict[str, str]


@dataclass
class PipelineResult:
    """Both pipelines, and the tap alone writing RECORD messages or batch files."""

    records: MeltanoRun
    batches: MeltanoRun
    tap_records: float
    tap_batches: float
    tap_sdk_batches: float


class MeltanoProject:
    """The repo's meltano.yml in a temporary directory, its plugins installed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        text = (
            (REPO / "meltano.yml").read_text().replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n")
        )
        (root / "meltano.yml").write_text(text)
        if not MELTANO.is_file():
            msg = f"the pipeline benchmark needs Meltano at {MELTANO}: run ./scripts/setup"
            raise RuntimeError(msg)
        plugins = ["tap-confluence", "tap-confluence--batch", "target-postgres"]
        self.meltano(["install", *plugins], {}, root / "install")

    def meltano(self, args: list[str], env: dict[str, str], run_dir: Path) -> float:
        """Run meltano with ``env`` and a system DB of its own; return its wall time."""
        run_dir.mkdir(parents=True, exist_ok=True)
        full = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
        full |= {
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_DATABASE_URI": f"sqlite:///{run_dir / 'meltano.db'}",
            "NO_COLOR": "1",
            **env,
        }
        log = run_dir / "meltano.log"
        started = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.run([str(MELTANO), *args], cwd=self.root, env=full, stdout=out,
                                  stderr=subprocess.STDOUT, check=False)  # fmt: skip
        seconds = time.perf_counter() - started
        if proc.returncode:
            tail = log.read_text(errors="replace")[-3000:]
            msg = f"meltano {' '.join(args)} exited {proc.returncode}: {tail}"
            raise RuntimeError(msg)
        return seconds


def _loaded(pg: ThrowawayPostgres, database: str) -> tuple[int, int, dict[str, str]]:
    import psycopg

    with psycopg.connect(pg.url(database), autocommit=True) as conn:
        row = conn.execute(
            'SELECT count(*), count(DISTINCT ("cloudId", id)) FROM tap_confluence.audit_records'
        ).fetchone()
        types = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'tap_confluence' AND table_name = 'audit_records'"
        ).fetchall()
    count, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    return count, distinct, dict(types)


def run_pipeline(root: Path, work: Workdir, n: int) -> PipelineResult:
    """Load ``n`` audit records both ways with `meltano run`; time the tap alone too."""
    project = MeltanoProject(root / "meltano-project")
    sim = start_simulator(root, "sim-pipeline", audit_records=n, users=100, preencode_audit=True)
    try:
        creds = sim.creds
        select = '["audit_records.*"]'
        site = {
            "TAP_CONFLUENCE_SITE_URL": sim.url,
            "TAP_CONFLUENCE_EMAIL": creds.email,
            "TAP_CONFLUENCE_API_TOKEN": creds.classic_token,
            "TAP_CONFLUENCE__SELECT": select,
            "TAP_CONFLUENCE__BATCH__SELECT": select,
        }
        runs: dict[str, MeltanoRun] = {}
        for tap in ("tap-confluence", "tap-confluence--batch"):
            database = "records" if tap == "tap-confluence" else "batches"
            # A PostgreSQL server of its own for each run: what one run leaves the server to
            # do (vacuuming 200,000 fresh rows) must not slow the next one down.
            pg = ThrowawayPostgres().start()
            try:
                pg.create_database(database)
                env = {
                    **site,
                    "TARGET_POSTGRES_HOST": pg.host,
                    "TARGET_POSTGRES_PORT": str(pg.port),
                    "TARGET_POSTGRES_USER": pg.user,
                    "TARGET_POSTGRES_PASSWORD": "not-a-real-password",
                    "TARGET_POSTGRES_DATABASE": database,
                }
                run_dir = root / f"run-{database}"
                seconds = project.meltano(["run", tap, "target-postgres"], env, run_dir)
                rows, distinct, types = _loaded(pg, database)
            finally:
                pg.stop()
            if rows != n or distinct != n:
                msg = f"{tap} loaded {rows} rows ({distinct} distinct keys), expected {n}"
                raise RuntimeError(msg)
            runs[database] = MeltanoRun(seconds, rows, distinct, types)

        # The tap alone: RECORD messages, its batch files, and the SDK's own batcher (which an
        # empty stream map makes it use) for comparison.
        config = sim.tap_config("classic_token")
        catalog = catalog_selecting(work, work.write("config", config), {"audit_records"})
        batches = {"encoding": {"format": "jsonl", "compression": "gzip"},
                   "storage": {"root": f"file://{root / 'tap-batches'}"}}  # fmt: skip
        alone: dict[str, float] = {}
        for label, extra in (
            ("records", {}),
            ("batches", {"batch_config": batches}),
            ("sdk", {"batch_config": batches, "stream_maps": {"audit_records": {}}}),
        ):
            run = run_measured(tap_argv(work.write("config", config | extra), catalog))
            run.check(f"tap alone ({label})")
            if run.counts.get("audit_records") != n:
                msg = f"tap alone ({label}) counted {run.counts} records, expected {n}"
                raise RuntimeError(msg)
            alone[label] = run.seconds
            shutil.rmtree(root / "tap-batches", ignore_errors=True)
    finally:
        sim.stop()
    return PipelineResult(
        runs["records"], runs["batches"], alone["records"], alone["batches"], alone["sdk"]
    )
