"""The refresh-token grant at Atlassian's token endpoint: one POST, its answer checked.

Sending a refresh token spends it, so the POST is never resent blindly nor redirected, and
every failure after the send says the token was spent and how long a rerun has.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_confluence.errors import TapUserError, never_sent

if t.TYPE_CHECKING:
    from tap_confluence.redact import Secrets

#: Rule 4 of the house: a failure after the token was spent says so, and how long a rerun has.
SPENT = "the refresh token was spent; rerun within 10 minutes"
_LOST_ANSWER = (
    f"The token endpoint did not answer after the refresh token was sent, so {SPENT}, "
    "while Atlassian still accepts the stored token, and check auth_url."
)


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

    def unusable_sentence(self, *, saved_in: str | None) -> str:
        """One sentence for the unusable fields; ``saved_in`` names where the new token is kept."""
        fields = " and ".join(self.odd)
        if saved_in is not None:
            return (
                f"The token endpoint answered with an unusable {fields} after the refresh "
                f"token was spent; the new refresh token is saved in {saved_in}, so "
                "the next run can go on, but check that auth_url points at "
                "https://auth.atlassian.com."
            )
        return (
            f"The token endpoint answered with an unusable {fields} and no usable new refresh "
            f"token: {SPENT}, while Atlassian still accepts the stored one, and check that "
            "auth_url points at https://auth.atlassian.com."
        )


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


class TokenEndpoint:
    """One app's refresh-token grants at one token endpoint, each sent at most once."""

    def __init__(
        self, url: str, *, client_id: str, client_secret: str, secrets: Secrets, timeout: float
    ) -> None:
        """Post to ``url`` as the app ``client_id``; ``secrets`` redact what the server says."""
        self.url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._secrets = secrets
        self._timeout = timeout
        # A private session without urllib3 POST retries: a blind resend could spend a
        # token twice.
        self._session = requests.Session()

    def refresh(self, refresh_token: str, *, kept_in: str | None) -> TokenAnswer:
        """Spend ``refresh_token`` for a new answer, or raise one sentence (retriable if unsent).

        ``kept_in`` names the store the token came from (None: it is the configured one).
        """
        body = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }
        try:
            # Never follow a redirect: it would resend client_secret and the refresh token to
            # wherever the Location points, plain http included.
            response = self._session.post(
                self.url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectionError as exc:
            if never_sent(exc):
                raise  # the stream's backoff retries this; nothing was spent
            raise TapUserError(_LOST_ANSWER) from None
        except requests.exceptions.RequestException:
            raise TapUserError(_LOST_ANSWER) from None
        if 300 <= response.status_code < 400:
            host = urlsplit(self.url).netloc
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
            raise TapUserError(self._refusal_sentence(response, kept_in=kept_in))
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
        return TokenAnswer.read(data)

    def _refusal_sentence(self, response: requests.Response, *, kept_in: str | None) -> str:
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
            f"the token kept in {kept_in}"
            if kept_in is not None
            else "the configured refresh_token"
        )
        return (
            f"Atlassian refused {origin} ({response.status_code} {error}: {detail}); it has "
            "expired, been revoked or was already used, so run the OAuth consent flow again "
            "and set the new refresh_token."
        )
