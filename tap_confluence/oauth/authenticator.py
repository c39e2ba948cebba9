"""Authenticators: one OAuth authenticator per tap, its rotating refresh token kept in a store.

The POST to the token endpoint and the checks of its answer live in token_endpoint.py; here
the SDK's authenticator decides when to refresh and keeps the rotated token before use.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t

from singer_sdk.authenticators import BasicAuthenticator, OAuthAuthenticator
from typing_extensions import override

from tap_confluence.errors import TapUserError
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStore,
    remember_superseded,
    seed_fingerprint,
)
from tap_confluence.oauth.token_endpoint import TokenEndpoint
from tap_confluence.sdk_compat import default_expiration

if t.TYPE_CHECKING:
    import requests

    from tap_confluence.redact import Secrets

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
        self._expires_at: float | None = None
        self._scopes: frozenset[str] | None = None
        self._rejected: set[str] = set()
        self._consecutive_rejections = 0
        self._lock = threading.RLock()
        self._endpoint = TokenEndpoint(
            auth_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            secrets=secrets,
            timeout=timeout,
        )
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
            answer = self._endpoint.refresh(
                live, kept_in=self._store.location if record is not None else None
            )
            # From here on the old refresh token is spent: nothing below may lose the new one.
            self._secrets.add(answer.refresh_token)
            self._secrets.add(answer.access_token)
            if answer.refresh_token is None and "refresh_token" in answer.odd:
                raise TapUserError(answer.unusable_sentence(saved_in=None))
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
                saved_in = None
                if answer.refresh_token is not None:
                    session.save(saved)
                    self.refreshes += 1
                    saved_in = self._store.location
                raise TapUserError(answer.unusable_sentence(saved_in=saved_in))
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
