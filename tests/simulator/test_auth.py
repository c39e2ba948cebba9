"""The simulator enforces Atlassian's auth rules: rotation, leeway, revocation, hosts, scopes."""

from __future__ import annotations

from collections.abc import Callable

import requests

from simulator.process import SimulatorProcess, refresh

ADMIN = "admin@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_refresh_rotates_the_refresh_token_and_reports_scopes(simulator: SimulatorProcess) -> None:
    status, body = refresh(simulator)
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"] != simulator.creds.seed_refresh_token
    assert body["refresh_token"].startswith("fake-rt-")
    assert body["access_token"].startswith("fake-at-")
    assert "read:audit-log:confluence" in body["scope"].split()
    status2, body2 = refresh(simulator, body["refresh_token"])
    assert status2 == 200
    assert body2["refresh_token"] not in (body["refresh_token"], simulator.creds.seed_refresh_token)
    assert simulator.stats()["refreshes"] == 2


def test_rotated_refresh_token_still_works_inside_the_reuse_leeway(
    simulator: SimulatorProcess,
) -> None:
    assert refresh(simulator)[0] == 200
    status, body = refresh(simulator)  # the seed again, seconds later: inside 600 s
    assert status == 200
    assert simulator.stats()["revoked_families"] == 0
    assert refresh(simulator, body["refresh_token"])[0] == 200


def test_reuse_after_zero_leeway_revokes_the_whole_family(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(reuse_leeway=0)
    _, first = refresh(sim)
    status, body = refresh(sim)  # the seed token was rotated out: theft as far as Atlassian knows
    assert status == 403
    assert body == {
        "error": "invalid_grant",
        "error_description": "Unknown or invalid refresh token.",
    }
    # Every descendant dies with the family, including the newest token.
    status, body = refresh(sim, first["refresh_token"])
    assert status == 403
    assert body["error"] == "invalid_grant"
    stats = sim.stats()
    assert stats["revoked_families"] == 1
    assert stats["refreshes"] == 1


def test_reuse_after_the_leeway_has_passed_revokes_the_family(simulator: SimulatorProcess) -> None:
    _, first = refresh(simulator)
    simulator.control("clock", {"advance_s": 601})
    assert refresh(simulator)[0] == 403
    assert refresh(simulator, first["refresh_token"])[0] == 403
    assert simulator.stats()["revoked_families"] == 1


def test_other_families_survive_a_revocation(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(reuse_leeway=0)
    other = sim.control("grant", {"scopes": ["read:audit-log:confluence", "offline_access"]})
    refresh(sim)
    refresh(sim)  # revokes the seed family
    assert refresh(sim, other["refresh_token"])[0] == 200


def test_unknown_refresh_token_is_refused(simulator: SimulatorProcess) -> None:
    status, body = refresh(simulator, "fake-rt-never-issued")
    assert status == 403
    assert body["error"] == "unauthorized_client"


def test_wrong_client_secret_is_access_denied(simulator: SimulatorProcess) -> None:
    r = requests.post(
        simulator.url + "/oauth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": "fake-client-id",
            "client_secret": "fake-wrong-secret",
            "refresh_token": simulator.creds.seed_refresh_token,
        },
        timeout=10,
    )
    assert r.status_code == 401
    assert r.json() == {"error": "access_denied", "error_description": "Unauthorized"}


def test_form_encoded_refresh_is_accepted_like_json(simulator: SimulatorProcess) -> None:
    # singer-sdk's OAuthAuthenticator posts form data; the real auth server accepts both.
    r = requests.post(
        simulator.url + "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "fake-client-id",
            "client_secret": "fake-client-secret",
            "refresh_token": simulator.creds.seed_refresh_token,
        },
        timeout=10,
    )
    assert r.status_code == 200
    assert r.json()["refresh_token"].startswith("fake-rt-")


