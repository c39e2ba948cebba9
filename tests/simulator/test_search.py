"""CQL content search in the simulator: strict parsing, minute-resolution dates, cursors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from simulator.process import SimulatorProcess, refresh

CLASSIC = ("admin@example.com", "fake-classic-api-token")
EXPAND = "content.history.lastUpdated"


def search(sim: SimulatorProcess, **params: str | int) -> requests.Response:
    return requests.get(sim.url + "/wiki/rest/api/search", params=params, auth=CLASSIC, timeout=30)


def search_all(sim: SimulatorProcess, cql: str, limit: int = 50) -> list[dict[str, Any]]:
    body = search(sim, cql=cql, limit=limit, expand=EXPAND).json()
    out = list(body["results"])
    while "next" in body["_links"]:
        assert "cursor=" in body["_links"]["next"]
        url = body["_links"]["base"] + body["_links"]["next"]
        body = requests.get(url, auth=CLASSIC, timeout=30).json()
        out += body["results"]
    return out


def when(result: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(result["lastModified"].replace("Z", "+00:00"))


def test_cursor_pages_cover_every_match_exactly_once(simulator: SimulatorProcess) -> None:
    everything = search_all(simulator, "type in (page, blogpost, comment, attachment)")
    ids = [r["content"]["id"] for r in everything]
    assert len(ids) == len(set(ids)) == simulator.control("info")["content"]
    first = search(simulator, cql="type in (page, blogpost, comment, attachment)").json()
    assert first["totalSize"] == len(ids)


def test_limit_defaults_to_25_and_is_clamped_to_250(simulator: SimulatorProcess) -> None:
    assert search(simulator, cql="type=page").json()["limit"] == 25
    body = search(simulator, cql="type in (page, blogpost, comment, attachment)", limit=1000).json()
    assert body["limit"] == 250
    assert body["size"] == 250


def test_type_filter_and_lastmodified_window_select_the_right_items(
    simulator: SimulatorProcess,
) -> None:
    everything = search_all(simulator, "type in (page, blogpost, comment, attachment)")
    cutoff = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    got = search_all(simulator, 'type in (page, blogpost) and lastmodified >= "2026/06/01 12:30"')
    expected = [
        r["content"]["id"]
        for r in everything
        if r["content"]["type"] in ("page", "blogpost") and when(r) >= cutoff
    ]
    assert sorted(r["content"]["id"] for r in got) == sorted(expected)
    assert expected


def test_dates_have_minute_resolution(simulator: SimulatorProcess) -> None:
    everything = search_all(simulator, "type in (page, blogpost, comment, attachment)")
    item = next(r for r in everything if when(r).second > 0)
    minute = when(item).strftime("%Y/%m/%d %H:%M")
    cid = item["content"]["id"]
    gt = search_all(simulator, f'lastmodified > "{minute}"')
    ge = search_all(simulator, f'lastmodified >= "{minute}"')
    assert cid not in {r["content"]["id"] for r in gt}
    assert cid in {r["content"]["id"] for r in ge}


def test_iso_day_dates_and_order_by_work(simulator: SimulatorProcess) -> None:
    asc = search_all(simulator, 'lastmodified >= "2026-03-01" order by lastmodified asc')
    stamps = [r["lastModified"] for r in asc]
    assert stamps == sorted(stamps)
    assert all(s >= "2026-03-01" for s in stamps)
    desc = search_all(simulator, 'lastmodified >= "2026-03-01" order by lastmodified desc')
    assert [r["lastModified"] for r in desc] == sorted(stamps, reverse=True)


def test_history_expansion_names_the_last_editor(simulator: SimulatorProcess) -> None:
    body = search(simulator, cql="type=page", limit=5, expand=EXPAND).json()
    for r in body["results"]:
        last = r["content"]["history"]["lastUpdated"]
        assert last["when"] == r["lastModified"]
        assert "accountId" in last["by"]
    plain = search(simulator, cql="type=page", limit=1).json()["results"][0]["content"]
    assert "history" not in plain
    assert "history" in plain["_expandable"]


def test_unparseable_cql_gets_a_confluence_400(simulator: SimulatorProcess) -> None:
    for bad in ("type = = page", 'lastmodified >= "01.05.2026"', "type in (page", "colour = red",
                "type = wiki", "lastmodified ~ 2026"):  # fmt: skip
        r = search(simulator, cql=bad)
        assert r.status_code == 400, bad
        assert r.json()["statusCode"] == 400
        assert "Could not parse cql" in r.json()["message"]
    assert search(simulator).status_code == 400


def test_a_cursor_from_another_query_is_refused(simulator: SimulatorProcess) -> None:
    nxt = search(simulator, cql="type=page", limit=2).json()["_links"]["next"]
    cursor = nxt.split("cursor=")[1].split("&")[0]
    assert search(simulator, cql="type=comment", cursor=cursor).status_code == 400


def test_search_works_through_the_gateway_with_the_search_scope(
    simulator: SimulatorProcess,
) -> None:
    token = refresh(simulator)[1]["access_token"]
    params: dict[str, str | int] = {"cql": "type=page", "limit": 3}
    r = requests.get(
        simulator.gateway + "/wiki/rest/api/search",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.json()["size"] == 3
