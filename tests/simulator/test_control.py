"""The simulator's process, fixture and control API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from simulator.process import REPO_ROOT, SimulatorProcess, refresh


def test_command_line_prints_ready_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--users", "5"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        assert requests.get(url + "/_edge/tenant_info", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_bad_fault_option_fails_with_one_sentence() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "simulator", "--port", "0", "--rate-limit-every", "x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "rate_limit_every must be a number" in r.stderr


def test_stats_count_requests_per_route(simulator: SimulatorProcess) -> None:
    requests.get(simulator.url + "/_edge/tenant_info", timeout=10)
    requests.get(simulator.url + "/_edge/tenant_info", timeout=10)
    requests.get(simulator.url + "/wiki/rest/api/audit", timeout=10)
    stats = simulator.stats()
    assert stats["requests"] == {"tenant_info": 2, "audit": 1}
    assert stats["responses"] == {"tenant_info": {"200": 2}, "audit": {"401": 1}}
    assert stats["total_requests"] == 3
    simulator.control("reset-stats", {})
    assert simulator.stats()["total_requests"] == 0


def test_tap_config_modes_point_every_host_at_the_server(simulator: SimulatorProcess) -> None:
    oauth = simulator.tap_config("oauth")
    assert oauth["api_url"] == oauth["auth_url"] == oauth["site_url"] == simulator.url
    assert oauth["refresh_token"] == "fake-refresh-token-seed"
    assert "api_token" not in oauth
    assert simulator.tap_config("scoped_token")["api_token"] == "fake-scoped-api-token"
    assert simulator.tap_config("classic_token")["api_token"] == "fake-classic-api-token"
    both = simulator.tap_config("oauth_plus_token", start_date="2026-01-01T00:00:00Z")
    assert both["client_secret"] == "fake-client-secret"
    assert both["api_token"] == "fake-classic-api-token"
    assert both["start_date"] == "2026-01-01T00:00:00Z"
    assert both["token_store_path"].endswith("token_store.json")


def test_stop_kills_the_process_it_started(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory()
    sim.stop()
    assert sim.proc.poll() is not None


def test_faults_can_be_set_and_cleared_at_run_time(simulator: SimulatorProcess) -> None:
    assert simulator.control("faults", {"rate_limit_every": 1})["rate_limit_every"] == 1
    assert requests.get(simulator.url + "/_edge/tenant_info", timeout=10).status_code == 429
    # The control API itself is never faulted.
    assert simulator.stats()["faults_injected"] == {"rate_limit": 1}
    simulator.control("faults", {})
    assert requests.get(simulator.url + "/_edge/tenant_info", timeout=10).status_code == 200
    r = requests.post(simulator.url + "/_sim/faults", json={"no_such_fault": 1}, timeout=10)
    assert r.status_code == 400


def test_benchmark_script_reads_the_whole_log(tmp_path: Path) -> None:
    # The benchmark's figures are only worth something if it really reads every record.
    r = subprocess.run(
        [sys.executable, "-m", "simulator.bench", "--records", "2345"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in r.stdout.splitlines() if "records/s" in line]
    assert len(lines) == 3
    assert all(line.split(":")[1].split()[0] == "2345" for line in lines)


def _read_response(sock: socket.socket, buf: bytes) -> tuple[int, bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                 .split(b":")[1])  # fmt: skip
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), rest[:length], rest[length:]


def test_keep_alive_serves_several_requests_on_one_connection(simulator: SimulatorProcess) -> None:
    # Content-Length must count bytes, not characters: the bodies are full of non-ASCII names.
    host, port = simulator.url.removeprefix("http://").split(":")
    auth = "Authorization: Basic YWRtaW5AZXhhbXBsZS5jb206ZmFrZS1jbGFzc2ljLWFwaS10b2tlbg=="
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        buf = b""
        seen = []
        for path in ("/wiki/rest/api/search/user?cql=type%3Duser&limit=200",
                     "/wiki/rest/api/nope", "/wiki/rest/api/audit?limit=50"):  # fmt: skip
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n".encode())
            status, body, buf = _read_response(sock, buf)
            seen.append(status)
            assert json.loads(body)
    assert seen == [200, 404, 200]


def test_run_time_config_changes_lifetimes_and_leeway(simulator: SimulatorProcess) -> None:
    simulator.control("config", {"token_ttl": 7, "reuse_leeway": 0})
    status, body = refresh(simulator)
    assert status == 200
    assert body["expires_in"] == 7
    assert refresh(simulator)[0] == 403  # leeway 0: the rotated seed is dead at once
    assert simulator.stats()["revoked_families"] == 1


def test_expire_access_tokens_makes_live_tokens_fail(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    url = simulator.gateway + "/wiki/rest/api/user/current"
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    assert simulator.control("expire-access-tokens", {}) == {"expired": 1}
    assert requests.get(url, headers=headers, timeout=10).status_code == 401


def test_site_url_option_sets_the_links_clients_must_rebase(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(site_url="https://acme.atlassian.net")
    params: dict[str, str | int] = {"cql": "type=user", "limit": 2}
    body = requests.get(
        sim.url + "/wiki/rest/api/search/user",
        params=params,
        auth=("admin@example.com", "fake-classic-api-token"),
        timeout=10,
    ).json()
    assert body["_links"]["base"] == "https://acme.atlassian.net/wiki"
    assert body["results"][0]["user"]["_links"]["self"].startswith("https://acme.atlassian.net/")
    assert sim.control("info")["site_url"] == "https://acme.atlassian.net"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_dates_and_a_busy_port_fail_with_one_sentence() -> None:
    bad_date = _run_cli("--port", "0", "--audit-start", "last tuesday")
    assert bad_date.returncode == 2
    assert "ISO 8601 date or epoch milliseconds" in bad_date.stderr
    reversed_range = _run_cli("--audit-start", "2026-05-01", "--audit-end", "2026-01-01")
    assert "before --audit-start" in reversed_range.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _run_cli("--port", str(port))
    assert taken.returncode == 2
    assert "cannot listen on" in taken.stderr
    for r in (bad_date, reversed_range, taken):
        assert "Traceback" not in r.stderr
