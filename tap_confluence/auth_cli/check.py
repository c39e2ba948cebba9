"""`check`: one cheap authenticated call per configured auth method, one line each."""

from __future__ import annotations

import json
import logging
import typing as t
from dataclasses import dataclass
from pathlib import Path

import click
import requests
from singer_sdk.authenticators import BasicAuthenticator
from singer_sdk.exceptions import ConfigValidationError, RetriableAPIError

from tap_confluence.auth_cli.common import HTTP_TIMEOUT, AuthCliError, env_setting, error_detail
from tap_confluence.auth_cli.report import scope_options, uncovered_streams
from tap_confluence.errors import TapUserError
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.settings.auth import AuthMode
from tap_confluence.site.connection import SiteConnection, connect
from tap_confluence.streams.audit.stream import AuditRecordsStream
from tap_confluence.streams.license import LicenseSubscriptionsStream

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Auth

#: Settings read from the environment as Meltano passes them (TAP_CONFLUENCE_<SETTING>).
_ENV_SETTINGS = (
    "cloud_id",
    "site_url",
    "client_id",
    "client_secret",
    "refresh_token",
    "email",
    "api_token",
    "token_store_path",
    "token_store_url",
    "token_store_key",
    "api_url",
    "auth_url",
)
_SCOPE_MISMATCH = "scope does not match"
_SYSTEM_INFO = "/wiki/rest/api/settings/systemInfo"
#: A code no authorization server ever issued: the exchange must fail, and how it fails says
#: whether client_id and client_secret were accepted, without spending any refresh token.
_PROBE_CODE = "tap-confluence-auth-check-not-a-code"
_PROBE_REDIRECT = "http://localhost/tap-confluence-auth-check"


@dataclass(frozen=True)
class Line:
    """One check's verdict: OK, FAIL or NOTE (notes never fail the run)."""

    verdict: str
    label: str
    text: str


def load_config(config_path: str | None, env_prefix: str) -> dict[str, t.Any]:
    """Read the tap's config: the JSON file if given, then TAP_CONFLUENCE_* variables over it."""
    config: dict[str, t.Any] = {}
    if config_path:
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AuthCliError(f"--config {config_path} does not exist.") from None
        except (OSError, ValueError) as exc:
            msg = f"--config {config_path} is not a readable JSON file ({type(exc).__name__})."
            raise AuthCliError(msg) from None
        if not isinstance(config, dict):
            raise AuthCliError(f"--config {config_path} must hold a JSON object of settings.")
    for key in _ENV_SETTINGS:
        value = env_setting(env_prefix, key)
        if value:
            config[key] = value
    return config


