"""The users stream: licensed users and guests from search/user, accountStatus from user/bulk."""

from __future__ import annotations

import typing as t
from urllib.parse import quote

from typing_extensions import override

from tap_confluence.errors import RouteGoneError, StreamAccessError
from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.records.shaping import conform, field_types
from tap_confluence.streams.progress import log_progress_every
from tap_confluence.streams.user_search import (
    SEARCH_USER_CAP,
    SEARCH_USER_LIMIT,
    SEARCH_USER_PATH,
    UserSearch,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

#: user/bulk returns at most 200 users per call.
BULK_MAX_IDS = 200
#: user/bulk request lines over 8 KiB are refused (CONFCLOUD-76894). The query gets the 8 KiB less
#: 512 bytes, which covers the method, the gateway path with its cloud id (about 75 bytes) and the
#: protocol with room to spare; a wider margin only costs extra calls.
BULK_MAX_QUERY_BYTES = 8 * 1024 - 512
#: v2 users-bulk, the successor of user/bulk: ids per call [UNV: no documented maximum, so a
#: modest one].
V2_BULK_MAX_IDS = 100
V2_BULK_PATH = "/wiki/api/v2/users-bulk"
V2_BULK_SCOPE = "read:user:confluence"

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
    path = SEARCH_USER_PATH
    primary_keys = ("cloudId", "accountId")
    replication_key = None
    activates_versions = True
    required_scopes = (CONTENT_SCOPE,)
    permission_hint = "the 'Can use' global permission (and the read:content-details scope)"
    page_size = SEARCH_USER_LIMIT
    _types: dict[str, tuple[str, ...]] | None = None
    #: user/bulk answered 410 Gone: accountStatus comes from v2 users-bulk for the rest of the run.
    _bulk_v2 = False
    #: Neither lookup can be used: accountStatus stays empty (already said once).
    _no_status = False

    @override
    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Licensed users then guests, enriched in user/bulk-sized batches."""
        progress = log_progress_every(5.0)
        total = 0
        for api_filter, tag in PERMISSION_FILTERS:
            pending: list[dict[str, t.Any]] = []
            skipped = 0
            search = UserSearch(self, api_filter)
            for result in search:
                user = result.get("user")
                user = dict(user) if isinstance(user, dict) else {}
                account_id = user.get("accountId")
                if not isinstance(account_id, str) or not account_id.strip():
                    skipped += 1
                    continue
                user["sitePermission"] = tag
                user["lastModified"] = result.get("lastModified")
                pending.append(user)
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
            if search.reached_cap:
                self.mark_incomplete()
                self._at_cap(tag)

    def _at_cap(self, tag: str) -> None:
        """search/user stopped at its cap: warn, or end the stream when asked to fail."""
        sentence = (
            f"users: search/user stopped at {SEARCH_USER_CAP} {tag} users, its per-query cap; "
            "the site may have more, so users and the licensedUsers count may be incomplete"
        )
        if self.config.get("fail_on_user_search_cap"):
            msg = f"{sentence}, and fail_on_user_search_cap is set, so the run fails."
            raise StreamAccessError(msg)
        self.logger.warning("%s (set fail_on_user_search_cap to fail the run instead).", sentence)

    def _with_status(self, users: list[dict[str, t.Any]]) -> Iterator[dict[str, t.Any]]:
        """Fill accountStatus from user/bulk (search/user does not return it)."""
        # An id longer than any Atlassian issues would only make user/bulk refuse the batch.
        ids = [u["accountId"] for u in users if len(u["accountId"]) <= MAX_ACCOUNT_ID_LENGTH]
        status = self._statuses(ids) if ids else {}
        for user in users:
            full = status.get(user["accountId"], {})
            user["accountStatus"] = full.get("accountStatus")
            if user.get("locale") is None and full.get("locale") is not None:
                user["locale"] = full["locale"]
            if "isGuest" not in user:
                # Cloud's search results carry no isGuest; the filter that listed them does.
                user["isGuest"] = user["sitePermission"] == "guest"
            yield self._shape(user)

    def _statuses(self, ids: list[str]) -> dict[str, dict[str, t.Any]]:
        """Map accountId to the full user, from user/bulk or, once that is gone, v2."""
        if self._no_status:
            return {}
        if not self._bulk_v2:
            try:
                return self._v1_statuses(ids)
            except RouteGoneError as exc:
                removed = str(exc).split(", so")[0]
                self.logger.warning(
                    "%s; reading accountStatus from %s instead.", removed, V2_BULK_PATH
                )
                self._bulk_v2 = True
        try:
            return self._v2_statuses(ids)
        except StreamAccessError as exc:
            self._no_status = True
            self.logger.warning(
                "users: accountStatus stays empty for this run: neither user/bulk nor %s can "
                "be read (%s); grant %s to fill it.",
                V2_BULK_PATH,
                str(exc)[:200],
                V2_BULK_SCOPE,
            )
            return {}

    def _v1_statuses(self, ids: list[str]) -> dict[str, dict[str, t.Any]]:
        found: dict[str, dict[str, t.Any]] = {}
        for batch in bulk_batches(ids):
            body = self.fetch_json(
                f"{self.url_base}/wiki/rest/api/user/bulk",
                [("limit", BULK_MAX_IDS), *(("accountId", a) for a in batch)],
            )
            for entry in self.page_records(body):
                found[str(entry.get("accountId"))] = entry
        return found

    def _v2_statuses(self, ids: list[str]) -> dict[str, dict[str, t.Any]]:
        found: dict[str, dict[str, t.Any]] = {}
        for start in range(0, len(ids), V2_BULK_MAX_IDS):
            body = self.fetch_json(
                f"{self.url_base}{V2_BULK_PATH}",
                json_body={"accountIds": ids[start : start + V2_BULK_MAX_IDS]},
            )
            for entry in self.page_records(body):
                found[str(entry.get("accountId"))] = entry
        return found

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
