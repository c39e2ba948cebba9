"""Paginators for Confluence's listings: none of them takes a short page for the end.

Atlassian documents every ``limit`` as "may be restricted by fixed system limits" and has
lowered such caps silently before, still answering 200. So a page shorter than the
``limit`` asked for ends a listing only when the API says so: a missing next link on an
endpoint that always sends one, or an empty page. search/user sends no next link on Cloud,
so it is paged by offset (``start += len(results)``) until an empty page or its cap.
"""

from __future__ import annotations

import typing as t
from urllib.parse import ParseResult, parse_qs, urlsplit

from singer_sdk.pagination import BaseAPIPaginator, BaseHATEOASPaginator
from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Callable

    import requests

Params = dict[str, t.Any]


def _body(response: requests.Response) -> dict[str, t.Any]:
    body = response.json()
    return body if isinstance(body, dict) else {}


class PageRequests(t.Protocol):
    """A paginator that says how to ask for its current page."""

    def page_request(self, url: str, params: Params) -> tuple[str, Params | None]:
        """Return the URL and query parameters of the current page."""
        ...


class NextLinkPaginator(BaseHATEOASPaginator):
    """Follows ``_links.next`` however short the page (groups, members, content search)."""

    def __init__(self, rebase: Callable[[str], str]) -> None:
        """``rebase`` turns an API link (relative, or on another host) into one of our URLs."""
        super().__init__()
        self._rebase = rebase

    @override
    def get_next_url(self, response: requests.Response) -> str | None:
        """Return the rebased next link, or None at the end (no link, or an empty page)."""
        body = _body(response)
        if not body.get("results"):
            return None
        link = (body.get("_links") or {}).get("next")
        return self._rebase(str(link)) if link else None

    def page_request(self, url: str, params: Params) -> tuple[str, Params | None]:
        """Ask for the first page with ``url`` and ``params``, later ones by the API's link."""
        token = self.current_value
        if isinstance(token, ParseResult):
            return token.geturl(), None
        return url, params


class OffsetUntilEmptyPaginator(BaseAPIPaginator[int]):
    """``start += len(results)`` until an empty page, or until ``cap`` results (search/user)."""

    def __init__(self, cap: int | None = None) -> None:
        """Start at offset 0; ``cap`` is the most results the endpoint ever returns."""
        super().__init__(0)
        self.cap = cap
        #: True once the listing stopped at the cap rather than at an empty page.
        self.reached_cap = False

    @override
    def has_more(self, response: requests.Response) -> bool:
        """More may follow any non-empty page, however short, until the cap."""
        results = _body(response).get("results") or []
        if not results:
            return False
        if self.cap is not None and self.current_value + len(results) >= self.cap:
            self.reached_cap = True
            return False
        return True

    @override
    def get_next(self, response: requests.Response) -> int | None:
        """Return the offset after the records this page held."""
        return self.current_value + len(_body(response).get("results") or [])

    def page_request(self, url: str, params: Params) -> tuple[str, Params | None]:
        """Return the listing's parameters with this page's ``start``."""
        return url, {**params, "start": self.current_value}


class CursorPaginator(BaseAPIPaginator[str | None]):
    """The Admin API's cursor in ``links.next`` (a URL holding ``cursor=``, or the cursor)."""

    def __init__(self) -> None:
        """Start without a cursor."""
        super().__init__(None)

    @override
    def get_next(self, response: requests.Response) -> str | None:
        """Return the next page's cursor, or None at the end."""
        return cursor_of((_body(response).get("links") or {}).get("next"))

    def page_request(self, url: str, params: Params) -> tuple[str, Params | None]:
        """Return the listing's parameters with this page's cursor."""
        cursor = self.current_value
        return url, ({**params, "cursor": cursor} if cursor else params)


def cursor_of(link: t.Any) -> str | None:
    """Return the cursor in a ``links.next`` value (a URL, or the bare cursor)."""
    if not link:
        return None
    text = str(link)
    if "cursor=" in text:
        found = parse_qs(urlsplit(text).query).get("cursor") or []
        return found[0] if found else None
    return text
