"""The README's user_activity SQL, run on PostgreSQL over tables `meltano run` really loaded."""

# The SQL comes from README.md (a file in this repository), not from input.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator.process import SimulatorProcess
from tests.support.meltano import PipelineSite, tap_env

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
SCHEMA = "tap_confluence"


def readme_sql(title: str) -> str:
    """The ```sql block of README's user activity section whose first line is ``-- title``."""
    section = README.read_text().split("## User activity", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        if block.startswith(f"-- {title}\n"):
            return str(block)
    raise AssertionError(f"README's user activity section has no SQL titled {title!r}")


@dataclass
class Loaded:
    """The loaded database, and the seat holders given activity today before the load."""

    site: PipelineSite
    used_today: list[str]


@pytest.fixture(scope="module")
def site_simulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SimulatorProcess, list[str]]]:
    # Activity ends in June (admin dates too), so every seat is idle unless touched below;
    # few records for many users leaves some never active at all.
    sim = SimulatorProcess(
        tmp_path_factory.mktemp("sim"),
        users=80,
        guests=4,
        audit_records=150,
        content=40,
        audit_end="2026-06-01T00:00:00Z",
    )
    try:
        recent = _seat_holders(sim)[1:4]
        now_ms = int(time.time() * 1000)
        sim.control("audit/append", {"account_id": recent[0], "creation_date": now_ms})
        sim.control("content/edit", {"account_id": recent[1], "modified": now_ms})
        today = dt.datetime.now(dt.UTC).date().isoformat()
        sim.control("admin/last-active", {"account_id": recent[2], "date": today})
        yield sim, recent
    finally:
        sim.stop()


def _seat_holders(sim: SimulatorProcess) -> list[str]:
    """Licensed, active, human users, as the simulator's user API describes them."""
    auth = ("admin@example.com", "fake-classic-api-token")
    params: dict[str, str | int] = {"cql": "type=user", "limit": 200}
    found = requests.get(
        sim.url + "/wiki/rest/api/search/user",
        params=params,
        auth=auth,
        timeout=30,
    ).json()["results"]
    ids = [r["user"]["accountId"] for r in found][:40]
    users = requests.get(
        sim.url + "/wiki/rest/api/user/bulk",
        params=[("limit", 200), *(("accountId", a) for a in ids)],
        auth=auth,
        timeout=30,
    ).json()["results"]
    return [
        u["accountId"]
        for u in users
        if u["accountStatus"] == "active" and u["accountType"] == "atlassian"
    ]


@pytest.fixture(scope="module")
def loaded(
    pipeline: PipelineSite,
    site_simulator: tuple[SimulatorProcess, list[str]],
) -> Loaded:
    sim, used_today = site_simulator
    config = sim.tap_config("classic_token", org_id="fake-org-id", org_api_key="fake-org-api-key")
    pipeline.env.update(tap_env("TAP_CONFLUENCE", config))
    pipeline.env["TAP_CONFLUENCE__SELECT"] = json.dumps(["users.*", "user_activity.*"])
    pipeline.run("run", "tap-confluence", "target-postgres")
    return Loaded(pipeline, used_today)


def fetch(site: PipelineSite, sql: str) -> list[dict[str, Any]]:
    with site.connect() as conn:
        cur = conn.execute(sql)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def latest_by_user(site: PipelineSite) -> dict[str, dt.datetime]:
    latest: dict[str, dt.datetime] = {}
    for row in fetch(site, f'SELECT "accountId", "lastActivityAt" FROM {SCHEMA}.user_activity'):
        who, at = row["accountId"], row["lastActivityAt"]
        latest[who] = max(at, latest.get(who, at))
    return latest


def test_last_activity_per_user_gives_each_users_newest_row(loaded: Loaded) -> None:
    site = loaded.site
    users = fetch(site, f'SELECT "accountId" FROM {SCHEMA}.users')
    latest = latest_by_user(site)
    result = fetch(site, readme_sql("last activity per user"))

    assert len(result) == len(users), "one row per user, active or not"
    assert {r["accountId"]: r["lastActivityAt"] for r in result} == {
        u["accountId"]: latest.get(u["accountId"]) for u in users
    }
    sources = {r["source"] for r in result if r["source"]}
    assert sources == {"audit", "content", "admin"}
    assert any(r["lastActivityAt"] is None for r in result), "some users were never active"
    # Never-active users first, then oldest activity first.
    stamps = [r["lastActivityAt"] for r in result]
    nulls = stamps.count(None)
    assert stamps[:nulls] == [None] * nulls
    assert stamps[nulls:] == sorted(stamps[nulls:])


def test_inactive_licensed_users_are_exactly_those_idle_for_90_days(loaded: Loaded) -> None:
    site = loaded.site
    seats = fetch(
        site,
        f'SELECT "accountId" FROM {SCHEMA}.users WHERE "sitePermission" = \'licensed\' '
        "AND \"accountStatus\" = 'active' AND \"accountType\" = 'atlassian'",
    )
    latest = latest_by_user(site)
    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=90)
    expected = {
        u["accountId"]
        for u in seats
        if u["accountId"] not in latest or latest[u["accountId"]] < cutoff
    }
    result = fetch(site, readme_sql("licensed users inactive for 90 days"))

    assert {r["accountId"] for r in result} == expected
    assert len(loaded.used_today) == 3
    assert not set(loaded.used_today) & {r["accountId"] for r in result}, (
        "seats used today are not idle"
    )
    assert set(loaded.used_today) <= {u["accountId"] for u in seats}
    assert any(r["lastActivityAt"] is None for r in result), "never-active seats are listed"
    assert any(r["lastActivityAt"] is not None for r in result), "long-idle seats are listed"
    assert result[0]["lastActivityAt"] is None, "never-active seats come first"
    guests = fetch(
        site, f'SELECT "accountId" FROM {SCHEMA}.users WHERE "sitePermission" = \'guest\''
    )
    assert not {g["accountId"] for g in guests} & {r["accountId"] for r in result}
    for row in result:
        assert row["lastActivityAt"] == latest.get(row["accountId"])
