"""One simulated Atlassian cloud: its data, tokens, faults, strictness, counters and auth rules.

The route modules and the HTTP server (server.py) take it as their argument.
"""

from __future__ import annotations

import threading
from typing import Any

from simulator.auth import SEED_SCOPES, Credentials, Principal, TokenStore, parse_basic
from simulator.data import Dataset
from simulator.faults import FaultConfig, FaultInjector
from simulator.options import DataOptions
from simulator.page_cache import PageCache
from simulator.strict import Quota, Strictness
from simulator.web import (
    HTTPError,
    Request,
    Response,
    confluence_error,
    gateway_error,
)


class Simulator:
    """Shared state of one simulated Atlassian cloud: data, tokens, faults, counters."""

    def __init__(
        self,
        data_opts: DataOptions,
        creds: Credentials | None = None,
        faults: FaultConfig | None = None,
        *,
        token_ttl: int = 3600,
        reuse_leeway: int = 600,
        verbose: bool = False,
        page_cache_mb: int = 1024,
        strict: Strictness | None = None,
        preencode_audit: bool = False,
    ) -> None:
        self.creds = creds or Credentials()
        self.data_opts = data_opts
        self.data: Dataset | Any = None
        self.tokens: TokenStore = TokenStore(
            self.creds, token_ttl=token_ttl, reuse_leeway=reuse_leeway
        )
        self.faults = FaultInjector(data_opts.seed, faults)
        self.page_cache = PageCache(page_cache_mb << 20)
        self.preencode_audit = preencode_audit
        self.verbose = verbose
        self.stats_lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.responses: dict[str, dict[str, int]] = {}
        self.site_url = data_opts.site_url
        #: Route name -> results served instead of the data set (POST /_sim/payload).
        self.payloads: dict[str, list[Any]] = {}
        #: Route name -> a whole body served as is (POST /_sim/raw): wrong shapes, huge bodies.
        self.raw_bodies: dict[str, dict[str, Any]] = {}
        self.strict = strict or Strictness()
        self.quota = Quota()
        #: Consecutive failed Basic logins per email, and the emails that now need a CAPTCHA.
        self.failed_logins: dict[str, int] = {}
        self.failed_logins_total = 0
        self.captcha_locked: set[str] = set()

    def bind(self, url: str) -> None:
        """Build the data once the listening URL (used in links) is known."""
        self.url = url
        if not self.site_url:
            self.site_url = url
            self.data_opts.site_url = url
        self.data = Dataset(self.data_opts)
        if self.preencode_audit:
            self.data.preencode()

    def count(self, route: str) -> None:
        """Count one request to a named route."""
        with self.stats_lock:
            self.requests[route] = self.requests.get(route, 0) + 1

    def count_status(self, route: str, status: int) -> None:
        """Count one response status for a route."""
        with self.stats_lock:
            by_status = self.responses.setdefault(route, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def stats(self) -> dict[str, Any]:
        """Return the counters the control API reports."""
        with self.stats_lock:
            requests = dict(self.requests)
            responses = {k: dict(v) for k, v in self.responses.items()}
        return {
            "requests": requests,
            "responses": responses,
            "total_requests": sum(requests.values()),
            "refreshes": self.tokens.refreshes,
            "refresh_failures": self.tokens.refresh_failures,
            "revoked_families": self.tokens.revoked_families,
            "faults_injected": dict(self.faults.injected),
            "quota_refused": self.quota.refused,
            "failed_logins": self.failed_logins_total,
            "captcha_locked": sorted(self.captcha_locked),
        }

    def reset_stats(self) -> None:
        """Zero every counter (tokens and data are kept)."""
        with self.stats_lock:
            self.requests = {}
            self.responses = {}
        t = self.tokens
        t.refreshes = t.refresh_failures = t.revoked_families = 0
        with self.faults.lock:
            self.faults.injected = {}
        self.quota.refused = 0
        self.failed_logins_total = 0

    # ---- authentication --------------------------------------------------------------------
    def authenticate(self, req: Request, cloud: str | None) -> Principal:
        """Apply Atlassian's rules: Bearer and scoped tokens at the gateway, classic at the site."""
        header = req.headers.get("authorization", "")
        scheme = header.split(" ", 1)[0].lower()
        basic = parse_basic(header) if scheme == "basic" else None
        if basic is not None and basic[0] in self.captcha_locked:
            # Atlassian: after several failed logins the account must pass a CAPTCHA on the
            # web before REST calls with its credentials work again.
            raise HTTPError(
                Response(
                    401,
                    b'{"message":"Basic authentication with passwords is deprecated or a CAPTCHA '
                    b'is required; log in on the web first"}',
                    {"X-Seraph-LoginReason": "AUTHENTICATION_DENIED"},
                )
            )
        if req.via == "gateway":
            if cloud != self.creds.cloud_id:
                raise HTTPError(gateway_error(404, "Site not found for cloud id"))
            if scheme == "bearer":
                p = self.tokens.principal_for_bearer(header[7:].strip())
                if p is None:
                    raise HTTPError(gateway_error(401, "Unauthorized"))
                return p
            if basic == (self.creds.email, self.creds.scoped_token):
                self._login_ok(basic[0])
                return Principal("scoped", frozenset(SEED_SCOPES), admin=True, user_index=0)
            self._login_failed(basic)
            raise HTTPError(gateway_error(401, "Unauthorized"))
        if basic == (self.creds.email, self.creds.classic_token):
            self._login_ok(basic[0])
            return Principal("classic", None, admin=True, user_index=0)
        self._login_failed(basic)
        # The site never accepts OAuth access tokens or scoped API tokens.
        raise HTTPError(
            confluence_error(401, "Client must be authenticated to access this resource.")
        )

    def _login_ok(self, email: str) -> None:
        with self.stats_lock:
            self.failed_logins.pop(email, None)

    def _login_failed(self, basic: tuple[str, str] | None) -> None:
        """Count a failed Basic login; enough in a row lock the email behind a CAPTCHA."""
        if basic is None:
            return
        with self.stats_lock:
            self.failed_logins_total += 1
            failures = self.failed_logins.get(basic[0], 0) + 1
            self.failed_logins[basic[0]] = failures
            if self.strict.captcha_after and failures >= self.strict.captcha_after:
                self.captcha_locked.add(basic[0])
