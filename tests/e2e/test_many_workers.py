"""Two workers, three sites, one PostgreSQL: the orchestrator set-up of issue 9, for real.

Each worker is its own Meltano project directory with its own HOME; the only things they
share are the PostgreSQL system database (MELTANO_DATABASE_URI, so Meltano's state) and the
PostgreSQL token store (token_store_url). The installed plugin virtualenvs are shared
read-only, as workers share one container image. Over 9 rounds the sites take turns and so
do the workers, so each site's runs hop from one worker to the other, and each site is run
once by both workers at the same moment. Access tokens live 5 seconds and a rotated refresh
token is dead at once (reuse leeway 0), so any double spend would revoke a token family in
the simulator.

The schedule (SCHEDULE below; a and b alone, ab both at once):

    site 0: 1 a, 4 b, 7 ab
    site 1: 2 b, 5 ab, 8 a
    site 2: 3 ab, 6 b, 9 a

Each site runs alone on each worker and once on both at the same moment; each run after a
site's first hands over between different sets of workers (6 handovers). Runs hop both ways
directly (site 0's a to b, site 2's b to a), a lone run resumes from the state two
concurrent runs left (sites 1 and 2, on each worker), and site 2's very first run is
concurrent: both workers race to spend the consent's refresh token before the token store
holds a row for the site. The 12-round schedule before it (20 rounds before that) covered
the same cases with more repeats and not that first race; each round is a full `meltano
run`, ~7 s of CPU.
"""

# Table names in the SQL below are the tap's own stream names and the store's constant.
# ruff: noqa: S608

from __future__ import annotations

import json
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulator.postgres import ThrowawayPostgres
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.postgres_table import TABLE
from tests.support.meltano import MeltanoProject, site_config, tap_env

pytestmark = pytest.mark.slow

SCHEMA = "tap_confluence"
JOB = "confluence-all-sites"
SITES = {
    # plugin name: (env prefix, cloud id)
    "tap-confluence": ("TAP_CONFLUENCE", "0a0a0a0a-1111-4111-8111-000000000001"),
    "tap-confluence--site-b": ("TAP_CONFLUENCE__SITE_B", "0b0b0b0b-2222-4222-8222-000000000002"),
    "tap-confluence--site-c": ("TAP_CONFLUENCE__SITE_C", "0c0c0c0c-3333-4333-8333-000000000003"),
}
#: (site's plugin name, which workers run it) per round, in order.
SCHEDULE = [
    ("tap-confluence", "a"),
    ("tap-confluence--site-b", "b"),
    ("tap-confluence--site-c", "ab"),
    ("tap-confluence", "b"),
    ("tap-confluence--site-b", "ab"),
    ("tap-confluence--site-c", "b"),
    ("tap-confluence", "ab"),
    ("tap-confluence--site-b", "a"),
    ("tap-confluence--site-c", "a"),
]
ROUNDS = len(SCHEDULE)
TOGETHER = sum(len(who) == 2 for _, who in SCHEDULE)
SMALL = {"users": 6, "guests": 1, "groups": 2, "audit_records": 20, "content": 3}
APPEND_PER_ROUND = 2


