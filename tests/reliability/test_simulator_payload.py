"""The simulator's /_sim/payload route serves given records in place of its data set."""

from __future__ import annotations

from collections.abc import Callable

import requests

from simulator.process import SimulatorProcess

CLASSIC = ("admin@example.com", "fake-classic-api-token")


def test_payload_route_serves_given_records_with_paging_and_audit_date_filter(
    sims: Callable[..., SimulatorProcess],
) -> None:
    sim = sims(users=3, guests=0, groups=1, audit_records=5)
    records = [{"creationDate": 10, "n": 1}, {"creationDate": 20, "n": 2}, {"n": "no date"}]
    sim.control("payload", {"route": "audit", "results": records})
    url = sim.url + "/wiki/rest/api/audit"
    body = requests.get(url, params={"startDate": 15, "limit": 1}, auth=CLASSIC, timeout=30).json()
    assert body["results"] == [records[1]]
    assert "next" in body["_links"]
    rest = requests.get(
        url, params={"startDate": 15, "limit": 1, "start": 1}, auth=CLASSIC, timeout=30
    ).json()
    assert rest["results"] == [records[2]], "records without an integer date match every range"

    users = [{"accountId": "a"}, {"accountId": "b"}]
    sim.control("payload", {"route": "user_bulk", "results": users})
    bulk = requests.get(
        sim.url + "/wiki/rest/api/user/bulk", params={"accountId": "b"}, auth=CLASSIC, timeout=30
    ).json()
    assert bulk["results"] == [users[1]]

    sim.control("payload", {"route": "audit", "results": None})
    assert len(requests.get(url, auth=CLASSIC, timeout=30).json()["results"]) == 5
