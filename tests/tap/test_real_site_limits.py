"""Against a simulator as unkind as Atlassian's docs allow, every stream delivers what it
delivers against the lenient one (or, for a spent quota, the next run delivers the rest).

Each strict switch lives in simulator/strict.py; the behaviours and their sources are
listed in the README's "Atlassian's limits".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.process import ALL_SCOPES, SimulatorProcess
from tests.support.tap_cli import TapRun, run_tap

DATA = {"users": 60, "guests": 5, "groups": 6, "audit_records": 2503, "content": 120}
KEYS = {
    "users": ("accountId",),
    "groups": ("id",),
    "group_members": ("groupId", "accountId"),
    "audit_records": ("id",),
    "user_activity": ("accountId", "source"),
}


def oauth_config(sim: SimulatorProcess, **overrides: Any) -> dict[str, Any]:
    """OAuth with every scope the tap can use (groups and v2 users-bulk included)."""
    token = sim.control("grant", {"scopes": ALL_SCOPES})["refresh_token"]
    return sim.tap_config("oauth", refresh_token=token, **overrides)


def keyed(run: TapRun, stream: str, *, drop: tuple[str, ...] = ()) -> dict[tuple[Any, ...], Any]:
    """A stream's records by key, without cloudId and the fields named in ``drop``."""
    out = {}
    for record in run.records(stream):
        key = tuple(record[k] for k in KEYS[stream])
        out[key] = {k: v for k, v in record.items() if k not in drop}
    return out


