"""`meltano run tap-confluence target-postgres`, for real, twice, against the simulator.

One module-scoped pipeline runs the first load, the site gains new audit records, and the
second run follows; each test below then checks one promise against PostgreSQL, Meltano's
state or the run's output. A second site is added through `inherit_from` at the end.
"""

# Table and column names in the SQL below come from the tap's own catalog, not from input.
# ruff: noqa: S608

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulator.data import Dataset
from simulator.options import DataOptions
from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.meltano import (
    SEED,
    SITE_A_CLOUD_ID,
    PipelineSite,
    site_config,
    tap_env,
)

pytestmark = pytest.mark.slow

SCHEMA = "tap_confluence"
STATE_ID = "dev:tap-confluence-to-target-postgres"
SITE_B_STATE_ID = "dev:tap-confluence--site-b-to-target-postgres"
BATCH_STATE_ID = "dev:tap-confluence--batch-to-target-postgres"
SITE_B_CLOUD_ID = "0b0b0b0b-2222-4333-8444-555566667777"
NEW_AUDIT_RECORDS = 30
LOOKBACK_MINUTES = 60
# The streams docs/CONTRACTS.md promises (user_activity arrives with its own issue, and is
# checked like the rest as soon as the tap offers it).
CONTRACT_STREAMS = {
    "users": ["cloudId", "accountId"],
    "groups": ["cloudId", "id"],
    "group_members": ["cloudId", "groupId", "accountId"],
    "license_subscriptions": ["cloudId", "snapshotDate"],
    "audit_records": ["cloudId", "id"],
}


@dataclass
class TwoRuns:
    """What the module's two runs left behind, for the tests to read."""

    site: PipelineSite
    sim: SimulatorProcess
    catalog: dict[str, Any]
    counts_after_run_1: dict[str, int]
    counts_after_run_2: dict[str, int]
    run_1_batched_until: datetime
    bookmark_after_run_1: str
    appended_dates_ms: list[int]
    #: `meltano state get` after run 2, read once: nothing runs this state id again.
    state_after_run_2: dict[str, Any]


def table_counts(site: PipelineSite, streams: list[str]) -> dict[str, int]:
    with site.connect() as conn:
        return {
            s: conn.execute(f'SELECT count(*) FROM {SCHEMA}."{s}"').fetchone()[0] for s in streams
        }


def discovered(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["tap_stream_id"]: entry for entry in catalog["streams"]}


def audit_bookmark(state: dict[str, Any]) -> dict[str, Any]:
    bookmark: dict[str, Any] = state["singer_state"]["bookmarks"]["audit_records"]
    return bookmark


def as_utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def two_runs(pipeline: PipelineSite, start_simulator: Callable[..., SimulatorProcess]) -> TwoRuns:
    sim = start_simulator(seed=SEED)
    token = sim.control("grant", {"scopes": ALL_SCOPES, "admin": True})["refresh_token"]
    pipeline.env.update(tap_env("TAP_CONFLUENCE", site_config(sim, SITE_A_CLOUD_ID, token)))
    pipeline.env["TAP_CONFLUENCE_TOKEN_STORE_PATH"] = str(pipeline.run_dir / "site-a-token.json")
    pipeline.env["TAP_CONFLUENCE_AUDIT_LOOKBACK_MINUTES"] = str(LOOKBACK_MINUTES)
    catalog = json.loads(pipeline.run("invoke", "--dump=catalog", "tap-confluence").stdout)
    streams = sorted(discovered(catalog))

    pipeline.run("run", "tap-confluence", "target-postgres")
    counts_1 = table_counts(pipeline, streams)
    with pipeline.connect() as conn:
        batched_until = conn.execute(
            f"SELECT max(_sdc_batched_at) FROM {SCHEMA}.audit_records"
        ).fetchone()[0]
    bookmark_1 = audit_bookmark(pipeline.state(STATE_ID))["replication_key_value"]

    appended = sim.control("audit/append", {"count": NEW_AUDIT_RECORDS})["creationDates"]
    pipeline.run("run", "tap-confluence", "target-postgres")
    counts_2 = table_counts(pipeline, streams)
    state_2 = pipeline.state(STATE_ID)
    return TwoRuns(
        pipeline, sim, catalog, counts_1, counts_2, batched_until, bookmark_1, appended, state_2
    )


