"""The license_subscriptions stream: one seat snapshot per site per UTC day."""

from __future__ import annotations

import datetime as dt
import typing as t

from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from typing_extensions import override

from tap_confluence.errors import (
    HostUnreachableError,
    RunHaltedError,
    StreamAccessError,
    TapUserError,
)
from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.streams.user_search import SEARCH_USER_CAP, UserSearch

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.helpers.types import Context

LICENSE_PATH = "/wiki/rest/license/1.0/license"
CONFIG_SCOPES = (
    frozenset({"read:configuration:confluence"}),
    frozenset({"manage:confluence-configuration"}),
)


class LicenseSubscriptionsStream(ConfluenceStream):
    """Edition, licensed users, purchased and remaining seats, as Snow Atlas reports them."""

    name = "license_subscriptions"
    path = "/wiki/rest/api/settings/systemInfo"
    primary_keys = ("cloudId", "snapshotDate")
    replication_key = None
    required_scopes = CONFIG_SCOPES
    permission_hint = "the 'Can use' global permission and a configuration scope"

    @override
    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One row: systemInfo, then the licence endpoints or a count of licensed users."""
        info = self.fetch_json(f"{self.url_base}{self.path}")
        row: dict[str, t.Any] = {
            "snapshotDate": dt.datetime.now(dt.UTC).date().isoformat(),
            "edition": info.get("edition"),
            "siteTitle": info.get("siteTitle"),
            "baseUrl": info.get("baseUrl"),
            "licensedUsers": None,
            "purchasedSeats": None,
            "remainingSeats": None,
            "seatSource": None,
        }
        counts = self._licence_counts()
        if counts is not None:
            row.update(counts, seatSource="license_api")
        else:
            row["licensedUsers"] = self._count_licensed_users()
            row["seatSource"] = "user_search" if row["licensedUsers"] is not None else None
        yield row

    def _licence_counts(self) -> dict[str, int | None] | None:
        auth = self.site.license_authenticator
        site = self.site.license_site_url
        if auth is None or not site:
            return None
        values: dict[str, t.Any] = {}
        for what in ("userCount", "maxUsers", "remainingSeats"):
            endpoint = f"{LICENSE_PATH}/{what}"
            try:
                values[what] = self.fetch_json(f"{site}{endpoint}", auth=auth).get("count")
            except (RunHaltedError, HostUnreachableError):
                raise
            except (StreamAccessError, TapUserError, FatalAPIError, RetriableAPIError) as exc:
                # Unofficial and unsupported (CONFCLOUD-82766): it may refuse the token, be
                # gone (404/410) or answer a web page; none of that may end the run.
                self.logger.warning(
                    "license_subscriptions: the unofficial licence endpoint %s cannot be used "
                    "(%s); Atlassian does not support it and may have removed it, so "
                    "licensedUsers is counted from search/user instead and purchasedSeats and "
                    "remainingSeats stay empty (seatSource user_search). It needs a classic "
                    "API token of a site administrator while it exists.",
                    endpoint,
                    _why(exc),
                )
                return None
        return {
            "licensedUsers": _int_or_none(values["userCount"]),
            "purchasedSeats": _int_or_none(values["maxUsers"]),
            "remainingSeats": _int_or_none(values["remainingSeats"]),
        }

    def _count_licensed_users(self) -> int | None:
        """Count licensed users by paging search/user (as Snow Atlas does without Basic auth)."""
        search = UserSearch(self, "none")
        try:
            total = sum(1 for _ in search)
        except StreamAccessError as exc:
            self.logger.warning("license_subscriptions: cannot count licensed users: %s", exc)
            return None
        if search.reached_cap:
            self.logger.warning(
                "license_subscriptions: search/user stops at %d users, so licensedUsers is a "
                "lower bound; set site_url, email and api_token to read the licence endpoints.",
                SEARCH_USER_CAP,
            )
        return total


def _why(exc: Exception) -> str:
    """Return a short reason: the HTTP status when there was one, else what was wrong."""
    status = getattr(exc, "status", None)
    if status == 410:
        return "410 Gone"
    if status is not None:
        return f"HTTP {status}"
    if "not JSON" in str(exc):
        return "it answered a web page, not JSON"
    return str(exc).removeprefix("license_subscriptions: ").rstrip(".")[:160]


def _int_or_none(value: t.Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