def bookmark(run: TapRun, stream: str = "audit_records") -> Any:
    return run.final_state()["bookmarks"][stream]["replication_key_value"]


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> TapRun:
    """One full OAuth sync against the lenient simulator: what every strict run must equal."""
    tmp = tmp_path_factory.mktemp("lenient")
    with SimulatorProcess(tmp / "sim", **DATA) as sim:
        run = run_tap(tmp, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    for stream in KEYS:
        assert run.records(stream), f"the lenient run has {stream} records to compare"
    return run


def assert_same(run: TapRun, lenient: TapRun, *streams: str, drop: tuple[str, ...] = ()) -> None:
    for stream in streams:
        got, want = keyed(run, stream, drop=drop), keyed(lenient, stream, drop=drop)
        assert got.keys() == want.keys(), f"{stream}: {len(got)} records, not {len(want)}"
        differ = {
            key: {f: (got[key].get(f), want[key].get(f)) for f in got[key].keys() | want[key].keys()
                  if got[key].get(f) != want[key].get(f)}
            for key in want if got[key] != want[key]
        }  # fmt: skip
        assert not differ, (
            f"{stream}: {len(differ)} records differ, e.g. {list(differ.items())[:2]}"
        )


# Paging never trusts a full page.


@pytest.mark.parametrize("echo", ["asked", "capped", "none"])
def test_audit_pages_capped_below_the_limit_lose_no_record_nor_bookmark(
    echo: str, lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # The API serves 500 of the 1,000 asked, and says 1,000 (asked), 500 (capped) or nothing.
    sim = simulator_factory(**DATA, strict_json={"page_caps": {"audit": 500}, "echo_limit": echo})
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(run, lenient, "audit_records")
    assert bookmark(run) == bookmark(lenient)
    # The minimum at 500 a page, plus at most the one request that tells a short page from
    # a capped one.
    audit = sim.stats()["requests"]["audit"]
    assert audit <= math.ceil(2503 / 500) + 1, audit
    assert "as the API caps them" in run.stderr


def test_a_no_change_run_costs_at_most_one_extra_audit_request(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"page_caps": {"audit": 500}})
    first = run_tap(tmp_path, oauth_config(sim))
    assert first.returncode == 0, first.stderr[-3000:]
    sim.control("reset-stats", {})
    again = run_tap(tmp_path, oauth_config(sim), state=first.final_state())
    assert again.returncode == 0, again.stderr[-3000:]
    # Nothing new: only the look-back's re-read records, which the target upserts.
    first_ids = {r["id"] for r in first.records("audit_records")}
    assert {r["id"] for r in again.records("audit_records")} <= first_ids
    # One request for the look-back window, one to learn that its short page is the end.
    assert sim.stats()["requests"]["audit"] <= 2


def test_search_user_without_next_links_and_with_short_pages_lists_every_user(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(
        **DATA,
        strict_json={
            "page_caps": {"search_user": 7},
            "user_next_links": False,
            "echo_limit": "asked",
        },
    )
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(run, lenient, "users")
    # Offset paging until an empty page: ceil(60 / 7) + 1 licensed, ceil(5 / 7) + 1 guests;
    # license_subscriptions counts the licensed users the same way (no licence credentials).
    assert sim.stats()["requests"]["search_user"] == (9 + 1) + (1 + 1) + (9 + 1)


def test_capped_group_and_member_pages_follow_next_links_to_the_end(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(
        **DATA, strict_json={"page_caps": {"group": 2, "group_members": 5, "search": 9}}
    )
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(run, lenient, "groups", "group_members", "user_activity")


# CQL dates in the right time zone, and a search index that lags.


def _edit(sim: SimulatorProcess, user: int, minutes_ago: float) -> str:
    """Have licensed user ``user`` update one content item ``minutes_ago``; their id."""
    account = _ACCOUNTS[user]
    when = int((time.time() - minutes_ago * 60) * 1000)
    sim.control("content/edit", {"account_id": account, "count": 1, "modified": when})
    return account


_ACCOUNTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _accounts(lenient: TapRun) -> None:
    """Account ids in simulator order (licensed users first), from the lenient run."""
    licensed = [u for u in lenient.records("users") if u["sitePermission"] == "licensed"]
    _ACCOUNTS[:] = [u["accountId"] for u in licensed]


def _content_rows(run: TapRun) -> dict[str, str]:
    return {
        r["accountId"]: r["lastActivityAt"]
        for r in run.records("user_activity")
        if r["source"] == "content"
    }


@pytest.mark.parametrize("zones", ["reported", "hidden"])
def test_content_edits_are_found_when_cql_dates_are_read_west_of_utc(
    zones: str, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    strict = {"cql_utc_offset_minutes": -420, "cql_zone_name": "America/Phoenix"}
    if zones == "hidden":
        strict["hide_time_zones"] = True
    sim = simulator_factory(**DATA, strict_json=strict)
    config = oauth_config(sim, content_lookback_minutes=0)
    _edit(sim, 3, minutes_ago=180)
    first = run_tap(tmp_path, config)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _ACCOUNTS[3] in _content_rows(first)
    # Two hours later than the bookmark: a date read 7 hours late would skip it.
    editor = _edit(sim, 4, minutes_ago=120)
    second = run_tap(tmp_path, config, state=first.final_state())
    assert second.returncode == 0, second.stderr[-3000:]
    assert editor in _content_rows(second), second.stderr[-3000:]
    if zones == "hidden":
        assert "written in UTC-12" in second.stderr
    else:
        assert "America/Phoenix" in second.stderr


def test_edits_the_search_index_shows_late_are_read_once_on_the_next_run(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA)
    config = oauth_config(sim)  # content_lookback_minutes defaults to 30
    seen_early = _edit(sim, 5, minutes_ago=5)
    first = run_tap(tmp_path, config)
    assert seen_early in _content_rows(first)

    # An edit made 20 minutes ago that the index shows only now, after the bookmark moved.
    sim.control("strict", {"index_lag": True})
    late = _edit(sim, 6, minutes_ago=20)
    second = run_tap(tmp_path, config, state=first.final_state())
    assert late not in _content_rows(second), "the index did not show it yet"
    sim.control("content/index", {})
    third = run_tap(tmp_path, config, state=second.final_state())
    assert third.returncode == 0, third.stderr[-3000:]
    assert late in _content_rows(third)
    # Re-read every run within the look-back, emitted once.
    assert seen_early not in _content_rows(second) | _content_rows(third)


# An endpoint that is gone ends its stream, not the run.


@pytest.mark.parametrize("licence", ["404", "410", "html"])
def test_licence_endpoints_gone_fall_back_to_counting_licensed_users(
    licence: str, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"licence": licence})
    token = sim.control("grant", {"scopes": ALL_SCOPES})["refresh_token"]
    run = run_tap(tmp_path, sim.tap_config("oauth_plus_token", refresh_token=token))
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = run.records("license_subscriptions")
    assert row["seatSource"] == "user_search"
    assert row["licensedUsers"] == DATA["users"]
    assert row["purchasedSeats"] is None
    warning = [ln for ln in run.stderr.splitlines() if "unofficial licence endpoint" in ln]
    assert len(warning) == 1
    assert "/wiki/rest/license/1.0/license/userCount" in warning[0]
    assert {"users", "audit_records", "user_activity"} <= run.streams_with_records()


def test_user_bulk_gone_reads_account_status_from_v2_users_bulk(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"v1_gone": ["user_bulk"]})
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    # A v2 User has no locale; everything else is as user/bulk gave it.
    assert_same(run, lenient, "users", drop=("locale",))
    assert all(u["accountStatus"] for u in run.records("users"))
    stats = sim.stats()
    assert stats["responses"]["user_bulk"] == {"410": 1}, "v1 is asked once, then v2"
    assert stats["requests"]["users_bulk_v2"] == math.ceil(65 / 100) + 1  # licensed, guests


def test_without_the_v2_scope_users_still_load_with_account_status_empty(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"v1_gone": ["user_bulk"]})
    run = run_tap(tmp_path, sim.tap_config("oauth"))  # the seed grant lacks read:user:confluence
    assert run.returncode == 0, run.stderr[-3000:]
    users = run.records("users")
    assert len(users) == 65
    assert all(u["accountStatus"] is None for u in users)
    assert "grant read:user:confluence" in run.stderr


def test_a_removed_route_ends_only_its_stream_with_a_sentence_naming_it(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"v1_gone": ["group"]})
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 1, "a stream that could not load fails the run"
    assert_same(run, lenient, "users", "audit_records", "user_activity")
    assert run.records("groups") == []
    assert "Atlassian has removed /wiki/rest/api/group" in run.stderr
    assert "Traceback" not in run.stderr