def columns(site: PipelineSite, table: str) -> dict[str, str]:
    with site.connect() as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (SCHEMA, table),
        ).fetchall()
    return dict(rows)


def primary_key(site: PipelineSite, table: str) -> list[str]:
    with site.connect() as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (f'{SCHEMA}."{table}"',),
        ).fetchall()
    return [r[0] for r in rows]


def test_every_contract_stream_is_offered_and_selected(two_runs: TwoRuns) -> None:
    streams = discovered(two_runs.catalog)
    assert set(CONTRACT_STREAMS) <= set(streams)
    for name, entry in streams.items():
        root = next(m for m in entry["metadata"] if m["breadcrumb"] == [])
        assert root["metadata"].get("selected") is True, f"{name} is not selected by meltano.yml"


def test_every_stream_lands_in_its_own_table_keyed_by_its_primary_key(two_runs: TwoRuns) -> None:
    for name, entry in discovered(two_runs.catalog).items():
        assert primary_key(two_runs.site, name) == entry["key_properties"], name
        if name in CONTRACT_STREAMS:
            assert entry["key_properties"] == CONTRACT_STREAMS[name], name
        assert two_runs.counts_after_run_2[name] > 0, f"{name} landed no rows"


def test_timestamps_land_as_timestamps_and_nested_objects_as_jsonb(two_runs: TwoRuns) -> None:
    checked = {"timestamp": 0, "jsonb": 0}
    for name, entry in discovered(two_runs.catalog).items():
        cols = columns(two_runs.site, name)
        for prop, schema in entry["schema"]["properties"].items():
            types = schema.get("type", [])
            types = [types] if isinstance(types, str) else types
            if schema.get("format") == "date-time":
                assert cols[prop] == "timestamp without time zone", f"{name}.{prop}"
                checked["timestamp"] += 1
            elif "object" in types:
                assert cols[prop] == "jsonb", f"{name}.{prop}"
                checked["jsonb"] += 1
    # Both kinds exist in our schemas (createdAt, author); a vacuous pass would hide a rename.
    assert checked["timestamp"] > 0
    assert checked["jsonb"] > 0


def test_first_run_lands_every_user_group_membership_and_audit_record_of_the_site(
    two_runs: TwoRuns,
) -> None:
    data = Dataset(DataOptions(seed=SEED))
    counts = two_runs.counts_after_run_1
    assert counts["users"] == data.n_total
    assert counts["groups"] == len(data.groups)
    assert counts["group_members"] == sum(len(m) for m in data.members)
    assert counts["audit_records"] == data.audit_total()
    assert counts["license_subscriptions"] == 1


def test_licence_snapshot_reports_the_sites_seats(two_runs: TwoRuns) -> None:
    with two_runs.site.connect() as conn:
        bought, used, free = conn.execute(
            f'SELECT "purchasedSeats", "licensedUsers", "remainingSeats" '
            f"FROM {SCHEMA}.license_subscriptions"
        ).fetchone()
    data = Dataset(DataOptions(seed=SEED))
    assert used == data.licensed_active()
    assert bought >= used
    assert free == bought - used


def test_second_run_adds_no_duplicate_rows(two_runs: TwoRuns) -> None:
    before, after = two_runs.counts_after_run_1, two_runs.counts_after_run_2
    for name in before:
        expected = before[name] + (NEW_AUDIT_RECORDS if name == "audit_records" else 0)
        assert after[name] == expected, name
    with two_runs.site.connect() as conn:
        for name, entry in discovered(two_runs.catalog).items():
            keys = ", ".join(f'"{k}"' for k in entry["key_properties"])
            distinct = conn.execute(
                f'SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {SCHEMA}."{name}") d'
            ).fetchone()[0]
            assert distinct == after[name], name


