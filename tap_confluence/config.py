"""Settings validation: which auth mode a config asks for, and one sentence when it is wrong."""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import ipaddress
import json
import re
import typing as t
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from singer_sdk.exceptions import ConfigValidationError

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


def _has(config: t.Mapping[str, t.Any], key: str) -> bool:
    value = config.get(key)
    return isinstance(value, str) and value.strip() != ""


#: Settings whose values are secrets: a wrong-typed one is named, never echoed.
SECRET_SETTINGS = (
    "client_secret",
    "refresh_token",
    "api_token",
    "org_api_key",
    "token_store_url",
    "token_store_key",
)


def check_secret_types(config: object) -> None:
    """Refuse a secret setting that is not text, naming it and its kind but never its value.

    ``config`` is what the Tap constructor was given (a mapping, or JSON file paths); this runs
    before the SDK's JSON-schema validation, whose messages quote the offending value.
    """
    config = _given_settings(config)
    for key in SECRET_SETTINGS:
        value = config.get(key)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, bool):
            kind = "a boolean"
        elif isinstance(value, int | float):
            kind = "a number"
        elif isinstance(value, list | tuple):
            kind = "a list"
        elif isinstance(value, dict):
            kind = "an object"
        else:
            kind = f"a {type(value).__name__}"
        fail(
            f"{key} must be text (a JSON string), not {kind}; set it to the plain value, e.g. "
            f"TAP_CONFLUENCE_{key.upper()} in the environment (the value is not shown here "
            "because it is a secret)."
        )


def _given_settings(config: object) -> t.Mapping[str, t.Any]:
    """Return the settings a mapping holds, or those the JSON file(s) it names hold."""
    if isinstance(config, t.Mapping):
        return config
    paths = config if isinstance(config, list) else [config]
    merged: dict[str, t.Any] = {}
    for path in paths:
        if not isinstance(path, str | PurePath):
            continue
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the SDK reports an unreadable file itself
        if isinstance(data, dict):
            merged.update(data)
    return merged


def fail(sentence: str) -> t.NoReturn:
    """Raise the SDK's config error with one sentence (the CLI prints it without a traceback)."""
    raise ConfigValidationError(sentence, errors=[sentence])


#: How a setting of each JSON Schema type must be written, for the sentence.
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "object": "an object",
    "array": "a list",
}
#: The SDK's schema errors end like `... in config['audit_concurrency']`.
_ERROR_PATH = re.compile(r" in config\['([^']+)'\]")


def config_error_sentence(exc: ConfigValidationError) -> str:
    """One sentence for a config error: the tap's own, or the SDK's schema errors retold.

    The SDK's messages quote the offending values, which may be secrets, so only the
    setting names and the types they need are told.
    """
    if exc.errors == [str(exc)]:
        return str(exc)
    props = (exc.schema or {}).get("properties", {})
    names: list[str] = []
    for error in exc.errors:
        match = _ERROR_PATH.search(error)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    needs = []
    for name in names:
        kinds = props.get(name, {}).get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else kinds
        words = [_TYPE_WORDS[k] for k in kinds if k in _TYPE_WORDS]
        needs.append(f"{name} must be {' or '.join(words) or 'set as documented'}")
    if not needs:
        return (
            f"The config does not fit the tap's settings ({len(exc.errors)} problem(s)); "
            "tap-confluence --about lists every setting and its type."
        )
    return f"{' and '.join(needs)}; tap-confluence --about lists every setting and its type."


def _check_url(config: t.Mapping[str, t.Any], key: str) -> str | None:
    if not _has(config, key):
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


def _check_start_date(config: t.Mapping[str, t.Any]) -> None:
    if not _has(config, "start_date"):
        return
    raw = str(config["start_date"]).strip()
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        fail(
            f"start_date '{raw}' is not an ISO 8601 date-time; write it like 2025-01-31T00:00:00Z."
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if value > dt.datetime.now(dt.UTC):
        fail(f"start_date {raw} is in the future; set a past date or leave it empty.")


def _check_lookback(config: t.Mapping[str, t.Any]) -> None:
    for key in ("audit_lookback_minutes", "content_lookback_minutes"):
        value = config.get(key)
        bad = not isinstance(value, int) or isinstance(value, bool) or value < 0
        if value is not None and bad:
            fail(f"{key} must be a whole number of minutes, 0 or more, not {value!r}.")


#: Audit windows fetched at once: the audit stream uses a value in this range.
AUDIT_CONCURRENCY_RANGE = (1, 16)


def settings_warnings(config: t.Mapping[str, t.Any], known: t.Collection[str]) -> list[str]:
    """Sentences for settings the tap does not know and for values it clamps.

    Names only, never values: a misspelt setting may well hold a secret.
    """
    warnings = []
    for key in sorted(str(k) for k in config if k not in known):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = (
            f"did you mean {close[0]}?" if close else "tap-confluence --about lists every setting."
        )
        warnings.append(f"{key[:60]} is not a setting of tap-confluence and is ignored; {hint}")
    value = config.get("audit_concurrency")
    low, high = AUDIT_CONCURRENCY_RANGE
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        used = min(max(value, low), high)
        warnings.append(
            f"audit_concurrency {value} is outside {low} to {high}, so {used} audit windows "
            "are fetched at once."
        )
    return warnings


def _oauth_missing(config: t.Mapping[str, t.Any]) -> list[str]:
    return [k for k in ("client_id", "client_secret", "refresh_token") if not _has(config, k)]


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
    _check_start_date(config)
    _check_lookback(config)

    oauth_given = [k for k in ("client_id", "client_secret", "refresh_token") if _has(config, k)]
    if oauth_given == ["client_id", "client_secret"]:
        # The refresh token may live only in the token store (tap-confluence-auth login).
        oauth_given.append("refresh_token")
    token_given = [k for k in ("email", "api_token") if _has(config, k)]
    has_cloud = _has(config, "cloud_id")

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

    fail(
        "No credentials are set: give cloud_id, client_id, client_secret and refresh_token "
        "for OAuth, or email and api_token with cloud_id (scoped token) or site_url "
        "(classic token)."
    )
