"""user_activity's Admin API source: the managed-accounts listing first, one by one the rest.

The rows must be the ones asking last-active-dates for every licensed user gives (the oracle
below does just that, without the tap), at no more than one request per 100 managed users
for the accounts the organization manages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from simulator.process import SimulatorProcess
from tests.support.activity import CLASSIC, ORG, catalog, rows, sync
from tests.support.tap_cli import TapRun

ADMIN = {"Authorization": "Bearer fake-org-api-key"}


def licensed(sim: SimulatorProcess) -> list[str]:
    """Every licensed user's accountId (search/user, paged by offset)."""
    found: list[str] = []
    while True:
        body = requests.get(
            sim.url + "/wiki/rest/api/search/user",
            params={"cql": "type=user", "limit": "200", "start": str(len(found))},
            auth=CLASSIC,
            timeout=30,
        ).json()
        found += [r["user"]["accountId"] for r in body["results"]]
        if len(body["results"]) < 200:
            return found


def days_asked_one_by_one(sim: SimulatorProcess, users: list[str]) -> dict[str, str]:
    """The source's rows as last-active-dates gives them, user by user."""
    days: dict[str, str] = {}
    for account_id in users:
        url = f"{sim.url}/admin/v1/orgs/fake-org-id/directory/users/{account_id}/last-active-dates"
        for product in requests.get(url, headers=ADMIN, timeout=30).json()["data"][
            "product_access"
        ]:
            if product["key"] == "confluence":
                days[account_id] = product["last_active"]
    return days


def admin_run(
    sim: SimulatorProcess, tmp_path: Path
) -> tuple[dict[str, Any], dict[str, int], TapRun]:
    sim.control("reset-stats", {})
    run = sync(
        tmp_path,
        sim,
        sim.tap_config("classic_token", **ORG),
        catalog(tmp_path, sim, "user_activity"),
    )
    asked = sim.stats()["requests"]
    return {a: r["lastActivityDate"] for a, r in rows(run, "admin").items()}, asked, run


def test_listing_gives_the_same_rows_at_one_request_per_100_managed_users(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(users=450, guests=10, audit_records=200, content=30)
    info = sim.control("info")
    users = licensed(sim)
    got, asked, _ = admin_run(sim, tmp_path)
    assert got == days_asked_one_by_one(sim, users)
    # The listing, paged by cursor, for every managed account of the organization.
    pages = asked["admin_org_users"]
    assert pages == -(-info["managed_accounts"] // 100)
    assert pages >= 2, "more than one page, so the cursor is followed"
    # One by one only the licensed users the organization does not manage.
    unmanaged = info["users"] - info["managed_licensed"]
    assert 0 < unmanaged < info["users"] // 4
    assert asked["admin_last_active"] == unmanaged
    assert pages + asked["admin_last_active"] < info["users"] // 4
    # Rows came from both routes, and none for accounts that are not on the site.
    assert set(got) <= set(users)
    listing = requests.get(
        f"{sim.url}/admin/v1/orgs/fake-org-id/users", headers=ADMIN, timeout=30
    ).json()["data"]
    assert any(a["account_id"] in got for a in listing)
    assert any(u not in {a["account_id"] for a in listing} for u in got)


def test_a_key_that_may_not_list_accounts_asks_for_each_user_with_the_same_rows(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(
        users=60, guests=4, audit_records=200, content=30, strict_json={"admin_listing": "403"}
    )
    users = licensed(sim)
    got, asked, run = admin_run(sim, tmp_path)
    assert got == days_asked_one_by_one(sim, users)
    assert asked["admin_org_users"] == 1
    assert asked["admin_last_active"] == len(users)
    assert "read:accounts:admin" in run.stderr


def test_an_organization_far_larger_than_the_site_is_not_listed_to_its_end(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # 30 licensed users in an organization of some 3,000 managed accounts: listing it all
    # would cost 31 requests, asking the users it has not covered after one page far fewer.
    sim = simulator_factory(
        users=30, guests=2, audit_records=200, content=30, org_only_accounts=3000
    )
    users = licensed(sim)
    got, asked, _ = admin_run(sim, tmp_path)
    assert got == days_asked_one_by_one(sim, users)
    assert asked["admin_org_users"] == 1
    info = sim.control("info")
    assert asked["admin_last_active"] == info["users"] - info["managed_licensed"]