class Checker:
    """Runs the probes with the tap's own authenticators and plan, collecting lines."""

    def __init__(self, site: SiteConnection) -> None:
        """Use the run's own connection (plan, authenticators), so the check sees what it sees."""
        self.site = site
        self.lines: list[Line] = []
        #: Set when OAuth worked from a cached access token and the secret could not be proven.
        self.secret_unverified = False
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json"})

    def add(self, verdict: str, label: str, text: str) -> None:
        """Record one verdict, with any known secret scrubbed from the text."""
        self.lines.append(Line(verdict, label, self.site.secrets.redact(text)))

    def probe(self, label: str, url: str, auth: Auth, *, scopes: str, on_403: str) -> bool:
        """GET one URL and turn the answer into a verdict naming what is missing."""
        try:
            prepared = requests.Request("GET", url).prepare()
            response = self.session.send(auth(prepared), timeout=HTTP_TIMEOUT)
        except TapUserError as exc:
            self.add("FAIL", label, str(exc))
            return False
        except (requests.RequestException, RetriableAPIError) as exc:
            self.add("FAIL", label, f"no answer ({type(exc).__name__}); check the URL settings")
            return False
        if response.ok:
            self.add("OK", label, "")
            return True
        detail = error_detail(response, self.site.secrets)
        if response.status_code == 401 and _SCOPE_MISMATCH in detail.lower():
            self.add("FAIL", label, f"missing scope: grant {scopes} ({detail})")
        elif response.status_code == 401:
            self.add("FAIL", label, f"credentials rejected ({detail}); {self._wrong_secret()}")
        elif response.status_code == 403:
            self.add("FAIL", label, f"missing permission: {on_403} ({detail})")
        else:
            self.add("FAIL", label, f"unexpected answer ({detail})")
        return False

    def _wrong_secret(self) -> str:
        if self.site.auth_plan.uses_oauth:
            return "check that the app is installed on the site and cloud_id is right"
        return (
            "check email and api_token (a scoped token works only with cloud_id, "
            "a classic one also at site_url)"
        )

    def run(self) -> list[Line]:
        """Probe every configured method: OAuth or API token, the audit log, licence counts."""
        api_auth = self.site.api_authenticator
        if isinstance(api_auth, AtlassianOAuthAuthenticator) and not self._oauth(api_auth):
            return self.lines
        try:
            plan = self.site.plan
        except TapUserError as exc:
            self.add("FAIL", "site_url", str(exc))
            return self.lines
        method = {
            AuthMode.OAUTH: "OAuth",
            AuthMode.OAUTH_PLUS_TOKEN: "OAuth",
            AuthMode.SCOPED_TOKEN: "scoped API token",
            AuthMode.CLASSIC_TOKEN: "classic API token",
        }[plan.mode]
        where = "at the site" if plan.mode is AuthMode.CLASSIC_TOKEN else "through the gateway"
        config_scopes = scope_options(LicenseSubscriptionsStream.required_scopes)
        self.probe(
            f"{method}: systemInfo {where}",
            f"{plan.base_url}{_SYSTEM_INFO}",
            api_auth,
            scopes=config_scopes,
            on_403="the account needs the 'Can use' global permission on Confluence",
        )
        self.probe(
            f"{method}: audit log {where}",
            f"{plan.base_url}/wiki/rest/api/audit?limit=1",
            api_auth,
            scopes=scope_options(AuditRecordsStream.required_scopes),
            on_403=(
                "the account behind the credentials needs the Confluence Administrator global "
                "permission to read the audit log"
            ),
        )
        self._licence(plan.license_site_url)
        return self.lines

    def _oauth(self, auth: AtlassianOAuthAuthenticator) -> bool:
        label = "OAuth: access token through the token store"
        refreshes = auth.refreshes
        try:
            auth.update_access_token()
        except TapUserError as exc:
            self.add("FAIL", label, str(exc))
            return False
        except (requests.RequestException, RetriableAPIError) as exc:
            self.add("FAIL", label, f"the token endpoint did not answer ({type(exc).__name__})")
            return False
        granted = auth.granted_scopes() or frozenset()
        how = (
            "refreshed, and the rotated refresh token saved"
            if auth.refreshes > refreshes
            else "a cached access token from an earlier run is still valid, so the refresh "
            "token was not spent"
        )
        self.add("OK", label, f"{how}; granted: {' '.join(sorted(granted)) or 'not stated'}")
        for note in uncovered_streams(frozenset(granted)) if granted else []:
            self.add("NOTE", "scopes", note)
        if auth.refreshes == refreshes:
            # No refresh proved the client credentials; a wrong client_secret would only show
            # at the next refresh, when the cached token runs out. The other probes still run.
            self._client_secret(auth)
        return True

    def _client_secret(self, auth: AtlassianOAuthAuthenticator) -> None:
        """Prove client_id and client_secret at the token endpoint without spending a token."""
        label = "OAuth: client_id and client_secret at the token endpoint"
        body = {
            "grant_type": "authorization_code",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
            "code": _PROBE_CODE,
            "redirect_uri": _PROBE_REDIRECT,
        }
        unverified = "client_secret was not verified"
        try:
            response = self.session.post(
                auth.auth_endpoint, json=body, timeout=HTTP_TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            self.secret_unverified = True
            self.add("NOTE", label, f"{unverified}: no answer ({type(exc).__name__})")
            return
        try:
            data = response.json()
        except ValueError:
            data = None
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        detail = error_detail(response, self.site.secrets)
        if response.status_code == 401 or error in {"access_denied", "invalid_client"}:
            self.add(
                "FAIL",
                label,
                f"rejected ({detail}): the cached access token still works, but the next "
                "refresh will fail; copy client_id and client_secret again from the app's "
                "settings in the Atlassian developer console",
            )
            return
        if 400 <= response.status_code < 500 and error == "invalid_grant":
            self.add(
                "OK",
                label,
                "client_secret verified (a made-up code was refused as invalid_grant, which "
                "comes only after the client is accepted); no refresh token was spent",
            )
            return
        self.secret_unverified = True
        self.add("NOTE", label, f"{unverified}: the token endpoint answered {detail}")

    def _licence(self, site_url: str | None) -> None:
        cfg = self.site.config
        if not site_url and self.site.auth_plan.probe_site:
            self.add(
                "NOTE",
                "licence seats",
                "not available: site_url refused the API token, so it is a scoped token, which "
                "works only through the gateway (licence counts need a classic token)",
            )
            return
        if not site_url or not cfg.get("email") or not cfg.get("api_token"):
            self.add(
                "NOTE",
                "licence seats",
                "not configured (they need site_url, email and a classic api_token)",
            )
            return
        basic = BasicAuthenticator(username=cfg["email"], password=cfg["api_token"])
        self.probe(
            "email + API token: licence userCount at the site",
            f"{site_url}/wiki/rest/license/1.0/license/userCount",
            basic,
            scopes="a classic (unscoped) API token",
            on_403="the account needs the Confluence Administrator global permission",
        )


def run_check(config_path: str | None, env_prefix: str) -> int:
    """Print one line per probe; 0 only when every configured method works."""
    config = load_config(config_path, env_prefix)
    try:
        site = connect(config, logging.getLogger("tap-confluence-auth"))
    except ConfigValidationError as exc:
        raise AuthCliError(str(exc.errors[0] if exc.errors else exc)) from None
    checker = Checker(site)
    lines = checker.run()
    for line in lines:
        text = f"{line.verdict:<4}  {line.label}"
        click.echo(f"{text}: {line.text}" if line.text else text)
    failed = [line for line in lines if line.verdict == "FAIL"]
    if failed:
        click.echo(f"{len(failed)} check(s) failed; fix what each FAIL line names, then rerun.")
        return 1
    if checker.secret_unverified:
        click.echo(
            "Everything checked works, but client_secret was not verified (see the NOTE "
            "above): the next refresh of the access token will tell."
        )
        return 0
    click.echo("Everything configured works.")
    return 0
