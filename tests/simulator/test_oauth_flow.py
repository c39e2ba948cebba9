"""The consent flow (/authorize, code exchange) and the Admin API's last-active dates."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from simulator.process import SimulatorProcess

SCOPES = "read:audit-log:confluence read:content-details:confluence offline_access"


def authorize(sim: SimulatorProcess, **overrides: str) -> requests.Response:
    params = {
        "audience": "api.atlassian.com",
        "client_id": "fake-client-id",
        "scope": SCOPES,
        "redirect_uri": "http://localhost/callback",
        "state": "fake-state-123",
        "response_type": "code",
        "prompt": "consent",
        **overrides,
    }
    return requests.get(sim.url + "/authorize", params=params, allow_redirects=False, timeout=30)


def exchange(
    sim: SimulatorProcess, code: str, redirect_uri: str = "http://localhost/callback"
) -> requests.Response:
    return requests.post(
        sim.url + "/oauth/token",
        json={
            "grant_type": "authorization_code",
            "client_id": "fake-client-id",
            "client_secret": "fake-client-secret",
            "code": code,
            "redirect_uri": redirect_uri,
        },
        timeout=30,
    )


def code_from(response: requests.Response) -> tuple[str, dict[str, list[str]]]:
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    return query["code"][0], query


def test_authorize_redirects_back_with_a_code_and_the_same_state(
    simulator: SimulatorProcess,
) -> None:
    r = authorize(simulator)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("http://localhost/callback?")
    code, query = code_from(r)
    assert query["state"] == ["fake-state-123"]
    token = exchange(simulator, code)
    assert token.status_code == 200
    body = token.json()
    assert body["scope"] == SCOPES
    assert body["refresh_token"].startswith("fake-rt-")


def test_a_code_works_once_and_only_with_its_redirect_uri(simulator: SimulatorProcess) -> None:
    code, _ = code_from(authorize(simulator))
    assert exchange(simulator, code, "http://localhost/other").status_code == 403
    assert exchange(simulator, code).status_code == 200
    again = exchange(simulator, code)
    assert again.status_code == 403
    assert again.json()["error"] == "invalid_grant"


def test_without_offline_access_there_is_no_refresh_token(simulator: SimulatorProcess) -> None:
    code, _ = code_from(authorize(simulator, scope="read:audit-log:confluence"))
    body = exchange(simulator, code).json()
    assert "access_token" in body
    assert "refresh_token" not in body


def test_authorize_refuses_an_unknown_client(simulator: SimulatorProcess) -> None:
    assert authorize(simulator, client_id="fake-other-client").status_code == 400


def last_active(
    sim: SimulatorProcess, account: str, key: str = "fake-org-api-key", org: str = "fake-org-id"
) -> requests.Response:
    return requests.get(
        f"{sim.url}/admin/v1/orgs/{org}/directory/users/{account}/last-active-dates",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def user_ids(sim: SimulatorProcess) -> list[str]:
    params: dict[str, str | int] = {"cql": "type=user", "limit": 200}
    body = requests.get(
        sim.url + "/wiki/rest/api/search/user",
        params=params,
        auth=("admin@example.com", "fake-classic-api-token"),
        timeout=30,
    ).json()
    return [r["user"]["accountId"] for r in body["results"]]


def test_last_active_dates_give_a_day_per_product_or_nothing(simulator: SimulatorProcess) -> None:
    answers = [last_active(simulator, a) for a in user_ids(simulator)[:60]]
    assert {r.status_code for r in answers} == {200}
    bodies = [r.json() for r in answers]
    active = [b for b in bodies if b["data"]["product_access"]]
    assert active
    assert len(active) < len(bodies)  # some users never used the product
    entry = active[0]["data"]["product_access"][0]
    assert entry["key"] == "confluence"
    assert entry["id"].endswith(simulator.cloud_id)
    assert len(entry["last_active"]) == 10  # a date, YYYY-MM-DD


def test_last_active_dates_need_the_org_key_org_and_a_known_user(
    simulator: SimulatorProcess,
) -> None:
    account = user_ids(simulator)[0]
    assert last_active(simulator, account, key="fake-wrong-key").status_code == 401
    assert last_active(simulator, account, org="fake-other-org").status_code == 404
    assert last_active(simulator, "5b10ac8d82e05b22cc7dffff").status_code == 404
    # An OAuth access token is not an org API key.
    token = requests.post(
        simulator.url + "/oauth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": "fake-client-id",
            "client_secret": "fake-client-secret",
            "refresh_token": "fake-refresh-token-seed",
        },
        timeout=30,
    ).json()["access_token"]
    assert last_active(simulator, account, key=token).status_code == 401
