"""The demo: a simulated Confluence site, `meltano run` twice into DuckDB, then a seat report.

Run it with `./scripts/demo` (which sets everything up first); nothing here needs a
Confluence account, a database server or the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulator.process import ALL_SCOPES, SimulatorProcess

REPO = Path(__file__).resolve().parents[1]
MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
DATABASE = REPO / "demo" / "confluence.duckdb"
LOADER_PYTHON = REPO / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
STATE_ID = "dev:tap-confluence-to-target-duckdb"
NEW_AUDIT_RECORDS = 40


def say(text: str) -> None:
    """Print one line of the demo's narration."""
    print(f"\n== {text}", flush=True)


def tap_env(sim: SimulatorProcess, workdir: Path) -> dict[str, str]:
    """Return the settings for OAuth plus an API token: every stream, licence seats included."""
    refresh_token = sim.control("grant", {"scopes": ALL_SCOPES, "admin": True})["refresh_token"]
    return {
        "TAP_CONFLUENCE_CLOUD_ID": "0f0f0f0f-1111-4222-8333-444455556666",
        "TAP_CONFLUENCE_API_URL": sim.url,
        "TAP_CONFLUENCE_AUTH_URL": sim.url,
        "TAP_CONFLUENCE_SITE_URL": sim.url,
        "TAP_CONFLUENCE_CLIENT_ID": "fake-client-id",
        "TAP_CONFLUENCE_CLIENT_SECRET": "fake-client-secret",
        "TAP_CONFLUENCE_REFRESH_TOKEN": refresh_token,
        "TAP_CONFLUENCE_EMAIL": "admin@example.com",
        "TAP_CONFLUENCE_API_TOKEN": "fake-classic-api-token",
        "TAP_CONFLUENCE_ORG_ID": "fake-org-id",
        "TAP_CONFLUENCE_ORG_API_KEY": "fake-org-api-key",
        # A throwaway token file: the simulator's tokens mean nothing to a real site.
        "TAP_CONFLUENCE_TOKEN_STORE_PATH": str(workdir / "tokens.json"),
        "MELTANO_DATABASE_URI": f"sqlite:///{workdir / 'meltano.db'}",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_ENVIRONMENT": "dev",  # the state ID read back below names it
    }


def meltano(*args: str, env: dict[str, str], quiet: bool = True) -> str:
    """Run meltano in the repo's project; on failure show its log tail and stop the demo."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE")}
    full_env.update(env)
    proc = subprocess.run(  # noqa: S603 - fixed executable, our own arguments
        [str(MELTANO), "--log-level=warning" if quiet else "--log-level=info", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"demo: `meltano {' '.join(args)}` failed (exit {proc.returncode}).")
    return proc.stdout


def report(*args: str) -> str:
    """Run demo/report.py on the DuckDB file with the loader's own DuckDB; return its output."""
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [str(LOADER_PYTHON), str(REPO / "demo" / "report.py"), str(DATABASE), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return proc.stdout


def table_counts() -> dict[str, int]:
    """Rows per table in the DuckDB file."""
    return dict(json.loads(report("--counts-json")))


def main() -> int:
    """Run the whole demo and stop the simulator whatever happens."""
    if not MELTANO.is_file():
        raise SystemExit("demo: Meltano is not installed in .tools/meltano; run ./scripts/demo.")
    say("Installing the plugins (tap-confluence, target-duckdb) with Meltano")
    meltano("install", "tap-confluence", "target-duckdb", env={})
    DATABASE.unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tap-confluence-demo-"))
    try:
        sim = SimulatorProcess(workdir / "simulator", seed=42)
    except RuntimeError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SystemExit(f"demo: the simulated site did not start: {exc}") from None
    try:
        print(f"Simulated Confluence site at {sim.url} (seeded; no account, no network)")
        env = tap_env(sim, workdir)

        say("Run 1: meltano run tap-confluence target-duckdb (first run: everything)")
        started = time.monotonic()
        meltano("run", "tap-confluence", "target-duckdb", env=env)
        print(f"done in {time.monotonic() - started:.1f} s; loaded into {DATABASE}")
        first = table_counts()
        for table, n in first.items():
            print(f"  {table:<22} {n:>6} rows")

        appended = sim.control("audit/append", {"count": NEW_AUDIT_RECORDS})
        say(f"Meanwhile on the site: {appended['appended']} new audit records")

        say("Run 2: the same command, now incremental from the stored bookmark")
        started = time.monotonic()
        meltano("run", "tap-confluence", "target-duckdb", env=env)
        print(f"done in {time.monotonic() - started:.1f} s")
        second = table_counts()
        for table, n in second.items():
            change = n - first.get(table, 0)
            note = f"+{change} new" if change else "unchanged (upserted by primary key)"
            print(f"  {table:<22} {n:>6} rows  {note}")
        state = json.loads(meltano("state", "get", STATE_ID, env=env))
        bookmark = state["singer_state"]["bookmarks"].get("audit_records", {})
        print(f"Meltano's bookmark for audit_records: {bookmark.get('replication_key_value')}")

        say("Report")
        print(report(), end="")
    finally:
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f'\nExplore the data: {LOADER_PYTHON.relative_to(REPO)} -c "import duckdb; '
        f"duckdb.connect('{DATABASE.relative_to(REPO)}').sql('show all tables').show()\""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