def test_second_run_loads_only_the_new_audit_records(two_runs: TwoRuns) -> None:
    with two_runs.site.connect() as conn:
        touched = conn.execute(
            f'SELECT "createdAt", "creationDate" FROM {SCHEMA}.audit_records '
            "WHERE _sdc_batched_at > %s",
            (two_runs.run_1_batched_until,),
        ).fetchall()
    bookmark = as_utc(two_runs.bookmark_after_run_1).replace(tzinfo=None)
    new = sorted(ms for created, ms in touched if created > bookmark)
    assert new == sorted(two_runs.appended_dates_ms)
    # The tap re-reads audit_lookback_minutes before the bookmark on purpose (late records);
    # anything older would mean a full re-read.
    window_start = bookmark - timedelta(minutes=LOOKBACK_MINUTES)
    reread = [created for created, _ in touched if created <= bookmark]
    assert all(created >= window_start for created in reread), reread


def test_meltano_state_carries_the_audit_bookmark_of_the_newest_record(two_runs: TwoRuns) -> None:
    bookmark = audit_bookmark(two_runs.state_after_run_2)
    assert bookmark["replication_key"] == "createdAt"
    newest_ms = max(two_runs.appended_dates_ms)
    assert as_utc(bookmark["replication_key_value"]) == datetime.fromtimestamp(
        newest_ms / 1000, UTC
    )
    assert as_utc(two_runs.bookmark_after_run_1) < as_utc(bookmark["replication_key_value"])


def test_meltano_state_carries_a_bookmark_for_every_incremental_stream(two_runs: TwoRuns) -> None:
    bookmarks = two_runs.state_after_run_2["singer_state"]["bookmarks"]
    incremental = {
        name: entry["replication_key"]
        for name, entry in discovered(two_runs.catalog).items()
        if entry.get("replication_key")
    }
    assert "audit_records" in incremental
    for name, key in incremental.items():
        bookmark = bookmarks[name]
        # A stream may keep one bookmark, or one per partition (user_activity per source).
        entries = [bookmark, *bookmark.get("partitions", [])]
        values = [e["replication_key_value"] for e in entries if e.get("replication_key_value")]
        assert values, f"{name} has no bookmark value in {bookmark}"
        assert all(e["replication_key"] == key for e in entries if "replication_key" in e)


def test_no_secret_reaches_the_logs_the_tables_or_the_state(two_runs: TwoRuns) -> None:
    issued = two_runs.sim.control("tokens")
    tokens = [t["token"] for key in ("access_tokens", "refresh_tokens") for t in issued[key]]
    # Run twice with OAuth: at least one refresh each run, so access and refresh tokens exist.
    assert len(issued["access_tokens"]) >= 1
    assert len(issued["refresh_tokens"]) >= 2
    secrets = {"fake-client-secret", "fake-classic-api-token", "fake-org-api-key", *tokens}
    state = json.dumps(two_runs.state_after_run_2)
    with two_runs.site.connect() as conn:
        dumped = [
            conn.execute(
                f'SELECT coalesce(string_agg(t::text, chr(10)), %s) FROM {SCHEMA}."{n}" t', ("",)
            ).fetchone()[0]
            for n in discovered(two_runs.catalog)
        ]
    haystacks = {"meltano output": "\n".join(two_runs.site.outputs), "state": state}
    haystacks.update({f"table {i}": text for i, text in enumerate(dumped)})
    for where, text in haystacks.items():
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"secrets found in {where}: {leaked}"


