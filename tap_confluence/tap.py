"""The tap: its settings, the auth-combination check and the streams it offers."""

from __future__ import annotations

import functools
import gc
import io
import json
import threading
import typing as t
from urllib.parse import urlsplit

import click
import requests
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError

from tap_confluence.activity import UserActivityStream
from tap_confluence.audit import AuditRecordsStream
from tap_confluence.errors import RunHaltedError, Secrets, StreamAccessError, TapUserError
from tap_confluence.groups import GroupMembersStream, GroupsStream
from tap_confluence.license import LicenseSubscriptionsStream
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.oauth.store.location import default_store_dir, open_store, store_path_for
from tap_confluence.output import BlockWriter
from tap_confluence.retry import setting_for_url
from tap_confluence.settings.auth import AuthMode, AuthPlan, resolve_auth
from tap_confluence.settings.rules import (
    check_admin_settings,
    check_secret_types,
    check_store_settings,
    config_error_sentence,
    settings_warnings,
)
from tap_confluence.settings.state import parse_state
from tap_confluence.token_kind import cached_kind, fingerprint, remember_kind
from tap_confluence.users import UsersStream

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Auth

    from tap_confluence.client import ConfluenceStream

STREAM_TYPES: tuple[type[ConfluenceStream], ...] = (
    UsersStream,
    GroupsStream,
    GroupMembersStream,
    LicenseSubscriptionsStream,
    AuditRecordsStream,
    UserActivityStream,
)


