"""The loopback HTTP server that receives the browser's redirect after consent."""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import socket
import time
import typing as t
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import click

from tap_confluence.auth_cli.common import AuthCliError

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Callback:
    """What one genuine redirect carried: a code, or Atlassian's error."""

    code: str | None
    error: str | None
    error_description: str | None


@dataclass(frozen=True)
class RedirectTarget:
    """Where the browser is sent back to, and the socket address that serves it."""

    #: Host as written in the redirect URI (localhost, 127.0.0.1 or [::1]).
    uri_host: str
    bind_host: str
    #: 0 asks the system for a free port (for tests; a real app registers a fixed one).
    port: int
    path: str
    #: The --redirect-uri as given: sent verbatim, since Atlassian compares it as a string.
    given: str | None = None

    def uri(self, port: int) -> str:
        """Return the redirect URI with the port actually listened on."""
        return self.given or f"http://{self.uri_host}:{port}{self.path}"


def redirect_target(redirect_uri: str | None, port: int) -> RedirectTarget:
    """Check a loopback redirect URI (default http://localhost:PORT/callback)."""
    uri = redirect_uri or f"http://localhost:{port}/callback"
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in _LOOPBACK_HOSTS or parts.query or parts.fragment:
        msg = (
            f"--redirect-uri {uri} must be a plain http URL on localhost, 127.0.0.1 or [::1] "
            "(this command listens for the browser on this machine)."
        )
        raise AuthCliError(msg)
    uri_port = parts.port if parts.port is not None else 80
    if redirect_uri and port and uri_port != port:
        msg = f"--port {port} differs from the port in --redirect-uri {uri}; give only one."
        raise AuthCliError(msg)
    bind = "::1" if host == "::1" else "127.0.0.1"
    uri_host = "[::1]" if host == "::1" else host
    return RedirectTarget(uri_host, bind, uri_port, parts.path or "/", redirect_uri)


class _Server(HTTPServer):
    expected_state: str
    path: str
    result: Callback | None
    forged: int


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _page(title: str, text: str) -> bytes:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tap-confluence-auth</title>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return body.encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # One request at a time: a browser's idle preconnect must not block the real callback.
    timeout = 5

    def log_message(self, format: str, *args: t.Any) -> None:
        # The default logs the request line, which carries the authorization code.
        return

    def _answer(self, status: int, title: str, text: str) -> None:
        body = _page(title, text)
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """Accept one redirect whose state matches; answer anything else without stopping."""
        parts = urlsplit(self.path)
        if parts.path != self.server.path or self.server.result is not None:
            self._answer(404, "Not found", "This address only receives the Atlassian sign-in.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        state = query.get("state", "")
        if not hmac.compare_digest(state.encode(), self.server.expected_state.encode()):
            self.server.forged += 1
            click.echo(
                "Ignored a callback whose state does not match this login (forged, or from an "
                "older attempt); still waiting for the real one.",
                err=True,
            )
            self._answer(
                400,
                "Sign-in rejected",
                "This response does not belong to the login running in the terminal; "
                "nothing was stored.",
            )
            return
        if "error" in query or "code" not in query:
            self.server.result = Callback(
                None, query.get("error") or "no_code", query.get("error_description")
            )
            self._answer(
                200, "Access not granted", "No token was stored; see the terminal for what to do."
            )
            return
        self.server.result = Callback(query["code"], None, None)
        self._answer(
            200, "Authorization received", "You can close this tab and return to the terminal."
        )


class CallbackServer:
    """Listens on the loopback redirect target until one genuine callback or a timeout."""

    def __init__(self, target: RedirectTarget, state: str) -> None:
        """Bind now, so a busy port is reported before the browser is sent anywhere."""
        server_class = (
            _IPv6Server if ipaddress.ip_address(target.bind_host).version == 6 else _Server
        )
        try:
            self._server = server_class((target.bind_host, target.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                msg = (
                    f"Port {target.port} on {target.bind_host} is already in use by another "
                    "program; pass --port with a free port and register "
                    f"http://localhost:PORT{target.path} as a callback URL of the app."
                )
            elif exc.errno == errno.EACCES:
                msg = (
                    f"Port {target.port} needs administrator rights to listen on; pass --port "
                    "with a number above 1023 and register that callback URL in the app."
                )
            else:
                msg = f"Cannot listen on {target.bind_host}:{target.port} ({exc.strerror})."
            raise AuthCliError(msg) from None
        self._server.expected_state = state
        self._server.path = target.path
        self._server.result = None
        self._server.forged = 0
        self.port = int(self._server.server_address[1])
        self.redirect_uri = target.uri(self.port)

    @property
    def forged(self) -> int:
        """How many callbacks were rejected for a wrong state."""
        return self._server.forged

    def wait(self, timeout: float) -> Callback | None:
        """Serve requests until a genuine callback arrives; None when the time is up."""
        deadline = time.monotonic() + timeout
        self._server.timeout = 0.25
        try:
            while self._server.result is None and time.monotonic() < deadline:
                self._server.handle_request()
        finally:
            self._server.server_close()
        return self._server.result
