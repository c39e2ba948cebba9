"""Plain HTTP against the simulated site with the classic API token, as a correct client pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import requests

from simulator.process import SimulatorProcess

CLASSIC = ("admin@example.com", "fake-classic-api-token")


def site_get(
    sim: SimulatorProcess, path: str, **params: str | int | list[str]
) -> requests.Response:
    return requests.get(sim.url + path, params=params, auth=CLASSIC, timeout=30)


def page_all_users(sim: SimulatorProcess, limit: int, **params: str) -> list[dict[str, Any]]:
    """Follow `_links.next` the way a correct client must: joined onto `_links.base`."""
    users: list[dict[str, Any]] = []
    url = (
        sim.url
        + "/wiki/rest/api/search/user?"
        + urlencode({"cql": "type=user", "limit": limit, **params})
    )
    while url:
        body = requests.get(url, auth=CLASSIC, timeout=30).json()
        assert body["totalSize"] == body["size"] == len(body["results"])
        users += [r["user"] for r in body["results"]]
        nxt = body["_links"].get("next")
        url = body["_links"]["base"] + nxt if nxt else ""
    return users