def test_token_ttl_option_sets_expires_in(
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(token_ttl=5)
    assert refresh(sim)[1]["expires_in"] == 5


def test_expired_access_token_gets_401(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    url = simulator.gateway + "/wiki/rest/api/settings/systemInfo"
    assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200
    simulator.control("clock", {"advance_s": 3601})
    r = requests.get(url, headers=bearer(token), timeout=10)
    assert r.status_code == 401
    assert r.json() == {"code": 401, "message": "Unauthorized"}


def test_bearer_token_is_refused_at_the_site_root(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    r = requests.get(
        simulator.url + "/wiki/rest/api/settings/systemInfo", headers=bearer(token), timeout=10
    )
    assert r.status_code == 401


def test_bearer_token_is_refused_for_another_cloud_id(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    url = simulator.url + "/ex/confluence/00000000-0000-4000-8000-000000000000"
    r = requests.get(url + "/wiki/rest/api/settings/systemInfo", headers=bearer(token), timeout=10)
    assert r.status_code == 404


def test_classic_api_token_works_only_at_the_site_root(simulator: SimulatorProcess) -> None:
    auth = (ADMIN, "fake-classic-api-token")
    path = "/wiki/rest/api/settings/systemInfo"
    assert requests.get(simulator.url + path, auth=auth, timeout=10).status_code == 200
    r = requests.get(simulator.gateway + path, auth=auth, timeout=10)
    assert r.status_code == 401


def test_scoped_api_token_works_only_through_the_gateway(simulator: SimulatorProcess) -> None:
    auth = (ADMIN, "fake-scoped-api-token")
    path = "/wiki/rest/api/settings/systemInfo"
    assert requests.get(simulator.gateway + path, auth=auth, timeout=10).status_code == 200
    assert requests.get(simulator.url + path, auth=auth, timeout=10).status_code == 401


def test_wrong_password_and_no_credentials_are_refused(simulator: SimulatorProcess) -> None:
    path = "/wiki/rest/api/settings/systemInfo"
    assert (
        requests.get(simulator.url + path, auth=(ADMIN, "fake-nope"), timeout=10).status_code == 401
    )
    assert requests.get(simulator.url + path, timeout=10).status_code == 401
    assert requests.get(simulator.gateway + path, timeout=10).status_code == 401


def test_missing_scope_gets_the_gateway_scope_error(simulator: SimulatorProcess) -> None:
    token = refresh(simulator)[1]["access_token"]
    r = requests.get(simulator.gateway + "/wiki/rest/api/group", headers=bearer(token), timeout=10)
    assert r.status_code == 401
    assert r.json() == {"code": 401, "message": "Unauthorized; scope does not match"}


def test_granted_group_scopes_open_the_group_routes(simulator: SimulatorProcess) -> None:
    rt = simulator.control(
        "grant",
        {"scopes": ["read:group:confluence", "read:user:confluence", "offline_access"]},
    )["refresh_token"]
    token = refresh(simulator, rt)[1]["access_token"]
    r = requests.get(simulator.gateway + "/wiki/rest/api/group", headers=bearer(token), timeout=10)
    assert r.status_code == 200
    gid = r.json()["results"][0]["id"]
    members = simulator.gateway + f"/wiki/rest/api/group/{gid}/membersByGroupId"
    assert requests.get(members, headers=bearer(token), timeout=10).status_code == 200
    # The same token lacks the audit scope.
    r = requests.get(simulator.gateway + "/wiki/rest/api/audit", headers=bearer(token), timeout=10)
    assert r.status_code == 401


def test_group_members_need_the_user_scope_too_with_granular_scopes(
    simulator: SimulatorProcess,
) -> None:
    rt = simulator.control("grant", {"scopes": ["read:group:confluence", "offline_access"]})
    token = refresh(simulator, rt["refresh_token"])[1]["access_token"]
    gid = requests.get(
        simulator.gateway + "/wiki/rest/api/group", headers=bearer(token), timeout=10
    ).json()["results"][0]["id"]
    r = requests.get(
        simulator.gateway + f"/wiki/rest/api/group/{gid}/membersByGroupId",
        headers=bearer(token),
        timeout=10,
    )
    assert r.status_code == 401


def test_non_admin_grant_gets_403_on_audit(simulator: SimulatorProcess) -> None:
    rt = simulator.control(
        "grant", {"scopes": ["read:audit-log:confluence", "offline_access"], "admin": False}
    )["refresh_token"]
    token = refresh(simulator, rt)[1]["access_token"]
    r = requests.get(simulator.gateway + "/wiki/rest/api/audit", headers=bearer(token), timeout=10)
    assert r.status_code == 403
    body = r.json()
    assert body["statusCode"] == 403
    assert "PermissionException" in body["message"]
    assert body["data"]["authorized"] is False


def test_licence_counts_answer_only_site_root_classic_basic_auth(
    simulator: SimulatorProcess,
) -> None:
    path = "/wiki/rest/license/1.0/license/userCount"
    r = requests.get(simulator.url + path, auth=(ADMIN, "fake-classic-api-token"), timeout=10)
    assert r.status_code == 200
    assert isinstance(r.json()["count"], int)
    token = refresh(simulator)[1]["access_token"]
    assert (
        requests.get(simulator.gateway + path, headers=bearer(token), timeout=10).status_code == 401
    )
    assert requests.get(simulator.url + path, headers=bearer(token), timeout=10).status_code == 401
    scoped = (ADMIN, "fake-scoped-api-token")
    assert requests.get(simulator.gateway + path, auth=scoped, timeout=10).status_code == 401


def test_accessible_resources_lists_the_site_with_granted_scopes(
    simulator: SimulatorProcess,
) -> None:
    token = refresh(simulator)[1]["access_token"]
    r = requests.get(
        simulator.url + "/oauth/token/accessible-resources", headers=bearer(token), timeout=10
    )
    assert r.status_code == 200
    [site] = r.json()
    assert site["id"] == simulator.cloud_id
    assert site["url"] == simulator.url
    assert "read:audit-log:confluence" in site["scopes"]
    r = requests.get(
        simulator.url + "/oauth/token/accessible-resources",
        headers=bearer("fake-at-bogus"),
        timeout=10,
    )
    assert r.status_code == 401


def test_tenant_info_needs_no_credentials(simulator: SimulatorProcess) -> None:
    r = requests.get(simulator.url + "/_edge/tenant_info", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"cloudId": simulator.cloud_id}


def test_every_issued_token_is_listed_for_leak_scans(simulator: SimulatorProcess) -> None:
    _, body = refresh(simulator)
    listing = simulator.control("tokens")
    access = {t["token"] for t in listing["access_tokens"]}
    refresh_tokens = {t["token"]: t["state"] for t in listing["refresh_tokens"]}
    assert body["access_token"] in access
    assert refresh_tokens[body["refresh_token"]] == "current"
    assert refresh_tokens[simulator.creds.seed_refresh_token] == "rotated"
    assert "fake-client-secret" in listing["secrets"]
    for token in [*access, *refresh_tokens]:
        assert token.startswith("fake-")
        assert token.count(".") < 2  # never JWT-shaped


def test_refresh_token_unused_for_90_days_expires(simulator: SimulatorProcess) -> None:
    simulator.control("clock", {"advance_s": 91 * 86_400})
    status, body = refresh(simulator)
    assert status == 403
    assert body["error"] == "invalid_grant"


def test_a_family_expires_after_365_days_however_often_it_is_used(
    simulator: SimulatorProcess,
) -> None:
    token = simulator.creds.seed_refresh_token
    for _ in range(4):  # day 80, 160, 240, 320: each refresh resets the inactivity clock
        simulator.control("clock", {"advance_s": 80 * 86_400})
        status, body = refresh(simulator, token)
        assert status == 200
        token = body["refresh_token"]
    simulator.control("clock", {"advance_s": 50 * 86_400})  # day 370
    assert refresh(simulator, token)[0] == 403
