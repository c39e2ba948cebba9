"""The license_subscriptions stream: one seat snapshot per site per UTC day."""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_confluence.client import ConfluenceStream
from tap_confluence.errors import StreamAccessError, TapUserError
from tap_confluence.users import SEARCH_USER_CAP

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
        auth = self.confluence_tap.license_authenticator
        site = self.confluence_tap.connection_plan.license_site_url
        if auth is None or not site:
            return None
        try:
            values = {
                what: self.fetch_json(f"{site}{LICENSE_PATH}/{what}", auth=auth).get("count")
                for what in ("userCount", "maxUsers", "remainingSeats")
            }
        except (StreamAccessError, TapUserError) as exc:
            self.logger.warning(
                "license_subscriptions: the site's licence endpoints refused email and "
                "api_token (%s); purchasedSeats and remainingSeats stay empty and "
                "licensedUsers is counted from users instead. They need a classic API token "
                "of a site administrator.",
                type(exc).__name__,
            )
            return None
        return {
            "licensedUsers": _int_or_none(values["userCount"]),
            "purchasedSeats": _int_or_none(values["maxUsers"]),
            "remainingSeats": _int_or_none(values["remainingSeats"]),
        }

    def _count_licensed_users(self) -> int | None:
        """Count licensed users by paging search/user (as Snow Atlas does without Basic auth)."""
        url = f"{self.url_base}/wiki/rest/api/search/user"
        params: dict[str, t.Any] = {
            "cql": "type=user",
            "sitePermissionTypeFilter": "none",
            "limit": 200,
            "start": 0,
        }
        total = 0
        try:
            while True:
                body = self.fetch_json(url, params)
                results = body.get("results") or []
                total += len(results)
                if len(results) < params["limit"] or not (body.get("_links") or {}).get("next"):
                    break
                params["start"] += len(results)
        except StreamAccessError as exc:
            self.logger.warning("license_subscriptions: cannot count licensed users: %s", exc)
            return None
        if total >= SEARCH_USER_CAP:
            self.logger.warning(
                "license_subscriptions: search/user stops at %d users, so licensedUsers is a "
                "lower bound; set site_url, email and api_token to read the licence endpoints.",
                SEARCH_USER_CAP,
            )
        return total


def _int_or_none(value: t.Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
