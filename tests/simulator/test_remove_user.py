"""The control route that removes a user from the simulated site, as an admin would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from simulator.process import SimulatorProcess
from tests.support.site_http import CLASSIC, page_all_users, site_get


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return simulator_factory(users=12, guests=2, groups=4, audit_records=20, content=5)


def members_of_every_group(sim: SimulatorProcess) -> dict[str, set[str]]:
    groups = site_get(sim, "/wiki/rest/api/group", limit=200).json()["results"]
    return {
        g["id"]: {
            m["accountId"]
            for m in site_get(
                sim, f"/wiki/rest/api/group/{g['id']}/membersByGroupId", limit=200
            ).json()["results"]
        }
        for g in groups
    }


def licensed_count(sim: SimulatorProcess) -> int:
    url = sim.url + "/wiki/rest/license/1.0/license/userCount"
    return int(requests.get(url, auth=CLASSIC, timeout=30).json()["count"])


def test_removed_user_leaves_the_user_search_the_groups_and_the_seat_count(
    sim: SimulatorProcess,
) -> None:
    users = page_all_users(sim, limit=200)
    members = members_of_every_group(sim)
    # A licensed, active user in at least one group (user 0 is the admin the tests log in as).
    bulk = site_get(
        sim, "/wiki/rest/api/user/bulk", accountId=[u["accountId"] for u in users[1:]]
    ).json()["results"]
    active = {u["accountId"] for u in bulk if u["accountStatus"] == "active"}
    gone = next(
        u["accountId"]
        for u in users[1:]
        if u["accountId"] in active
        and u["accountType"] == "atlassian"
        and any(u["accountId"] in m for m in members.values())
    )
    seats = licensed_count(sim)

    answer = sim.control("users/remove", {"account_id": gone})

    assert answer == {"removed": gone}
    after = [u["accountId"] for u in page_all_users(sim, limit=200)]
    assert gone not in after
    assert sorted(after) == sorted(u["accountId"] for u in users if u["accountId"] != gone)
    after_members = members_of_every_group(sim)
    assert all(gone not in m for m in after_members.values())
    assert {g: m - {gone} for g, m in members.items()} == after_members
    assert licensed_count(sim) == seats - 1


def test_removing_an_unknown_user_is_refused(sim: SimulatorProcess) -> None:
    url = sim.url + "/_sim/users/remove"
    response = requests.post(url, json={"account_id": "no-such-user"}, timeout=30)
    assert response.status_code == 400
    assert "no user has accountId" in response.json()["error"]
