"""user_activity from content: the newest page, blog post, comment or attachment each user changed.

Read with CQL search, whose dates Cloud reads in a time zone it does not say, so the search
starts early enough in any of them; re-read results are de-duplicated by the ledger.
"""

from __future__ import annotations

import datetime as dt
import typing as t
import zoneinfo

from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_confluence.errors import StreamAccessError
from tap_confluence.http.paginators import NextLinkPaginator
from tap_confluence.streams.activity.ledger import Latest
from tap_confluence.streams.activity.source import ActivitySource, iso_ms, json_object
from tap_confluence.streams.progress import log_progress_every

if t.TYPE_CHECKING:
    from collections.abc import Mapping

SEARCH_PATH = "/wiki/rest/api/search"
#: Results asked for per search page.
SEARCH_PAGE_SIZE = 200
#: Content search dates have minute resolution and the index lags on busy sites: re-read
#: this many minutes before the bookmark unless content_lookback_minutes says otherwise.
DEFAULT_CONTENT_LOOKBACK_MINUTES = 30
#: The westmost offset any zone has (Baker Island): a CQL date written in it starts at or
#: before the moment meant, whatever zone the site reads it in.
WESTMOST = dt.timezone(dt.timedelta(hours=-12), "UTC-12")
CONTENT_TYPES = "page, blogpost, comment, attachment"
CONTENT_SCOPES = (frozenset({"search:confluence"}), frozenset({"read:content-details:confluence"}))


class ContentSource(ActivitySource):
    """Each user's newest content creation or update from ``lower`` on, by CQL search."""

    name = "content"
    needs = "search:confluence or read:content-details:confluence"

    def read(self, lower: int | None) -> Latest:
        """Each user's newest content activity at or after ``lower`` (None: all content)."""
        client = self.client
        latest = Latest()
        params = {
            "cql": content_cql(lower, self._cql_zone(lower)),
            "limit": SEARCH_PAGE_SIZE,
            "expand": "content.history,content.history.lastUpdated",
        }
        url = f"{client.url_base}{SEARCH_PATH}"
        progress = log_progress_every(5.0)
        paginator = NextLinkPaginator(client.rebase_link)
        malformed = 0
        try:
            for body in client.fetch_pages(url, params, paginator):
                for result in client.page_records(body):
                    malformed += not offer_content(latest, result)
                if progress():
                    self.logger.info("user_activity: content: %d items read so far.", latest.events)
        except StreamAccessError as exc:
            raise self.access_error(exc) from None
        if malformed:
            self.logger.warning(
                "user_activity: content: %d search results had no readable history and were "
                "left out; the API returned malformed results.",
                malformed,
            )
        self.logger.info("user_activity: content: %d search requests.", paginator.count)
        return latest

    def _cql_zone(self, lower: int | None) -> dt.tzinfo:
        """Pick the zone to write CQL dates in so that none starts late, whatever zone reads it.

        Cloud reads a CQL date in the calling user's (or the site's) time zone, not UTC
        (CONFCLOUD-70966). The date is written in the westmost of the zones it may be read
        in (the user's, the site's, UTC): read in any of them it starts at or before the
        moment meant, and re-read results are de-duplicated by the ledger. With no zone
        known at all, the westmost zone on Earth.
        """
        if lower is None:
            return dt.UTC
        at = dt.datetime.fromtimestamp(max(lower, 0) / 1000, tz=dt.UTC)
        zones: list[dt.tzinfo] = []
        for name in self._zone_names():
            try:
                zones.append(zoneinfo.ZoneInfo(name))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.logger.warning("user_activity: content: unknown time zone %r.", name[:60])
        if not zones:
            self.logger.warning(
                "user_activity: content: neither user/current nor settings/systemInfo says "
                "which time zone CQL dates are read in, so they are written in UTC-12 and up "
                "to 14 hours of content is read again (de-duplicated)."
            )
            return WESTMOST
        zones.append(dt.UTC)
        zone = min(zones, key=lambda z: at.astimezone(z).utcoffset() or dt.timedelta(0))
        self.logger.info(
            "user_activity: content: CQL dates written in %s (UTC%s), the westmost of the "
            "user's and the site's time zones and UTC.",
            zone,
            at.astimezone(zone).strftime("%z"),
        )
        return zone

    def _zone_names(self) -> list[str]:
        """List the zones the site may read CQL dates in: the calling user's, the site's."""
        names = []
        for path, key in (
            ("/wiki/rest/api/user/current", "timeZone"),
            ("/wiki/rest/api/settings/systemInfo", "defaultTimeZone"),
        ):
            try:
                body = self.client.fetch_json(f"{self.client.url_base}{path}")
            except (StreamAccessError, FatalAPIError, RetriableAPIError):
                continue  # a scope this grant lacks, or a route gone: one zone less to know
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                names.append(value.strip())
        return names


def content_cql(lower: int | None, zone: dt.tzinfo) -> str:
    """CQL for content changed at or after ``lower``, its date written in ``zone``."""
    cql = f"type in ({CONTENT_TYPES})"
    if lower is not None:
        # Cut to the minute: the window starts at or before the moment meant.
        minute = dt.datetime.fromtimestamp(max(lower, 0) // 1000, tz=dt.UTC).astimezone(zone)
        cql += f' and lastmodified >= "{minute:%Y/%m/%d %H:%M}"'
    return cql + " order by lastmodified asc"


def offer_content(latest: Latest, result: Mapping[str, t.Any]) -> bool:
    """Offer a result's creation and last update; False when it cannot be read."""
    content = json_object(result.get("content"))
    history = json_object(content.get("history"))
    kind, title = content.get("type") or "content", content.get("title") or ""
    updated = json_object(history.get("lastUpdated"))
    events = (
        (updated.get("by"), updated.get("when"), "updated"),
        (history.get("createdBy"), history.get("createdDate"), "created"),
    )
    offered = False
    try:
        for by, when, what in events:
            if when:
                latest.offer(
                    json_object(by).get("accountId"), iso_ms(str(when)), f"{kind} {what}: {title}"
                )
                offered = True
    except ValueError:
        return False
    return offered
