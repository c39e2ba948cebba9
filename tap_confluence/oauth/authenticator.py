"""Authenticators: one OAuth authenticator per tap, its rotating refresh token kept in a store."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from singer_sdk.authenticators import BasicAuthenticator, OAuthAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from typing_extensions import override

from tap_confluence.errors import TapUserError
from tap_confluence.http.retry import never_sent
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStore,
    remember_superseded,
    seed_fingerprint,
)
from tap_confluence.redact import Secrets
from tap_confluence.sdk_compat import default_expiration

__all__ = ["AtlassianOAuthAuthenticator", "BasicAuthenticator"]

#: Atlassian ends a refresh-token family 365 days after consent; warn a month before.
_FAMILY_LIFETIME = dt.timedelta(days=365)
_FAMILY_WARN_AFTER = dt.timedelta(days=335)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(iso: str, *, default: float) -> float:
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return default


#: Rule 4 of the house: a failure after the token was spent says so, and how long a rerun has.
SPENT = "the refresh token was spent; rerun within 10 minutes"


@dataclass(frozen=True)
class TokenAnswer:
    """A 200 answer of the token endpoint, each field checked; ``odd`` names the unusable ones."""

    access_token: str | None
    #: A usable new refresh token; None when the answer had none (or an unusable one).
    refresh_token: str | None
    expires_in: int | None
    scopes: list[str] | None
    odd: tuple[str, ...]

    @classmethod
    def read(cls, body: dict[str, t.Any]) -> TokenAnswer:
        """Check every field Atlassian documents; never raise, whatever the server sent."""
        odd: list[str] = []
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            odd.append("access_token")
            access = None
        refresh = body.get("refresh_token")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            # Absent is normal (the old token stays valid); present but unusable is not.
            odd.append("refresh_token")
            refresh = None
        expires_in = _seconds(body.get("expires_in"))
        if expires_in is None and body.get("expires_in") is not None:
            odd.append("expires_in")
        scope = body.get("scope")
        if scope is not None and not isinstance(scope, str):
            odd.append("scope")
        scopes = sorted(scope.split()) if isinstance(scope, str) else None
        return cls(access, refresh, expires_in, scopes, tuple(odd))


def _seconds(value: object) -> int | None:
    """Read a positive whole number of seconds from an int, integral float or digit string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value > 0:
        return value
    return None


