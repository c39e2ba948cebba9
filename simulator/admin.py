"""Atlassian Admin API (organisation) routes, reached with an org API key as Bearer."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from simulator.web import HTTPError, Request, Response, gateway_error, json_response

if TYPE_CHECKING:
    from simulator.site import Simulator

LAST_ACTIVE = re.compile(
    r"^/admin/v1/orgs/(?P<org>[^/]+)/directory/users/(?P<account>[^/]+)/last-active-dates$"
)


def last_active_dates(sim: Simulator, req: Request) -> Response:
    """GET last-active-dates: per-product last active date (a day), empty if never active."""
    header = req.headers.get("authorization", "")
    if header != f"Bearer {sim.creds.org_api_key}":
        raise HTTPError(gateway_error(401, "Unauthorized"))
    # Path segments arrive percent-encoded (accountIds hold ':'); servers decode them.
    if unquote(req.params["org"]) != sim.creds.org_id:
        raise HTTPError(gateway_error(404, "Organization not found"))
    i = sim.data.index_of().get(unquote(req.params["account"]))
    if i is None:
        raise HTTPError(gateway_error(404, "User not found"))
    every = sim.strict.admin_forbidden_every
    if every and i % every == every - 1:
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
