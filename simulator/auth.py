"""Atlassian-style credentials: rotating OAuth token families, API tokens and org API keys.

Refresh tokens rotate on every use. The previous token stays usable for `reuse_leeway`
seconds; a reuse after that revokes the whole family, as Atlassian's auth server does.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SEED_SCOPES = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "manage:confluence-configuration",
    "search:confluence",
    "offline_access",
]
# Atlassian: a refresh token dies after 90 days unused, and a family after 365 days however used.
INACTIVITY_EXPIRY = 90 * 86_400
ABSOLUTE_EXPIRY = 365 * 86_400


@dataclass
class Credentials:
    """The fake credentials the simulator accepts (all obviously fake)."""

    cloud_id: str = "0f0f0f0f-1111-4222-8333-444455556666"
    client_id: str = "fake-client-id"
    client_secret: str = "fake-client-secret"
    seed_refresh_token: str = "fake-refresh-token-seed"
    email: str = "admin@example.com"
    classic_token: str = "fake-classic-api-token"
    scoped_token: str = "fake-scoped-api-token"
    org_id: str = "fake-org-id"
    org_api_key: str = "fake-org-api-key"

    def secrets(self) -> list[str]:
        """Return every static secret, for leak scans."""
        return [
            self.client_secret,
            self.seed_refresh_token,
            self.classic_token,
            self.scoped_token,
            self.org_api_key,
        ]


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as; scopes None means an unscoped classic API token."""

    kind: str  # bearer | classic | scoped | org_key
    scopes: frozenset[str] | None
    admin: bool
    user_index: int


@dataclass
class Family:
    """One OAuth authorisation: every refresh token descended from one grant."""

    id: str
    scopes: list[str]
    admin: bool
    user_index: int
    created_at: float = 0.0
    revoked: bool = False


@dataclass
class RefreshToken:
    """A refresh token and when it was rotated out (None while it is the current one)."""

    family: str
    issued_at: float
    rotated_at: float | None = None


@dataclass
class AccessToken:
    """An access token with its expiry on the simulator's clock."""

    family: str
    expires_at: float


