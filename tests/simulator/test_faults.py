"""Every fault the simulator can inject happens as specified, deterministically, and is counted."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulator.faults import HUGE_RETRY_AFTER
from simulator.process import SimulatorProcess, refresh

# requests reports a reset before the headers as ConnectionError, after them as
# ChunkedEncodingError.
BROKEN = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
CLASSIC = ("admin@example.com", "fake-classic-api-token")


def statuses(sim: SimulatorProcess, n: int, path: str = "/_edge/tenant_info") -> list[int]:
    with requests.Session() as s:
        return [s.get(sim.url + path, auth=CLASSIC, timeout=30).status_code for _ in range(n)]


def audit(sim: SimulatorProcess, **params: int) -> dict[str, Any]:
    r = requests.get(sim.url + "/wiki/rest/api/audit", params=params, auth=CLASSIC, timeout=30)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def raw_get(sim: SimulatorProcess, path: str) -> tuple[bytes, bytes | Exception]:
    """Send one GET on a raw socket; return (bytes received, b'' on EOF or the error)."""
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as e:
                return data, e
            if not chunk:
                return data, b""
            data += chunk


def test_rate_limit_every_nth_request_with_atlassian_headers(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(rate_limit_every=2, retry_after=3)
    assert statuses(sim, 4) == [200, 429, 200, 429]
    r = requests.get(sim.url + "/_edge/tenant_info", timeout=30)  # 5th: fine
    r = requests.get(sim.url + "/_edge/tenant_info", timeout=30)  # 6th: limited
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "3"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert int(r.headers["X-RateLimit-Limit"]) > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", r.headers["X-RateLimit-Reset"])
    assert r.headers["RateLimit-Reason"]
    assert sim.stats()["faults_injected"]["rate_limit"] == 3


def test_rate_limit_bursts_last_k_consecutive_requests(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(rate_limit_every=3, rate_limit_burst=2)
    assert statuses(sim, 7) == [200, 200, 429, 429, 200, 429, 429]


def test_huge_retry_after_is_sent_verbatim(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(rate_limit_every=1, retry_after=HUGE_RETRY_AFTER)
    r = requests.get(sim.url + "/_edge/tenant_info", timeout=30)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "9223372036854775807"


def test_error_every_cycles_through_5xx_with_their_real_shapes(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(error_every=1, error_statuses="500,502,503,504")
    seen = {}
    with requests.Session() as s:
        for _ in range(4):
            r = s.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)
            seen[r.status_code] = r
    assert set(seen) == {500, 502, 503, 504}
    assert seen[503].headers["Retry-After"] == "1"
    assert seen[500].json()["statusCode"] == 500
    assert seen[502].headers["Content-Type"].startswith("text/html")  # the edge answers in HTML
    injected = sim.stats()["faults_injected"]
    assert {injected[f"error_{c}"] for c in (500, 502, 503, 504)} == {1}


def test_error_rate_is_reproducible_from_the_seed(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    a = simulator_factory(seed=5, error_rate=0.3)
    b = simulator_factory(seed=5, error_rate=0.3)
    c = simulator_factory(seed=6, error_rate=0.3)
    sa, sb, sc = statuses(a, 40), statuses(b, 40), statuses(c, 40)
    assert sa == sb
    assert sa != sc
    assert 200 in sa
    assert any(s >= 500 for s in sa)


def test_reset_sends_part_of_the_body_then_a_tcp_reset(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(reset_every=1)
    _, end = raw_get(sim, "/_edge/tenant_info")
    assert isinstance(end, ConnectionResetError)
    with pytest.raises(BROKEN, match="reset"):
        requests.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)
    assert sim.stats()["faults_injected"]["reset"] == 2


def test_truncate_sends_full_content_length_but_half_the_body(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(truncate_every=1)
    data, end = raw_get(sim, "/wiki/rest/api/settings/systemInfo")
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"Content-Length: (\d+)", head)
    assert found is not None
    length = int(found.group(1))
    assert end == b""  # a clean close, not a reset
    assert 0 < len(body) < length
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)


def test_bad_json_is_a_complete_200_whose_json_is_cut(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(bad_json_every=2)
    with requests.Session() as s:
        ok = s.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)
        bad = s.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)
        # The connection survives: the response was complete as far as HTTP goes.
        again = s.get(sim.url + "/wiki/rest/api/audit", auth=CLASSIC, timeout=30)
    assert ok.json()["size"] == 1000
    assert bad.status_code == 200
    assert int(bad.headers["Content-Length"]) == len(bad.content)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        bad.json()
    assert again.json()["size"] == 1000


def test_latency_is_added_and_counted_without_changing_answers(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(latency_ms=20)
    assert statuses(sim, 3) == [200, 200, 200]
    assert sim.stats()["faults_injected"]["latency"] == 3


def test_faults_can_be_limited_to_named_routes(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(rate_limit_every=1, routes="audit")
    assert statuses(sim, 2) == [200, 200]
    assert statuses(sim, 1, "/wiki/rest/api/audit") == [429]


def test_records_appended_while_paging_shift_offsets_by_the_newest_end(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(append_during_paging="1:5")
    first = audit(sim, limit=100)["results"]
    second = audit(sim, limit=100, start=100)["results"]
    # Five newer records arrived between the pages, so offset 100 now starts 5 rows earlier.
    assert second[:5] == first[-5:]
    assert sim.stats()["faults_injected"]["append"] == 10
    assert sim.control("info")["audit_records"] == 2510


def test_late_records_appear_older_than_the_newest_while_paging(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(late_records="2:3", late_by_ms=60_000)
    newest = sim.control("info")["audit_newest"]
    audit(sim, limit=10)
    audit(sim, limit=10, start=10)  # the second request inserts three late records
    late = audit(sim, startDate=newest - 60_000, endDate=newest - 60_000)
    assert late["size"] >= 3
    assert sim.stats()["faults_injected"]["late_records"] == 3


def test_fault_options_can_be_set_through_the_control_api(simulator: SimulatorProcess) -> None:
    simulator.control("faults", {"append_during_paging": {"every": 1, "count": 2}})
    audit(simulator, limit=1)
    assert simulator.control("info")["audit_records"] == 2502


def test_a_lost_token_response_then_a_retry_survives_only_inside_the_leeway(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # The auth server rotates the token, the response is lost, the client retries the old one.
    for leeway, expected in ((600, 200), (0, 403)):
        sim = simulator_factory(reset_every=1, routes="oauth_token", reuse_leeway=leeway)
        with pytest.raises(BROKEN):
            requests.post(
                sim.url + "/oauth/token",
                json={
                    "grant_type": "refresh_token",
                    "client_id": "fake-client-id",
                    "client_secret": "fake-client-secret",
                    "refresh_token": "fake-refresh-token-seed",
                },
                timeout=30,
            )
        sim.control("faults", {})
        assert refresh(sim)[0] == expected
