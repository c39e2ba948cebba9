"""The refresh path against a hostile or odd token server: redirects, odd answers, old seeds.

Tiny loopback HTTP servers play the auth server (real sockets, nothing mocked); the seed
test runs the real tap CLI against the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.auth import SEED_SCOPES
from simulator.process import SimulatorProcess
from tap_confluence.errors import TapUserError
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint
from tap_confluence.redact import Secrets
from tests.support.loopback import LoopbackServer, QuietHandler
from tests.support.tap_cli import run_tap

SEED = "fake-refresh-token-seed-hardening"
SECRET = "fake-client-secret-hardening"
STORED = "fake-refresh-token-stored-1"
SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}


class _Server:
    """A loopback HTTP server whose POST answer ``respond`` decides; it records each body."""

    def __init__(self, respond: Callable[[_Server], tuple[int, dict[str, str], bytes]]) -> None:
        self.received: list[bytes] = []
        self.paths: list[str] = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append(self.rfile.read(length))
                outer.paths.append(self.path)
                status, headers, body = respond(outer)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.loop = LoopbackServer(Handler)
        self.host = f"127.0.0.1:{self.loop.port}"
        self.url = f"http://{self.host}/oauth/token"

    def stop(self) -> None:
        self.loop.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(respond: Callable[[_Server], tuple[int, dict[str, str], bytes]]) -> _Server:
        server = _Server(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _json(body: Any, status: int = 200) -> Callable[[_Server], tuple[int, dict[str, str], bytes]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda _server: (status, {"Content-Type": "application/json"}, data)


def _stored_record() -> TokenRecord:
    return TokenRecord(
        refresh_token=STORED,
        seed_fingerprint=seed_fingerprint(SEED),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        cloud_id="fake-cloud",
    )


def _auth(url: str, store: FileTokenStore) -> AtlassianOAuthAuthenticator:
    secrets = Secrets()
    secrets.add(SECRET)
    return AtlassianOAuthAuthenticator(
        auth_endpoint=url,
        client_id="fake-client-id",
        client_secret=SECRET,
        refresh_token=SEED,
        store=store,
        secrets=secrets,
        cloud_id="fake-cloud",
    )


def _store_with_a_token(tmp_path: Path) -> FileTokenStore:
    store = FileTokenStore(tmp_path / "store" / "cloud.json")
    with store.session() as session:
        session.save(_stored_record())
    return store


# ---- item 6: the refresh POST never follows a redirect ----------------------------------------


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_redirecting_token_endpoint_gets_the_secrets_sent_nowhere_else(
    serve: Callable[..., _Server], tmp_path: Path, status: int
) -> None:
    collector = serve(_json({"access_token": "fake-access-stolen", "expires_in": 3600}))
    location = collector.url + "?leak=fake-location-query-marker"
    redirector = serve(lambda _s: (status, {"Location": location}, b""))
    store = _store_with_a_token(tmp_path)
    with pytest.raises(TapUserError) as info:
        _auth(redirector.url, store).update_access_token()
    assert collector.received == [], "client_secret and refresh token were re-sent elsewhere"
    assert len(redirector.received) == 1
    message = str(info.value)
    assert redirector.host in message
    assert str(status) in message
    assert "fake-location-query-marker" not in message
    assert collector.host not in message
    for secret in (SECRET, STORED, SEED):
        assert secret not in message
    assert store.read() == _stored_record()


# ---- item 3: an odd answer after the spend never loses the new token -------------------------


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"access_token": "fake-access-2", "refresh_token": "fake-rt-new-2", "expires_in": "soon"},
         "expires_in"),
        ({"access_token": "fake-access-2", "refresh_token": "fake-rt-new-2", "expires_in": 3600,
          "scope": ["a", "b"]}, "scope"),
        ({"access_token": 42, "refresh_token": "fake-rt-new-2", "expires_in": 3600},
         "access_token"),
        ({"refresh_token": "fake-rt-new-2", "expires_in": 3600}, "access_token"),
        ({"access_token": "fake-access-2", "refresh_token": "fake-rt-new-2", "expires_in": -5},
         "expires_in"),
    ],
)  # fmt: skip
def test_an_odd_field_beside_a_new_refresh_token_still_saves_the_new_token(
    serve: Callable[..., _Server], tmp_path: Path, answer: object, field: str
) -> None:
    server = serve(_json(answer))
    store = _store_with_a_token(tmp_path)
    auth = _auth(server.url, store)
    with pytest.raises(TapUserError) as info:
        auth.update_access_token()
    message = str(info.value)
    assert field in message
    assert "the refresh token was spent" in message
    saved = store.read()
    assert saved is not None
    assert saved.refresh_token == "fake-rt-new-2", "the rotated token was lost"
    assert saved.seed_fingerprint == seed_fingerprint(SEED)
    assert saved.access_token is None, "an access token from an odd answer is not kept"
    for secret in ("fake-rt-new-2", "fake-access-2", SECRET, STORED):
        assert secret not in message
    # The next refresh spends the saved token, not the one before it.
    server_ok = serve(_json({"access_token": "fake-access-3", "refresh_token": "fake-rt-3",
                             "expires_in": 3600}))  # fmt: skip
    _auth(server_ok.url, store).update_access_token()
    assert json.loads(server_ok.received[0])["refresh_token"] == "fake-rt-new-2"


@pytest.mark.parametrize(
    "answer",
    [
        {"access_token": "fake-access-2", "refresh_token": 12345, "expires_in": 3600},
        {"access_token": "fake-access-2", "refresh_token": {"value": "x"}, "expires_in": 3600},
        {"access_token": "fake-access-2", "refresh_token": "", "expires_in": 3600},
        ["not", "an", "object"],
        b"<html>not json</html>",
    ],
)
def test_an_answer_without_a_usable_new_token_keeps_the_old_one_and_says_rerun_soon(
    serve: Callable[..., _Server], tmp_path: Path, answer: object
) -> None:
    server = serve(_json(answer))
    store = _store_with_a_token(tmp_path)
    with pytest.raises(TapUserError) as info:
        _auth(server.url, store).update_access_token()
    message = str(info.value)
    assert "the refresh token was spent; rerun within 10 minutes" in message
    assert STORED not in message
    assert SECRET not in message
    assert store.read() == _stored_record()


def test_a_refusal_before_the_spend_does_not_say_the_token_was_spent(
    serve: Callable[..., _Server], tmp_path: Path
) -> None:
    server = serve(_json({"error": "access_denied", "error_description": "Unauthorized"}, 401))
    store = _store_with_a_token(tmp_path)
    with pytest.raises(TapUserError) as info:
        _auth(server.url, store).update_access_token()
    assert "client_secret" in str(info.value)
    assert "was spent" not in str(info.value)


# ---- item 4: a seed that a later seed replaced is never spent again --------------------------


def test_config_a_then_b_then_a_again_never_spends_a_twice(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(reuse_leeway=0, **SMALL)
    store = tmp_path / "store" / "tokens.json"
    config_a = sim.tap_config("oauth", token_store_path=str(store))
    token_b = sim.control("grant", {"scopes": SEED_SCOPES, "admin": True})["refresh_token"]
    config_b = config_a | {"refresh_token": token_b}

    for config in (config_a, config_b):
        run = run_tap(tmp_path, config)
        assert run.returncode == 0, run.stderr[-2000:]
    stored = json.loads(store.read_text())
    assert stored["seed_fingerprint"] == seed_fingerprint(token_b)
    assert seed_fingerprint(config_a["refresh_token"]) in stored["superseded_seeds"]

    # Someone restores the old config (A's seed, long spent): the stored B family must win.
    sim.control("expire-access-tokens", {})
    again = run_tap(tmp_path, config_a)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "older than the one a later consent stored" in again.stderr
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
