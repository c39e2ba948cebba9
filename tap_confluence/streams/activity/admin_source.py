"""user_activity from the Admin API: each licensed user's last active day in Confluence.

The organization's listing of managed accounts gives it for a page of users per request;
only licensed users it does not list (accounts on domains the organization has not claimed)
are asked one by one. A pass over the site's licensed users saves where it is every
``ADMIN_CHECKPOINT_USERS`` users, so a killed run resumes there.
"""

from __future__ import annotations

import collections
import datetime as dt
import typing as t
from urllib.parse import quote, urlsplit

from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError

from tap_confluence.errors import StreamAccessError
from tap_confluence.http.paginators import CursorPaginator
from tap_confluence.sdk_compat import write_state_now
from tap_confluence.streams.activity.bookmarks import save_ledger, unusable_state
from tap_confluence.streams.activity.ledger import StateShapeError, millis
from tap_confluence.streams.activity.source import ActivitySource, json_object
from tap_confluence.streams.audit.rows import iso_to_ms
from tap_confluence.streams.progress import log_progress_every
from tap_confluence.streams.user_search import UserSearch

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    import requests

    from tap_confluence.streams.activity.ledger import Ledger

DAY_MS = 86_400_000
#: Admin API dates lag up to 24 hours, and a seat holder may get their first row long after
#: the newest date seen (newly licensed, or never asked before). Remembering everyone active in
#: the last 120 days (90-day idle-seat window plus slack) gives every such user a row; the cost
#: is about 55 bytes of state per user active in that window.
ADMIN_OVERLAP_MS = 120 * DAY_MS
#: How often (in users) an Admin API pass saves where it is, so a killed run resumes there.
ADMIN_CHECKPOINT_USERS = 100
#: Users refused one after another (403) from the start of a pass before the key itself is
#: taken to lack the permission, rather than each of those users being hidden from it.
ADMIN_ALL_FORBIDDEN = 20
#: Pages of one user's last-active dates read at most (there is one product per entry).
ADMIN_MAX_PAGES = 20
#: What an admin row says the activity was.
ADMIN_DETAIL = "last active in Confluence (Admin API, daily)"


class _NotInOrganizationError(FatalAPIError):
    """The Admin API does not know this account (it is not managed by the organization)."""


class _HiddenUserError(FatalAPIError):
    """The Admin API will not show this key one user (403)."""


def check_admin_status(response: requests.Response) -> None:
    """Raise for an Admin API error this source handles (401, 403, 404); else do nothing."""
    if not urlsplit(response.url).path.startswith("/admin/"):
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


class AdminSource(ActivitySource):
    """A pass over the site's licensed users, yielding those with newer Confluence activity."""

    name = "admin"
    needs = "the user search (read:content-details:confluence)"

    def emitted(self, state: dict[str, t.Any], ledger: Ledger) -> Iterator[tuple[str, int, str]]:
        """Yield ``(accountId, time, detail)`` per user whose last active day is news.

        ``state`` is the partition's, where the pass keeps its cursor; the ledger is saved
        into it at each checkpoint and at the end.
        """
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
                    yield account_id, at_ms, ADMIN_DETAIL
            if done % ADMIN_CHECKPOINT_USERS == 0 and done < len(users):
                state["cursor"] = account_id
                save_ledger(ledger, state)
                write_state_now(self.client)
            if progress():
                self.logger.info("user_activity: admin: %d of %d users.", done, len(users))
        state.pop("cursor", None)
        state.pop("passLower", None)
        save_ledger(ledger, state)
        self._report(tally)

    def _report(self, tally: collections.Counter[str]) -> None:
        """Say what the pass found; fail it when the Admin API knew none of the users asked."""
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
        url = f"{self._org_url()}/users"
        days: dict[str, str | None] = {}
        seen = 0
        try:
            for body in self.client.fetch_pages(url, {}, CursorPaginator(), auth=auth):
                tally["list_pages"] += 1
                accounts = body.get("data")
                for entry in accounts if isinstance(accounts, list) else []:
                    account = json_object(entry)
                    account_id = account.get("account_id")
                    seen += 1
                    if isinstance(account_id, str) and account_id in wanted:
                        days[account_id] = _confluence_day(account.get("product_access"))
                total = json_object(body.get("meta")).get("total")
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
                raise unusable_state("admin", exc) from None
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
        user = quote(account_id, safe=":")
        url = f"{self._org_url()}/directory/users/{user}/last-active-dates"
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

    def _org_url(self) -> str:
        base = str(self.config["api_url"]).rstrip("/")
        return f"{base}/admin/v1/orgs/{quote(str(self.config['org_id']), safe='')}"

    def _licensed_account_ids(self) -> list[str]:
        # The same search/user listing (and paging) the users stream reads.
        ids: list[str] = []
        try:
            for result in UserSearch(self.client, "none"):
                account_id = json_object(result.get("user")).get("accountId")
                if isinstance(account_id, str) and account_id:
                    ids.append(account_id)
        except StreamAccessError as exc:
            raise self.access_error(exc) from None
        return list(dict.fromkeys(ids))

    def _last_active_day(self, url: str, auth: BearerTokenAuthenticator) -> str | None:
        """Return the user's Confluence last active day (YYYY-MM-DD), across result pages."""
        best: str | None = None
        pages = self.client.fetch_pages(url, {}, CursorPaginator(), auth=auth)
        for page, body in enumerate(pages, start=1):
            day = _confluence_day(json_object(body.get("data")).get("product_access"))
            if day is not None:
                best = max(best or "", day)
            if page >= ADMIN_MAX_PAGES:
                break
        return best


def _confluence_day(product_access: t.Any) -> str | None:
    """Return the latest Confluence ``last_active`` day (YYYY-MM-DD) among the products."""
    best: str | None = None
    for entry in product_access if isinstance(product_access, list) else []:
        product = json_object(entry)
        key, day = str(product.get("key") or ""), product.get("last_active")
        if key.startswith("confluence") and day:
            best = max(best or "", str(day)[:10])
    return best
