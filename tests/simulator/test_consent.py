"""The simulator's consent switch (/_sim/consent) that tap-confluence-auth's tests rely on."""

from __future__ import annotations

import urllib.error
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from simulator.process import SimulatorProcess

SCOPES = "read:audit-log:confluence read:configuration:confluence offline_access"


def _authorize(sim: SimulatorProcess) -> dict[str, list[str]]:
    params = {
        "audience": "api.atlassian.com",
        "client_id": sim.creds.client_id,
        "scope": SCOPES,
        "redirect_uri": "http://localhost:1/callback",
        "state": "fake-state-abc",
        "response_type": "code",
        "prompt": "consent",
    }
    r = requests.get(sim.url + "/authorize", params=params, allow_redirects=False, timeout=30)
    assert r.status_code == 302
    location = urlsplit(r.headers["Location"])
    assert location.path == "/callback"
    return parse_qs(location.query)


def _exchange(sim: SimulatorProcess, code: str) -> dict[str, Any]:
    body = {
        "grant_type": "authorization_code",
        "client_id": sim.creds.client_id,
        "client_secret": sim.creds.client_secret,
        "code": code,
        "redirect_uri": "http://localhost:1/callback",
    }
    r = requests.post(sim.url + "/oauth/token", json=body, timeout=30)
    assert r.status_code == 200
    token: dict[str, Any] = r.json()
    return token


def test_denied_consent_redirects_with_access_denied_and_the_state(
    simulator: SimulatorProcess,
) -> None:
    assert simulator.control("consent", {"consent": "deny"}) == {"consent": "deny", "admin": True}
    query = _authorize(simulator)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["fake-state-abc"]
    assert "code" not in query
    simulator.control("consent", {"consent": "accept"})
    assert "code" in _authorize(simulator)


def test_consent_by_a_non_admin_gives_a_token_the_audit_log_refuses(
    simulator: SimulatorProcess,
) -> None:
    simulator.control("consent", {"consent": "accept", "admin": False})
    token = _exchange(simulator, _authorize(simulator)["code"][0])
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    audit = requests.get(
        simulator.gateway + "/wiki/rest/api/audit", params={"limit": 1}, headers=headers, timeout=30
    )
    assert audit.status_code == 403
    info = requests.get(
        simulator.gateway + "/wiki/rest/api/settings/systemInfo", headers=headers, timeout=30
    )
    assert info.status_code == 200


def test_unknown_consent_value_is_refused(simulator: SimulatorProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        simulator.control("consent", {"consent": "maybe"})
    refused.value.close()  # it holds the response's socket
    assert refused.value.code == 400
    assert simulator.control("consent")["consent"] == "accept"
