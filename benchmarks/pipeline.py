"""End to end: the tap piped into target-postgres, loading a throwaway PostgreSQL.

target-postgres comes from the Meltano project's plugin venv when ``meltano install`` has
made one, else from a venv of its own under ``.tools/`` (built once with uv, same pin as
meltano.yml). Both processes are timed and their CPU seconds read with ``wait4``, so the
report can say how much of the pipeline's time is the tap.
"""

from __future__ import annotations

import os
import re
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
class PipelineResult:
    """Wall time of the whole pipeline, CPU of each side, and the tap alone for comparison."""

    seconds: float
    tap_cpu: float
    target_cpu: float
    tap_alone: float
    rows: int


def run_pipeline(root: Path, work: Workdir, n: int) -> PipelineResult:
    """Load ``n`` audit records through target-postgres; verify the row count."""
    exe = target_postgres()
    pg = ThrowawayPostgres().start()
    sim = start_simulator(root, "sim-pipeline", audit_records=n, users=100)
    try:
        database = pg.create_database("bench")
        tap_config = work.write("config", sim.tap_config("classic_token"))
        catalog = catalog_selecting(work, tap_config, {"audit_records"})
        # The loader settings meltano.yml ships with (COPY, validation and _sdc_ columns on).
        target_config = work.write(
            "target",
            {
                "host": pg.host,
                "port": pg.port,
                "user": pg.user,
                "password": "not-a-real-password",
                "database": "bench",
                "default_target_schema": "tap_confluence",
                "use_copy": True,
                "validate_records": True,
                "add_record_metadata": True,
            },
        )
        alone = run_measured(tap_argv(tap_config, catalog))
        alone.check("tap alone")
        err = open(os.devnull, "wb")  # noqa: SIM115
        with err:
            started = time.perf_counter()
            tap = subprocess.Popen(
                tap_argv(tap_config, catalog), cwd=REPO, stdout=subprocess.PIPE, stderr=err
            )
            target = subprocess.Popen(
                [str(exe), "--config", str(target_config)],
                cwd=root, stdin=tap.stdout, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
            assert tap.stdout is not None
            tap.stdout.close()
            _, tap_status, tap_usage = os.wait4(tap.pid, 0)
            _, target_status, target_usage = os.wait4(target.pid, 0)
            seconds = time.perf_counter() - started
        tap.returncode = os.waitstatus_to_exitcode(tap_status)
        target.returncode = os.waitstatus_to_exitcode(target_status)
        if tap.returncode or target.returncode:
            msg = f"pipeline failed: tap exit {tap.returncode}, target exit {target.returncode}"
            raise RuntimeError(msg)
        import psycopg

        with psycopg.connect(pg.url(database.rsplit("/", 1)[-1]), autocommit=True) as conn:
            row = conn.execute("select count(*) from tap_confluence.audit_records").fetchone()
        rows = int(row[0]) if row else 0
        if rows != n:
            msg = f"the pipeline loaded {rows} rows, expected {n}"
            raise RuntimeError(msg)
    finally:
        sim.stop()
        pg.stop()
    return PipelineResult(
        seconds=seconds,
        tap_cpu=tap_usage.ru_utime + tap_usage.ru_stime,
        target_cpu=target_usage.ru_utime + target_usage.ru_stime,
        tap_alone=alone.seconds,
        rows=rows,
    )
