"""Small HTTP helpers shared by the route modules: requests, responses, error bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

JSON_TYPE = "application/json;charset=UTF-8"


class HTTPError(Exception):
    """Raised by a route to answer with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Response:
    """A complete response; the server adds Content-Length and applies body faults."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE


@dataclass
class Request:
    """One parsed request as route handlers see it."""

    method: str
    path: str  # the path after any gateway prefix
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    via: str  # gateway | site
    params: dict[str, str] = field(default_factory=dict)
    principal: Any = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int, *, minimum: int = 0) -> int:
        """Return an integer query parameter, or answer 400 as Confluence does."""
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(
                confluence_error(400, f"Invalid value for {name}: {raw[:40]}")
            ) from None
        if value < minimum:
            raise HTTPError(confluence_error(400, f"{name} must be >= {minimum}"))
        return value

    def json_body(self) -> dict[str, Any]:
        """Parse a JSON (or form-encoded) request body into a dict."""
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            from urllib.parse import parse_qs

            return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise HTTPError(json_response(400, {"error": "invalid_request"})) from None
        if not isinstance(data, dict):
            raise HTTPError(json_response(400, {"error": "invalid_request"}))
        return data


def dumps(obj: Any) -> bytes:
    """Encode JSON the way Confluence does: UTF-8, non-ASCII left as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    """Return a JSON response."""
    return Response(status, dumps(obj), dict(headers or {}))


def confluence_error(status: int, message: str) -> Response:
    """Return an error in the body Confluence's REST layer uses."""
    return json_response(
        status,
        {
            "statusCode": status,
            "data": {
                "authorized": status not in (401, 403),
                "valid": status != 400,
                "allowedInReadOnlyMode": True,
                "errors": [],
                "successful": False,
            },
            "message": message,
        },
    )


def gateway_error(status: int, message: str) -> Response:
    """Return an error as the api.atlassian.com gateway writes it."""
    return json_response(status, {"code": status, "message": message})


def rel_link(path: str, params: list[tuple[str, str]]) -> str:
    """Return a v1 `_links.next`-style link relative to `_links.base` (the /wiki context)."""
    return path.removeprefix("/wiki") + "?" + urlencode(params)


def links(site_url: str, req: Request, **extra: str) -> dict[str, str]:
    """Return `_links` as the real API writes them: base is always the site's /wiki."""
    base = site_url + "/wiki"
    query = urlencode([(k, v) for k, vs in req.query.items() for v in vs])
    self_link = base + req.path.removeprefix("/wiki") + (f"?{query}" if query else "")
    return {"base": base, "context": "/wiki", "self": self_link, **extra}


def forward_params(req: Request, *drop: str) -> list[tuple[str, str]]:
    """Return the request's query parameters minus `drop`, for building next links."""
    return [(k, v) for k, vs in req.query.items() if k not in drop for v in vs]
