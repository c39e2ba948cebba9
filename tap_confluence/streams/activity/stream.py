"""The user_activity stream: each user's latest activity per source (audit, content, admin).

Confluence Cloud has no last-login field, so activity is assembled from what the APIs give:
audit records a user authored, content a user created or last updated (CQL search), and,
with an organization API key, the Admin API's last active date. Each source is a state
partition with its own bookmark, and a row is emitted only when a user's activity from that
source is newer than what earlier runs emitted, at most once per user per source per run.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from typing_extensions import override

from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.sdk_compat import StateAtOwnPoints, write_state_now
from tap_confluence.settings.rules import check_admin_settings
from tap_confluence.streams.activity.admin_source import (
    ADMIN_OVERLAP_MS,
    AdminSource,
    check_admin_status,
)
from tap_confluence.streams.activity.audit_source import AuditSource
from tap_confluence.streams.activity.bookmarks import REPLICATION_KEY, load_ledger, save_ledger
from tap_confluence.streams.activity.content_source import (
    CONTENT_SCOPES,
    DEFAULT_CONTENT_LOOKBACK_MINUTES,
    SEARCH_PATH,
    ContentSource,
)
from tap_confluence.streams.activity.ledger import SharedAuditRead
from tap_confluence.streams.audit.reader import AUDIT_SCOPES
from tap_confluence.streams.audit.rows import iso_to_ms, ms_to_iso

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import requests
    from singer_sdk.helpers.types import Context

    from tap_confluence.http.limits import PageSizeGovernor

MINUTE_MS = 60_000


class UserActivityStream(StateAtOwnPoints, ConfluenceStream):
    """Each user's latest activity per source; rows only when a source shows something newer."""

    name = "user_activity"
    path = SEARCH_PATH
    primary_keys = ("cloudId", "accountId", "source")
    replication_key = REPLICATION_KEY
    # Rows of a partition go out oldest first; the ledger, not the SDK, decides the bookmark,
    # because a late activity may be older than the bookmark and still be news for its user.
    is_sorted = True
    check_sorted = False

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
        if self.site.missing_scopes(scopes):
            self.logger.warning(
                "Skipping user_activity from %s: the OAuth token was not granted %s.",
                source,
                " or ".join(" and ".join(sorted(s)) for s in scopes),
            )
            return
        state = self.get_context_state(context)
        if source == "audit":
            overlap = int(self.config.get("audit_lookback_minutes", 60)) * MINUTE_MS
        else:
            minutes = self.config.get("content_lookback_minutes", DEFAULT_CONTENT_LOOKBACK_MINUTES)
            overlap = int(minutes) * MINUTE_MS
        ledger = load_ledger(source, state, overlap, self._start_ms())
        if source == "audit":
            shared = self.site.shared_audit
            # The tap puts a SharedAuditRead there when both streams are selected.
            reused = shared if isinstance(shared, SharedAuditRead) else None
            latest = AuditSource(self, reused).read(ledger.lower)
        else:
            latest = ContentSource(self).read(ledger.lower)
        emitted = 0
        for account_id, at_ms, detail in latest.oldest_first():
            if ledger.observe(account_id, at_ms):
                emitted += 1
                yield self._row(account_id, source, at_ms, detail)
        save_ledger(ledger, state)
        # The ledger changed even when no row was emitted: write STATE now.
        write_state_now(self)
        self.logger.info(
            "user_activity: %s: %d events by %d users read, %d rows with newer activity.",
            source,
            latest.events,
            len(latest.by_user),
            emitted,
        )

    def _admin(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        state = self.get_context_state(context)
        ledger = load_ledger("admin", state, ADMIN_OVERLAP_MS, None)
        for account_id, at_ms, detail in AdminSource(self).emitted(state, ledger):
            yield self._row(account_id, "admin", at_ms, detail)

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

    @override
    def validate_status(
        self, response: requests.Response, *, governor: PageSizeGovernor | None = None
    ) -> None:
        """Admin API errors name org_id and org_api_key; the rest as for every stream."""
        check_admin_status(response)
        super().validate_status(response, governor=governor)
