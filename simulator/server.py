"""The HTTP server: one process answering for the auth host, the gateway and the site.

Standard library only: faults such as resets mid-body need control of the raw socket.
"""

from __future__ import annotations

import re
import socket
import struct
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from typing_extensions import override

from simulator import admin, confluence, control, oauth
from simulator.faults import Decision
from simulator.site import Simulator
from simulator.strict import LIST_ROUTES
from simulator.web import (
    HTTPError,
    Request,
    Response,
    confluence_error,
    gateway_error,
    json_response,
)

MAX_REQUEST_LINE = 8192
GATEWAY = re.compile(r"^/ex/confluence/(?P<cloud>[^/]+)(?P<rest>/.*)$")
SCOPE_MISMATCH = "Unauthorized; scope does not match"
ROOT_ROUTES: dict[str, tuple[str, Any]] = {
    "/oauth/token": ("oauth_token", oauth.token),
    "/authorize": ("authorize", oauth.authorize),
    "/oauth/token/accessible-resources": ("accessible_resources", oauth.accessible_resources),
    "/_edge/tenant_info": ("tenant_info", oauth.tenant_info),
}


def route(req: Request) -> tuple[str, Any]:
    """Map a request to (route name, callable answering it)."""
    path = req.path
    if path in ROOT_ROUTES:
        return ROOT_ROUTES[path]
    if m := admin.LAST_ACTIVE.match(path):
        req.params.update(m.groupdict())
        return "admin_last_active", admin.last_active_dates
    if m := admin.ORG_USERS.match(path):
        req.params.update(m.groupdict())
        return "admin_org_users", admin.org_users
    cloud = None
    if m := GATEWAY.match(path):
        cloud, req.path, req.via = m.group("cloud"), m.group("rest"), "gateway"
    for r in confluence.ROUTES:
        if m := r.pattern.match(req.path):
            req.params.update(m.groupdict())
            return r.name, lambda sim, rq, r=r, cloud=cloud: serve_confluence(sim, r, rq, cloud)
    return "not_found", lambda sim, rq: json_response(404, {"message": "Not Found"})


def serve_confluence(
    sim: Simulator, route: confluence.Route, req: Request, cloud: str | None
) -> Response:
    """Authenticate, check scopes and permissions, then run a Confluence route."""
    if req.method not in route.methods:
        return confluence_error(405, "Method Not Allowed")
    if route.licence and req.via == "gateway":
        # The private licence resource has no OAuth scope, so the gateway never serves it.
        raise HTTPError(gateway_error(401, "Unauthorized"))
    p = sim.authenticate(req, cloud)
    req.principal = p
    strict = sim.strict
    if p.kind == "bearer" and strict.oauth_quota:
        wait = sim.quota.take(strict.oauth_quota, strict.quota_retry_after)
        if wait is not None:
            raise HTTPError(quota_response(wait, strict.oauth_quota))
    if req.via == "gateway" and route.name in strict.v1_gone:
        raise HTTPError(confluence.gone_error(req.path))
    if strict.timeout_above and route.name in LIST_ROUTES:
        asked = req.arg("limit")
        if asked and asked.isdigit() and int(asked) > strict.timeout_above:
            page = b"<html><head><title>504 Gateway Timeout</title></head></html>"
            raise HTTPError(Response(504, page, content_type="text/html"))
    if route.licence and p.kind != "classic":
        raise HTTPError(confluence_error(401, "Unauthorized"))
    if p.scopes is not None and not any(alt <= p.scopes for alt in route.scopes):
        raise HTTPError(gateway_error(401, SCOPE_MISMATCH))
    if route.admin and not p.admin:
        raise HTTPError(
            confluence_error(
                403,
                "com.atlassian.confluence.api.service.exceptions.PermissionException: "
                "User does not have permission to view the audit log",
            )
        )
    raw = sim.raw_bodies.get(route.name)
    if raw is not None:
        return control.raw_response(raw)
    override = sim.payloads.get(route.name)
    if override is not None:
        return control.payload_response(sim, req, override)
    return route.handler(sim, req)


