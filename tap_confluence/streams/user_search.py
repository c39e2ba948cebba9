"""search/user, paged as Cloud serves it: by offset until an empty page, up to its cap.

The users stream lists users with it; license_subscriptions counts licensed users with it,
and user_activity's Admin API source asks about the licensed users it lists.
"""

from __future__ import annotations

import typing as t

from tap_confluence.http.paginators import OffsetUntilEmptyPaginator

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_confluence.http.stream import ConfluenceStream

SEARCH_USER_PATH = "/wiki/rest/api/search/user"
#: search/user returns at most this many users per query, then stops without saying so.
SEARCH_USER_CAP = 10_000
#: The page size asked of search/user (its documented maximum; it may serve fewer).
SEARCH_USER_LIMIT = 200


class UserSearch:
    """Every search/user result of one permission filter, by offset until an empty page.

    Cloud sends no ``_links.next`` here and may serve fewer than the ``limit`` asked, so
    neither ends the listing; ``reached_cap`` tells a listing cut at the 10,000-user cap.
    """

    def __init__(self, stream: ConfluenceStream, permission_filter: str) -> None:
        """List the users ``permission_filter`` selects, with ``stream``'s auth and retries."""
        self._stream = stream
        self._filter = permission_filter
        self._paginator = OffsetUntilEmptyPaginator(cap=SEARCH_USER_CAP)

    @property
    def reached_cap(self) -> bool:
        """Whether the listing stopped at the cap, so the site may hold more users."""
        return self._paginator.reached_cap

    def __iter__(self) -> Iterator[dict[str, t.Any]]:
        """Yield each search result (``{"user": {...}, "lastModified": ...}``)."""
        params = {
            "cql": "type=user",
            "sitePermissionTypeFilter": self._filter,
            "limit": SEARCH_USER_LIMIT,
        }
        url = f"{self._stream.url_base}{SEARCH_USER_PATH}"
        for body in self._stream.fetch_pages(url, params, self._paginator):
            yield from self._stream.page_records(body)
