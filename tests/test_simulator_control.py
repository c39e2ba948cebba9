"""The simulator's process, fixture and control API."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.simulator.fixture import REPO_ROOT, SimulatorProcess


def test_command_line_prints_ready_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.simulator", "--port", "0", "--users", "5"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        assert requests.get(url + "/_edge/tenant_info", timeout=10).status_code == 200
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_bad_fault_option_fails_with_one_sentence():
    r = subprocess.run(
        [sys.executable, "-m", "tests.simulator", "--port", "0", "--rate-limit-every", "x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "rate_limit_every must be a number" in r.stderr


def test_stats_count_requests_per_route(simulator: SimulatorProcess):
    requests.get(simulator.url + "/_edge/tenant_info", timeout=10)
    requests.get(simulator.url + "/_edge/tenant_info", timeout=10)
    requests.get(simulator.url + "/wiki/rest/api/audit", timeout=10)
    stats = simulator.stats()
    assert stats["requests"] == {"tenant_info": 2, "audit": 1}
    assert stats["responses"] == {"tenant_info": {"200": 2}, "audit": {"401": 1}}
    assert stats["total_requests"] == 3
    simulator.control("reset-stats", {})
    assert simulator.stats()["total_requests"] == 0


def test_tap_config_modes_point_every_host_at_the_server(simulator: SimulatorProcess):
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


def test_stop_kills_the_process_it_started(simulator_factory):
    sim = simulator_factory()
    sim.stop()
    assert sim.proc.poll() is not None


def test_faults_can_be_set_and_cleared_at_run_time(simulator: SimulatorProcess):
    assert simulator.control("faults", {"rate_limit_every": 1})["rate_limit_every"] == 1
    assert requests.get(simulator.url + "/_edge/tenant_info", timeout=10).status_code == 429
    # The control API itself is never faulted.
    assert simulator.stats()["faults_injected"] == {"rate_limit": 1}
    simulator.control("faults", {})
    assert requests.get(simulator.url + "/_edge/tenant_info", timeout=10).status_code == 200
    r = requests.post(simulator.url + "/_sim/faults", json={"no_such_fault": 1}, timeout=10)
    assert r.status_code == 400


def test_benchmark_script_reads_the_whole_log(tmp_path):
    # The benchmark's figures are only worth something if it really reads every record.
    r = subprocess.run(
        [sys.executable, "-m", "tests.simulator.bench", "--records", "2345"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in r.stdout.splitlines() if "records/s" in line]
    assert len(lines) == 2
    assert all(line.split(":")[1].split()[0] == "2345" for line in lines)