@dataclass
class Worker:
    """One orchestrator worker: a project directory and a HOME of its own."""

    name: str
    project: MeltanoProject
    run_dir: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def run(
        self, *args: str, extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self.env | (extra or {})
        proc = self.project.meltano(*args, run_dir=self.run_dir, env=env, check=False)
        self.outputs += [proc.stdout, proc.stderr]
        return proc


def make_worker(name: str, installed: MeltanoProject, base: Path, env: dict[str, str]) -> Worker:
    root = base / f"worker-{name}" / "project"
    home = base / f"worker-{name}" / "home"
    (root / ".meltano").mkdir(parents=True)
    home.mkdir()
    (root / "meltano.yml").write_text((installed.root / "meltano.yml").read_text())
    for kind in ("extractors", "loaders"):
        os.symlink(installed.root / ".meltano" / kind, root / ".meltano" / kind)
    own = {"HOME": str(home), "XDG_STATE_HOME": str(home / ".local" / "state")}
    return Worker(name, MeltanoProject(root), base / f"worker-{name}", env | own)


def audit_rows_since(conn: psycopg.Connection, cloud: str, since: datetime) -> list[datetime]:
    rows = conn.execute(
        f'SELECT "createdAt" FROM {SCHEMA}.audit_records '
        'WHERE "cloudId" = %s AND _sdc_batched_at >= %s',
        (cloud, since.replace(tzinfo=None)),
    ).fetchall()
    return [r[0] for r in rows]


def bookmark(conn: psycopg.Connection, plugin: str) -> datetime | None:
    """The audit bookmark in Meltano's state table of the shared system database (naive UTC)."""
    table = conn.execute("SELECT to_regclass('state')").fetchone()
    assert table is not None
    if table[0] is None:
        return None  # no worker has run yet, so Meltano has not created its tables
    row = conn.execute(
        "SELECT partial_state, completed_state FROM state WHERE state_id = %s",
        (f"dev:{plugin}-to-target-postgres",),
    ).fetchone()
    if row is None:
        return None
    states = [json.loads(v) if isinstance(v, str) else v for v in row]
    state: dict[str, Any] = next((s for s in reversed(states) if s), {})
    value = state["singer_state"]["bookmarks"]["audit_records"]["replication_key_value"]
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def ms_to_naive(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def many_workers(
    meltano_project: MeltanoProject,
    postgres: ThrowawayPostgres,
    tmp_path_factory: pytest.TempPathFactory,
    simulator_factory_module: Any,
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("many-workers")
    suffix = uuid.uuid4().hex[:8]
    warehouse = postgres.create_database(f"wh_{suffix}")
    system_db = postgres.create_database(f"meltano_{suffix}")
    token_db = postgres.create_database(f"tokens_{suffix}")
    key = new_key()
    sims = {}
    env = {
        "MELTANO_DATABASE_URI": system_db.replace("postgresql://", "postgresql+psycopg://"),
        "TARGET_POSTGRES_HOST": postgres.host,
        "TARGET_POSTGRES_PORT": str(postgres.port),
        "TARGET_POSTGRES_USER": postgres.user,
        "TARGET_POSTGRES_PASSWORD": "not-a-real-password",
        "TARGET_POSTGRES_DATABASE": warehouse.rsplit("/", 1)[1],
        # Set once on the parent: every inherited site uses the same store, its own row.
        "TAP_CONFLUENCE_TOKEN_STORE_URL": token_db,
        "TAP_CONFLUENCE_TOKEN_STORE_KEY": key,
    }
    for plugin, (prefix, cloud) in SITES.items():
        sim = simulator_factory_module(
            f"sim-{plugin}",
            cloud_id=cloud,
            # Each site its own consent, as in life: the token store refuses two rows that
            # descend from one refresh token.
            seed_refresh_token=f"fake-refresh-token-seed-{plugin}",
            token_ttl=5,
            reuse_leeway=0,
            **SMALL,
        )
        sims[plugin] = sim
        config = site_config(sim, cloud, sim.creds.seed_refresh_token)
        # Re-reading nothing before the bookmark makes a resumed run's rows exactly the
        # new ones, so a run that ignored the other worker's state would show.
        config["audit_lookback_minutes"] = "0"
        env.update(tap_env(prefix, config))
    workers = [make_worker(n, meltano_project, base, env) for n in ("a", "b")]

    rounds: list[dict[str, Any]] = []
    warehouse_conn = psycopg.connect(warehouse, autocommit=True)
    system_conn = psycopg.connect(system_db, autocommit=True)
    try:
        for number, (plugin, who) in enumerate(SCHEDULE, start=1):
            cloud = SITES[plugin][1]
            appended = sims[plugin].control("audit/append", {"count": APPEND_PER_ROUND})
            together = who == "ab"
            before = bookmark(system_conn, plugin)
            started = datetime.now(UTC)
            if together:
                # Both workers run the same site at the same moment; --force lets Meltano
                # start a pipeline the other worker is running, as an orchestrator's retry
                # of a job it believes stuck would.
                args = ["run", "--no-install", "--force", plugin, "target-postgres"]
                # target-postgres's upsert (temp table, INSERT ... LEFT JOIN, UPDATE) is not
                # safe against a second loader writing the same rows at once: it fails with a
                # duplicate key now and then (MeltanoLabs/target-postgres#411). The taps and
                # the token store still race as they should; the second worker's rows go to a
                # schema of their own, and the first worker's load is the one checked.
                second = {"TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": f"{SCHEMA}_second_writer"}
                with ThreadPoolExecutor(2) as pool:
                    futures = [
                        (w.name, pool.submit(w.run, *args, extra=second if i else None))
                        for i, w in enumerate(workers)
                    ]
                results = {name: future.result() for name, future in futures}
            else:
                worker = next(w for w in workers if w.name == who)
                results = {
                    worker.name: worker.run("run", "--no-install", plugin, "target-postgres")
                }
            rounds.append(
                {
                    "number": number,
                    "site": plugin,
                    "ran": sorted(results),
                    "errors": {n: r.stderr[-3000:] for n, r in results.items() if r.returncode},
                    "appended": [ms_to_naive(ms) for ms in appended["creationDates"]],
                    "before": before,
                    "after": bookmark(system_conn, plugin),
                    "touched": audit_rows_since(warehouse_conn, cloud, started),
                }
            )
            if any(r.returncode for r in results.values()):
                break
    finally:
        warehouse_conn.close()
        system_conn.close()
    return {
        "rounds": rounds,
        "sims": sims,
        "workers": workers,
        "token_db": token_db,
        "warehouse": warehouse,
        "key": key,
    }


@pytest.fixture(scope="module")
def simulator_factory_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from simulator.process import SimulatorProcess

    started: list[SimulatorProcess] = []

    def start(name: str, **options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path_factory.mktemp(name), **options)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def test_every_round_of_both_workers_succeeds(many_workers: dict[str, Any]) -> None:
    rounds = many_workers["rounds"]
    failed = [(r["number"], r["errors"]) for r in rounds if r["errors"]]
    assert not failed, failed[0]
    assert len(rounds) == ROUNDS
    assert sum(r["ran"] == ["a", "b"] for r in rounds) == TOGETHER
    for plugin in SITES:
        alone = {r["ran"][0] for r in rounds if r["site"] == plugin and len(r["ran"]) == 1}
        assert alone == {"a", "b"}, plugin


def test_no_refresh_token_is_ever_spent_twice(many_workers: dict[str, Any]) -> None:
    for plugin, sim in many_workers["sims"].items():
        stats = sim.stats()
        assert stats["revoked_families"] == 0, plugin
        assert stats["refresh_failures"] == 0, plugin
        runs = sum(len(r["ran"]) for r in many_workers["rounds"] if r["site"] == plugin)
        # 5-second access tokens: every run but one that adopts a token the other worker
        # refreshed a moment before needs a refresh of its own.
        assert stats["refreshes"] >= runs - TOGETHER, (plugin, stats)
        current = [t for t in sim.control("tokens")["refresh_tokens"] if t["state"] == "current"]
        assert len(current) == 1, plugin


def test_every_run_resumes_from_the_state_the_other_worker_left(
    many_workers: dict[str, Any],
) -> None:
    previous: dict[str, dict[str, Any]] = {}
    handovers = 0
    for this in many_workers["rounds"]:
        site, start = this["site"], this["before"]
        last = previous.get(site)
        previous[site] = this
        if last is None:
            assert start is None, site  # the first run of a site reads everything
            continue
        assert start == last["after"], (this["number"], site)
        handovers += set(this["ran"]) != set(last["ran"])
        new, touched = sorted(this["appended"]), sorted(this["touched"])
        # Everything new landed, and nothing older than the bookmark was read again: a run
        # that ignored the shared state would have re-read the whole audit log.
        assert set(new) <= set(touched), (this["number"], site)
        assert all(t >= start for t in touched), (this["number"], site)
        assert len(touched) <= len(new) + 2, (this["number"], site)
        assert this["after"] == max(new), (this["number"], site)
    assert handovers == 6


def test_every_audit_record_landed_once_per_site(many_workers: dict[str, Any]) -> None:
    runs = {p: sum(r["site"] == p for r in many_workers["rounds"]) for p in SITES}
    with psycopg.connect(many_workers["warehouse"]) as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                f'SELECT "cloudId", count(*) FROM {SCHEMA}.audit_records GROUP BY 1'
            ).fetchall()
        )
    expected = {
        c: SMALL["audit_records"] + APPEND_PER_ROUND * runs[p] for p, (_, c) in SITES.items()
    }
    assert counts == expected


def test_the_token_table_holds_one_sealed_row_per_site_and_no_token_in_clear(
    many_workers: dict[str, Any],
) -> None:
    with psycopg.connect(many_workers["token_db"]) as conn:
        rows = conn.execute(f"SELECT cloud_id, document FROM {TABLE}").fetchall()
        dump = "\n".join(r[0] for r in conn.execute(f"SELECT t::text FROM {TABLE} t").fetchall())
    assert sorted(cloud for cloud, _ in rows) == sorted(cloud for _, cloud in SITES.values())
    assert all("sealed" in doc and "refresh_token" not in doc for _, doc in rows)
    issued = []
    for sim in many_workers["sims"].values():
        listing = sim.control("tokens")
        issued += [t["token"] for k in ("access_tokens", "refresh_tokens") for t in listing[k]]
    assert len(issued) >= ROUNDS
    assert not [t[:8] for t in issued if t in dump]
    assert many_workers["key"] not in dump


def test_workers_kept_nothing_on_their_own_disk_and_logged_no_secret(
    many_workers: dict[str, Any],
) -> None:
    for worker in many_workers["workers"]:
        root = worker.project.root
        assert not (root / ".meltano" / "meltano.db").exists()
        assert not list((root / ".meltano").glob("tokens/*.json"))
    secrets = [many_workers["key"], "fake-client-secret", "fake-classic-api-token"]
    for sim in many_workers["sims"].values():
        listing = sim.control("tokens")
        secrets += [t["token"] for k in ("access_tokens", "refresh_tokens") for t in listing[k]]
    text = "\n".join(o for w in many_workers["workers"] for o in w.outputs)
    assert not [s[:8] for s in secrets if s in text]
