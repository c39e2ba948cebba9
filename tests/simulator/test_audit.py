"""The simulated audit log: newest first, inclusive epoch-ms bounds, 1000 cap, shared timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from simulator.process import SimulatorProcess

CLASSIC = ("admin@example.com", "fake-classic-api-token")


def audit(sim: SimulatorProcess, **params: str | int) -> dict[str, Any]:
    r = requests.get(sim.url + "/wiki/rest/api/audit", params=params, auth=CLASSIC, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def read_all(sim: SimulatorProcess, limit: int = 1000, **params: str | int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 0
    while True:
        body = audit(sim, start=start, limit=limit, **params)
        out += body["results"]
        if body["size"] < body["limit"]:
            return out
        start += body["size"]


def test_audit_pages_newest_first_and_cover_every_record(simulator: SimulatorProcess) -> None:
    info = simulator.control("info")
    records = read_all(simulator)
    dates = [r["creationDate"] for r in records]
    assert len(records) == info["audit_records"]
    assert dates == sorted(dates, reverse=True)
    assert dates[0] == info["audit_newest"]
    assert dates[-1] == info["audit_oldest"]


def test_audit_records_have_no_id_and_the_documented_fields(simulator: SimulatorProcess) -> None:
    record = audit(simulator, limit=1)["results"][0]
    assert "id" not in record
    for key in ("author", "remoteAddress", "creationDate", "summary", "description", "category",
                "sysAdmin", "affectedObject", "changedValues", "associatedObjects"):  # fmt: skip
        assert key in record
    assert record["author"]["type"] == "user"
    assert isinstance(record["creationDate"], int)


def test_audit_limit_defaults_to_and_is_clamped_at_1000(simulator: SimulatorProcess) -> None:
    assert audit(simulator)["limit"] == 1000
    body = audit(simulator, limit=5000)
    assert body["limit"] == 1000
    assert body["size"] == 1000


def test_audit_date_bounds_are_inclusive_epoch_milliseconds(simulator: SimulatorProcess) -> None:
    records = read_all(simulator)
    pivot = records[len(records) // 2]["creationDate"]
    expected = [r for r in records if r["creationDate"] == pivot]
    got = audit(simulator, startDate=pivot, endDate=pivot)["results"]
    assert got == expected
    after = read_all(simulator, startDate=pivot)
    assert after == [r for r in records if r["creationDate"] >= pivot]
    before = read_all(simulator, endDate=pivot - 1)
    assert before == [r for r in records if r["creationDate"] < pivot]


def test_several_records_share_a_millisecond_even_across_page_boundaries(
    simulator: SimulatorProcess,
) -> None:
    records = read_all(simulator)
    dates = [r["creationDate"] for r in records]
    assert len(set(dates)) < len(dates)
    # A page of 100 ends in the middle of a millisecond: offset paging by date alone loses rows.
    page_edges = [(dates[k - 1], dates[k]) for k in range(100, len(dates), 100)]
    assert any(a == b for a, b in page_edges)
    straddles_1000 = [(dates[k - 1], dates[k]) for k in range(1000, len(dates), 1000)]
    assert any(a == b for a, b in straddles_1000)


def test_audit_data_is_deterministic_for_a_seed(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    a = simulator_factory(seed=7, audit_records=300)
    b = simulator_factory(seed=7, audit_records=300)
    c = simulator_factory(seed=8, audit_records=300)
    assert audit(a, limit=300)["results"] == audit(b, limit=300)["results"]
    assert audit(a, limit=300)["results"] != audit(c, limit=300)["results"]


def test_bad_audit_dates_get_400(simulator: SimulatorProcess) -> None:
    r = requests.get(
        simulator.url + "/wiki/rest/api/audit",
        params={"startDate": "2026-01-01"},
        auth=CLASSIC,
        timeout=30,
    )
    assert r.status_code == 400
    assert "epoch" in r.json()["message"]


def test_audit_retention_is_twelve_months(simulator: SimulatorProcess) -> None:
    r = requests.get(simulator.url + "/wiki/rest/api/audit/retention", auth=CLASSIC, timeout=30)
    assert r.json() == {"number": 12, "units": "MONTHS"}


def test_appended_records_arrive_at_the_newest_end(simulator: SimulatorProcess) -> None:
    before = simulator.control("info")
    out = simulator.control("audit/append", {"count": 3})
    assert all(d > before["audit_newest"] for d in out["creationDates"])
    first = audit(simulator, limit=3)["results"]
    assert [r["creationDate"] for r in first] == sorted(out["creationDates"], reverse=True)
    assert simulator.control("info")["audit_records"] == before["audit_records"] + 3


def test_late_records_land_behind_the_newest_end(simulator: SimulatorProcess) -> None:
    newest = simulator.control("info")["audit_newest"]
    out = simulator.control("audit/append", {"count": 2, "late_by_ms": 86_400_000})
    assert out["creationDates"] == [newest - 86_400_000] * 2
    window = audit(simulator, startDate=newest - 86_400_000, endDate=newest - 86_400_000)
    assert window["size"] >= 2
    records = read_all(simulator)
    dates = [r["creationDate"] for r in records]
    assert dates == sorted(dates, reverse=True)


def test_search_string_keeps_records_with_a_matching_value(simulator: SimulatorProcess) -> None:
    records = read_all(simulator)
    expected = [r for r in records if "space exported" in r["summary"].lower()]
    got = read_all(simulator, searchString="Space EXPORTED")
    assert expected
    assert got == expected
    # Keys are not values: every record has a "summary" key, few have that word in a value.
    assert len(read_all(simulator, searchString="summary")) < len(records)


def test_live_appends_are_stamped_now_so_a_pinned_end_date_excludes_them(
    simulator: SimulatorProcess,
) -> None:
    pinned = int(time.time() * 1000)
    before = read_all(simulator, endDate=pinned)
    out = simulator.control("audit/append", {"count": 4})
    assert all(d >= pinned for d in out["creationDates"])
    assert read_all(simulator, endDate=pinned - 1) == [
        r for r in before if r["creationDate"] <= pinned - 1
    ]


def test_a_cached_page_never_hides_records_added_since(simulator: SimulatorProcess) -> None:
    first = audit(simulator, limit=5)["results"]
    assert audit(simulator, limit=5)["results"] == first  # served from the page cache
    added = simulator.control("audit/append", {"count": 1})["creationDates"][0]
    now = audit(simulator, limit=5)["results"]
    assert now[0]["creationDate"] == added
    assert now[1:] == first[:4]
    late = simulator.control("audit/append", {"count": 1, "late_by_ms": 1})["creationDates"][0]
    window = audit(simulator, startDate=late, endDate=late)["results"]
    assert late in [r["creationDate"] for r in window]


def test_pages_for_the_same_records_match_whatever_the_end_date_beyond_them(
    simulator: SimulatorProcess,
) -> None:
    newest = simulator.control("info")["audit_newest"]
    a = audit(simulator, endDate=newest + 1, limit=50)
    b = audit(simulator, endDate=newest + 999_999, limit=50)
    assert a["results"] == b["results"]


def test_preencoded_pages_are_the_pages_built_on_demand(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # The benchmark's fast serving mode must answer exactly as the ordinary one, for ranges
    # and offsets of every kind, and fall back when appended or late records are in range.
    plain = simulator_factory(audit_records=3000)
    fast = simulator_factory(audit_records=3000, preencode_audit=True)
    info = plain.control("info")
    lo, hi = info["audit_oldest"], info["audit_newest"]
    mid = (lo + hi) // 2
    cases = [
        {"start": 0, "limit": 1000},
        {"start": 2500, "limit": 1000},
        {"start": 4000, "limit": 1000},
        {"startDate": mid, "endDate": hi, "start": 0, "limit": 300},
        {"startDate": lo, "endDate": mid, "start": 700, "limit": 1000},
        {"startDate": mid, "endDate": mid, "start": 0, "limit": 10},
        {"startDate": hi + 1, "start": 0, "limit": 1000},
    ]

    def same(params: dict[str, Any]) -> bool:
        # Everything but the links, which name each server's own port.
        a, b = audit(fast, **params), audit(plain, **params)
        return {**a, "_links": None} == {**b, "_links": None}

    for params in cases:
        assert same(params), params
    for sim in (plain, fast):
        # Dated explicitly: live appends are stamped with each server's own clock.
        sim.control("audit/append", {"count": 3, "creation_date": mid})
        sim.control("audit/append", {"count": 2, "late_by_ms": 5})
    for params in ({"start": 0, "limit": 1000}, {"startDate": mid, "start": 0, "limit": 1000}):
        assert same(params), params
    assert len(read_all(fast)) == 3005
