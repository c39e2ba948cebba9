"""Which auth mode the settings ask for, and where requests go; one sentence when wrong.

Makes no request: everything here is decided from the config alone.
"""

from __future__ import annotations

import enum
import ipaddress
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from tap_confluence.settings.rules import check_lookbacks, check_start_date, fail, has_value

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class AuthMode(enum.Enum):
    """How the tap authenticates against Confluence."""

    # Mode names, not passwords.
    OAUTH = "oauth"
    SCOPED_TOKEN = "scoped_token"  # noqa: S105
    CLASSIC_TOKEN = "classic_token"  # noqa: S105
    OAUTH_PLUS_TOKEN = "oauth_plus_token"  # noqa: S105


@dataclass(frozen=True)
class AuthPlan:
    """The resolved auth mode and where requests go."""

    mode: AuthMode
    #: Base of every Confluence REST call (gateway or site), without a trailing slash.
    base_url: str
    #: Site root for the licence endpoints when Basic credentials for the site are set.
    license_site_url: str | None
    #: An API token given with both cloud_id and site_url may be classic or scoped; the tap
    #: asks the site once (a classic token works there, a scoped one only at the gateway).
    probe_site: bool = False

    @property
    def uses_oauth(self) -> bool:
        """True when API calls carry an OAuth bearer token."""
        return self.mode in {AuthMode.OAUTH, AuthMode.OAUTH_PLUS_TOKEN}


def _check_url(config: t.Mapping[str, t.Any], key: str) -> str | None:
    if not has_value(config, key):
        return None
    raw = str(config[key]).strip()
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        fail(f"{key} '{raw}' is not a URL; give it like https://acme.atlassian.net.")
    if parts.query or parts.fragment:
        fail(f"{key} '{raw}' must not carry a query or fragment; give only scheme, host and path.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        fail(
            f"{key} '{raw}' uses plain http, which is refused except for loopback hosts; use https."
        )
    return raw.rstrip("/")


def check_url(key: str, raw: str) -> str:
    """Validate one URL setting as the tap does; return it without a trailing slash."""
    return _check_url({key: raw}, key) or ""


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _oauth_missing(config: t.Mapping[str, t.Any]) -> list[str]:
    return [k for k in ("client_id", "client_secret", "refresh_token") if not has_value(config, k)]


def _refuse_stray_settings(
    config: t.Mapping[str, t.Any], oauth_given: list[str], token_given: list[str]
) -> None:
    """Name the setting that is extra when one auth method is complete and another half set."""
    if len(token_given) == 2 and 0 < len(oauth_given) < 3:
        have = " and ".join(oauth_given)
        verb = "are" if len(oauth_given) > 1 else "is"
        missing = " and ".join(_oauth_missing(config))
        fail(
            f"email and api_token are set for API-token auth, but {have} {verb} set too, "
            f"which only OAuth uses; remove {have}, or add {missing} to use OAuth as well."
        )
    if len(oauth_given) == 3 and len(token_given) == 1:
        extra = token_given[0]
        other = "api_token" if extra == "email" else "email"
        fail(
            f"OAuth is set up, but {extra} is set too, which only licence counts use (with "
            f"{other} and site_url beside OAuth); remove {extra}, or add {other} and site_url."
        )


def resolve_auth(config: t.Mapping[str, t.Any]) -> AuthPlan:
    """Check the settings and return the auth plan, or raise one clear sentence.

    Makes no request: everything here is decided from the config alone.
    """
    api_url = _check_url(config, "api_url") or "https://api.atlassian.com"
    _check_url(config, "auth_url")
    site_url = _check_url(config, "site_url")
    check_start_date(config)
    check_lookbacks(config)

    oauth_given = [
        k for k in ("client_id", "client_secret", "refresh_token") if has_value(config, k)
    ]
    if oauth_given == ["client_id", "client_secret"]:
        # The refresh token may live only in the token store (tap-confluence-auth login).
        oauth_given.append("refresh_token")
    token_given = [k for k in ("email", "api_token") if has_value(config, k)]
    has_cloud = has_value(config, "cloud_id")

    _refuse_stray_settings(config, oauth_given, token_given)
    if oauth_given and len(oauth_given) < 3:
        missing = " and ".join(_oauth_missing(config))
        have = " and ".join(oauth_given)
        fail(
            f"OAuth needs {missing} as well as {have}; "
            "or set email and api_token for API-token auth."
        )
    if len(token_given) == 1:
        missing = "api_token" if token_given == ["email"] else "email"
        fail(f"API-token auth needs {missing} as well as {token_given[0]}.")

    cloud_id = str(config.get("cloud_id", "")).strip()
    if cloud_id and ("/" in cloud_id or "?" in cloud_id or " " in cloud_id):
        fail(f"cloud_id '{cloud_id}' is not a cloud ID; copy it from SITE/_edge/tenant_info.")
    gateway = f"{api_url}/ex/confluence/{cloud_id}"

    if oauth_given:
        if not has_cloud:
            fail(
                "OAuth needs cloud_id (copy it from https://SITE.atlassian.net/_edge/tenant_info), "
                "because OAuth calls go through the Atlassian gateway."
            )
        if token_given:
            if not site_url:
                fail(
                    "email and api_token beside OAuth are used only for licence counts, "
                    "which are read at the site, so set site_url as well or remove them."
                )
            return AuthPlan(AuthMode.OAUTH_PLUS_TOKEN, gateway, site_url)
        return AuthPlan(AuthMode.OAUTH, gateway, None)

    if token_given:
        if has_cloud:
            # A scoped token works only through the gateway; with site_url as well it may be
            # a classic one, which the site accepts (and then also gives licence counts).
            return AuthPlan(AuthMode.SCOPED_TOKEN, gateway, site_url, probe_site=bool(site_url))
        if site_url:
            return AuthPlan(AuthMode.CLASSIC_TOKEN, site_url, site_url)
        fail(
            "API-token auth needs cloud_id (scoped token, through the gateway) "
            "or site_url (classic token, at the site) as well as email and api_token."
        )

    return fail(
        "No credentials are set: give cloud_id, client_id, client_secret and refresh_token "
        "for OAuth, or email and api_token with cloud_id (scoped token) or site_url "
        "(classic token)."
    )
