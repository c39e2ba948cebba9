"""user_activity against the simulator: three sources, per-source bookmarks, only news emitted."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from simulator.process import SimulatorProcess
from tests.support.activity import CLASSIC, ORG, SMALL, catalog, rows, sync
from tests.support.tap_cli import TapRun, run_tap, run_tap_until_states

ALL_CONTENT = "type in (page, blogpost, comment, attachment)"


def iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_ms(value: str) -> int:
    return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


# Oracles: what each source must give, read from the simulator without the tap.


def latest_content(sim: SimulatorProcess) -> dict[str, int]:
    latest: dict[str, int] = {}
    params: dict[str, str | int] | None
    url, params = (
        sim.url + "/wiki/rest/api/search",
        {
            "cql": ALL_CONTENT,
            "limit": 250,
            "expand": "content.history.lastUpdated",
        },
    )
    while url:
        body = requests.get(url, params=params, auth=CLASSIC, timeout=30).json()
        for result in body["results"]:
            history = result["content"]["history"]
            for who, when in (
                (history["lastUpdated"]["by"]["accountId"], history["lastUpdated"]["when"]),
                (history["createdBy"]["accountId"], history["createdDate"]),
            ):
                latest[who] = max(latest.get(who, 0), to_ms(when))
        nxt = body["_links"].get("next")
        url, params = (body["_links"]["base"] + nxt, None) if nxt else ("", None)
    return latest


def licensed_users(sim: SimulatorProcess) -> list[str]:
    params: dict[str, str | int] = {"cql": "type=user", "limit": 200}
    body = requests.get(
        sim.url + "/wiki/rest/api/search/user",
        params=params,
        auth=CLASSIC,
        timeout=30,
    ).json()
    assert "next" not in body["_links"], "the oracle reads one page; keep the data set small"
    return [r["user"]["accountId"] for r in body["results"]]


def listed_accounts(sim: SimulatorProcess) -> tuple[set[str], int]:
    """The accounts of the organization's managed-accounts listing, and its pages."""
    url, cursor, found, pages = f"{sim.url}/admin/v1/orgs/fake-org-id/users", None, set(), 0
    while True:
        body = requests.get(
            url,
            params={"cursor": cursor} if cursor else None,
            headers={"Authorization": "Bearer fake-org-api-key"},
            timeout=30,
        ).json()
        pages += 1
        found |= {a["account_id"] for a in body["data"]}
        cursor = body["links"].get("next")
        if not cursor:
            return found, pages


def admin_days(sim: SimulatorProcess) -> dict[str, str]:
    """Each licensed user's day as last-active-dates gives it: the rows the source promises."""
    days = {}
    for account_id in licensed_users(sim):
        url = f"{sim.url}/admin/v1/orgs/fake-org-id/directory/users/{account_id}/last-active-dates"
        body = requests.get(url, headers={"Authorization": "Bearer fake-org-api-key"}, timeout=30)
        for product in body.json()["data"]["product_access"]:
            if product["key"] == "confluence":
                days[account_id] = product["last_active"]
    return days