class TapConfluence(Tap):
    # --about shows this docstring as the tap's description, so it stays one line.
    """Confluence Cloud: users, groups, group_members, license_subscriptions, audit_records and user_activity."""  # noqa: E501

    name = "tap-confluence"
    message_writer_class = BlockWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "cloud_id",
            th.StringType,
            description=(
                "Cloud ID of the Confluence site "
                "(from https://SITE.atlassian.net/_edge/tenant_info)."
            ),
        ),
        th.Property(
            "site_url",
            th.StringType,
            description=(
                "Site URL, e.g. https://acme.atlassian.net; "
                "needed for classic API tokens and licence counts."
            ),
        ),
        th.Property("client_id", th.StringType, description="OAuth 2.0 (3LO) app client ID."),
        th.Property(
            "client_secret", th.StringType, secret=True, description="OAuth 2.0 app client secret."
        ),
        th.Property(
            "refresh_token",
            th.StringType,
            secret=True,
            description="OAuth refresh token seeding the token store; a new value wins.",
        ),
        th.Property(
            "email", th.EmailType, description="Atlassian account email for API-token auth."
        ),
        th.Property(
            "api_token",
            th.StringType,
            secret=True,
            description="Atlassian API token (classic or scoped).",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Earliest audit record to extract on the first run (ISO 8601).",
        ),
        th.Property(
            "token_store_path",
            th.StringType,
            description="File that keeps the rotating OAuth refresh token between runs.",
        ),
        th.Property(
            "token_store_url",
            th.StringType,
            secret=True,
            description="PostgreSQL URL of a token store many workers share (instead of a file).",
        ),
        th.Property(
            "token_store_key",
            th.StringType,
            secret=True,
            description="Fernet key(s) encrypting stored tokens; required with token_store_url.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.atlassian.com",
            description="Atlassian API gateway base URL.",
        ),
        th.Property(
            "auth_url",
            th.StringType,
            default="https://auth.atlassian.com",
            description="Atlassian OAuth authorization server base URL.",
        ),
        th.Property(
            "audit_lookback_minutes",
            th.IntegerType,
            default=60,
            description="Minutes of audit log re-read before the bookmark, for late records.",
        ),
        th.Property(
            "org_id",
            th.StringType,
            description="Atlassian organization ID; with org_api_key adds Admin API activity.",
        ),
        th.Property(
            "org_api_key",
            th.StringType,
            secret=True,
            description="Organization API key (admin.atlassian.com) for Admin API activity.",
        ),
        th.Property(
            "max_retry_wait_seconds",
            th.IntegerType,
            default=300,
            description="Longest wait before a retry, however long Retry-After asks for.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=8,
            description=(
                "Tries for a request that fails with a 5xx, a reset or a cut body (429s within "
                "max_retry_wait_seconds have their own 20)."
            ),
        ),
        th.Property(
            "audit_concurrency",
            th.IntegerType,
            default=5,
            description="Audit log time windows fetched at once during a backfill (1 to 16).",
        ),
        th.Property(
            "content_lookback_minutes",
            th.IntegerType,
            default=30,
            description=(
                "Minutes of content search re-read before the bookmark, for edits the search "
                "index shows late."
            ),
        ),
        th.Property(
            "api_token_type",
            th.StringType,
            default="auto",
            allowed_values=["auto", "classic", "scoped"],
            description=(
                "classic (works at site_url) or scoped (gateway only); auto asks the site once "
                "per token and remembers the answer beside the token store."
            ),
        ),
        th.Property(
            "fail_on_user_search_cap",
            th.BooleanType,
            default=False,
            description=(
                "Fail the run, instead of warning, when search/user stops at its 10,000-user cap."
            ),
        ),
        th.Property(
            "emit_activate_version_messages",
            th.BooleanType,
            default=True,
            description=(
                "Send ACTIVATE_VERSION after a complete read of users, groups and "
                "group_members, so the target soft-deletes rows gone from the site "
                "(never for license_subscriptions, whose history stays)."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Validate the auth combination before anything else can send a request."""
        if kwargs.get("validate_config", True):
            # Before the SDK's schema validation, which would print a wrong-typed secret.
            check_secret_types(kwargs.get("config"))
        super().__init__(*args, **kwargs)
        self._ended: list[StreamAccessError] = []
        self._cloud_key: str | None = None
        #: Set once a wait too long to sit out stops the run: every later request is refused.
        self._halted: str | None = None
        self._halt_lock = threading.Lock()
        if kwargs.get("validate_config", True):
            for warning in settings_warnings(self.config, self.config_jsonschema["properties"]):
                self.logger.warning("%s", warning)
            self._plan: AuthPlan | None = resolve_auth(self.config)
            check_admin_settings(self.config)
            check_store_settings(self.config)
        else:
            self._plan = None

    # Shared per-tap objects (never module or class singletons: tests build many taps).

    @property
    def auth_plan(self) -> AuthPlan:
        """The auth mode and base URL resolved from the settings."""
        if self._plan is None:
            self._plan = resolve_auth(self.config)
        return self._plan

    @functools.cached_property
    def connection_plan(self) -> AuthPlan:
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
        """Every secret this tap knows, to scrub from any text it logs."""
        secrets = Secrets()
        for key in (
            "client_secret",
            "refresh_token",
            "api_token",
            "org_api_key",
            "token_store_url",
            "token_store_key",
        ):
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
        if self.connection_plan.license_site_url and self.config.get("api_token"):
            return BasicAuthenticator(
                username=self.config["email"], password=self.config["api_token"]
            )
        return None

    @property
    def cloud_key(self) -> str:
        """The cloudId put on every record and at the head of every key."""
        if self._cloud_key is None:
            self._cloud_key = self.config.get("cloud_id") or self._discover_cloud_id()
        return self._cloud_key

    def _discover_cloud_id(self) -> str:
        site = self.connection_plan.license_site_url or ""
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

    def discover_streams(self) -> list[Stream]:
        """Return the streams this tap offers (the catalog does not depend on the config)."""
        return [stream_type(tap=self) for stream_type in STREAM_TYPES]

    # Sync.

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

    def note_stream_ended(self, stream_name: str, exc: StreamAccessError) -> None:
        """Record that a stream ended early for want of a scope or permission."""
        if exc.scope_missing:
            self.logger.warning("%s", exc)
        else:
            self.logger.error("%s", exc)
            self._ended.append(exc)

    def missing_scopes(self, stream: ConfluenceStream) -> bool:
        """Tell whether the OAuth grant lacks every scope alternative the stream needs."""
        auth = self.api_authenticator
        if not stream.required_scopes or not isinstance(auth, AtlassianOAuthAuthenticator):
            return False
        granted = auth.granted_scopes()
        if granted is None:
            return False
        return not any(option <= granted for option in stream.required_scopes)

    def after_stream(self, stream: Stream) -> None:
        """After the last top-level stream, fail the run if a stream ended for want of access."""
        top_level = [
            s
            for s in self.streams.values()
            if (s.selected or s.has_selected_descendents) and not s.parent_stream_type
        ]
        if self._ended and top_level and stream is top_level[-1]:
            names = " ".join(str(e) for e in self._ended)
            msg = f"{len(self._ended)} stream(s) ended early. {names}"
            raise TapUserError(msg)

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """Run the SDK's --test; a bad config ends it with its sentence, not a traceback."""
        try:
            super().cb_test(ctx, param, value)
        except ConfigValidationError as exc:
            cls.logger.error("%s", config_error_sentence(exc))  # noqa: TRY400
            ctx.exit(1)
        except TapUserError as exc:
            cls.logger.error("%s", exc)  # noqa: TRY400
            ctx.exit(1)

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run the tap; a user-facing error ends it with its one sentence and exit code 1."""
        # Records are trees of dicts and lists without cycles, made by the thousand per page,
        # and every collection they trigger also walked what lives from start to end (the
        # SDK and everything imported): about a tenth of a 200,000-record audit sync. That
        # heap is frozen for the run and handed back to the collector after it.
        gc.freeze()
        try:
            state = kwargs.get("state")
            if state is not None:
                # The SDK would crash on unusable state; check it and say what is wrong.
                kwargs["state"] = io.StringIO(json.dumps(parse_state(state.read())))
            super().invoke(*args, **kwargs)
        except ConfigValidationError as exc:
            # Caught here, not by the SDK's command, so that the sentence is the last line on
            # stderr (what `meltano config test` and orchestrators show), not its summary.
            cls.logger.error("%s", config_error_sentence(exc))  # noqa: TRY400
            raise click.exceptions.Exit(1) from None
        except TapUserError as exc:
            cls.logger.error("%s", exc)  # noqa: TRY400
            raise click.exceptions.Exit(1) from None
        except (RetriableAPIError, FatalAPIError, requests.RequestException) as exc:
            # Retries are spent (or the answer can never succeed): one sentence, no traceback.
            cls.logger.error("%s", gave_up_sentence(exc))  # noqa: TRY400
            raise click.exceptions.Exit(1) from None
        finally:
            gc.unfreeze()

    @property
    def mode(self) -> AuthMode:
        """The resolved auth mode."""
        return self.auth_plan.mode


def gave_up_sentence(exc: BaseException) -> str:
    """Say why a run stopped after its retries, and that a rerun resumes from its last state."""
    resume = "run it again later: it resumes from the last state this run emitted."
    if isinstance(exc, RetriableAPIError):
        what = str(exc).removesuffix("; retrying.").rstrip(".")
        return f"{what} on every retry, so the run stopped; {resume}"
    if isinstance(exc, requests.RequestException):
        url = str(getattr(exc.request, "url", "") or "")
        host = urlsplit(url).netloc or "Confluence"
        return (
            f"{host} could not be reached ({type(exc).__name__}) even after retries, so the "
            f"run stopped; check {setting_for_url(url)} and the network, then {resume}"
        )
    return f"{exc} The run stopped; fix the cause, then {resume}"