@dataclass
class TokenStore:
    """Issued tokens, token families and the clock they are judged by."""

    creds: Credentials
    token_ttl: int = 3600
    reuse_leeway: int = 600
    clock_offset: float = 0.0
    families: dict[str, Family] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshes: int = 0
    refresh_failures: int = 0
    revoked_families: int = 0
    #: What the next visits to /authorize do: "accept" or "deny" (set via /_sim/consent).
    consent: str = "accept"
    #: Whether a consent is given by the site admin or by an ordinary licensed user.
    consent_admin: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        fam = self._new_family(SEED_SCOPES, admin=True, user_index=0)
        self.refresh_tokens[self.creds.seed_refresh_token] = RefreshToken(fam.id, self.now())

    def now(self) -> float:
        """Return the simulator's clock (real time plus any test-controlled advance)."""
        return time.time() + self.clock_offset

    def _new_family(self, scopes: list[str], *, admin: bool, user_index: int) -> Family:
        fam = Family(f"fam-{len(self.families) + 1}", list(scopes), admin, user_index, self.now())
        self.families[fam.id] = fam
        return fam

    def grant(self, scopes: list[str], *, admin: bool, user_index: int) -> str:
        """Start a new token family and return its first refresh token."""
        with self.lock:
            fam = self._new_family(scopes, admin=admin, user_index=user_index)
            token = "fake-rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[token] = RefreshToken(fam.id, self.now())
            return token

    def _issue(self, fam: Family) -> dict[str, Any]:
        at = "fake-at-" + secrets.token_urlsafe(32)
        self.access_tokens[at] = AccessToken(fam.id, self.now() + self.token_ttl)
        body: dict[str, Any] = {
            "access_token": at,
            "expires_in": self.token_ttl,
            "token_type": "Bearer",
            "scope": " ".join(fam.scopes),
        }
        if "offline_access" in fam.scopes:
            rt = "fake-rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[rt] = RefreshToken(fam.id, self.now())
            body["refresh_token"] = rt
        return body

    def token_request(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer POST /oauth/token; return (status, JSON body)."""
        grant = body.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Unsupported grant type: " + str(grant)[:40],
            }
        if (
            body.get("client_id") != self.creds.client_id
            or body.get("client_secret") != self.creds.client_secret
        ):
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}
        with self.lock:
            if grant == "authorization_code":
                return self._exchange_code(body)
            return self._refresh(str(body.get("refresh_token", "")))

    def _refresh(self, token: str) -> tuple[int, dict[str, Any]]:
        rt = self.refresh_tokens.get(token)
        if rt is None:
            self.refresh_failures += 1
            return 403, {
                "error": "unauthorized_client",
                "error_description": "refresh_token is invalid",
            }
        fam = self.families[rt.family]
        invalid = {
            "error": "invalid_grant",
            "error_description": "Unknown or invalid refresh token.",
        }
        if fam.revoked:
            self.refresh_failures += 1
            return 403, invalid
        now = self.now()
        if now - rt.issued_at > INACTIVITY_EXPIRY or now - fam.created_at > ABSOLUTE_EXPIRY:
            self.refresh_failures += 1
            return 403, invalid
        if rt.rotated_at is not None and now - rt.rotated_at >= self.reuse_leeway:
            # Reuse of a rotated-out token is treated as theft: the whole family dies.
            fam.revoked = True
            self.revoked_families += 1
            self.refresh_failures += 1
            return 403, invalid
        if rt.rotated_at is None:
            rt.rotated_at = now
        self.refreshes += 1
        return 200, self._issue(fam)

    def new_code(self, scopes: list[str], redirect_uri: str, *, admin: bool = True) -> str:
        """Mint a one-time authorisation code, as /authorize does after consent."""
        code = "fake-code-" + secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = {
                "scopes": scopes,
                "redirect_uri": redirect_uri,
                "admin": admin,
                "expires_at": self.now() + 600,
                "used": False,
            }
        return code

    def _exchange_code(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        code = self.codes.get(str(body.get("code", "")))
        bad = {"error": "invalid_grant", "error_description": "Invalid authorization code"}
        if code is None or code["used"] or code["expires_at"] < self.now():
            return 403, bad
        if body.get("redirect_uri") != code["redirect_uri"]:
            return 403, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        code["used"] = True
        user = 0 if code["admin"] else 1
        fam = self._new_family(code["scopes"], admin=code["admin"], user_index=user)
        return 200, self._issue(fam)

    def principal_for_bearer(self, token: str) -> Principal | None:
        """Resolve an access token; None if unknown or expired."""
        with self.lock:
            at = self.access_tokens.get(token)
            if at is None or at.expires_at <= self.now():
                return None
            fam = self.families[at.family]
            return Principal("bearer", frozenset(fam.scopes), fam.admin, fam.user_index)

    def expire_access_tokens(self) -> int:
        """Expire every access token now; return how many were live."""
        with self.lock:
            now = self.now()
            live = [a for a in self.access_tokens.values() if a.expires_at > now]
            for a in live:
                a.expires_at = now
            return len(live)

    def listing(self) -> dict[str, Any]:
        """Every token issued so far with its family and state (for leak scans)."""
        with self.lock:
            now = self.now()
            return {
                "access_tokens": [
                    {"token": t, "family": a.family, "expired": a.expires_at <= now}
                    for t, a in self.access_tokens.items()
                ],
                "refresh_tokens": [
                    {
                        "token": t,
                        "family": r.family,
                        "state": "revoked"
                        if self.families[r.family].revoked
                        else "current"
                        if r.rotated_at is None
                        else "rotated",
                    }
                    for t, r in self.refresh_tokens.items()
                ],
                "codes": list(self.codes),
                "families": [
                    {"id": f.id, "scopes": f.scopes, "admin": f.admin, "revoked": f.revoked}
                    for f in self.families.values()
                ],
                "secrets": self.creds.secrets(),
            }


def parse_basic(header: str) -> tuple[str, str] | None:
    """Decode an `Authorization: Basic` header into (user, password)."""
    try:
        raw = base64.b64decode(header.split(" ", 1)[1], validate=True).decode()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None
