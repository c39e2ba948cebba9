"""The tap: its settings, the auth-combination check and the streams it offers."""

from __future__ import annotations

import gc
import io
import json
import typing as t
from urllib.parse import urlsplit

import click
import requests
from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from typing_extensions import override

from tap_confluence.errors import TapUserError
from tap_confluence.http.retry import setting_for_url
from tap_confluence.records.writer import BlockWriter
from tap_confluence.sdk_compat import EndOfRunTap
from tap_confluence.settings.auth import AuthPlan, resolve_auth
from tap_confluence.settings.rules import (
    check_admin_settings,
    check_secret_types,
    check_store_settings,
    config_error_sentence,
    settings_warnings,
)
from tap_confluence.settings.state import parse_state
from tap_confluence.site.connection import SiteConnection
from tap_confluence.streams import STREAM_TYPES
from tap_confluence.streams.activity.ledger import SharedAuditRead

if t.TYPE_CHECKING:
    pass


class TapConfluence(EndOfRunTap):
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
            "audit_helper_processes",
            th.IntegerType,
            description=(
                "Processes that decode and hash audit pages beside the tap during a backfill "
                "(0 to 8; 0: none). Unset: one per core, up to 4, and none on one core."
            ),
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
        """Validate the settings before anything else can send a request."""
        validate = kwargs.get("validate_config", True)
        if validate:
            # Before the SDK's schema validation, which would print a wrong-typed secret.
            check_secret_types(kwargs.get("config"))
        # discover_streams runs inside the SDK's constructor and needs the connection.
        self.site = SiteConnection({}, self.logger)
        super().__init__(*args, **kwargs)
        plan: AuthPlan | None = None
        if validate:
            for warning in settings_warnings(self.config, self.config_jsonschema["properties"]):
                self.logger.warning("%s", warning)
            plan = resolve_auth(self.config)
            check_admin_settings(self.config)
            check_store_settings(self.config)
        self.site.configure(self.config, plan)

    @override
    def discover_streams(self) -> list[Stream]:
        """Return the streams this tap offers (the catalog does not depend on the config)."""
        return [stream_type(tap=self, site=self.site) for stream_type in STREAM_TYPES]

    # Sync.

    @override
    def before_run(self) -> None:
        """Let audit_records hand its read to user_activity when both are selected."""
        both = all(self.streams[name].selected for name in ("audit_records", "user_activity"))
        self.site.shared_audit = SharedAuditRead() if both else None

    @override
    def end_of_run(self) -> None:
        """Fail the run, in one sentence per stream, if a stream ended for want of access."""
        ended = self.site.ended
        if ended:
            names = " ".join(str(e) for e in ended)
            msg = f"{len(ended)} stream(s) ended early. {names}"
            raise TapUserError(msg)

    @classmethod
    @override
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
    @override
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
