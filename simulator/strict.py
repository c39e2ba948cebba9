"""Strict mode: the simulator as unkind as Atlassian's documentation allows, switch by switch.

Every switch here is something Confluence Cloud does, may do, or has done, that a lenient
stand-in hides (sources in docs/CONTRACTS.md and the README's "Atlassian's limits"):
page caps below the `limit` asked (with the echoed `limit` truthful, lying or absent),
search/user without `_links.next`, CQL date literals read in a time zone west of UTC, a
search index that lags behind edits, the unofficial licence endpoints gone, v1 routes that
answer 410 GoneException through the gateway, an hourly OAuth points quota answered with
429 and a long Retry-After, 504 on heavy pages, user objects without `isGuest`/`timeZone`,
a CAPTCHA after repeated failed Basic logins, Admin API 403s for single users, and an
Admin API key that may not list the organization's managed accounts.

`--strict` turns on the preset below; each switch is also an option of its own and can be
changed at run time with `POST /_sim/strict`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

#: Routes that page with start/limit (or a cursor) and so can be capped.
LIST_ROUTES = ("audit", "search_user", "group", "group_members", "search")
ECHO_MODES = ("capped", "asked", "none")
LICENCE_MODES = ("ok", "404", "410", "html")
ADMIN_LISTING_MODES = ("ok", "403", "404")
#: What --strict switches on. The quota, index lag and Admin API 403s change what a run can
#: deliver in one go, so tests turn them on one at a time.
PRESET: dict[str, Any] = {
    "page_caps": {"audit": 500, "search_user": 50, "group": 3, "group_members": 25, "search": 25},
    "echo_limit": "asked",
    "user_next_links": False,
    "cql_utc_offset_minutes": -420,
    "cql_zone_name": "America/Phoenix",
    "licence": "410",
    "v1_gone": ["user_bulk"],
    "timeout_above": 500,
    "real_user_fields": True,
    "captcha_after": 3,
}


@dataclass
class Strictness:
    """The strict switches; the defaults are the lenient simulator."""

    #: Route name -> the most results one page holds, whatever `limit` asked for.
    page_caps: dict[str, int] = field(default_factory=dict)
    #: What a capped page says in `limit`: the cap (capped), the client's own (asked), nothing.
    echo_limit: str = "capped"
    #: Whether search/user sends `_links.next` (third-party connectors report it does not).
    user_next_links: bool = True
    #: CQL date literals are read in this fixed offset from UTC (CONFCLOUD-70966).
    cql_utc_offset_minutes: int = 0
    #: The zone name systemInfo and user/current report for that offset.
    cql_zone_name: str = ""
    #: systemInfo and user objects carry no time zone at all.
    hide_time_zones: bool = False
    #: Content edited through the control API stays out of search until /_sim/content/index.
    index_lag: bool = False
    #: The unofficial licence endpoints: ok, 404, 410 (GoneException) or an HTML 200.
    licence: str = "ok"
    #: Route names that answer 410 GoneException through the gateway.
    v1_gone: list[str] = field(default_factory=list)
    #: OAuth (Bearer) requests per quota window; after that, 429 until the window resets.
    oauth_quota: int = 0
    #: Seconds until the quota window resets, counted from the request that spent it.
    quota_retry_after: int = 1800
    #: List requests asking for more than this many results time out at the edge (504).
    timeout_above: int = 0
    #: User objects as Cloud's search/user sends them: no isGuest, no timeZone.
    real_user_fields: bool = False
    #: Consecutive failed Basic logins of one email after which its REST calls need a CAPTCHA.
    captcha_after: int = 0
    #: Every Kth user's Admin API last-active-dates answers 403.
    admin_forbidden_every: int = 0
    #: The organization's managed-accounts listing: ok, 403 (a key without the
    #: read:accounts:admin scope) or 404 (an organization without the listing).
    admin_listing: str = "ok"

    @classmethod
    def from_dict(cls, body: dict[str, Any], base: Strictness | None = None) -> Strictness:
        """Build from JSON/CLI options on top of ``base``; ``preset: true`` starts from PRESET."""
        body = dict(body)
        values = dict((base or cls()).as_dict())
        if body.pop("preset", False):
            values |= PRESET
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown strict option(s): {', '.join(unknown)}")
        values |= body
        made = cls(**values)
        made.check()
        return made

    def check(self) -> None:
        """Refuse values the routes could not honour."""
        if self.echo_limit not in ECHO_MODES:
            raise ValueError(f"echo_limit must be one of {', '.join(ECHO_MODES)}")
        if self.licence not in LICENCE_MODES:
            raise ValueError(f"licence must be one of {', '.join(LICENCE_MODES)}")
        if self.admin_listing not in ADMIN_LISTING_MODES:
            raise ValueError(f"admin_listing must be one of {', '.join(ADMIN_LISTING_MODES)}")
        for route, cap in self.page_caps.items():
            if route not in LIST_ROUTES or int(cap) < 1:
                raise ValueError(f"page_caps takes {', '.join(LIST_ROUTES)} with caps >= 1")

    def as_dict(self) -> dict[str, Any]:
        """Return the switches as JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def capped(self, route: str, limit: int) -> int:
        """The results a page of ``route`` holds when ``limit`` (already clamped) is asked."""
        cap = self.page_caps.get(route)
        return min(limit, int(cap)) if cap else limit

    def echo(self, body: dict[str, Any], asked: int, served: int) -> None:
        """Set (or drop) the page's ``limit`` as the echo mode says."""
        if self.echo_limit == "none":
            body.pop("limit", None)
        elif self.echo_limit == "asked":
            body["limit"] = asked
        else:
            body["limit"] = served


class Quota:
    """An hourly-style points quota for OAuth traffic: spent, then 429 until it resets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.used = 0
        self.reset_at: float | None = None
        self.refused = 0

    def take(self, limit: int, window_s: int) -> int | None:
        """Spend one request; return the seconds to wait when the quota is spent."""
        with self.lock:
            now = time.time()
            if self.reset_at is not None and now >= self.reset_at:
                self.used, self.reset_at = 0, None
            if self.reset_at is not None:
                # "If you reissue the request before the retry period expires, the request
                # will fail and return the same or longer Retry-After period."
                self.reset_at += 60
                self.refused += 1
                return int(self.reset_at - now) + 1
            self.used += 1
            if self.used > limit:
                self.reset_at = now + window_s
                self.refused += 1
                return window_s
            return None

    def reset(self) -> None:
        """Start a new quota window now (tests use this instead of waiting an hour)."""
        with self.lock:
            self.used, self.reset_at = 0, None