class AtlassianOAuthAuthenticator(OAuthAuthenticator):
    """OAuth 2.0 (3LO) with Atlassian's rotating refresh tokens, persisted before use.

    Built once per Tap with explicit keyword arguments and handed to every stream, so all
    streams share one access token and no refresh token is ever spent twice.
    """

    def __init__(
        self,
        *,
        auth_endpoint: str,
        client_id: str,
        client_secret: str,
        refresh_token: str | None,
        store: TokenStore,
        secrets: Secrets,
        cloud_id: str,
        refresh_margin: float = 300.0,
        timeout: float = 60.0,
    ) -> None:
        """Keep the configured seed token; the store decides which token is live."""
        super().__init__(
            auth_endpoint=auth_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            default_expiration=3600,
        )
        self.logger = logging.getLogger("tap-confluence.auth")
        self._seed = refresh_token
        self._store = store
        self._secrets = secrets
        self._cloud_id = cloud_id
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._expires_at: float | None = None
        self._scopes: frozenset[str] | None = None
        self._rejected: set[str] = set()
        self._consecutive_rejections = 0
        self._lock = threading.RLock()
        # A private session without urllib3 POST retries: a blind resend could spend a
        # token twice.
        self._token_session = requests.Session()
        self.refreshes = 0

    @property
    @override
    def oauth_request_body(self) -> dict[str, t.Any]:
        """Body of a refresh request for the seed token (the live token comes from the store)."""
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self._seed,
        }

    @override
    def is_token_valid(self) -> bool:
        """Tell whether the access token has more than the refresh margin left."""
        if self.access_token is None or self._expires_at is None:
            return False
        return time.time() < self._expires_at - self._margin(float(self.expires_in or 3600))

    def _margin(self, ttl: float) -> float:
        # Refresh ahead of expiry, but never waste more than a tenth of a short-lived token.
        return min(self._refresh_margin, max(ttl, 0.0) / 10.0)

    @override
    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Attach a bearer token, refreshing first if it is missing or near expiry."""
        with self._lock:
            if not self.is_token_valid():
                self.update_access_token()
            token = self.access_token
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def granted_scopes(self) -> frozenset[str] | None:
        """Scopes the token response granted (None when the server did not say)."""
        with self._lock:
            if not self.is_token_valid():
                self.update_access_token()
            return self._scopes

    def note_rejected(self, token: str | None) -> bool:
        """Record a 401 for ``token``; True when one refresh-and-retry is still worthwhile."""
        with self._lock:
            self._consecutive_rejections += 1
            if token:
                self._rejected.add(token)
            if token == self.access_token:
                self._expires_at = None
            return self._consecutive_rejections <= 1

    def note_success(self) -> None:
        """Reset the 401 count after a request went through."""
        self._consecutive_rejections = 0

    @override
    def update_access_token(self) -> None:
        """Adopt a fresh access token from the store, or refresh and save before using it."""
        with self._lock, self._store.session() as session:
            record = session.load()
            fingerprint = seed_fingerprint(self._seed) if self._seed else None
            #: What a new configured seed replaces: never to be spent again (config A, B, A).
            replaced: list[str] = []
            if record is not None and fingerprint and record.seed_fingerprint != fingerprint:
                if fingerprint in record.superseded_seeds:
                    self.logger.info(
                        "The configured refresh_token is older than the one a later consent "
                        "stored in %s; using the stored one (unset refresh_token).",
                        self._store.location,
                    )
                else:
                    self.logger.info(
                        "The configured refresh_token is new to the token store %s; "
                        "starting from it instead of the stored one.",
                        self._store.location,
                    )
                    replaced = remember_superseded(record)
                    record = None
            if record is None and not self._seed:
                msg = (
                    f"The token store {self._store.location} holds no refresh token for cloud "
                    f"{self._cloud_id}; run `tap-confluence-auth login` or set refresh_token."
                )
                raise TapUserError(msg)
            # Before anything is used or spent: one token family, one store.
            session.check_unshared(record.seed_fingerprint if record else str(fingerprint))
            if record is not None and self._adopt_stored(record):
                return
            self._store.check_writable()
            live = record.refresh_token if record else str(self._seed)
            self._secrets.add(live)
            issued_at = time.time()
            body = self._post_refresh(live, from_store=record is not None)
            # From here on the old refresh token is spent: nothing below may lose the new one.
            answer = TokenAnswer.read(body)
            self._secrets.add(answer.refresh_token)
            self._secrets.add(answer.access_token)
            if answer.refresh_token is None and "refresh_token" in answer.odd:
                raise TapUserError(self._odd_answer_sentence(answer, saved=False))
            scopes = (
                answer.scopes if answer.scopes is not None else (record.scopes if record else [])
            )
            saved = TokenRecord(
                refresh_token=answer.refresh_token or live,
                seed_fingerprint=record.seed_fingerprint if record else str(fingerprint),
                scopes=scopes,
                rotated_at=_now_iso(),
                family_started_at=record.family_started_at if record else _now_iso(),
                cloud_id=self._cloud_id,
                superseded_seeds=record.superseded_seeds if record else replaced,
                client_id=self.client_id,
            )
            if answer.odd or answer.access_token is None:
                # Keep what must not be lost (the new refresh token), never an access token
                # from an answer that is wrong elsewhere, then stop.
                if answer.refresh_token is not None:
                    session.save(saved)
                    self.refreshes += 1
                raise TapUserError(
                    self._odd_answer_sentence(answer, saved=answer.refresh_token is not None)
                )
            expires_in = answer.expires_in or int(default_expiration(self) or 3600)
            saved.access_token = answer.access_token
            saved.access_token_expires_at = issued_at + expires_in
            # Save before the new access token is used: the old refresh token is dead now.
            session.save(saved)
            self.refreshes += 1
            self.logger.info(
                "Refreshed the OAuth access token for cloud %s; the rotated refresh token is "
                "saved in %s.",
                self._cloud_id,
                self._store.location,
            )
            self._use(
                saved, expires_in, scope_known=answer.scopes is not None or record is not None
            )
            self._warn_family_age(saved.family_started_at)

    def _odd_answer_sentence(self, answer: TokenAnswer, *, saved: bool) -> str:
        fields = " and ".join(answer.odd)
        if saved:
            return (
                f"The token endpoint answered with an unusable {fields} after the refresh "
                f"token was spent; the new refresh token is saved in {self._store.location}, so "
                "the next run can go on, but check that auth_url points at "
                "https://auth.atlassian.com."
            )
        return (
            f"The token endpoint answered with an unusable {fields} and no usable new refresh "
            f"token: {SPENT}, while Atlassian still accepts the stored one, and check that "
            "auth_url points at https://auth.atlassian.com."
        )

    def _adopt_stored(self, record: TokenRecord) -> bool:
        """Use the stored access token when another run left one with time to spare."""
        access, expires_at = record.access_token, record.access_token_expires_at
        self._secrets.add(record.refresh_token)
        if not access or not expires_at or access in self._rejected:
            return False
        self._secrets.add(access)
        ttl = expires_at - _epoch(record.rotated_at, default=expires_at - 3600)
        if time.time() >= expires_at - self._margin(ttl):
            return False
        self._use(record, ttl, scope_known=True)
        return True

    def _use(self, record: TokenRecord, ttl: float, *, scope_known: bool) -> None:
        self.access_token = record.access_token
        self._expires_at = record.access_token_expires_at
        self.expires_in = round(ttl)
        self.last_refreshed = dt.datetime.now(dt.UTC)
        self._scopes = frozenset(record.scopes) if scope_known else None

    def _warn_family_age(self, family_started_at: str) -> None:
        try:
            started = dt.datetime.fromisoformat(family_started_at)
        except ValueError:
            return
        if dt.datetime.now(dt.UTC) - started > _FAMILY_WARN_AFTER:
            self.logger.warning(
                "The OAuth refresh-token family in use here started on %s and Atlassian ends it "
                "365 days after consent (%s); run the consent flow again and set refresh_token.",
                started.date().isoformat(),
                (started + _FAMILY_LIFETIME).date().isoformat(),
            )

    def _post_refresh(self, refresh_token: str, *, from_store: bool) -> dict[str, t.Any]:
        body = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": refresh_token,
        }
        try:
            # Never follow a redirect: it would resend client_secret and the refresh token to
            # wherever the Location points, plain http included.
            response = self._token_session.post(
                self.auth_endpoint,
                json=body,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectionError as exc:
            if never_sent(exc):
                raise  # the stream's backoff retries this; nothing was spent
            raise TapUserError(self._lost_answer_sentence()) from None
        except requests.exceptions.RequestException:
            raise TapUserError(self._lost_answer_sentence()) from None
        if 300 <= response.status_code < 400:
            host = urlsplit(self.auth_endpoint).netloc
            msg = (
                f"The token endpoint at {host} answered {response.status_code}, a redirect, "
                "which the tap does not follow because it would send client_secret and the "
                "refresh token on to another address; set auth_url to the authorization server "
                "itself (https://auth.atlassian.com)."
            )
            raise TapUserError(msg)
        if response.status_code == 429 or response.status_code >= 500:
            msg = f"The token endpoint answered {response.status_code}; retrying."
            raise RetriableAPIError(msg, response)
        if response.status_code >= 400:
            raise TapUserError(self._refusal_sentence(response, from_store=from_store))
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            msg = (
                f"The token endpoint answered {response.status_code} without a JSON object: "
                f"{SPENT}, while Atlassian still accepts the stored one, and check that auth_url "
                "points at https://auth.atlassian.com."
            )
            raise TapUserError(msg)
        return data

    def _lost_answer_sentence(self) -> str:
        return (
            f"The token endpoint did not answer after the refresh token was sent, so {SPENT}, "
            "while Atlassian still accepts the stored token, and check auth_url."
        )

    def _refusal_sentence(self, response: requests.Response, *, from_store: bool) -> str:
        try:
            data = response.json()
        except ValueError:
            data = {}
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        detail = str(data.get("error_description", "")) if isinstance(data, dict) else ""
        detail = self._secrets.redact(detail)[:200]
        if response.status_code == 401 or error == "access_denied":
            return (
                f"The authorization server rejected client_id and client_secret "
                f"({response.status_code} {error or 'Unauthorized'}); copy both again from the "
                "app's settings in the Atlassian developer console."
            )
        origin = (
            f"the token kept in {self._store.location}"
            if from_store
            else "the configured refresh_token"
        )
        return (
            f"Atlassian refused {origin} ({response.status_code} {error}: {detail}); it has "
            "expired, been revoked or was already used, so run the OAuth consent flow again "
            "and set the new refresh_token."
        )
