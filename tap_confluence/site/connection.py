"""SiteConnection: what every stream receives instead of the tap.

How requests reach the site (the auth plan, after telling a classic API token from a scoped
one), the site's cloud ID, the one authenticator every stream shares, the secrets to scrub,
and the run-wide signals: a halt that stops every stream's requests (a spent rate-limit
quota), the streams that ended early, and the audit log read shared by two streams.
Nothing here sends a request until a stream asks for something that needs one.
"""

from __future__ import annotations

import functools
import logging
import threading
import typing as t
from urllib.parse import urlsplit

import requests
from singer_sdk.authenticators import BasicAuthenticator

from tap_confluence.errors import RunHaltedError, StreamAccessError, TapUserError
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.location import default_store_dir, open_store, store_path_for
from tap_confluence.redact import Secrets
from tap_confluence.settings.auth import AuthMode, AuthPlan, resolve_auth
from tap_confluence.settings.rules import check_secret_types, check_store_settings
from tap_confluence.site.token_kind import cached_kind, fingerprint, remember_kind

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from singer_sdk.helpers.types import Auth

#: Settings whose values are secrets, scrubbed from any text the tap logs or raises.
SECRET_SETTINGS = (
    "client_secret",
    "refresh_token",
    "api_token",
    "org_api_key",
    "token_store_url",
    "token_store_key",
)


class AuditReadSink(t.Protocol):
    """Takes audit_records' read of the log as it happens (user_activity's shared read)."""

    def begin(self, start_ms: int, end_ms: int) -> None:
        """Start a read of ``[start_ms, end_ms]``."""

    def add(self, activity: tuple[t.Any, int, str] | None) -> None:
        """Take in what one record of a complete window says: (accountId, time, detail)."""

    def finish(self) -> None:
        """Mark the whole range as read."""


