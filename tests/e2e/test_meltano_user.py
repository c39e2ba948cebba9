"""What a Meltano user meets, for real: `meltano run`, `invoke`, `config test` and PostgreSQL.

One small simulated site is loaded once; each test then checks one promise: the example sites
do not run on the first site's credentials, a user removed from the site is soft-deleted and
leaves the README's reports, `--state` in Meltano's own forms is honoured, the plugin's auth
commands work, and `meltano config test` shows the tap's sentence.
"""

# Table and column names in the SQL below come from the tap's own catalog, not from input.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.meltano import (
    REPO,
    SITE_A_CLOUD_ID,
    MeltanoProject,
    PipelineSite,
    site_config,
    tap_env,
)

pytestmark = pytest.mark.slow

SCHEMA = "tap_confluence"
STATE_ID = "dev:tap-confluence-to-target-postgres"
SMALL_SITE = {
    "seed": 7,
    # Enough users that some licensed ones have no activity in 90 days (seats to reclaim).
    "users": 40,
    "guests": 3,
    "groups": 4,
    "audit_records": 150,
    "content": 20,
}
VERSIONED = ("users", "groups", "group_members")


@dataclass
class SiteA:
    """The first site, loaded once by `meltano run tap-confluence target-postgres`."""

    site: PipelineSite
    sim: SimulatorProcess
    token_file: Path


@pytest.fixture(scope="module")
def site_a(pipeline: PipelineSite, start_simulator: Callable[..., SimulatorProcess]) -> SiteA:
    sim = start_simulator(**SMALL_SITE)
    token = sim.control("grant", {"scopes": ALL_SCOPES, "admin": True})["refresh_token"]
    pipeline.env.update(tap_env("TAP_CONFLUENCE", site_config(sim, SITE_A_CLOUD_ID, token)))
    token_file = pipeline.run_dir / "site-a-token.json"
    pipeline.env["TAP_CONFLUENCE_TOKEN_STORE_PATH"] = str(token_file)
    pipeline.run("run", "tap-confluence", "target-postgres")
    return SiteA(pipeline, sim, token_file)


def last_stderr_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


# ---- item 5: the SDK's own settings are Meltano settings, typed ----------------------------


def test_sdk_settings_reach_the_tap_with_their_types(
    meltano_project: MeltanoProject, tmp_path: Path
) -> None:
    env = {
        "TAP_CONFLUENCE_FLATTENING_ENABLED": "true",
        "TAP_CONFLUENCE_FLATTENING_MAX_DEPTH": "2",
        "TAP_CONFLUENCE_STREAM_MAPS": '{"users": {"email": "__NULL__"}}',
        "TAP_CONFLUENCE_AUDIT_CONCURRENCY": "3",
    }
    out = meltano_project.meltano(
        "config", "print", "tap-confluence", run_dir=tmp_path, env=env
    ).stdout
    config = json.loads(out[out.index("{") :])
    assert config["flattening_enabled"] is True
    assert config["flattening_max_depth"] == 2
    assert config["stream_maps"] == {"users": {"email": "__NULL__"}}
    assert config["audit_concurrency"] == 3
    # Unset, the tap's real defaults show.
    assert config["audit_lookback_minutes"] == 60
    assert config["max_retry_wait_seconds"] == 300


# ---- item 1: the example sites do not run on the first site's credentials ---------------


def test_example_sites_settings_show_what_each_must_be_given(site_a: SiteA) -> None:
    for plugin in ("tap-confluence--site-b", "tap-confluence--site-c"):
        out = site_a.site.run("config", "print", plugin).stdout
        config = json.loads(out[out.index("{") :])
        # Blank, not site A's: set by `meltano config set <plugin> ...` for that site.
        assert config["cloud_id"] == "", plugin
        assert config["site_url"] == "", plugin
        assert config["refresh_token"] == "", plugin
        # Site A's OAuth app and API token may serve every site: those are inherited.
        assert config["client_id"] == "fake-client-id", plugin
        assert config["email"] == "admin@example.com", plugin


# ---- item 3: --state in Meltano's forms ---------------------------------------------------


def invoke_audit_only(site: PipelineSite, *args: str) -> Any:
    env = {**site.env, "TAP_CONFLUENCE__SELECT": '["audit_records.*"]'}
    return site.project.meltano(
        "invoke", "tap-confluence", *args, run_dir=site.run_dir, env=env, check=False
    )