class Handler(BaseHTTPRequestHandler):
    """Parses requests, applies faults and writes responses with exact Content-Length."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, every keep-alive response
    # waited ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "SimulatedAtlassian/1.0"
    sys_version = ""
    sim: Simulator

    @override
    def log_message(self, format: str, *args: Any) -> None:
        if self.sim.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(self.requestline) > MAX_REQUEST_LINE:
            # Atlassian's front end refuses request lines over 8 KiB before any routing.
            self.send(Response(400, b"<html><body>Request header is too large</body></html>",
                               content_type="text/html;charset=UTF-8"))  # fmt: skip
            return
        parts = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            via="site",
        )
        if parts.path.startswith("/_sim/"):
            self.send(control.handle(self.sim, req))
            return
        name, func = route(req)
        self.sim.count(name)
        decision = self.sim.faults.decide(name)
        if decision.latency_ms:
            time.sleep(decision.latency_ms / 1000)
        if decision.status is not None:
            self.sim.count_status(name, decision.status)
            self.send(fault_response(self.sim, decision))
            return
        try:
            resp = func(self.sim, req)
        except HTTPError as e:
            resp = e.response
        except Exception:  # noqa: BLE001 - a simulator bug must be loud, not a dropped connection
            traceback.print_exc(file=sys.stderr)
            resp = json_response(500, {"simulator_error": "see the simulator log"})
        self.sim.count_status(name, resp.status)
        self.send(resp, decision.body_fault)

    def send(self, resp: Response, body_fault: str | None = None) -> None:
        body = resp.body
        if body_fault == "bad_json":
            body = body[: max(1, len(body) // 2)]
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ATL-TraceId", f"{id(resp):016x}")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body_fault in ("reset", "truncate"):
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            if body_fault == "reset":
                # SO_LINGER 0 turns close() into a TCP RST: the client sees ECONNRESET.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_WR)
            return
        self.wfile.write(body)


def quota_response(wait: int, quota: int) -> Response:
    """429 for a spent OAuth points quota, with the headers Atlassian sends since 2026."""
    reset = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() + wait))
    headers = {
        "Retry-After": str(wait),
        "X-RateLimit-Limit": str(quota),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": reset,
        "RateLimit-Reason": "confluence-quota-tenant-based",
        "Beta-RateLimit-Policy": f'"tenant-app-quota";q={quota};w=3600',
        "Beta-RateLimit": f'"tenant-app-quota";r=0;t={wait}',
    }
    return json_response(429, {"message": "Rate limit exceeded"}, headers)


def fault_response(sim: Simulator, d: Decision) -> Response:
    """Return the 429 or 5xx response for an injected fault."""
    retry_after = sim.faults.config.retry_after
    if d.status == 429:
        try:
            wait = min(int(retry_after), 10**9)
        except ValueError:
            wait = 60
        reset = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() + min(wait, 10**8)))
        headers = {
            "Retry-After": retry_after,
            "X-RateLimit-Limit": "350",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset,
            "X-RateLimit-NearLimit": "true",
            "RateLimit-Reason": "confluence-quota-tenant-based",
        }
        return json_response(429, {"message": "Rate limit exceeded"}, headers)
    if d.status == 503:
        return json_response(503, {"message": "Service Unavailable"}, {"Retry-After": retry_after})
    if d.status in (502, 504):
        # The edge answers these itself, in HTML, whatever the client asked for.
        text = "Bad Gateway" if d.status == 502 else "Gateway Timeout"
        page = f"<html><head><title>{d.status} {text}</title></head><body>{text}</body></html>"
        return Response(int(d.status), page.encode(), content_type="text/html")
    return confluence_error(int(d.status or 500), "java.lang.RuntimeException: internal error")


def make_server(sim: Simulator, host: str, port: int) -> ThreadingHTTPServer:
    """Bind a server for `sim` and build its data."""
    handler = type("BoundHandler", (Handler,), {"sim": sim})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    sim.bind(f"http://{host}:{server.server_address[1]}")
    return server
