"""The user_activity stream: each user's latest activity per source (audit, content, admin).

Confluence Cloud has no last-login field, so activity is assembled from what the APIs give:
audit records a user authored, content a user created or last updated (CQL search), and,
with an organization API key, the Admin API's last active date. Each source is a state
partition with its own bookmark, and a row is emitted only when a user's activity from that
source is newer than what earlier runs emitted, at most once per user per source per run.
"""

from __future__ import annotations

import datetime as dt
import time
import typing as t
from urllib.parse import parse_qs, quote, urlsplit

from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError

from tap_confluence.activity_ledger import Latest, Ledger, shared_audit_read
from tap_confluence.audit import AUDIT_SCOPES, AuditPage, iso_to_ms, ms_to_iso
from tap_confluence.audit_windows import AuditWindowWalker
from tap_confluence.auth import AtlassianOAuthAuthenticator
from tap_confluence.client import ConfluenceStream, log_progress_every
from tap_confluence.config import fail
from tap_confluence.errors import StreamAccessError
from tap_confluence.request_gate import RequestGate

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    import requests
    from singer_sdk.helpers.types import Context

    from tap_confluence.audit import AuditRecordsStream
    from tap_confluence.users import UsersStream

MINUTE_MS = 60_000
DAY_MS = 86_400_000
#: Content search dates have minute resolution: re-read one minute before the bookmark.
CONTENT_OVERLAP_MS = MINUTE_MS
#: Admin API dates lag up to 24 hours, and a seat holder may get their first row long after
#: the newest date seen (newly licensed, or never asked before). Remembering everyone active in
#: the last 120 days (90-day idle-seat window plus slack) gives every such user a row; the cost
#: is about 55 bytes of state per user active in that window.
ADMIN_OVERLAP_MS = 120 * DAY_MS
CONTENT_TYPES = "page, blogpost, comment, attachment"
CONTENT_SCOPES = (frozenset({"search:confluence"}), frozenset({"read:content-details:confluence"}))
#: How often (in users) an Admin API pass saves where it is, so a killed run resumes there.
ADMIN_CHECKPOINT_USERS = 100


def check_admin_settings(config: Mapping[str, t.Any]) -> bool:
    """Tell whether the admin source is on; one sentence when only half of it is set."""
    given = [k for k in ("org_id", "org_api_key") if str(config.get(k) or "").strip()]
    if len(given) == 1:
        missing = "org_api_key" if given == ["org_id"] else "org_id"
        fail(
            f"The Admin API source of user_activity needs {missing} as well as {given[0]}; "
            "set both (admin.atlassian.com > Settings > API keys) or neither."
        )
    return len(given) == 2


class _NotInOrganizationError(FatalAPIError):
    """The Admin API does not know this account (it is not managed by the organization)."""