class SiteConnection:
    """How to reach one Confluence site, and the run-wide signals its streams share."""

    def __init__(
        self, config: Mapping[str, t.Any], logger: logging.Logger, plan: AuthPlan | None = None
    ) -> None:
        """Keep the settings; ``plan`` is the auth plan when the tap has resolved it already."""
        self.config = config
        self.logger = logger
        self._plan = plan
        self._cloud_id: str | None = None
        #: Set once a wait too long to sit out stops the run: every later request is refused.
        self._halted: str | None = None
        self._halt_lock = threading.Lock()
        #: Streams that ended for want of a permission or a route (not a scope): the run fails.
        self.ended: list[StreamAccessError] = []
        #: The audit log read audit_records hands user_activity (None: nobody shares it).
        #: Typed by what audit_records calls, so this layer need not know the ledger above it.
        self.shared_audit: AuditReadSink | None = None

    def configure(self, config: Mapping[str, t.Any], plan: AuthPlan | None) -> None:
        """Take the validated settings (the tap builds its streams before it parses them)."""
        self.config = config
        self._plan = plan

    # Where requests go.

    @property
    def auth_plan(self) -> AuthPlan:
        """The auth mode and base URL resolved from the settings."""
        if self._plan is None:
            self._plan = resolve_auth(self.config)
        return self._plan

    @functools.cached_property
    def plan(self) -> AuthPlan:
        """The plan requests use; a token given with cloud_id and site_url may be either kind."""
        plan = self.auth_plan
        if not plan.probe_site or not plan.license_site_url:
            return plan
        classic = AuthPlan(AuthMode.CLASSIC_TOKEN, plan.license_site_url, plan.license_site_url)
        scoped = AuthPlan(AuthMode.SCOPED_TOKEN, plan.base_url, None)
        kind = str(self.config.get("api_token_type") or "auto")
        if kind == "auto":
            kind = self._learned_token_kind(plan.license_site_url)
        return classic if kind == "classic" else scoped

    @property
    def base_url(self) -> str:
        """Base of every Confluence REST call: the gateway or the site."""
        return self.plan.base_url

    @property
    def license_site_url(self) -> str | None:
        """The site root for the licence endpoints, when Basic credentials reach it."""
        return self.plan.license_site_url

    def _learned_token_kind(self, site_url: str) -> str:
        """Ask the site once per token whether it takes the token, then remember the answer.

        A scoped token fails at the site, and repeated failed Basic logins can make
        Atlassian demand a CAPTCHA that blocks the account's REST calls: never every run.
        """
        cfg = self.config
        key = fingerprint(str(cfg["email"]), str(cfg["api_token"]), site_url)
        path = cfg.get("token_store_path")
        directory = store_path_for(str(path), "x").parent if path else default_store_dir()
        known = cached_kind(directory, key)
        if known:
            return known
        url = f"{site_url}/wiki/rest/api/user/current"
        auth = BasicAuthenticator(username=cfg["email"], password=cfg["api_token"])
        try:
            prepared = requests.Request("GET", url, headers={"Accept": "application/json"})
            response = requests.Session().send(auth(prepared.prepare()), timeout=60)
        except requests.RequestException as exc:
            msg = (
                f"{urlsplit(site_url).netloc} could not be reached ({type(exc).__name__}); "
                "check site_url and the network, or leave site_url out to use a scoped token "
                "through the gateway only."
            )
            raise TapUserError(msg) from None
        if response.ok:
            kind = "classic"
            self.logger.info("The API token works at the site: using it as a classic token.")
        elif response.status_code == 401:
            kind = "scoped"
            self.logger.info(
                "The site does not take the API token (401), so it is a scoped token: using "
                "the gateway, and licence seat counts are not available."
            )
        else:
            msg = (
                f"site_url {site_url} answered {response.status_code} when asked whether it "
                "takes the API token; set api_token_type to classic or scoped."
            )
            raise TapUserError(msg)
        if not remember_kind(directory, key, kind):
            self.logger.warning(
                "Could not remember in %s that the API token is %s, so the next run asks the "
                "site again (a failed login for a scoped token); set api_token_type: %s.",
                directory,
                kind,
                kind,
            )
        return kind

    @functools.cached_property
    def secrets(self) -> Secrets:
        """Every secret this run knows, to scrub from any text it logs."""
        secrets = Secrets()
        for key in SECRET_SETTINGS:
            secrets.add(self.config.get(key))
        return secrets

    @functools.cached_property
    def api_authenticator(self) -> Auth:
        """One authenticator for every stream: OAuth bearer or Basic email + API token."""
        plan, cfg = self.auth_plan, self.config
        if plan.uses_oauth:
            store = open_store(
                cloud_id=cfg["cloud_id"],
                client_id=cfg["client_id"],
                token_store_path=cfg.get("token_store_path"),
                token_store_url=cfg.get("token_store_url"),
                token_store_key=cfg.get("token_store_key"),
            )
            return AtlassianOAuthAuthenticator(
                auth_endpoint=f"{str(cfg['auth_url']).rstrip('/')}/oauth/token",
                client_id=cfg["client_id"],
                client_secret=cfg["client_secret"],
                refresh_token=cfg.get("refresh_token") or None,
                store=store,
                secrets=self.secrets,
                cloud_id=cfg["cloud_id"],
            )
        return BasicAuthenticator(username=cfg["email"], password=cfg["api_token"])

    @functools.cached_property
    def license_authenticator(self) -> Auth | None:
        """Basic auth for the site's licence endpoints, when email and api_token are set."""
        if self.plan.license_site_url and self.config.get("api_token"):
            return BasicAuthenticator(
                username=self.config["email"], password=self.config["api_token"]
            )
        return None

    def missing_scopes(self, required: tuple[frozenset[str], ...]) -> bool:
        """Tell whether the OAuth grant lacks every scope alternative in ``required``."""
        auth = self.api_authenticator
        if not required or not isinstance(auth, AtlassianOAuthAuthenticator):
            return False
        granted = auth.granted_scopes()
        if granted is None:
            return False
        return not any(option <= granted for option in required)

    # The site.

    @property
    def cloud_id(self) -> str:
        """The cloudId put on every record and at the head of every key."""
        if self._cloud_id is None:
            self._cloud_id = self.config.get("cloud_id") or self._discover_cloud_id()
        return self._cloud_id

    def _discover_cloud_id(self) -> str:
        site = self.plan.license_site_url or ""
        try:
            response = requests.get(f"{site}/_edge/tenant_info", timeout=30)
            cloud = response.json().get("cloudId") if response.ok else None
        except (requests.RequestException, ValueError):
            cloud = None
        if not isinstance(cloud, str) or not cloud:
            host = urlsplit(site).hostname
            msg = (
                f"Could not read the cloud ID of {host} from /_edge/tenant_info; set cloud_id "
                "(every record carries it so several sites can share a table)."
            )
            raise TapUserError(msg)
        return cloud

    def check_cloud_id(self, response: requests.Response) -> None:
        """Say cloud_id is wrong, listing reachable sites, when the gateway knows no such site."""
        path = urlsplit(response.url).path
        cloud = str(self.config.get("cloud_id") or "")
        if not cloud or not path.startswith(f"/ex/confluence/{cloud}/"):
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        # Confluence's own 404s (an unknown group...) carry statusCode; the gateway's do not.
        if isinstance(body, dict) and "statusCode" in body:
            return
        sites = self._accessible_sites()
        listed = f" The token can reach: {sites}." if sites else ""
        msg = (
            f"cloud_id {cloud} is not a site these credentials can reach (the gateway answered "
            "404); look it up with `tap-confluence-auth cloud-id https://SITE.atlassian.net` "
            f"and set cloud_id.{listed}"
        )
        raise TapUserError(msg)

    def _accessible_sites(self) -> str:
        """Name the sites an OAuth token can reach (empty for API tokens or on any failure)."""
        auth = self.api_authenticator
        if not isinstance(auth, AtlassianOAuthAuthenticator) or not auth.access_token:
            return ""
        url = f"{str(self.config['api_url']).rstrip('/')}/oauth/token/accessible-resources"
        try:
            response = requests.get(
                url, headers={"Authorization": f"Bearer {auth.access_token}"}, timeout=30
            )
            sites = response.json() if response.ok else []
        except (requests.RequestException, ValueError):
            return ""
        named = (
            [f"{s.get('url')} (cloud_id {s.get('id')})" for s in sites if isinstance(s, dict)]
            if isinstance(sites, list)
            else []
        )
        return "; ".join(named[:10])

    # Run-wide signals.

    def halt(self, sentence: str) -> RunHaltedError:
        """Stop every stream's requests from now on; return the error to raise."""
        with self._halt_lock:
            if self._halted is None:
                self._halted = sentence
            return RunHaltedError(self._halted)

    def check_halted(self) -> None:
        """Refuse a request once the run has been halted (concurrent workers stop together)."""
        if self._halted is not None:
            raise RunHaltedError(self._halted)

    def note_stream_ended(self, exc: StreamAccessError) -> None:
        """Record that a stream ended early: a missing scope warns, anything else fails the run."""
        if exc.scope_missing:
            self.logger.warning("%s", exc)
        else:
            self.logger.error("%s", exc)
            self.ended.append(exc)


def connect(config: Mapping[str, t.Any], logger: logging.Logger) -> SiteConnection:
    """Check the settings (one sentence when wrong) and return the connection they describe."""
    check_secret_types(config)
    plan = resolve_auth(config)
    check_store_settings(config)
    return SiteConnection(config, logger, plan)
