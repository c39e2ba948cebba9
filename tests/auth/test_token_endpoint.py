"""Token-endpoint answers the simulator does not give: a missing refresh_token, a lost answer.

A tiny loopback HTTP server plays the auth server here (real sockets, nothing mocked).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_confluence.errors import TapUserError
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.redact import Secrets
from tests.support.loopback import LoopbackServer, QuietHandler

SEED = "fake-refresh-token-seed-1"


class _TokenServer:
    """Answers POST /oauth/token with whatever ``behaviour`` says; records what it got."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append(json.loads(self.rfile.read(length)))
                if outer.behaviour == "hang_up":
                    # The token was received (and would be spent) but no answer comes back.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = {"access_token": "fake-access-1", "expires_in": 3600, "token_type": "Bearer"}
                if outer.behaviour == "rotate":
                    body |= {"refresh_token": "fake-refresh-rotated-2", "scope": "a b"}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.loop = LoopbackServer(Handler)
        self.url = f"http://127.0.0.1:{self.loop.port}/oauth/token"

    def stop(self) -> None:
        self.loop.stop()


@pytest.fixture
def token_server() -> Iterator[Callable[[str], _TokenServer]]:
    servers: list[_TokenServer] = []

    def start(behaviour: str) -> _TokenServer:
        server = _TokenServer(behaviour)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _auth(url: str, store: FileTokenStore) -> AtlassianOAuthAuthenticator:
    return AtlassianOAuthAuthenticator(
        auth_endpoint=url,
        client_id="fake-client-id",
        client_secret="fake-client-secret",
        refresh_token=SEED,
        store=store,
        secrets=Secrets(),
        cloud_id="fake-cloud",
    )


def test_response_without_refresh_token_keeps_the_old_one(
    token_server: Callable[[str], _TokenServer], tmp_path: Path
) -> None:
    server = token_server("no_refresh_token")
    store = FileTokenStore(tmp_path / "store.json")
    auth = _auth(server.url, store)
    auth.update_access_token()
    assert auth.access_token == "fake-access-1"
    stored = store.read()
    assert stored is not None
    assert stored.refresh_token == SEED
    # Sent as JSON, the way Atlassian documents the refresh grant.
    assert server.received == [
        {
            "grant_type": "refresh_token",
            "client_id": "fake-client-id",
            "client_secret": "fake-client-secret",
            "refresh_token": SEED,
        }
    ]


def test_rotated_token_is_saved_before_the_access_token_is_handed_out(
    token_server: Callable[[str], _TokenServer], tmp_path: Path
) -> None:
    server = token_server("rotate")
    store = FileTokenStore(tmp_path / "store.json")
    auth = _auth(server.url, store)
    auth.update_access_token()
    record = store.read()
    assert record is not None
    assert record.refresh_token == "fake-refresh-rotated-2"
    assert record.access_token == auth.access_token == "fake-access-1"
    assert auth.granted_scopes() == frozenset({"a", "b"})


def test_lost_answer_after_sending_the_token_is_one_sentence_and_not_resent(
    token_server: Callable[[str], _TokenServer], tmp_path: Path
) -> None:
    server = token_server("hang_up")
    store = FileTokenStore(tmp_path / "store.json")
    with pytest.raises(TapUserError, match="rerun within 10 minutes") as info:
        _auth(server.url, store).update_access_token()
    assert len(server.received) == 1, "a token that may be spent is never sent twice"
    assert SEED not in str(info.value)
    assert store.read() is None
