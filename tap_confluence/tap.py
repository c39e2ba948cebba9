"""The tap: its settings and the streams it offers."""

from __future__ import annotations

from singer_sdk import Stream, Tap
from singer_sdk import typing as th


class TapConfluence(Tap):
    """Extracts users, groups, licence seats and audit records from Confluence Cloud."""

    name = "tap-confluence"

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
            "email", th.StringType, description="Atlassian account email for API-token auth."
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
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        """Return the streams this tap offers."""
        return []