def test_batch_pipeline_loads_the_same_audit_table_and_resumes_from_its_state(
    two_runs: TwoRuns,
) -> None:
    """`meltano run tap-confluence--batch target-postgres`: audit_records as batch files."""
    site = two_runs.site
    database = f"batch_{uuid.uuid4().hex[:12]}"
    site.pg.create_database(database)
    # Only audit_records writes batch files; the other streams would come as RECORDs.
    only_audit = {"TAP_CONFLUENCE__BATCH__SELECT": '["audit_records.*"]'}
    batch = PipelineSite(
        site.project, site.pg, site.run_dir, database,
        {**site.env, "TARGET_POSTGRES_DATABASE": database, **only_audit},
    )  # fmt: skip
    batches = Path(site.project.root) / ".meltano" / "batches"
    before = set(batches.glob("*.jsonl.gz")) if batches.is_dir() else set()
    batch.run("run", "tap-confluence--batch", "target-postgres")
    written = set(batches.glob("*.jsonl.gz")) - before
    assert written, "audit_records came as batch files"

    # The table the RECORD pipeline made: same columns and types, same key, same rows.
    assert columns(batch, "audit_records") == columns(site, "audit_records")
    assert primary_key(batch, "audit_records") == primary_key(site, "audit_records")
    audit_ids = 'SELECT "cloudId", id FROM tap_confluence.audit_records'
    with site.connect() as rec, batch.connect() as bat:
        recorded = set(rec.execute(audit_ids).fetchall())
        loaded = bat.execute(audit_ids).fetchall()
    assert len(loaded) == len(set(loaded)) == len(recorded)
    assert set(loaded) == recorded

    # Incremental: the next run resumes from the batch pipeline's own state.
    first = audit_bookmark(batch.state(BATCH_STATE_ID))["replication_key_value"]
    appended = two_runs.sim.control("audit/append", {"count": 7})["creationDates"]
    batch.run("run", "tap-confluence--batch", "target-postgres")
    with batch.connect() as conn:
        rows = conn.execute(
            'SELECT "cloudId", id, "creationDate" FROM tap_confluence.audit_records'
        )
        after = rows.fetchall()
    assert len(after) == len({(c, i) for c, i, _ in after}) == len(recorded) + 7
    newer = sorted(ms for _, _, ms in after if ms > max(two_runs.appended_dates_ms))
    assert newer == sorted(appended)
    second = audit_bookmark(batch.state(BATCH_STATE_ID))["replication_key_value"]
    assert as_utc(second) > as_utc(first)

    # Batch files hold records, so they are scanned for secrets as the tables are.
    issued = two_runs.sim.control("tokens")
    tokens = [t["token"] for key in ("access_tokens", "refresh_tokens") for t in issued[key]]
    secrets = {"fake-client-secret", "fake-classic-api-token", "fake-org-api-key", *tokens}
    for path in set(batches.glob("*.jsonl.gz")) - before:
        text = gzip.decompress(path.read_bytes()).decode()
        assert not [s for s in secrets if s in text], path.name
    output = "\n".join(batch.outputs)
    assert not [s[:6] for s in secrets if s in output]


def test_second_site_through_inherit_from_lands_in_the_same_tables_without_collisions(
    two_runs: TwoRuns, start_simulator: Callable[..., SimulatorProcess]
) -> None:
    site = two_runs.site
    # Same seed, so both sites hold the very same accountIds: only cloudId tells them apart.
    sim_b = start_simulator(seed=SEED, cloud_id=SITE_B_CLOUD_ID)
    token_b = sim_b.control("grant", {"scopes": ALL_SCOPES, "admin": True})["refresh_token"]
    site.env.update(tap_env("TAP_CONFLUENCE__SITE_B", site_config(sim_b, SITE_B_CLOUD_ID, token_b)))
    site.run("run", "tap-confluence--site-b", "target-postgres")

    with site.connect() as conn:
        for name in CONTRACT_STREAMS:
            per_site = dict(
                conn.execute(
                    f'SELECT "cloudId", count(*) FROM {SCHEMA}."{name}" GROUP BY 1'
                ).fetchall()
            )
            assert set(per_site) == {SITE_A_CLOUD_ID, SITE_B_CLOUD_ID}, (name, per_site)
            if name != "audit_records":  # site A also has the appended records
                assert per_site[SITE_B_CLOUD_ID] == per_site[SITE_A_CLOUD_ID], name
        shared_ids = conn.execute(
            f'SELECT count(DISTINCT "accountId") FROM {SCHEMA}.users'
        ).fetchone()[0]
    assert shared_ids == two_runs.counts_after_run_2["users"]

    state_b = site.state(SITE_B_STATE_ID)
    assert audit_bookmark(state_b)["replication_key_value"]
    assert audit_bookmark(site.state(STATE_ID)) != audit_bookmark(state_b)
    # Site A's token file came from TAP_CONFLUENCE_TOKEN_STORE_PATH, which an inherited
    # plugin would also read; meltano.yml gives site B its own file, named after it.
    token_file = Path(site.project.root) / ".meltano" / "tokens" / "tap-confluence--site-b.json"
    assert token_file.is_file()
    assert token_b not in token_file.read_text()  # rotated at once: the seed is spent
