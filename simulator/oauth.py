"""Auth host and discovery routes: /oauth/token, /authorize, accessible-resources, tenant_info."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from simulator.web import HTTPError, Request, Response, gateway_error, json_response

if TYPE_CHECKING:
    from simulator.site import Simulator


def token(sim: Simulator, req: Request) -> Response:
    """POST /oauth/token: refresh_token and authorization_code grants (JSON or form body)."""
    if req.method != "POST":
        return json_response(405, {"error": "method_not_allowed"})
    status, body = sim.tokens.token_request(req.json_body())
    return json_response(status, body, {"Cache-Control": "no-store"})


def authorize(sim: Simulator, req: Request) -> Response:
    """GET /authorize: redirect back with a one-time code (or access_denied) and the state."""
    client_id = req.arg("client_id")
    redirect_uri = req.arg("redirect_uri")
    if client_id != sim.creds.client_id or not redirect_uri:
        return json_response(
            400,
            {
                "error": "invalid_request",
                "error_description": "Unknown client_id or no redirect_uri",
            },
        )
    if req.arg("response_type") != "code":
        return json_response(
            400,
            {"error": "unsupported_response_type", "error_description": "Use response_type=code"},
        )
    scopes = (req.arg("scope") or "").split()
    params: dict[str, str]
    if sim.tokens.consent == "deny":
        # What Atlassian sends when the person clicks "Deny" on the consent screen.
        params = {
            "error": "access_denied",
            "error_description": "User did not authorize the request",
        }
    else:
        admin = sim.tokens.consent_admin
        params = {"code": sim.tokens.new_code(scopes, redirect_uri, admin=admin)}
    if req.arg("state") is not None:
        params["state"] = req.arg("state") or ""
    sep = "&" if "?" in redirect_uri else "?"
    return Response(302, b"", {"Location": redirect_uri + sep + urlencode(params)})


def accessible_resources(sim: Simulator, req: Request) -> Response:
    """GET /oauth/token/accessible-resources: the sites an access token may reach."""
    header = req.headers.get("authorization", "")
    principal = None
    if header.lower().startswith("bearer "):
        principal = sim.tokens.principal_for_bearer(header[7:].strip())
    if principal is None or principal.scopes is None:
        raise HTTPError(gateway_error(401, "Unauthorized"))
    site = {
        "id": sim.creds.cloud_id,
        "name": "simulated-site",
        "url": sim.site_url,
        "scopes": sorted(s for s in principal.scopes if s != "offline_access"),
        "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png",
    }
    return json_response(200, [site])


def tenant_info(sim: Simulator, req: Request) -> Response:
    """GET /_edge/tenant_info: the cloud id, no authentication."""
    return json_response(200, {"cloudId": sim.creds.cloud_id})