def audit_records_sent(stdout: str) -> int:
    count = 0
    for line in stdout.splitlines():
        if line.startswith("{") and '"RECORD"' in line:
            message = json.loads(line)
            count += message.get("stream") == "audit_records"
    return count


@pytest.fixture(scope="module")
def stored_state(site_a: SiteA) -> dict[str, Any]:
    return site_a.site.state(STATE_ID)


@pytest.mark.parametrize("form", ["meltano state get", "STATE message"])
def test_state_in_meltanos_forms_resumes_from_the_bookmark(
    site_a: SiteA, stored_state: dict[str, Any], tmp_path: Path, form: str
) -> None:
    assert set(stored_state) == {"singer_state"}
    if form == "meltano state get":
        text = json.dumps(stored_state)
    else:
        text = json.dumps({"type": "STATE", "value": stored_state["singer_state"]}) + "\n"
    state_file = tmp_path / "state.json"
    state_file.write_text(text)
    proc = invoke_audit_only(site_a.site, "--state", str(state_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sent = audit_records_sent(proc.stdout)
    # The bookmark is the newest record; only audit_lookback_minutes before it is read again.
    assert sent < SMALL_SITE["audit_records"] / 10, f"{sent} audit records: a full re-read"


def test_a_file_that_is_not_a_state_is_refused_with_the_sentence_last(
    site_a: SiteA, tmp_path: Path
) -> None:
    not_state = tmp_path / "catalog.json"
    not_state.write_text(json.dumps({"streams": []}))
    proc = invoke_audit_only(site_a.site, "--state", str(not_state))
    assert proc.returncode != 0
    assert audit_records_sent(proc.stdout) == 0, "never a silent full re-read"
    last = last_stderr_line(proc.stderr)
    assert "The state file is not a Singer state" in last, proc.stderr[-3000:]
    assert "meltano state get" in last


# ---- item 6: the auth commands of the plugin ----------------------------------------------


def test_meltano_invoke_status_reads_this_plugins_own_token_store(site_a: SiteA) -> None:
    proc = site_a.site.run("invoke", "tap-confluence:status", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert SITE_A_CLOUD_ID in proc.stdout
    assert str(site_a.token_file) in proc.stdout + proc.stderr


def test_meltano_invoke_status_of_an_example_site_reads_that_sites_own_store(site_a: SiteA) -> None:
    proc = site_a.site.run("invoke", "tap-confluence--site-b:status", check=False)
    shown = proc.stdout + proc.stderr
    # Site B has no token yet; what matters is whose store was read.
    assert proc.returncode != 0
    assert "tap-confluence--site-b.json" in shown, shown[-3000:]
    assert str(site_a.token_file) not in shown
    assert SITE_A_CLOUD_ID not in shown


def test_meltano_invoke_check_calls_the_simulated_site_with_this_plugins_settings(
    site_a: SiteA,
) -> None:
    before = site_a.sim.stats()["total_requests"]
    proc = site_a.site.run("invoke", "tap-confluence:check", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert site_a.sim.stats()["total_requests"] > before


# ---- item 8: `meltano config test` shows the tap's own sentence ---------------------------


def test_meltano_config_test_shows_the_taps_sentence_not_the_sdks_summary(site_a: SiteA) -> None:
    env = {**site_a.site.env, "TAP_CONFLUENCE_AUDIT_LOOKBACK_MINUTES": "-5"}
    proc = site_a.site.project.meltano(
        "config", "test", "tap-confluence", run_dir=site_a.site.run_dir, env=env, check=False
    )
    assert proc.returncode != 0
    shown = proc.stdout + proc.stderr
    assert "audit_lookback_minutes must be a whole number of minutes" in shown, shown[-3000:]
    assert "Config validation failed" not in shown


# ---- item 2: users removed from the site are soft-deleted, reports skip them --------------


def readme_queries() -> list[str]:
    """Every SQL block of the README that reads the users table."""
    blocks = re.findall(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    queries = [b for b in blocks if "tap_confluence.users" in b]
    assert len(queries) >= 2, "the README's user reports are gone"
    return queries


def idle_seat_query() -> str:
    """The README's report of licensed seats to reclaim."""
    return next(q for q in readme_queries() if "inactive for 90 days" in q)


def listed_by(site: PipelineSite, query: str) -> set[str]:
    with site.connect() as conn:
        cursor = conn.execute(query)
        index = [c.name for c in cursor.description].index("accountId")
        return {row[index] for row in cursor.fetchall()}


@dataclass
class Removal:
    """Site A after one of its idle licensed users was removed and the pipeline ran again."""

    site: PipelineSite
    gone: str
    yesterday: dt.date
    job: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def removal(site_a: SiteA) -> Removal:
    site = site_a.site
    idle = listed_by(site, idle_seat_query())
    with site.connect() as conn:
        in_groups = {
            r[0] for r in conn.execute(f'SELECT DISTINCT "accountId" FROM {SCHEMA}.group_members')
        }
        # The tests' grant belongs to the site admin: keep them.
        admins = {
            r[0]
            for r in conn.execute(
                f"SELECT \"accountId\" FROM {SCHEMA}.users WHERE email = 'admin@example.com'"
            )
        }
        # The first run as if it ran yesterday: its licence snapshot is history that must stay.
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        conn.execute(f'UPDATE {SCHEMA}.license_subscriptions SET "snapshotDate" = %s', (yesterday,))
    candidates = sorted((idle & in_groups) - admins)
    assert candidates, "no idle licensed user in a group to remove"
    gone = candidates[0]
    site_a.sim.control("users/remove", {"account_id": gone})
    # The second run of site A is the first task of the shipped job; the job's example sites
    # come next (what they do is checked by the item 1 test below).
    job = site.run("run", "confluence-all-sites", check=False)
    return Removal(site, gone, yesterday, job)


def deleted_keys(site: PipelineSite, table: str, key: str) -> dict[str, bool]:
    """accountId (or another key) -> whether target-postgres marked the row deleted."""
    with site.connect() as conn:
        rows = conn.execute(
            f'SELECT "{key}", bool_or("_sdc_deleted_at" IS NOT NULL) FROM {SCHEMA}."{table}" '
            "GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_removed_user_is_soft_deleted_and_no_one_else_is(removal: Removal) -> None:
    users = deleted_keys(removal.site, "users", "accountId")
    assert users[removal.gone] is True
    assert [a for a, deleted in users.items() if deleted] == [removal.gone]


def test_removed_users_memberships_are_soft_deleted_and_no_others(removal: Removal) -> None:
    with removal.site.connect() as conn:
        rows = conn.execute(
            f'SELECT "accountId", "_sdc_deleted_at" IS NOT NULL FROM {SCHEMA}.group_members'
        ).fetchall()
    theirs = [deleted for account, deleted in rows if account == removal.gone]
    others = [deleted for account, deleted in rows if account != removal.gone]
    assert theirs, "the removed user had memberships"
    assert all(theirs)
    assert others
    assert not any(others)
    assert not any(deleted_keys(removal.site, "groups", "id").values())


def test_licence_history_of_earlier_days_stays(removal: Removal) -> None:
    with removal.site.connect() as conn:
        rows = conn.execute(
            f'SELECT "snapshotDate", "_sdc_deleted_at" FROM {SCHEMA}.license_subscriptions '
            'ORDER BY "snapshotDate"'
        ).fetchall()
    assert [r[0] for r in rows] == [removal.yesterday, removal.yesterday + dt.timedelta(days=1)]
    assert all(r[1] is None for r in rows), "a licence snapshot was marked deleted"


def test_readme_reports_no_longer_list_the_removed_user(removal: Removal) -> None:
    for query in readme_queries():
        assert removal.gone not in listed_by(removal.site, query), query[:60]


def test_shipped_job_stops_at_the_first_example_site_without_its_own_credentials(
    removal: Removal,
) -> None:
    job = removal.job
    assert job.returncode != 0
    # Site A's task ran (its rows of this run carry the removal, see above); site B refused
    # in one sentence naming what it lacks, before it spent any token; no site but A landed.
    assert "OAuth needs cloud_id" in job.stderr, job.stderr[-3000:]
    tokens = Path(removal.site.project.root) / ".meltano" / "tokens"
    assert not (tokens / "tap-confluence--site-b.json").exists()
    assert not (tokens / "tap-confluence--site-c.json").exists()
    with removal.site.connect() as conn:
        clouds = {r[0] for r in conn.execute(f'SELECT DISTINCT "cloudId" FROM {SCHEMA}.users')}
    assert clouds == {SITE_A_CLOUD_ID}
