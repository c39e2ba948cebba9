"""`status`, `check` and `cloud-id`: what they print, what they never print, their exit codes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from simulator.auth import SEED_SCOPES
from simulator.process import SimulatorProcess
from tap_confluence.auth_cli.callback import redirect_target
from tap_confluence.auth_cli.common import AuthCliError, parse_scopes, site_root
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint
from tests.support.auth_cli import clean_env, run_cli

NOW = dt.datetime.now(dt.UTC)


def _iso(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(
    path: Path, *, rotated_days_ago: float, started_days_ago: float, cloud: str = "fake-cloud-1"
) -> None:
    record = TokenRecord(
        refresh_token="fake-refresh-value-should-stay-hidden",
        seed_fingerprint=seed_fingerprint("fake-seed"),
        scopes=["offline_access", "read:audit-log:confluence"],
        rotated_at=_iso(rotated_days_ago),
        family_started_at=_iso(started_days_ago),
        access_token="fake-access-value-should-stay-hidden",
        access_token_expires_at=NOW.timestamp() + 1800,
        cloud_id=cloud,
    )
    with FileTokenStore(path).session() as session:
        session.save(record)


# ---- status --------------------------------------------------------------------------------


def test_status_lists_each_site_with_dates_and_scopes_but_no_token(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", rotated_days_ago=1, started_days_ago=30, cloud="fake-cloud-a")
    _write(tmp_path / "b.json", rotated_days_ago=2, started_days_ago=40, cloud="fake-cloud-b")
    result = run_cli(["status", "--token-store-path", str(tmp_path)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cloud ID: fake-cloud-a" in out
    assert "cloud ID: fake-cloud-b" in out
    assert "granted scopes: offline_access read:audit-log:confluence" in out
    inactivity = (NOW - dt.timedelta(days=1) + dt.timedelta(days=90)).strftime("%Y-%m-%d")
    absolute = (NOW - dt.timedelta(days=30) + dt.timedelta(days=365)).strftime("%Y-%m-%d")
    assert f"inactivity expiry: {inactivity}" in out
    assert f"absolute expiry: {absolute}" in out
    assert "cached access token: valid until" in out
    assert "WARNING" not in out
    assert "should-stay-hidden" not in out + result.stderr


def test_status_reads_the_store_path_from_the_tap_environment(tmp_path: Path) -> None:
    store = tmp_path / "plugin.json"
    _write(store, rotated_days_ago=0, started_days_ago=0)
    env = clean_env(tmp_path, TAP_CONFLUENCE_TOKEN_STORE_PATH=str(store))
    result = run_cli(["status"], env)
    assert result.returncode == 0, result.stderr
    assert str(store) in result.stdout


@pytest.mark.parametrize(
    ("rotated", "started", "flag", "code"),
    [
        (80, 100, "inactivity expiry: ", 0),  # unused for 80 days: 10 left
        (1, 355, "absolute expiry: ", 0),  # family nearly a year old
        (91, 100, "EXPIRED", 1),
        (1, 366, "EXPIRED", 1),
    ],
)
def test_status_warns_when_an_expiry_is_near_and_fails_when_past(
    tmp_path: Path, rotated: int, started: int, flag: str, code: int
) -> None:
    _write(tmp_path / "s.json", rotated_days_ago=rotated, started_days_ago=started)
    result = run_cli(["status", "--token-store-path", str(tmp_path)], clean_env(tmp_path))
    assert result.returncode == code
    warned = [line for line in result.stdout.splitlines() if "WARNING" in line or "EXPIRED" in line]
    assert len(warned) == 1, result.stdout
    assert flag in warned[0]


def test_status_without_a_store_says_to_run_login(tmp_path: Path) -> None:
    result = run_cli(["status"], clean_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("tap-confluence-auth: No token store at ")
    assert "tap-confluence-auth login" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_status_names_an_unreadable_store_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    result = run_cli(["status", "--token-store-path", str(tmp_path)], clean_env(tmp_path))
    assert result.returncode == 1
    assert "not valid JSON" in result.stdout
    assert "Traceback" not in result.stderr


# ---- check ---------------------------------------------------------------------------------


def _check(
    sim: SimulatorProcess, tmp_path: Path, config: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return run_cli(["check", "--config", str(path)], clean_env(tmp_path))


def test_check_passes_for_every_configured_method(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("oauth_plus_token", token_store_path=str(tmp_path / "s.json"))
    result = _check(simulator, tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "OK    OAuth: access token through the token store: refreshed" in out
    assert "OK    OAuth: systemInfo through the gateway" in out
    assert "OK    OAuth: audit log through the gateway" in out
    assert "OK    email + API token: licence userCount at the site" in out
    assert "FAIL" not in out
    assert out.strip().endswith("Everything configured works.")
    for secret in simulator.control("tokens")["secrets"]:
        assert secret not in out + result.stderr


def test_check_names_the_missing_audit_scope(simulator: SimulatorProcess, tmp_path: Path) -> None:
    scopes = [s for s in SEED_SCOPES if s != "read:audit-log:confluence"]
    token = simulator.control("grant", {"scopes": scopes})["refresh_token"]
    config = simulator.tap_config(
        "oauth", refresh_token=token, token_store_path=str(tmp_path / "s.json")
    )
    result = _check(simulator, tmp_path, config)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, result.stdout
    assert "audit log" in fails[0]
    assert "missing scope: grant read:audit-log:confluence" in fails[0]
    assert "OK    OAuth: systemInfo through the gateway" in result.stdout
    assert token not in result.stdout + result.stderr


def test_check_says_a_non_admin_account_lacks_the_administrator_permission(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    token = simulator.control("grant", {"scopes": SEED_SCOPES, "admin": False})["refresh_token"]
    config = simulator.tap_config(
        "oauth", refresh_token=token, token_store_path=str(tmp_path / "s.json")
    )
    result = _check(simulator, tmp_path, config)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, result.stdout
    assert "audit log" in fails[0]
    assert "missing permission" in fails[0]
    assert "Confluence Administrator global permission" in fails[0]


def test_check_reports_a_wrong_api_token_without_printing_it(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("classic_token", api_token="fake-wrong-api-token")
    del config["cloud_id"]  # site_url alone: a classic token, checked at the site
    result = _check(simulator, tmp_path, config)
    assert result.returncode == 1
    assert "FAIL  classic API token: systemInfo at the site: credentials rejected" in result.stdout
    assert "fake-wrong-api-token" not in result.stdout + result.stderr


def test_check_reports_a_refused_refresh_token_in_one_line(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config(
        "oauth", refresh_token="fake-unknown-refresh", token_store_path=str(tmp_path / "s.json")
    )
    result = _check(simulator, tmp_path, config)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(
        "FAIL  OAuth: access token through the token store: Atlassian refused"
    )
    assert "fake-unknown-refresh" not in result.stdout + result.stderr


def test_check_environment_overrides_the_config_file(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    config = simulator.tap_config("classic_token", api_token="fake-wrong-api-token")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = clean_env(tmp_path, TAP_CONFLUENCE_API_TOKEN=simulator.creds.classic_token)
    result = run_cli(["check", "--config", str(path)], env)
    assert result.returncode == 0, result.stdout


def test_check_with_no_credentials_gives_the_tap_s_own_sentence(tmp_path: Path) -> None:
    result = run_cli(["check"], clean_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("tap-confluence-auth: No credentials are set")
    assert "Traceback" not in result.stderr


# ---- cloud-id ------------------------------------------------------------------------------


def test_cloud_id_of_the_loopback_site_url(simulator: SimulatorProcess, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    direct = run_cli(["cloud-id", simulator.url + "/wiki/spaces/ENG/overview"], env)
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout.strip() == simulator.cloud_id
    override = run_cli(["cloud-id", "acme", "--site-url", simulator.url], env)
    assert override.stdout.strip() == simulator.cloud_id


def test_cloud_id_of_a_site_without_tenant_info_is_one_sentence(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    simulator.control(
        "faults", {"error_every": 1, "error_statuses": "404", "routes": "tenant_info"}
    )
    result = run_cli(["cloud-id", simulator.url], clean_env(tmp_path))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("acme", "https://acme.atlassian.net"),
        ("acme.atlassian.net", "https://acme.atlassian.net"),
        ("https://acme.atlassian.net/wiki/spaces/ENG", "https://acme.atlassian.net"),
        ("http://127.0.0.1:8765/wiki", "http://127.0.0.1:8765"),
        ("localhost:8765", "http://localhost:8765"),
    ],
)
def test_site_names_hosts_and_urls_become_the_site_root(given: str, root: str) -> None:
    assert site_root(given) == root


@pytest.mark.parametrize("given", ["http://acme.atlassian.net", "ftp://acme", "two words", ""])
def test_bad_sites_are_refused_with_a_sentence(given: str) -> None:
    with pytest.raises(AuthCliError):
        site_root(given)


def test_scopes_always_include_offline_access() -> None:
    assert parse_scopes("read:audit-log:confluence,read:configuration:confluence") == [
        "read:audit-log:confluence",
        "read:configuration:confluence",
        "offline_access",
    ]
    assert "offline_access" in parse_scopes(None)


def test_redirect_uri_given_is_sent_verbatim_and_its_port_is_listened_on() -> None:
    target = redirect_target("http://localhost/callback", 0)
    assert (target.port, target.path, target.bind_host) == (80, "/callback", "127.0.0.1")
    assert target.uri(80) == "http://localhost/callback"
    assert redirect_target(None, 0).uri(5555) == "http://localhost:5555/callback"
    with pytest.raises(AuthCliError, match="differs from the port"):
        redirect_target("http://localhost:9000/cb", 9001)
