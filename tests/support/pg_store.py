"""A PostgreSQL token store and a tiny loopback token server, for the PostgreSQL store tests."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.postgres import PostgresTokenStore
from tap_confluence.redact import Secrets
from tests.support.loopback import LoopbackServer, QuietHandler

KEY = new_key()
SEED = "fake-refresh-token-seed-pg"


class TokenServer:
    """Answers every refresh with fresh fake tokens after ``delay`` seconds; records bodies."""

    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        counter = itertools.count(1)
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append(json.loads(self.rfile.read(length)))
                time.sleep(delay)
                n = next(counter)
                data = json.dumps(
                    {
                        "access_token": f"fake-access-pg-{n}",
                        "refresh_token": f"fake-refresh-pg-{n}",
                        "expires_in": 3600,
                        "scope": "read:audit-log:confluence offline_access",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.loop = LoopbackServer(Handler)
        self.url = f"http://127.0.0.1:{self.loop.port}/oauth/token"

    def stop(self) -> None:
        self.loop.stop()


def pg_store(
    url: str, cloud_id: str = "cloud-a", client_id: str = "fake-client-id"
) -> PostgresTokenStore:
    store = open_store(
        cloud_id=cloud_id, client_id=client_id, token_store_url=url, token_store_key=KEY
    )
    assert isinstance(store, PostgresTokenStore)
    return store


def pg_auth(
    endpoint: str, store: PostgresTokenStore, cloud_id: str = "cloud-a", seed: str = SEED
) -> AtlassianOAuthAuthenticator:
    return AtlassianOAuthAuthenticator(
        auth_endpoint=endpoint,
        client_id="fake-client-id",
        client_secret="fake-client-secret",
        refresh_token=seed,
        store=store,
        secrets=Secrets(),
        cloud_id=cloud_id,
    )