def test_three_sources_give_each_users_latest_activity(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", **ORG)
    run = sync(tmp_path, sim, config, catalog(tmp_path, sim, "audit_records", "user_activity"))

    audit_latest: dict[str, int] = {}
    for record in run.records("audit_records"):
        who = record["author"]["accountId"]
        audit_latest[who] = max(audit_latest.get(who, 0), record["creationDate"])
    assert len(audit_latest) > 10
    got = rows(run, "audit")
    assert {a: r["lastActivityAt"] for a, r in got.items()} == {
        a: iso(ms) for a, ms in audit_latest.items()
    }

    content = rows(run, "content")
    assert {a: r["lastActivityAt"] for a, r in content.items()} == {
        a: iso(ms) for a, ms in latest_content(sim).items()
    }
    assert any(r["detail"].startswith(("page ", "blogpost ")) for r in content.values())

    admin = rows(run, "admin")
    expected_days = admin_days(sim)
    assert expected_days, "the simulator gives some users a last active date"
    assert {a: r["lastActivityDate"] for a, r in admin.items()} == expected_days
    assert all(
        r["lastActivityAt"] == r["lastActivityDate"] + "T00:00:00.000Z" for r in admin.values()
    )

    every = run.records("user_activity")
    assert {r["cloudId"] for r in every} == {sim.cloud_id}
    assert all(r["lastActivityDate"] == r["lastActivityAt"][:10] and r["detail"] for r in every)
    assert "fake-org-api-key" not in run.stdout + run.stderr


def test_incremental_run_updates_only_the_user_with_new_activity(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token")
    cat = catalog(tmp_path, sim, "user_activity")
    first = sync(tmp_path, sim, config, cat)
    who = licensed_users(sim)[7]
    before = first.records("user_activity")
    assert before

    appended = sim.control("audit/append", {"count": 3, "account_id": who})["creationDates"]
    edited = sim.control("content/edit", {"account_id": who, "count": 2})
    second = sync(tmp_path, sim, config, cat, state=first.final_state())

    assert sorted((r["accountId"], r["source"]) for r in second.records("user_activity")) == [
        (who, "audit"),
        (who, "content"),
    ]
    assert rows(second, "audit")[who]["lastActivityAt"] == iso(max(appended))
    assert rows(second, "content")[who]["lastActivityAt"] == iso(edited["modified"])
    assert rows(second, "content")[who]["detail"].split(" ")[1] == "updated:"


def test_run_with_nothing_new_emits_no_rows_yet_asks_every_source(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", **ORG)
    cat = catalog(tmp_path, sim, "user_activity")
    first = sync(tmp_path, sim, config, cat)
    assert {r["source"] for r in first.records("user_activity")} == {"audit", "content", "admin"}

    sim.control("reset-stats", {})
    second = sync(tmp_path, sim, config, cat, state=first.final_state())
    assert second.records("user_activity") == []
    asked = sim.stats()["requests"]
    assert asked.get("audit", 0) >= 1
    assert asked.get("search", 0) >= 1
    # The listing for managed users, one by one for the licensed users it does not hold.
    listed, pages = listed_accounts(sim)
    assert asked.get("admin_org_users", 0) == pages
    unlisted = [u for u in licensed_users(sim) if u not in listed]
    assert unlisted, "the simulated site needs licensed users the organization does not manage"
    assert asked.get("admin_last_active", 0) == len(unlisted)
    # Each source keeps its own bookmark, unchanged by a run that found nothing new.
    assert _bookmarks(second) == _bookmarks(first)


def _bookmarks(run: TapRun) -> dict[str, str]:
    parts = run.final_state()["bookmarks"]["user_activity"]["partitions"]
    return {p["context"]["source"]: p["replication_key_value"] for p in parts}


def test_admin_source_stays_off_without_its_settings(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    run = sync(
        tmp_path, sim, sim.tap_config("classic_token"), catalog(tmp_path, sim, "user_activity")
    )
    assert {r["source"] for r in run.records("user_activity")} == {"audit", "content"}
    assert "admin_last_active" not in sim.stats()["requests"]
    assert set(_bookmarks(run)) == {"audit", "content"}


@pytest.mark.parametrize("only", ["org_id", "org_api_key"])
def test_half_of_the_admin_settings_is_refused_in_one_sentence(
    simulator: SimulatorProcess, tmp_path: Path, only: str
) -> None:
    config = simulator.tap_config("classic_token", **{only: ORG[only]})
    run = run_tap(tmp_path, config, catalog=catalog(tmp_path, simulator, "user_activity"))
    other = "org_api_key" if only == "org_id" else "org_id"
    assert run.returncode != 0
    assert f"needs {other} as well as {only}" in run.stderr
    assert "Traceback" not in run.stderr
    assert "fake-org-api-key" not in run.stderr


def test_late_audit_record_counts_only_when_newer_than_its_authors_latest(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", audit_lookback_minutes=30)
    cat = catalog(tmp_path, sim, "user_activity")
    first = sync(tmp_path, sim, config, cat)
    audit = {a: to_ms(r["lastActivityAt"]) for a, r in rows(first, "audit").items()}
    newest = max(audit.values())
    # One user was last seen long before the bookmark, one just at it.
    quiet = min(audit, key=audit.__getitem__)
    busy = max(audit, key=audit.__getitem__)

    late = newest - 10 * 60_000
    sim.control("audit/append", {"count": 1, "account_id": quiet, "creation_date": late})
    sim.control("audit/append", {"count": 1, "account_id": busy, "creation_date": late})
    second = sync(tmp_path, sim, config, cat, state=first.final_state())
    assert [(r["accountId"], r["lastActivityAt"]) for r in second.records("user_activity")] == [
        (quiet, iso(late))
    ]
    third = sync(tmp_path, sim, config, cat, state=second.final_state())
    assert third.records("user_activity") == []


def test_new_admin_day_for_one_user_emits_only_that_users_admin_row(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", **ORG)
    cat = catalog(tmp_path, sim, "user_activity")
    first = sync(tmp_path, sim, config, cat)
    who = licensed_users(sim)[3]
    newest = max(r["lastActivityDate"] for r in rows(first, "admin").values())
    later = (dt.date.fromisoformat(newest) + dt.timedelta(days=1)).isoformat()
    sim.control("admin/last-active", {"account_id": who, "date": later})

    second = sync(tmp_path, sim, config, cat, state=first.final_state())
    assert [
        (r["accountId"], r["source"], r["lastActivityDate"])
        for r in second.records("user_activity")
    ] == [(who, "admin", later)]


def test_admin_pass_killed_midway_resumes_after_the_last_saved_user(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(users=130, guests=0, audit_records=200, content=30)
    config = sim.tap_config("classic_token", **ORG)
    cat = catalog(tmp_path, sim, "user_activity")
    clean = sync(tmp_path, sim, config, cat)
    everyone = rows(clean, "admin")

    cat_path = tmp_path / "catalog-kill.json"
    cat_path.write_text(json.dumps(cat))
    # STATE 1 and 2 close the audit and content sources; STATE 3 is the admin checkpoint.
    killed = run_tap_until_states(tmp_path, config, states=3, extra=("--catalog", str(cat_path)))
    saved = killed.final_state()["bookmarks"]["user_activity"]["partitions"]
    admin_state = next(p for p in saved if p["context"]["source"] == "admin")
    assert "cursor" in admin_state, "the kill landed inside the admin pass"
    before_kill = rows(killed, "admin")

    sim.control("reset-stats", {})
    resumed = sync(tmp_path, sim, config, cat, state=killed.final_state())
    # Only the users after the cursor: the listing again (it is cheap: its pages), and one by
    # one those of them it does not hold.
    licensed = licensed_users(sim)
    after_cursor = licensed[licensed.index(admin_state["cursor"]) + 1 :]
    assert len(after_cursor) == 30
    asked = sim.stats()["requests"]
    listed, pages = listed_accounts(sim)
    assert asked["admin_org_users"] == pages
    assert asked.get("admin_last_active", 0) == len([u for u in after_cursor if u not in listed])
    after = rows(resumed, "admin")
    assert {**before_kill, **after}.keys() == everyone.keys()
    assert "cursor" not in next(
        p
        for p in resumed.final_state()["bookmarks"]["user_activity"]["partitions"]
        if p["context"]["source"] == "admin"
    )


def test_rate_limited_admin_api_is_retried_and_every_user_answered(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # Enough accounts elsewhere in the organization for a second page of the listing: the
    # listing's second request and every second one after it are refused once.
    sim = simulator_factory(
        **SMALL,
        org_only_accounts=80,
        rate_limit_every=2,
        retry_after=0,
        routes="admin_last_active,admin_org_users",
    )
    config = sim.tap_config("classic_token", **ORG)
    run = sync(tmp_path, sim, config, catalog(tmp_path, sim, "user_activity"))
    refused = {route: n.get("429", 0) for route, n in sim.stats()["responses"].items()}
    assert refused.get("admin_org_users", 0) >= 1, refused
    assert refused.get("admin_last_active", 0) >= 2, refused
    sim.control("faults", {})
    assert {a: r["lastActivityDate"] for a, r in rows(run, "admin").items()} == admin_days(sim)


def test_wrong_org_api_key_ends_only_the_admin_source_with_one_sentence(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", org_id="fake-org-id", org_api_key="wrong-org-key")
    run = run_tap(tmp_path, config, catalog=catalog(tmp_path, sim, "user_activity"))
    assert run.returncode == 1
    assert {r["source"] for r in run.records("user_activity")} == {"audit", "content"}
    assert "refused org_api_key (401)" in run.stderr
    assert "Traceback" not in run.stderr
    assert "wrong-org-key" not in run.stdout + run.stderr


def test_with_audit_records_selected_the_log_is_read_once(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token")
    alone = sync(tmp_path, sim, config, catalog(tmp_path, sim, "audit_records"))
    audit_requests_alone = sim.stats()["requests"]["audit"]
    sim.control("reset-stats", {})

    both = sync(tmp_path, sim, config, catalog(tmp_path, sim, "audit_records", "user_activity"))
    assert sim.stats()["requests"]["audit"] == audit_requests_alone
    assert len(both.records("audit_records")) == len(alone.records("audit_records"))
    latest: dict[str, int] = {}
    for record in alone.records("audit_records"):
        who = record["author"]["accountId"]
        latest[who] = max(latest.get(who, 0), record["creationDate"])
    assert {a: r["lastActivityAt"] for a, r in rows(both, "audit").items()} == {
        a: iso(ms) for a, ms in latest.items()
    }


def test_user_activity_selected_later_still_covers_the_log_before_audit_records_bookmark(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token")
    fresh = sync(tmp_path, sim, config, catalog(tmp_path, sim, "user_activity"))
    earlier = sync(tmp_path, sim, config, catalog(tmp_path, sim, "audit_records"))
    state = {"bookmarks": {"audit_records": earlier.final_state()["bookmarks"]["audit_records"]}}

    sim.control("reset-stats", {})
    later = sync(
        tmp_path, sim, config, catalog(tmp_path, sim, "audit_records", "user_activity"), state
    )
    assert rows(later, "audit") == rows(fresh, "audit")
    # audit_records re-read only its lookback; user_activity read what lies before it.
    assert len(later.records("audit_records")) < len(earlier.records("audit_records"))
    assert "reused audit_records' read" in later.stderr


def test_user_first_seen_active_days_before_the_bookmark_still_gets_an_admin_row(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # A seat holder with no admin row yet (never active, or newly licensed) whose last active
    # date lies well behind the newest date seen must still get a row: otherwise the idle-seat
    # query counts a seat used ten days ago as idle.
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("classic_token", **ORG)
    cat = catalog(tmp_path, sim, "user_activity")
    first = sync(tmp_path, sim, config, cat)
    admin_rows = rows(first, "admin")
    without_row = [u for u in licensed_users(sim) if u not in admin_rows]
    assert without_row, "the simulated site needs a licensed user with no admin activity"
    who = without_row[0]
    newest = max(r["lastActivityDate"] for r in admin_rows.values())
    ten_days_before = (dt.date.fromisoformat(newest) - dt.timedelta(days=10)).isoformat()
    sim.control("admin/last-active", {"account_id": who, "date": ten_days_before})

    second = sync(tmp_path, sim, config, cat, state=first.final_state())
    assert [
        (r["accountId"], r["source"], r["lastActivityDate"])
        for r in second.records("user_activity")
    ] == [(who, "admin", ten_days_before)]
