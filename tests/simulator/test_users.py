"""Users and groups in the simulator behave like Confluence Cloud's v1 endpoints."""

from __future__ import annotations

from collections.abc import Callable

import requests

from simulator.process import SimulatorProcess, refresh
from tests.support.site_http import CLASSIC, page_all_users, site_get


def test_search_user_pages_cover_every_licensed_user_once(simulator: SimulatorProcess) -> None:
    info = simulator.control("info")
    users = page_all_users(simulator, limit=100)
    ids = [u["accountId"] for u in users]
    assert len(ids) == info["users"] == len(set(ids))
    assert not any(u["isGuest"] for u in users)
    assert all("accountStatus" not in u for u in users)


def test_search_user_next_link_is_relative_to_the_wiki_base(simulator: SimulatorProcess) -> None:
    body = site_get(simulator, "/wiki/rest/api/search/user", cql="type=user", limit=2).json()
    assert body["_links"]["base"] == simulator.url + "/wiki"
    assert body["_links"]["context"] == "/wiki"
    assert body["_links"]["next"] == "/rest/api/search/user?cql=type%3Duser&limit=2&start=2"


def test_gateway_responses_carry_the_site_base_not_the_gateway(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    params: dict[str, str | int] = {"cql": "type=user", "limit": 5}
    r = requests.get(
        simulator.gateway + "/wiki/rest/api/search/user",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    links = r.json()["_links"]
    assert links["base"] == simulator.url + "/wiki"
    # Following it naively lands on the site root, where a Bearer token is refused.
    naive = requests.get(
        links["base"] + links["next"], headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert naive.status_code == 401


def test_search_user_limit_is_clamped_to_200(simulator: SimulatorProcess) -> None:
    body = site_get(simulator, "/wiki/rest/api/search/user", cql="type=user", limit=500).json()
    assert body["limit"] == 200
    assert body["size"] == 200
    assert "limit=200&start=200" in body["_links"]["next"]


def test_search_user_default_limit_is_25(simulator: SimulatorProcess) -> None:
    body = site_get(simulator, "/wiki/rest/api/search/user", cql="type=user").json()
    assert body["limit"] == 25
    assert body["size"] == 25


def test_guests_appear_only_with_the_external_or_all_filter(simulator: SimulatorProcess) -> None:
    info = simulator.control("info")
    guests = page_all_users(simulator, limit=200, sitePermissionTypeFilter="externalCollaborator")
    assert len(guests) == info["guests"]
    assert all(u["isGuest"] and u["isExternalCollaborator"] for u in guests)
    everyone = page_all_users(simulator, limit=200, sitePermissionTypeFilter="all")
    assert len(everyone) == info["users"] + info["guests"]


def test_type_user_search_stops_at_ten_thousand_users(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(users=10_050, guests=0, audit_records=10, content=0)
    body = site_get(sim, "/wiki/rest/api/search/user", cql="type=user", limit=200, start=9900)
    body = body.json()
    assert body["size"] == 100
    assert "next" not in body["_links"]
    past = site_get(sim, "/wiki/rest/api/search/user", cql="type=user", limit=200, start=10_000)
    assert past.json()["results"] == []


def test_unparseable_user_cql_gets_400(simulator: SimulatorProcess) -> None:
    r = site_get(simulator, "/wiki/rest/api/search/user", cql="type = = user")
    assert r.status_code == 400
    assert r.json()["statusCode"] == 400
    assert site_get(simulator, "/wiki/rest/api/search/user").status_code == 400
    wrong_filter = site_get(
        simulator, "/wiki/rest/api/search/user", cql="type=user", sitePermissionTypeFilter="guests"
    )
    assert wrong_filter.status_code == 400


def test_user_data_has_the_awkward_cases_real_sites_have(simulator: SimulatorProcess) -> None:
    users = page_all_users(simulator, limit=200, sitePermissionTypeFilter="all")
    names = [u["displayName"] for u in users]
    assert any(u["email"] is None for u in users)
    assert any(n is None for n in names)
    assert all(u["publicName"] for u in users)
    real = [n for n in names if n]
    assert len(real) > len(set(real))  # duplicate display names
    assert any(any(ord(ch) > 0x1F000 for ch in n) for n in real)  # emoji
    assert any(any(ord(ch) > 0x7F for ch in n) for n in real)
    ids = [u["accountId"] for u in users]
    assert any(i.startswith("557058:") for i in ids)
    assert any(len(i) == 24 and ":" not in i for i in ids)


def test_user_bulk_reveals_account_status(simulator: SimulatorProcess) -> None:
    ids = [u["accountId"] for u in page_all_users(simulator, limit=200)][:150]
    r = requests.get(
        simulator.url + "/wiki/rest/api/user/bulk",
        params=[("accountId", i) for i in ids[:100]],
        auth=CLASSIC,
        timeout=30,
    )
    assert r.status_code == 200
    body = r.json()
    assert [u["accountId"] for u in body["results"]] == ids[:100]
    statuses = {u["accountStatus"] for u in body["results"]}
    assert statuses <= {"active", "inactive", "closed"}
    assert "active" in statuses
    assert len(statuses) > 1


def test_user_bulk_silently_drops_unknown_ids(simulator: SimulatorProcess) -> None:
    known = site_get(simulator, "/wiki/rest/api/user/current").json()["accountId"]
    r = site_get(
        simulator, "/wiki/rest/api/user/bulk", accountId=[known, "5b10ac8d82e05b22cc7dffff"]
    )
    assert [u["accountId"] for u in r.json()["results"]] == [known]


def test_user_bulk_refuses_more_than_200_ids(simulator: SimulatorProcess) -> None:
    ids = [f"{i:024x}" for i in range(201)]
    r = requests.get(
        simulator.url + "/wiki/rest/api/user/bulk",
        params=[("accountId", i) for i in ids],
        auth=CLASSIC,
        timeout=30,
    )
    assert r.status_code == 400


def test_request_line_over_8_kib_gets_400(simulator: SimulatorProcess) -> None:
    ids = ["557058:" + f"{i:08x}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(190)]
    r = requests.get(
        simulator.url + "/wiki/rest/api/user/bulk",
        params=[("accountId", i) for i in ids],
        auth=CLASSIC,
        timeout=30,
    )
    assert r.request.url is not None
    assert len(r.request.url) > 8192
    assert r.status_code == 400


def test_user_by_account_id_and_404_for_unknown(simulator: SimulatorProcess) -> None:
    me = site_get(simulator, "/wiki/rest/api/user/current").json()
    assert me["email"] == "admin@example.com"
    assert me["accountStatus"] == "active"
    r = site_get(simulator, "/wiki/rest/api/user", accountId=me["accountId"])
    assert r.json()["accountId"] == me["accountId"]
    missing = site_get(simulator, "/wiki/rest/api/user", accountId="5b10ac8d82e05b22cc7dffff")
    assert missing.status_code == 404


def test_groups_are_alphabetical_and_members_page_within_200(simulator: SimulatorProcess) -> None:
    body = site_get(simulator, "/wiki/rest/api/group", limit=5).json()
    assert "next" in body["_links"]
    groups = site_get(simulator, "/wiki/rest/api/group").json()["results"]
    names = [g["name"] for g in groups]
    assert names == sorted(names)
    assert len(groups) == simulator.control("info")["groups"]
    users_group = next(g for g in groups if g["name"] == "confluence-users")
    path = f"/wiki/rest/api/group/{users_group['id']}/membersByGroupId"
    assert site_get(simulator, path, limit=201).status_code == 400
    first = site_get(simulator, path, limit=200, shouldReturnTotalSize="true").json()
    assert first["size"] == 200
    assert first["totalSize"] > 200
    second = site_get(simulator, path, limit=200, start=200).json()
    ids = [u["accountId"] for u in first["results"] + second["results"]]
    assert len(ids) == len(set(ids)) == first["totalSize"]
    assert site_get(simulator, "/wiki/rest/api/group/nope/membersByGroupId").status_code == 404


def test_every_route_answers_the_same_under_both_prefixes(simulator: SimulatorProcess) -> None:
    scoped = ("admin@example.com", "fake-scoped-api-token")
    for path in (
        "/wiki/rest/api/settings/systemInfo",
        "/wiki/rest/api/search/user?cql=type%3Duser",
        "/wiki/rest/api/user/current",
        "/wiki/rest/api/audit?limit=5",
        "/wiki/rest/api/audit/retention",
    ):
        site = requests.get(simulator.url + path, auth=CLASSIC, timeout=30)
        gw = requests.get(simulator.gateway + path, auth=scoped, timeout=30)
        assert site.status_code == gw.status_code == 200, path
        a, b = site.json(), gw.json()
        if isinstance(a, dict) and "_links" in a:
            a["_links"].pop("self"), b["_links"].pop("self")
        if isinstance(a, dict):
            a.pop("searchDuration", None), b.pop("searchDuration", None)
        assert a == b, path


def test_system_info_and_licence_counts_agree_with_the_data(simulator: SimulatorProcess) -> None:
    info = simulator.control("info")
    sysinfo = site_get(simulator, "/wiki/rest/api/settings/systemInfo").json()
    assert sysinfo["cloudId"] == simulator.cloud_id
    assert sysinfo["baseUrl"] == simulator.url + "/wiki"
    base = "/wiki/rest/license/1.0/license/"
    used = site_get(simulator, base + "userCount").json()["count"]
    most = site_get(simulator, base + "maxUsers").json()["count"]
    free = site_get(simulator, base + "remainingSeats").json()["count"]
    assert used == info["licensed_active"]
    assert used + free == most
    assert free > 0
