"""The loopback HTTP server that receives the browser's redirect after consent."""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import socket
import threading
import typing as t
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import click
from typing_extensions import override

from tap_confluence.auth_cli.common import AuthCliError

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
#: Requests served at once: enough for a browser's idle preconnects beside the real callback;
#: more wait (each idle one is dropped after the handler's timeout).
_SLOTS = 8
#: Address families a second listener may be missing on (a machine without IPv6).
_NO_FAMILY = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


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
    try:
        parts = urlsplit(uri)
        given_port = parts.port
    except ValueError:
        msg = (
            f"--redirect-uri {uri} has no valid port (give a number from 1 to 65535, like "
            "http://localhost:8790/callback)."
        )
        raise AuthCliError(msg) from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in _LOOPBACK_HOSTS or parts.query or parts.fragment:
        msg = (
            f"--redirect-uri {uri} must be a plain http URL on localhost, 127.0.0.1 or [::1] "
            "(this command listens for the browser on this machine)."
        )
        raise AuthCliError(msg)
    uri_port = given_port if given_port is not None else 80
    if redirect_uri and port and uri_port != port:
        msg = f"--port {port} differs from the port in --redirect-uri {uri}; give only one."
        raise AuthCliError(msg)
    bind = "::1" if host == "::1" else "127.0.0.1"
    uri_host = "[::1]" if host == "::1" else host
    return RedirectTarget(uri_host, bind, uri_port, parts.path or "/", redirect_uri)


@dataclass
class _State:
    """What every listener and handler thread shares: the expected state and the outcome."""

    expected_state: str
    path: str
    result: Callback | None = None
    forged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    """One thread per request, at most _SLOTS at once, so an idle socket holds back nothing."""

    # The process ends once the callback came; no idle connection may keep it waiting.
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops the SYN of a callback that arrives behind a
    # burst of preconnects, and the browser then waits a second to retry.
    request_queue_size = 64
    state: _State
    slots: threading.BoundedSemaphore

    @override
    def process_request(self, request: t.Any, client_address: t.Any) -> None:
        """Serve on a new thread once a slot is free (the accept loop waits for one)."""
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    @override
    def process_request_thread(self, request: t.Any, client_address: t.Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @override
    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        """Stay quiet: a browser dropping a connection is no reason for a traceback."""
        return


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
    # A connection that sends nothing for this long is dropped, freeing its slot.
    timeout = 5

    @override
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
        state = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        given = query.get("state", "")
        with state.lock:
            if parts.path != state.path or state.result is not None:
                verdict = "elsewhere"
            elif not hmac.compare_digest(given.encode(), state.expected_state.encode()):
                state.forged += 1
                verdict = "forged"
            elif "error" in query or "code" not in query:
                state.result = Callback(
                    None, query.get("error") or "no_code", query.get("error_description")
                )
                verdict = "refused"
            else:
                state.result = Callback(query["code"], None, None)
                verdict = "granted"
        if verdict == "elsewhere":
            self._answer(404, "Not found", "This address only receives the Atlassian sign-in.")
            return
        if verdict == "forged":
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
        try:
            if verdict == "refused":
                self._answer(
                    200,
                    "Access not granted",
                    "No token was stored; see the terminal for what to do.",
                )
            else:
                self._answer(
                    200,
                    "Authorization received",
                    "You can close this tab and return to the terminal.",
                )
        finally:
            # Only now: the browser has its page before the command moves on (and may exit).
            state.done.set()


def _bind(server_class: type[_Server], host: str, port: int) -> _Server:
    return server_class((host, port), _Handler)


def _busy_sentence(target: RedirectTarget, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"Port {port} on {host} is already in use by another program; pass --port "
            f"with a free port and register http://localhost:PORT{target.path} as a callback "
            "URL of the app."
        )
    if exc.errno == errno.EACCES:
        return (
            f"Port {port} needs administrator rights to listen on; pass --port with a number "
            "above 1023 and register that callback URL in the app."
        )
    return f"Cannot listen on {host}:{port} ({exc.strerror})."


class CallbackServer:
    """Listens on the loopback redirect target until one genuine callback or a timeout.

    For ``localhost`` it listens on 127.0.0.1 and on ::1 alike, since a browser may resolve
    the name to either.
    """

    def __init__(self, target: RedirectTarget, state: str) -> None:
        """Bind now, so a busy port is reported before the browser is sent anywhere."""
        self._state = _State(state, target.path)
        slots = threading.BoundedSemaphore(_SLOTS)
        self._servers = self._listen(target)
        for server in self._servers:
            server.state = self._state
            server.slots = slots
        self.port = int(self._servers[0].server_address[1])
        self.redirect_uri = target.uri(self.port)

    def _listen(self, target: RedirectTarget) -> list[_Server]:
        first_class = (
            _IPv6Server if ipaddress.ip_address(target.bind_host).version == 6 else _Server
        )
        # With port 0 the system picks one; it must be free on ::1 as well, so try a few.
        for _ in range(5):
            try:
                first = _bind(first_class, target.bind_host, target.port)
            except OSError as exc:
                raise AuthCliError(
                    _busy_sentence(target, target.bind_host, target.port, exc)
                ) from None
            if target.uri_host != "localhost":
                return [first]
            port = int(first.server_address[1])
            try:
                return [first, _bind(_IPv6Server, "::1", port)]
            except OSError as exc:
                if exc.errno in _NO_FAMILY:
                    return [first]  # no IPv6 here, so no browser can come back over it
                first.server_close()
                if exc.errno != errno.EADDRINUSE or target.port != 0:
                    raise AuthCliError(_busy_sentence(target, "::1", port, exc)) from None
        msg = "Could not find a port free on both 127.0.0.1 and ::1; pass --port with a free one."
        raise AuthCliError(msg)

    @property
    def forged(self) -> int:
        """How many callbacks were rejected for a wrong state."""
        return self._state.forged

    def wait(self, timeout: float) -> Callback | None:
        """Serve requests until a genuine callback arrives; None when the time is up."""
        threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            for server in self._servers
        ]
        for thread in threads:
            thread.start()
        try:
            self._state.done.wait(timeout)
        finally:
            for server in self._servers:
                server.shutdown()
                server.server_close()
        with self._state.lock:
            return self._state.result