class UserActivityStream(ConfluenceStream):
    """Each user's latest activity per source; rows only when a source shows something newer."""

    name = "user_activity"
    path = "/wiki/rest/api/search"
    primary_keys = ("cloudId", "accountId", "source")
    replication_key = "lastActivityAt"
    # Rows of a partition go out oldest first; the ledger, not the SDK, decides the bookmark,
    # because a late activity may be older than the bookmark and still be news for its user.
    is_sorted = True
    check_sorted = False
    # The stream writes STATE itself at points where the ledger is consistent.
    STATE_MSG_FREQUENCY = 10**9
    page_size = 200

    @property
    def admin_enabled(self) -> bool:
        """The admin source runs only when org_id and org_api_key are both set."""
        return check_admin_settings(self.config)

    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        """One state partition per source, so each resumes on its own bookmark."""
        sources = ["audit", "content", *(["admin"] if self.admin_enabled else [])]
        return [{"source": s} for s in sources]

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
            else CONTENT_OVERLAP_MS
        )
        ledger = Ledger.load(state, self._bookmark_ms(state), overlap, self._start_ms())
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

    @staticmethod
    def _bookmark_ms(state: Mapping[str, t.Any]) -> int | None:
        raw = state.get("replication_key_value")
        return _iso_ms(str(raw)) if raw else None

    def _save(self, ledger: Ledger, state: dict[str, t.Any]) -> None:
        # The ledger decides the bookmark: the SDK would keep the last row's value, which
        # for late or unordered activity may be older than what was emitted before.
        bookmark = ledger.save(state)
        if bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = ms_to_iso(bookmark)

    def _checkpoint(self) -> None:
        """Write STATE now: the ledger changed even when no row was emitted."""
        self.state_manager.is_flushed = False
        self._write_state_message()

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
        auth = self.confluence_tap.api_authenticator
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
        shared = shared_audit_read(self._tap)
        if shared.covers_up_from(lo):
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
        # The audit stream's own tuning: retention floor, compact pages, concurrent windows.
        audit = t.cast("AuditRecordsStream", self.confluence_tap.streams["audit_records"])
        url = f"{self.url_base}{audit.path}"
        requests_sent = 0
        if until - lo > 366 * DAY_MS:
            lo = max(lo, audit.retention_floor(until))
            requests_sent += 1

        gate = RequestGate(audit.concurrency)

        def fetch(start_ms: int, end_ms: int, offset: int, limit: int) -> AuditPage:
            params = {"startDate": start_ms, "endDate": end_ms, "start": offset, "limit": limit}
            return t.cast("AuditPage", self.fetch_json(url, params, parse=AuditPage, gate=gate))

        walker = AuditWindowWalker(
            fetch,
            page_size=audit.page_size,
            target_pages=audit.target_pages,
            workers=audit.concurrency,
        )
        try:
            for window in walker.walk(lo, until):
                latest.offer_audit(record for _, record in window.take())
        except StreamAccessError as exc:
            raise self._source_error(
                "audit",
                exc,
                "the Confluence Administrator global permission and read:audit-log:confluence",
            ) from None
        return requests_sent + walker.requests

    # content: the newest page, blog post, comment or attachment each user created or updated.

    def _content_cql(self, lower: int | None) -> str:
        cql = f"type in ({CONTENT_TYPES})"
        if lower is not None:
            minute = dt.datetime.fromtimestamp(max(lower, 0) // 1000, tz=dt.UTC)
            cql += f' and lastmodified >= "{minute:%Y/%m/%d %H:%M}"'
        return cql + " order by lastmodified asc"

    def _read_content(self, ledger: Ledger) -> Latest:
        latest = Latest()
        params: dict[str, t.Any] | None = {
            "cql": self._content_cql(ledger.lower),
            "limit": self.page_size,
            "expand": "content.history,content.history.lastUpdated",
        }
        url = f"{self.url_base}{self.path}"
        requests_sent, progress, seen_links = 0, log_progress_every(5.0), set()
        try:
            while url:
                body = self.fetch_json(url, params)
                requests_sent += 1
                results = body.get("results") or []
                for result in results:
                    self._offer_content(latest, result)
                # The API may cap the page size below ours: follow next links, not sizes.
                link = (body.get("_links") or {}).get("next")
                url = self.rebase_link(str(link)) if link and results else ""
                params = None
                if url in seen_links:
                    msg = f"user_activity: content search returned the same next link twice: {url}"
                    raise FatalAPIError(msg)
                seen_links.add(url)
                if progress():
                    self.logger.info("user_activity: content: %d items read so far.", latest.events)
        except StreamAccessError as exc:
            raise self._source_error(
                "content", exc, "search:confluence or read:content-details:confluence"
            ) from None
        self.logger.info("user_activity: content: %d search requests.", requests_sent)
        return latest

    @staticmethod
    def _offer_content(latest: Latest, result: Mapping[str, t.Any]) -> None:
        content = result.get("content") or {}
        history = content.get("history") or {}
        kind, title = content.get("type") or "content", content.get("title") or ""
        updated = history.get("lastUpdated") or {}
        if updated.get("when"):
            latest.offer(
                (updated.get("by") or {}).get("accountId"),
                _iso_ms(str(updated["when"])),
                f"{kind} updated: {title}",
            )
        if history.get("createdDate"):
            latest.offer(
                (history.get("createdBy") or {}).get("accountId"),
                _iso_ms(str(history["createdDate"])),
                f"{kind} created: {title}",
            )

    # admin: the Admin API's last active date in Confluence, one request per licensed user.

    def _admin(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        state = self.get_context_state(context)
        ledger = Ledger.load(state, self._bookmark_ms(state), ADMIN_OVERLAP_MS, None)
        users = self._licensed_account_ids()
        cursor = state.get("cursor")
        start = users.index(cursor) + 1 if cursor in users else 0
        if start and "passLower" in state:
            # A resumed pass keeps the lower bound it started with: the bookmark has moved
            # with the users already done, and the rest must be judged as they would have been.
            ledger.lower = state["passLower"]
        state["passLower"] = ledger.lower
        if start:
            self.logger.info(
                "user_activity: admin: resuming a pass after %d of %d users.", start, len(users)
            )
        auth = BearerTokenAuthenticator(token=str(self.config["org_api_key"]))
        base = str(self.config["api_url"]).rstrip("/")
        org = quote(str(self.config["org_id"]), safe="")
        found = missing = emitted = 0
        progress = log_progress_every(5.0)
        for done, account_id in enumerate(users[start:], start=start + 1):
            url = f"{base}/admin/v1/orgs/{org}/directory/users/{quote(account_id, safe=':')}"
            try:
                day = self._last_active_day(f"{url}/last-active-dates", auth)
            except _NotInOrganizationError:
                missing += 1
                day = None
            if day is not None:
                found += 1
                at_ms = iso_to_ms(dt.datetime.fromisoformat(day))
                if ledger.observe(account_id, at_ms):
                    emitted += 1
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
        if len(users) > start and missing == len(users) - start:
            msg = (
                f"user_activity from admin: the Admin API knows none of the site's {missing} "
                f"licensed users in organization {self.config['org_id']}; check org_id."
            )
            raise StreamAccessError(msg)
        self.logger.info(
            "user_activity: admin: %d users asked, %d with a Confluence date, %d not in the "
            "organization, %d rows with newer activity.",
            len(users) - start,
            found,
            missing,
            emitted,
        )

    def _licensed_account_ids(self) -> list[str]:
        # The same search/user listing (and paging) the users stream reads.
        users = t.cast("UsersStream", self.confluence_tap.streams["users"])
        ids: list[str] = []
        try:
            for result in users.request_records({"filter": "none"}):
                account_id = (result.get("user") or {}).get("accountId")
                if account_id:
                    ids.append(str(account_id))
        except StreamAccessError as exc:
            raise self._source_error(
                "admin", exc, "the user search (read:content-details:confluence)"
            ) from None
        return list(dict.fromkeys(ids))

    def _last_active_day(self, url: str, auth: BearerTokenAuthenticator) -> str | None:
        """Return the user's Confluence last active day (YYYY-MM-DD), across result pages."""
        best: str | None = None
        params: dict[str, t.Any] = {}
        for _ in range(20):
            body = self.fetch_json(url, params, auth=auth)
            data = body.get("data") or {}
            for product in data.get("product_access") or []:
                key, day = str(product.get("key") or ""), product.get("last_active")
                if key.startswith("confluence") and day:
                    best = max(best or "", str(day)[:10])
            cursor = _cursor_of((body.get("links") or {}).get("next"))
            if not cursor:
                break
            params = {"cursor": cursor}
        return best

    def validate_status(self, response: requests.Response) -> None:
        """Admin API errors name org_id and org_api_key; the rest as for every stream."""
        path = urlsplit(response.url).path
        if not path.startswith("/admin/") or response.status_code < 400:
            super().validate_status(response)
            return
        status = response.status_code
        if status in (401, 403):
            msg = (
                f"user_activity from admin: the Admin API refused org_api_key ({status}); "
                "create an organization API key at admin.atlassian.com > Settings > API keys "
                "and check org_id."
            )
            raise StreamAccessError(msg)
        if status == 404:
            msg = "not in the organization"
            raise _NotInOrganizationError(msg)
        super().validate_status(response)


def _iso_ms(value: str) -> int:
    return iso_to_ms(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


def _cursor_of(link: t.Any) -> str | None:
    """Return the cursor in a ``links.next`` value (a URL, or the bare cursor)."""
    if not link:
        return None
    text = str(link)
    if "cursor=" in text:
        found = parse_qs(urlsplit(text).query).get("cursor") or []
        return found[0] if found else None
    return text
