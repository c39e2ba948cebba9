"""Atlassian Admin API (organisation) routes, reached with an org API key as Bearer."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from simulator.web import HTTPError, Request, Response, gateway_error, json_response

if TYPE_CHECKING:
    from simulator.site import Simulator

LAST_ACTIVE = re.compile(
    r"^/admin/v1/orgs/(?P<org>[^/]+)/directory/users/(?P<account>[^/]+)/last-active-dates$"
)
ORG_USERS = re.compile(r"^/admin/v1/orgs/(?P<org>[^/]+)/users$")
#: Managed accounts per page of the organization's listing [UNV: the reference takes no
#: limit and names no page size; 100 is the size other Admin API listings use].
ORG_USERS_PAGE = 100


def _check_key_and_org(sim: Simulator, req: Request) -> None:
    header = req.headers.get("authorization", "")
    if header != f"Bearer {sim.creds.org_api_key}":
        raise HTTPError(gateway_error(401, "Unauthorized"))
    # Path segments arrive percent-encoded (accountIds hold ':'); servers decode them.
    if unquote(req.params["org"]) != sim.creds.org_id:
        raise HTTPError(gateway_error(404, "Organization not found"))


def _hidden(sim: Simulator, i: int) -> bool:
    every = sim.strict.admin_forbidden_every
    return bool(every) and i % every == every - 1


def org_users(sim: Simulator, req: Request) -> Response:
    """GET /admin/v1/orgs/{orgId}/users: the managed accounts, paged by an opaque cursor.

    Each account carries ``product_access[]`` with a ``last_active`` day per product (absent
    when never active), the same day last-active-dates gives. Accounts not on this site (on
    another site of the organization) are listed too; guests, apps and accounts on
    unclaimed domains are not, nor accounts this key may not see.
    """
    _check_key_and_org(sim, req)
    if sim.strict.admin_listing == "403":
        # [UNV] the body; the status is what a key without read:accounts:admin gets.
        raise HTTPError(gateway_error(403, "Unauthorized; scope does not match"))
    if sim.strict.admin_listing == "404":
        raise HTTPError(gateway_error(404, "Not Found"))
    data = sim.data
    managed: list[int | str] = [
        i for i in range(data.n_total) if data.is_managed(i) and not _hidden(sim, i)
    ]
    managed += data.org_only_accounts()
    raw = req.arg("cursor")
    try:
        start = (
            int(base64.urlsafe_b64decode(raw.encode()).decode().removeprefix("o:")) if raw else 0
        )
    except ValueError:
        raise HTTPError(gateway_error(400, "Invalid cursor")) from None
    page = managed[start : start + ORG_USERS_PAGE]
    links: dict[str, Any] = {"self": f"{sim.url}/admin/v1/orgs/{req.params['org']}/users"}
    if start + ORG_USERS_PAGE < len(managed):
        links["next"] = base64.urlsafe_b64encode(f"o:{start + ORG_USERS_PAGE}".encode()).decode()
    body = {
        "data": [_managed_account(sim, who) for who in page],
        "links": links,
        "meta": {"total": len(managed)},
    }
    return json_response(200, body)


def _managed_account(sim: Simulator, who: int | str) -> dict[str, Any]:
    """One account of the listing (a site user by index, or an organization-only id)."""
    if isinstance(who, str):
        # On another Confluence site of the organization: active there, never here.
        day = f"2026-10-{int(who[-2:], 16) % 28 + 1:02d}"
        elsewhere = [("confluence", "Confluence", "other-site.atlassian.net/wiki", day)]
        return _account(who, "active", "Elsewhere User", None, elsewhere)
    data = sim.data
    core = data.user_core(who)
    last = data.last_active_date(who)
    products: list[tuple[str, str, str, Any]] = [
        ("confluence", "Confluence", f"{sim.site_url.removeprefix('http://')}/wiki", last),
        # A product of no interest to the tap, active more recently than Confluence.
        ("jira-software", "Jira", "jira.example.com", "2026-11-30" if who % 2 else None),
    ]
    name = str(core["displayName"] or core["publicName"])
    return _account(core["accountId"], data.account_status(who), name, core["email"], products)


def _account(
    account_id: str, status: str, name: str, email: Any, products: list[tuple[str, str, str, Any]]
) -> dict[str, Any]:
    access = []
    for key, product, url, day in products:
        entry: dict[str, Any] = {"key": key, "name": product, "url": url}
        if day is not None:
            entry["last_active"] = day
        access.append(entry)
    days = [p["last_active"] for p in access if "last_active" in p]
    account: dict[str, Any] = {
        "account_id": account_id,
        "account_type": "atlassian",
        "account_status": status,
        "name": name,
        "picture": f"https://avatar.example.com/{account_id}",
        "access_billable": True,
        "product_access": access,
        "links": {"self": f"https://api.atlassian.com/users/{account_id}/manage"},
    }
    if email:
        account["email"] = email
    if days:
        account["last_active"] = max(days) + "T08:00:00.000Z"
    return account


def last_active_dates(sim: Simulator, req: Request) -> Response:
    """GET last-active-dates: per-product last active date (a day), empty if never active."""
    _check_key_and_org(sim, req)
    i = sim.data.index_of().get(unquote(req.params["account"]))
    if i is None:
        raise HTTPError(gateway_error(404, "User not found"))
    if _hidden(sim, i):
        # [UNV] what the Admin API answers for an account it will not show this key.
        raise HTTPError(gateway_error(403, "Forbidden"))
    last = sim.data.last_active_date(i)
    access = []
    if last is not None:
        access.append(
            {
                "id": f"ari:cloud:confluence::site/{sim.creds.cloud_id}",
                "key": "confluence",
                "last_active": last,
            }
        )
    data = {"product_access": access, "added_to_org": "2025-06-01"}
    return json_response(200, {"data": data, "links": {}})
