"""What every tap-confluence-auth command shares: settings from the environment, URLs, errors."""

from __future__ import annotations

import os
import re
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests
from singer_sdk.exceptions import ConfigValidationError
from typing_extensions import override

from tap_confluence.settings.auth import check_url

if t.TYPE_CHECKING:
    from tap_confluence.redact import Secrets

#: The scopes the tap uses; offline_access is what makes Atlassian return a refresh token.
DEFAULT_SCOPES: tuple[str, ...] = (
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "manage:confluence-configuration",
    "search:confluence",
    # groups and group_members: Atlassian's group member endpoint needs both.
    "read:group:confluence",
    "read:user:confluence",
    "offline_access",
)
DEFAULT_ENV_PREFIX = "TAP_CONFLUENCE_"
DEFAULT_AUTH_URL = "https://auth.atlassian.com"
DEFAULT_API_URL = "https://api.atlassian.com"
USER_AGENT = "tap-confluence-auth/0.1"
HTTP_TIMEOUT = 30.0

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
#: A Meltano plugin name of this tap: tap-confluence, or one inherited from it.
_PLUGIN_NAME = re.compile(r"^tap-confluence(--?[a-z0-9][a-z0-9-]*)?$")
DEFAULT_PLUGIN = "tap-confluence"


class AuthCliError(click.ClickException):
    """Ends the command with one sentence on stderr and exit code 1 (never a traceback)."""

    @override
    def show(self, file: t.IO[t.Any] | None = None) -> None:
        """Print the sentence alone, prefixed with the command name."""
        click.echo(f"tap-confluence-auth: {self.message}", err=True)


def env_setting(prefix: str, setting: str) -> str | None:
    """Read the tap's setting from the environment as Meltano would pass it, or None."""
    value = os.environ.get(f"{prefix}{setting.upper()}", "").strip()
    return value or None


def plugin_name(env_prefix: str, store_path: str | None) -> str:
    """Name the Meltano plugin these settings belong to, for `meltano config set` lines.

    Meltano names a plugin's variables after it (tap-confluence--site-b reads
    TAP_CONFLUENCE__SITE_B_*), so a non-default --env-prefix names the plugin; else the
    project's token file does (.meltano/tokens/$MELTANO_EXTRACTOR_NAME.json).
    """
    if env_prefix != DEFAULT_ENV_PREFIX:
        return env_prefix.rstrip("_").lower().replace("_", "-")
    stem = Path(store_path).stem if store_path and store_path.endswith(".json") else ""
    return stem if _PLUGIN_NAME.match(stem) else DEFAULT_PLUGIN


def url_setting(key: str, raw: str) -> str:
    """Validate a URL as the tap validates its settings (http only for loopback)."""
    try:
        return check_url(key, raw)
    except ConfigValidationError as exc:
        raise AuthCliError(str(exc.errors[0] if exc.errors else exc)) from None


def site_root(site: str) -> str:
    """Turn `acme`, `acme.atlassian.net` or any URL on the site into `https://acme.atlassian.net`."""
    raw = site.strip()
    if not raw or any(c.isspace() for c in raw):
        msg = f"'{site}' is not a site; give its name (acme), host (acme.atlassian.net) or URL."
        raise AuthCliError(msg)
    if "://" not in raw:
        host = raw.split("/", 1)[0]
        if _SITE_NAME.match(host) and host.lower() != "localhost":
            host = f"{host}.atlassian.net"
        scheme = "http" if host.split(":", 1)[0] in {"localhost", "127.0.0.1"} else "https"
        raw = f"{scheme}://{host}"
    parts = urlsplit(raw)
    return url_setting("site", f"{parts.scheme}://{parts.netloc}")


def http_session() -> requests.Session:
    """Return a session that names this tool and asks for JSON."""
    session = requests.Session()
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    return session


def unreachable(url: str, exc: requests.RequestException) -> AuthCliError:
    """One sentence for a request that got no HTTP answer."""
    host = urlsplit(url).netloc
    return AuthCliError(
        f"Could not reach {host} ({type(exc).__name__}); check the URL and the network, then retry."
    )


def error_detail(response: requests.Response, secrets: Secrets | None = None) -> str:
    """Describe an error answer briefly, redacted: status and the API's own words."""
    try:
        body = response.json()
    except ValueError:
        body = None
    words = ""
    if isinstance(body, dict):
        for key in ("error_description", "message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                words = body[key]
                break
    text = f"{response.status_code} {words}".strip()
    if secrets is not None:
        text = secrets.redact(text)
    return text[:200]


def parse_scopes(raw: str | None) -> list[str]:
    """Scopes from a comma- or space-separated option; offline_access is always added."""
    scopes = list(DEFAULT_SCOPES) if raw is None else re.split(r"[\s,]+", raw.strip())
    scopes = [s for s in dict.fromkeys(scopes) if s]
    if not scopes:
        raise AuthCliError("--scopes is empty; leave it out to request the scopes the tap needs.")
    if "offline_access" not in scopes:
        # Without it Atlassian issues no refresh token and the tap could not run unattended.
        scopes.append("offline_access")
    return scopes
