"""The users stream: licensed users and guests from search/user, accountStatus from user/bulk."""

from __future__ import annotations

import typing as t
from urllib.parse import quote

from tap_confluence.client import ConfluenceStream, log_progress_every
from tap_confluence.conform import conform, field_types

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

#: search/user returns at most this many users per query, then stops without saying so.
SEARCH_USER_CAP = 10_000
#: user/bulk returns at most 200 users per call.
BULK_MAX_IDS = 200
#: user/bulk request lines over 8 KiB are refused (CONFCLOUD-76894). The query gets the 8 KiB less
#: 512 bytes, which covers the method, the gateway path with its cloud id (about 75 bytes) and the
#: protocol with room to spare; a wider margin only costs extra calls.
BULK_MAX_QUERY_BYTES = 8 * 1024 - 512

#: Atlassian account ids are at most 128 characters.
MAX_ACCOUNT_ID_LENGTH = 128

#: sitePermissionTypeFilter value -> the tag each record gets in ``sitePermission``.
PERMISSION_FILTERS = (("none", "licensed"), ("externalCollaborator", "guest"))

CONTENT_SCOPE = frozenset({"read:content-details:confluence"})


def bulk_batches(account_ids: list[str]) -> Iterator[list[str]]:
    """Split ids into user/bulk calls of at most 200 ids and a request line under the limit."""
    batch: list[str] = []
    size = 0
    for account_id in account_ids:
        cost = len("&accountId=") + len(quote(account_id, safe=""))
        if batch and (len(batch) >= BULK_MAX_IDS or size + cost > BULK_MAX_QUERY_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(account_id)
        size += cost
    if batch:
        yield batch


class UsersStream(ConfluenceStream):
    """Licensed users and guests of the site, each tagged with which, plus accountStatus."""

    name = "users"
    path = "/wiki/rest/api/search/user"
    primary_keys = ("cloudId", "accountId")
    replication_key = None
    activates_versions = True
    required_scopes = (CONTENT_SCOPE,)
    permission_hint = "the 'Can use' global permission (and the read:content-details scope)"
    page_size = 200
    _types: dict[str, tuple[str, ...]] | None = None

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        """Search all users of one permission type, 200 per page (the API's maximum)."""
        params = super().get_url_params(context, next_page_token)
        params["cql"] = "type=user"
        params["sitePermissionTypeFilter"] = (context or {}).get("filter", "none")
        return params

    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Licensed users then guests, enriched in user/bulk-sized batches."""
        progress = log_progress_every(5.0)
        total = 0
        for api_filter, tag in PERMISSION_FILTERS:
            seen = 0
            pending: list[dict[str, t.Any]] = []
            skipped = 0
            for result in self.request_records({"filter": api_filter}):
                user = dict(result.get("user") or {}) if isinstance(result, dict) else {}
                account_id = user.get("accountId")
                if not isinstance(account_id, str) or not account_id.strip():
                    skipped += 1
                    continue
                user["sitePermission"] = tag
                user["lastModified"] = result.get("lastModified")
                pending.append(user)
                seen += 1
                if len(pending) >= 2 * BULK_MAX_IDS:
                    # Send only full batches now; the partial last one waits for more users,
                    # so user/bulk calls stay as few as the id and line limits allow.
                    *full, _partial = bulk_batches([u["accountId"] for u in pending])
                    done = sum(len(b) for b in full)
                    yield from self._with_status(pending[:done])
                    total += done
                    pending = pending[done:]
                    if progress():
                        self.logger.info("users: %d records so far (%s).", total, tag)
            yield from self._with_status(pending)
            total += len(pending)
            if skipped:
                self.logger.warning(
                    "users: skipped %d %s search results without a text accountId, the key "
                    "every row needs; the API returned malformed users.",
                    skipped,
                    tag,
                )
            if seen >= SEARCH_USER_CAP:
                self.mark_incomplete()
                self.logger.warning(
                    "users: search/user stopped at %d %s users, its per-query cap; the site may "
                    "have more, so users and the licensedUsers count may be incomplete.",
                    seen,
                    tag,
                )

    def _with_status(self, users: list[dict[str, t.Any]]) -> Iterator[dict[str, t.Any]]:
        """Fill accountStatus from user/bulk (search/user does not return it)."""
        status: dict[str, t.Any] = {}
        # An id longer than any Atlassian issues would only make user/bulk refuse the batch.
        ids = [u["accountId"] for u in users if len(u["accountId"]) <= MAX_ACCOUNT_ID_LENGTH]
        for batch in bulk_batches(ids):
            body = self.fetch_json(
                f"{self.url_base}/wiki/rest/api/user/bulk",
                [("limit", BULK_MAX_IDS), *(("accountId", a) for a in batch)],
            )
            for found in body.get("results") or []:
                status[found.get("accountId")] = found
        for user in users:
            full = status.get(user["accountId"], {})
            user["accountStatus"] = full.get("accountStatus")
            if user.get("locale") is None and full.get("locale") is not None:
                user["locale"] = full["locale"]
            yield self._shape(user)

    def _shape(self, user: dict[str, t.Any]) -> dict[str, t.Any]:
        # Links and expandables describe the API, not the person.
        for noise in ("_links", "_expandable", "operations", "details", "personalSpace"):
            user.pop(noise, None)
        if self._types is None:
            self._types = field_types(self.schema)
        changed = conform(user, self._types)
        if changed:
            self.logger.warning(
                "users: %s of user %s had the wrong type and were converted to text or "
                "emptied; the API returned a malformed user.",
                ", ".join(changed),
                user["accountId"][:64],
            )
        return user