# OAuth's points quota.


@pytest.mark.slow
def test_a_spent_oauth_quota_stops_the_run_at_once_and_the_next_run_completes(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    data = {**DATA, "audit_records": 60_000}
    reference = simulator_factory(**data)
    whole = run_tap(tmp_path, oauth_config(reference))
    assert whole.returncode == 0, whole.stderr[-3000:]

    sim = simulator_factory(**data, strict_json={"oauth_quota": 45, "quota_retry_after": 1800})
    config = oauth_config(sim)
    started = time.monotonic()
    stopped = run_tap(tmp_path, config)
    assert time.monotonic() - started < 60
    assert stopped.returncode == 1
    last = stopped.stderr.strip().splitlines()[-1]
    assert "rate limit for these credentials is spent" in last
    assert "run it again after" in last
    assert "Traceback" not in stopped.stderr
    # Concurrent windows stop together: no request is sent after the quota is known spent,
    # only those already in flight are refused (at most one per worker).
    assert sim.stats()["quota_refused"] <= 5
    assert 0 < len(stopped.records("audit_records")) < 60_000, "work done before it is kept"

    # The next hour: a fresh quota, enough for the rest.
    sim.control("strict", {})
    resumed = run_tap(tmp_path, config, state=stopped.final_state())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = {r["id"] for r in stopped.records("audit_records") + resumed.records("audit_records")}
    assert got == {r["id"] for r in whole.records("audit_records")}
    assert keyed(resumed, "users") == keyed(whole, "users")


# Smaller pages when big ones time out.


def test_pages_that_time_out_are_asked_again_smaller_and_nothing_is_lost(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"timeout_above": 250})
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(run, lenient, "audit_records", "users", "user_activity")
    assert "asking again for 500" in run.stderr
    assert "pages of down to 250 were asked for" in run.stderr
    responses = sim.stats()["responses"]["audit"]
    assert responses["504"] <= 3, responses


# Fields that real objects lack.


def test_users_without_is_guest_or_time_zone_are_told_apart_by_their_listing(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"real_user_fields": True})
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same(run, lenient, "users", "group_members", drop=("timeZone",))
    assert sum(u["isGuest"] for u in run.records("users")) == DATA["guests"]


# No failed logins on purpose.


@pytest.mark.slow
def test_telling_a_scoped_token_from_a_classic_one_costs_one_failed_login_per_token(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"captcha_after": 2})
    config = sim.tap_config("scoped_token")  # with cloud_id and site_url: either kind
    for _ in range(3):
        run = run_tap(tmp_path, config)
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.records("audit_records")) == 2503
    stats = sim.stats()
    assert stats["failed_logins"] == 1
    assert stats["captcha_locked"] == []
    assert stats["requests"]["user_current"] == 1, "asked once, then remembered"


def test_a_declared_token_type_is_never_probed(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"captcha_after": 1})
    run = run_tap(tmp_path, sim.tap_config("scoped_token", api_token_type="scoped"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sim.stats()["failed_logins"] == 0


# Admin API.


def test_an_admin_api_403_for_one_user_skips_that_user_not_the_pass(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict_json={"admin_forbidden_every": 7})
    config = sim.tap_config(
        "classic_token", org_id=sim.creds.org_id, org_api_key=sim.creds.org_api_key
    )
    first = run_tap(tmp_path, config)
    assert first.returncode == 0, first.stderr[-3000:]
    admin = [r for r in first.records("user_activity") if r["source"] == "admin"]
    assert admin, "the other users got their rows"
    hidden = DATA["users"] // 7
    assert f"skipped {hidden} users the Admin API would not show" in first.stderr
    partition = next(
        p
        for p in first.final_state()["bookmarks"]["user_activity"]["partitions"]
        if p["context"]["source"] == "admin"
    )
    assert "cursor" not in partition, "the pass finished instead of stopping at a user"


# Everything at once.


def test_every_stream_delivers_the_lenient_record_set_against_the_strict_preset(
    lenient: TapRun, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**DATA, strict=True)
    run = run_tap(tmp_path, oauth_config(sim))
    assert run.returncode == 0, run.stderr[-3000:]
    # Cloud's search results carry no time zone, and v2 users (user/bulk is gone) no locale.
    assert_same(
        run,
        lenient,
        "users",
        "groups",
        "group_members",
        "audit_records",
        "user_activity",
        drop=("timeZone", "locale"),
    )
    assert bookmark(run) == bookmark(lenient)
    assert "Traceback" not in run.stderr
