"""Simulator controls the user_activity tests drive: activity by one chosen user."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import pytest
import requests

from simulator.process import SimulatorProcess

CLASSIC = ("admin@example.com", "fake-classic-api-token")
ORG_KEY = {"Authorization": "Bearer fake-org-api-key"}


def _users(sim: SimulatorProcess, limit: int = 5) -> list[str]:
    params: dict[str, str | int] = {"cql": "type=user", "limit": limit}
    body = requests.get(
        sim.url + "/wiki/rest/api/search/user",
        params=params,
        auth=CLASSIC,
        timeout=30,
    ).json()
    return [r["user"]["accountId"] for r in body["results"]]


def _newest_audit(sim: SimulatorProcess, since_ms: int) -> list[dict[str, Any]]:
    body = requests.get(
        sim.url + "/wiki/rest/api/audit",
        params={"startDate": since_ms, "limit": 1000},
        auth=CLASSIC,
        timeout=30,
    ).json()
    results: list[dict[str, Any]] = body["results"]
    return results


def test_audit_append_can_name_the_author(simulator: SimulatorProcess) -> None:
    who = _users(simulator)[3]
    dates = simulator.control("audit/append", {"count": 2, "account_id": who})["creationDates"]
    appended = _newest_audit(simulator, min(dates))
    assert len(appended) == 2
    assert {r["author"]["accountId"] for r in appended} == {who}


def test_audit_append_without_an_author_keeps_the_derived_ones(simulator: SimulatorProcess) -> None:
    dates = simulator.control("audit/append", {"count": 40})["creationDates"]
    authors = {r["author"]["accountId"] for r in _newest_audit(simulator, min(dates))}
    assert len(authors) > 1


def test_content_edit_makes_the_user_the_last_updater_at_that_time(
    simulator: SimulatorProcess,
) -> None:
    who = _users(simulator)[2]
    edited = simulator.control(
        "content/edit", {"account_id": who, "count": 2, "modified": 1_790_000_000_000}
    )
    assert len(edited["ids"]) == 2
    params: dict[str, str | int] = {
        "cql": 'type in (page, blogpost, comment, attachment) and lastmodified >= "2026/09/21"',
        "expand": "content.history.lastUpdated",
        "limit": 250,
    }
    body = requests.get(
        simulator.url + "/wiki/rest/api/search",
        params=params,
        auth=CLASSIC,
        timeout=30,
    ).json()
    by_id = {r["content"]["id"]: r for r in body["results"]}
    for content_id in edited["ids"]:
        last = by_id[content_id]["content"]["history"]["lastUpdated"]
        assert last["by"]["accountId"] == who
        assert last["when"] == "2026-09-21T14:13:20.000Z"


def test_admin_last_active_date_can_be_set_per_user(simulator: SimulatorProcess) -> None:
    who = _users(simulator)[1]
    simulator.control("admin/last-active", {"account_id": who, "date": "2026-11-28"})
    url = f"{simulator.url}/admin/v1/orgs/fake-org-id/directory/users/{who}/last-active-dates"
    body = requests.get(url, headers=ORG_KEY, timeout=30).json()
    products = body["data"]["product_access"]
    assert [(p["key"], p["last_active"]) for p in products] == [("confluence", "2026-11-28")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("audit/append", {"count": 1, "account_id": "no-such-user"}),
        ("content/edit", {"count": 1}),
        ("admin/last-active", {"account_id": "no-such-user", "date": "2026-11-28"}),
    ],
)
def test_activity_controls_refuse_an_unknown_user(
    simulator: SimulatorProcess, path: str, body: dict[str, Any]
) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        simulator.control(path, body)
    assert err.value.code == 400
    assert "error" in json.loads(err.value.read())


def test_admin_api_decodes_percent_encoded_account_ids(simulator: SimulatorProcess) -> None:
    who = next(a for a in _users(simulator, limit=50) if ":" in a)
    simulator.control("admin/last-active", {"account_id": who, "date": "2026-11-27"})
    encoded = who.replace(":", "%3A")
    url = f"{simulator.url}/admin/v1/orgs/fake-org-id/directory/users/{encoded}/last-active-dates"
    response = requests.get(url, headers=ORG_KEY, timeout=30)
    assert response.status_code == 200
    assert response.json()["data"]["product_access"][0]["last_active"] == "2026-11-27"
