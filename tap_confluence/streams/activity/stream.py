"""The user_activity stream: each user's latest activity per source (audit, content, admin).

Confluence Cloud has no last-login field, so activity is assembled from what the APIs give:
audit records a user authored, content a user created or last updated (CQL search), and,
with an organization API key, the Admin API's last active date. Each source is a state
partition with its own bookmark, and a row is emitted only when a user's activity from that
source is newer than what earlier runs emitted, at most once per user per source per run.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
import typing as t
import zoneinfo
from urllib.parse import quote, urlsplit

from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from typing_extensions import override

from tap_confluence.errors import StreamAccessError
from tap_confluence.http.paginators import CursorPaginator, NextLinkPaginator
from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.sdk_compat import StateAtOwnPoints, write_state_now
from tap_confluence.settings.rules import check_admin_settings
from tap_confluence.streams.activity.ledger import (
    Latest,
    Ledger,
    StateShapeError,
    millis,
)
from tap_confluence.streams.audit.pages import iso_to_ms, ms_to_iso
from tap_confluence.streams.audit.reader import AUDIT_SCOPES, AuditReader
from tap_confluence.streams.progress import log_progress_every
from tap_confluence.streams.user_search import UserSearch

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    import requests
    from singer_sdk.helpers.types import Context

    from tap_confluence.http.limits import PageSizeGovernor

MINUTE_MS = 60_000
DAY_MS = 86_400_000
#: Content search dates have minute resolution and the index lags on busy sites: re-read
#: this many minutes before the bookmark unless content_lookback_minutes says otherwise.
DEFAULT_CONTENT_LOOKBACK_MINUTES = 30
#: The westmost offset any zone has (Baker Island): a CQL date written in it starts at or
#: before the moment meant, whatever zone the site reads it in.
WESTMOST = dt.timezone(dt.timedelta(hours=-12), "UTC-12")
#: Admin API dates lag up to 24 hours, and a seat holder may get their first row long after
#: the newest date seen (newly licensed, or never asked before). Remembering everyone active in
#: the last 120 days (90-day idle-seat window plus slack) gives every such user a row; the cost
#: is about 55 bytes of state per user active in that window.
ADMIN_OVERLAP_MS = 120 * DAY_MS
CONTENT_TYPES = "page, blogpost, comment, attachment"
CONTENT_SCOPES = (frozenset({"search:confluence"}), frozenset({"read:content-details:confluence"}))
#: How often (in users) an Admin API pass saves where it is, so a killed run resumes there.
ADMIN_CHECKPOINT_USERS = 100
#: Users refused one after another (403) from the start of a pass before the key itself is
#: taken to lack the permission, rather than each of those users being hidden from it.
ADMIN_ALL_FORBIDDEN = 20
#: Pages of one user's last-active dates read at most (there is one product per entry).
ADMIN_MAX_PAGES = 20


class _NotInOrganizationError(FatalAPIError):
    """The Admin API does not know this account (it is not managed by the organization)."""


class _HiddenUserError(FatalAPIError):
    """The Admin API will not show this key one user (403)."""


class UserActivityStream(StateAtOwnPoints, ConfluenceStream):
    """Each user's latest activity per source; rows only when a source shows something newer."""

    name = "user_activity"
    path = "/wiki/rest/api/search"
    primary_keys = ("cloudId", "accountId", "source")
    replication_key = "lastActivityAt"
    # Rows of a partition go out oldest first; the ledger, not the SDK, decides the bookmark,
    # because a late activity may be older than the bookmark and still be news for its user.
    is_sorted = True
    check_sorted = False
    page_size = 200

    @property
    def admin_enabled(self) -> bool:
        """The admin source runs only when org_id and org_api_key are both set."""
        return check_admin_settings(self.config)

    @property
    @override
    def partitions(self) -> list[dict[str, t.Any]]:
        """One state partition per source, so each resumes on its own bookmark."""
        sources = ["audit", "content", *(["admin"] if self.admin_enabled else [])]
        return [{"source": s} for s in sources]

    @override
    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Read one source and emit its users whose activity is newer than the ledger's."""
        source = str((context or {}).get("source"))
        if source == "admin":
            yield from self._admin(context)
            return
        scopes = AUDIT_SCOPES if source == "audit" else CONTENT_SCOPES
        if self._lacks(scopes):
            self.logger.warning(
                "Skipping user_activity from %s: the OAuth token was not granted %s.",
                source,
                " or ".join(" and ".join(sorted(s)) for s in scopes),
            )
            return
        state = self.get_context_state(context)
        overlap = (
            int(self.config.get("audit_lookback_minutes", 60)) * MINUTE_MS
            if source == "audit"
            else self._content_overlap_ms()
        )
        ledger = self._load_ledger(source, state, overlap, self._start_ms())
        latest = self._read_audit(ledger) if source == "audit" else self._read_content(ledger)
        emitted = 0
        for account_id, at_ms, detail in latest.oldest_first():
            if ledger.observe(account_id, at_ms):
                emitted += 1
                yield self._row(account_id, source, at_ms, detail)
        self._save(ledger, state)
        self._checkpoint()
        self.logger.info(
            "user_activity: %s: %d events by %d users read, %d rows with newer activity.",
            source,
            latest.events,
            len(latest.by_user),
            emitted,
        )

    def _content_overlap_ms(self) -> int:
        minutes = self.config.get("content_lookback_minutes", DEFAULT_CONTENT_LOOKBACK_MINUTES)
        return int(minutes) * MINUTE_MS

    def _load_ledger(
        self, source: str, state: Mapping[str, t.Any], overlap: int, floor: int | None
    ) -> Ledger:
        """Read a source's ledger from its state, or end the source in one sentence."""
        try:
            bookmark = _bookmark_ms(state)
            return Ledger.load(state, bookmark, overlap, floor)
        except (StateShapeError, ValueError) as exc:
            msg = (
                f"user_activity from {source}: its state is unusable ({exc}); pass the last "
                "STATE the tap emitted, or none to read this source afresh."
            )
            raise StreamAccessError(msg) from None

    def _save(self, ledger: Ledger, state: dict[str, t.Any]) -> None:
        # The ledger decides the bookmark: the SDK would keep the last row's value, which
        # for late or unordered activity may be older than what was emitted before.
        bookmark = ledger.save(state)
        if bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = ms_to_iso(bookmark)

    def _checkpoint(self) -> None:
        """Write STATE now: the ledger changed even when no row was emitted."""
        write_state_now(self)

    def _row(self, account_id: str, source: str, at_ms: int, detail: str) -> dict[str, t.Any]:
        at = ms_to_iso(at_ms)
        return {
            "accountId": account_id,
            "source": source,
            "lastActivityAt": at,
            "lastActivityDate": at[:10],
            "detail": detail[:500],
        }

    def _start_ms(self) -> int | None:
        raw = self.config.get("start_date")
        return iso_to_ms(dt.datetime.fromisoformat(str(raw))) if raw else None

    def _lacks(self, scopes: tuple[frozenset[str], ...]) -> bool:
        auth = self.site.api_authenticator
        if not isinstance(auth, AtlassianOAuthAuthenticator):
            return False
        granted = auth.granted_scopes()
        return granted is not None and not any(option <= granted for option in scopes)

    def _source_error(self, source: str, exc: StreamAccessError, needs: str) -> StreamAccessError:
        return StreamAccessError(
            f"user_activity from {source} needs {needs} ({exc})", scope_missing=exc.scope_missing
        )

    # audit: the newest record each user authored.

    def _read_audit(self, ledger: Ledger) -> Latest:
        lo = max(ledger.lower or 0, 0)
        shared = self.site.shared_audit
        if shared is not None and shared.covers_up_from(lo):
            # audit_records read this run's log already: reuse it, reading only what lies
            # before its start (when this stream's bookmark is older than its own).
            latest, until = shared.latest, shared.end_ms
            gap_requests = (
                self._walk_audit(latest, lo, shared.start_ms - 1) if lo < shared.start_ms else 0
            )
            self.logger.info(
                "user_activity: audit: reused audit_records' read of %s to %s; %d requests "
                "for the part before it.",
                ms_to_iso(shared.start_ms),
                ms_to_iso(until),
                gap_requests,
            )
            return latest
        latest, until = Latest(), int(time.time() * 1000)
        requests_sent = self._walk_audit(latest, lo, until)
        self.logger.info(
            "user_activity: audit: read %s (or the retention floor) to %s in %d requests.",
            ms_to_iso(lo),
            ms_to_iso(until),
            requests_sent,
        )
        return latest

    def _walk_audit(self, latest: Latest, lo: int, until: int) -> int:
        """Offer every record in ``[lo, until]`` to ``latest``; return the requests sent."""
        # Read as audit_records reads: retention floor, compact pages, concurrent windows.
        reader = AuditReader(self)
        lo = reader.start(lo, until)
        walker = reader.walker()
        try:
            for window in walker.walk(lo, until):
                latest.offer_audit(record for _, record in window.take())
        except StreamAccessError as exc:
            raise self._source_error(
                "audit",
                exc,
                "the Confluence Administrator global permission and read:audit-log:confluence",
            ) from None
        return reader.probes + walker.requests

    # content: the newest page, blog post, comment or attachment each user created or updated.

    def _content_cql(self, lower: int | None, zone: dt.tzinfo) -> str:
        """CQL for content changed at or after ``lower``, its date written in ``zone``."""
        cql = f"type in ({CONTENT_TYPES})"
        if lower is not None:
            # Cut to the minute: the window starts at or before the moment meant.
            minute = dt.datetime.fromtimestamp(max(lower, 0) // 1000, tz=dt.UTC).astimezone(zone)
            cql += f' and lastmodified >= "{minute:%Y/%m/%d %H:%M}"'
        return cql + " order by lastmodified asc"

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
                body = self.fetch_json(f"{self.url_base}{path}")
            except (StreamAccessError, FatalAPIError, RetriableAPIError):
                continue  # a scope this grant lacks, or a route gone: one zone less to know
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                names.append(value.strip())
        return names

    def _read_content(self, ledger: Ledger) -> Latest:
        latest = Latest()
        params = {
            "cql": self._content_cql(ledger.lower, self._cql_zone(ledger.lower)),
            "limit": self.page_size,
            "expand": "content.history,content.history.lastUpdated",
        }
        url = f"{self.url_base}{self.path}"
        progress = log_progress_every(5.0)
        paginator = NextLinkPaginator(self.rebase_link)
        malformed = 0
        try:
            for body in self.fetch_pages(url, params, paginator):
                for result in self.page_records(body):
                    malformed += not self._offer_content(latest, result)
                if progress():
                    self.logger.info("user_activity: content: %d items read so far.", latest.events)
        except StreamAccessError as exc:
            raise self._source_error(
                "content", exc, "search:confluence or read:content-details:confluence"
            ) from None
        if malformed:
            self.logger.warning(
                "user_activity: content: %d search results had no readable history and were "
                "left out; the API returned malformed results.",
                malformed,
            )
        self.logger.info("user_activity: content: %d search requests.", paginator.count)
        return latest

    @staticmethod
    def _offer_content(latest: Latest, result: Mapping[str, t.Any]) -> bool:
        """Offer a result's creation and last update; False when it cannot be read."""
        content = _object(result.get("content"))
        history = _object(content.get("history"))
        kind, title = content.get("type") or "content", content.get("title") or ""
        updated = _object(history.get("lastUpdated"))
        offered = False
        try:
            if updated.get("when"):
                latest.offer(
                    _object(updated.get("by")).get("accountId"),
                    _iso_ms(str(updated["when"])),
                    f"{kind} updated: {title}",
                )
                offered = True
            if history.get("createdDate"):
                latest.offer(
                    _object(history.get("createdBy")).get("accountId"),
                    _iso_ms(str(history["createdDate"])),
                    f"{kind} created: {title}",
                )
                offered = True
        except ValueError:
            return False
        return offered

    # admin: the Admin API's last active date in Confluence. The organization's listing of
    # managed accounts gives it for a page of users per request; only licensed users it does
    # not list (accounts on domains the organization has not claimed) are asked one by one.

    def _admin(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        state = self.get_context_state(context)
        ledger = self._load_ledger("admin", state, ADMIN_OVERLAP_MS, None)
        users = self._licensed_account_ids()
        start = self._resume_point(state, ledger, users)
        auth = BearerTokenAuthenticator(token=str(self.config["org_api_key"]))
        tally: collections.Counter[str] = collections.Counter()
        listed = self._managed_days(auth, set(users[start:]), tally)
        progress = log_progress_every(5.0)
        for done, account_id in enumerate(users[start:], start=start + 1):
            if account_id in listed:
                day = listed[account_id]
                tally["listed"] += 1
                tally["found"] += day is not None
            else:
                tally["asked"] += 1
                day = self._ask_admin(account_id, auth, tally, asked=tally["asked"])
            if day is not None:
                at_ms = iso_to_ms(dt.datetime.fromisoformat(day))
                if ledger.observe(account_id, at_ms):
                    tally["emitted"] += 1
                    yield self._row(
                        account_id, "admin", at_ms, "last active in Confluence (Admin API, daily)"
                    )
            if done % ADMIN_CHECKPOINT_USERS == 0 and done < len(users):
                state["cursor"] = account_id
                self._save(ledger, state)
                self._checkpoint()
            if progress():
                self.logger.info("user_activity: admin: %d of %d users.", done, len(users))
        state.pop("cursor", None)
        state.pop("passLower", None)
        self._save(ledger, state)
        asked = tally["asked"]
        if asked and tally["missing"] == asked and not tally["listed"]:
            msg = (
                f"user_activity from admin: the Admin API knows none of the site's {asked} "
                f"licensed users in organization {self.config['org_id']}; check org_id."
            )
            raise StreamAccessError(msg)
        if tally["hidden"]:
            self.logger.warning(
                "user_activity: admin: skipped %d users the Admin API would not show this key "
                "(403); they get no admin row this run.",
                tally["hidden"],
            )
        self.logger.info(
            "user_activity: admin: %d users from the organization's listing (%d requests), %d "
            "asked one by one; %d with a Confluence date, %d not in the organization, %d rows "
            "with newer activity.",
            tally["listed"],
            tally["list_pages"],
            asked,
            tally["found"],
            tally["missing"],
            tally["emitted"],
        )

    def _managed_days(
        self,
        auth: BearerTokenAuthenticator,
        wanted: set[str],
        tally: collections.Counter[str],
    ) -> dict[str, str | None]:
        """Confluence last active day (or None) of each user in ``wanted`` the listing holds.

        ``GET /admin/v1/orgs/{orgId}/users`` pages the organization's managed accounts, each
        with ``product_access[].last_active``: the same day last-active-dates gives, for a
        page of users per request. An organization far larger than the site would cost more
        pages than ``wanted`` has users, so the listing stops once the rest of it (by its
        ``meta.total``) would; a key that may not list accounts (403; it needs the
        read:accounts:admin scope) or an organization without the listing (404) leaves every
        user to last-active-dates, as before.
        """
        base = str(self.config["api_url"]).rstrip("/")
        org = quote(str(self.config["org_id"]), safe="")
        url = f"{base}/admin/v1/orgs/{org}/users"
        days: dict[str, str | None] = {}
        seen = 0
        try:
            for body in self.fetch_pages(url, {}, CursorPaginator(), auth=auth):
                tally["list_pages"] += 1
                accounts = body.get("data")
                for entry in accounts if isinstance(accounts, list) else []:
                    account = _object(entry)
                    account_id = account.get("account_id")
                    seen += 1
                    if isinstance(account_id, str) and account_id in wanted:
                        days[account_id] = _confluence_day(account.get("product_access"))
                total = _object(body.get("meta")).get("total")
                per_page = max(1, seen // tally["list_pages"])
                if isinstance(total, int) and -(-(total - seen) // per_page) > len(
                    wanted - days.keys()
                ):
                    break  # asking the rest one by one is cheaper than the rest of the list
        except (_HiddenUserError, _NotInOrganizationError) as exc:
            self.logger.warning(
                "user_activity: admin: the Admin API would not list the organization's "
                "managed accounts (%s); asking for each licensed user instead. A key with "
                "the read:accounts:admin scope needs one request per 100 managed users.",
                "403" if isinstance(exc, _HiddenUserError) else "404",
            )
            return {}
        return days

    def _resume_point(self, state: dict[str, t.Any], ledger: Ledger, users: list[str]) -> int:
        """Where a pass killed at a checkpoint goes on: the index after its cursor, else 0."""
        cursor = state.get("cursor")
        start = users.index(cursor) + 1 if cursor in users else 0
        if start and state.get("passLower") is not None:
            # A resumed pass keeps the lower bound it started with: the bookmark has moved
            # with the users already done, and the rest must be judged as they would have been.
            try:
                ledger.lower = millis(state["passLower"], "'passLower'")
            except StateShapeError as exc:
                msg = (
                    f"user_activity from admin: its state is unusable ({exc}); pass the last "
                    "STATE the tap emitted, or none to read this source afresh."
                )
                raise StreamAccessError(msg) from None
        state["passLower"] = ledger.lower
        if start:
            self.logger.info(
                "user_activity: admin: resuming a pass after %d of %d users.", start, len(users)
            )
        return start

    def _ask_admin(
        self,
        account_id: str,
        auth: BearerTokenAuthenticator,
        tally: collections.Counter[str],
        *,
        asked: int,
    ) -> str | None:
        """One user's Confluence last active day; a user the API will not show is counted."""
        base = str(self.config["api_url"]).rstrip("/")
        org = quote(str(self.config["org_id"]), safe="")
        user = quote(account_id, safe=":")
        url = f"{base}/admin/v1/orgs/{org}/directory/users/{user}/last-active-dates"
        try:
            day = self._last_active_day(url, auth)
        except _NotInOrganizationError:
            tally["missing"] += 1
            return None
        except _HiddenUserError:
            # One user the key may not see must not stall the pass at this cursor.
            tally["hidden"] += 1
            if tally["hidden"] == asked >= ADMIN_ALL_FORBIDDEN:
                msg = (
                    f"user_activity from admin: the Admin API refused all of the first "
                    f"{asked} users (403); give org_api_key access to the organization's "
                    "users at admin.atlassian.com > Settings > API keys."
                )
                raise StreamAccessError(msg) from None
            return None
        if day is not None:
            tally["found"] += 1
        return day

    def _licensed_account_ids(self) -> list[str]:
        # The same search/user listing (and paging) the users stream reads.
        ids: list[str] = []
        try:
            for result in UserSearch(self, "none"):
                account_id = _object(result.get("user")).get("accountId")
                if isinstance(account_id, str) and account_id:
                    ids.append(account_id)
        except StreamAccessError as exc:
            raise self._source_error(
                "admin", exc, "the user search (read:content-details:confluence)"
            ) from None
        return list(dict.fromkeys(ids))

    def _last_active_day(self, url: str, auth: BearerTokenAuthenticator) -> str | None:
        """Return the user's Confluence last active day (YYYY-MM-DD), across result pages."""
        best: str | None = None
        pages = self.fetch_pages(url, {}, CursorPaginator(), auth=auth)
        for page, body in enumerate(pages, start=1):
            day = _confluence_day(_object(body.get("data")).get("product_access"))
            if day is not None:
                best = max(best or "", day)
            if page >= ADMIN_MAX_PAGES:
                break
        return best

    @override
    def validate_status(
        self, response: requests.Response, *, governor: PageSizeGovernor | None = None
    ) -> None:
        """Admin API errors name org_id and org_api_key; the rest as for every stream."""
        path = urlsplit(response.url).path
        if not path.startswith("/admin/") or response.status_code < 400:
            super().validate_status(response, governor=governor)
            return
        status = response.status_code
        if status == 401:
            msg = (
                f"user_activity from admin: the Admin API refused org_api_key ({status}); "
                "create an organization API key at admin.atlassian.com > Settings > API keys "
                "and check org_id."
            )
            raise StreamAccessError(msg)
        if status == 403:
            msg = "the Admin API will not show this user"
            raise _HiddenUserError(msg)
        if status == 404:
            msg = "not in the organization"
            raise _NotInOrganizationError(msg)
        super().validate_status(response, governor=governor)


def _bookmark_ms(state: Mapping[str, t.Any]) -> int | None:
    raw = state.get("replication_key_value")
    return _iso_ms(str(raw)) if raw else None


def _iso_ms(value: str) -> int:
    return iso_to_ms(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


def _confluence_day(product_access: t.Any) -> str | None:
    """Return the latest Confluence ``last_active`` day (YYYY-MM-DD) among the products."""
    best: str | None = None
    for entry in product_access if isinstance(product_access, list) else []:
        product = _object(entry)
        key, day = str(product.get("key") or ""), product.get("last_active")
        if key.startswith("confluence") and day:
            best = max(best or "", str(day)[:10])
    return best


def _object(value: t.Any) -> Mapping[str, t.Any]:
    """Return ``value`` when it is a JSON object, else an empty one (the API sent oddities)."""
    return value if isinstance(value, dict) else {}
