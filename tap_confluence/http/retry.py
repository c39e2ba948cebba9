"""What a failed request is worth: another try now, after a wait, or a stop with one sentence.

Three kinds of failure are kept apart, each with its own budget, so that one cannot spend
another's: a 429 (or 503) whose Retry-After the tap may honour is Atlassian saying "later",
not a failure, and is retried up to ``RATE_LIMITED_TRIES`` times; 5xx, resets and cut bodies
up to ``max_retries`` times; a host that refuses connections or does not resolve twice.
A Retry-After longer than ``max_retry_wait_seconds`` is never retried early (Atlassian
answers an early retry with the same or a longer wait): the run stops with its work kept.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import re
import time
import typing as t
from urllib.parse import urlsplit

import backoff
import requests
from singer_sdk import RESTStream
from singer_sdk.exceptions import RetriableAPIError
from typing_extensions import override

from tap_confluence.errors import HostUnreachableError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from backoff.types import Details

#: 429s (with a wait within the cap) one request may get before the stream gives up.
RATE_LIMITED_TRIES = 20
#: A 429 without Retry-After waits 1, 2, 4 ... seconds, never more than this.
RATE_LIMITED_MAX_WAIT = 60.0
#: Tries for a host that refuses the connection or does not resolve.
UNREACHABLE_TRIES = 2
#: A Retry-After beyond this many seconds is no time to quote (2**63 has been seen).
_SENSIBLE_WAIT = 10 * 86_400

_BETA_RESET = re.compile(r"\bt=(\d+)")


class RateLimitedError(RetriableAPIError):
    """A 429 (or 503) with a wait the tap honours before it tries again."""


class PageTooHeavyError(RetriableAPIError):
    """A 502/504 on a page the tap has just made smaller: tried again at once."""


class StaleTokenError(RetriableAPIError):
    """A 401 on an OAuth token that a refresh may cure; tried again at once."""


class MisshapenAnswerError(RetriableAPIError):
    """Valid JSON of the wrong shape (a list where an object belongs).

    Tried again, then the stream ends with the sentence.
    """


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Parse Retry-After (delta seconds or HTTP date); None when absent or unreadable."""
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def quota_reset_seconds(response: requests.Response) -> float | None:
    """Seconds to the quota's reset from ``Beta-RateLimit`` (``t=``), Atlassian's 2026 header."""
    raw = response.headers.get("Beta-RateLimit") or response.headers.get("X-Beta-RateLimit")
    found = _BETA_RESET.search(raw or "")
    return float(found.group(1)) if found else None


def rate_limit_reason(response: requests.Response) -> str | None:
    """Why Atlassian limited the request (``RateLimit-Reason`` or its beta spelling)."""
    for name in ("RateLimit-Reason", "X-RateLimit-Reason", "X-Beta-RateLimit-Reason"):
        value = response.headers.get(name)
        if value:
            # A header is not ours to trust: keep it short and printable.
            return re.sub(r"[^\w.:-]", "", value)[:80]
    return None


def requested_wait(response: requests.Response) -> float | None:
    """How long the API asks the tap to stay away: Retry-After, else the quota's reset."""
    wait = retry_after_seconds(response)
    return wait if wait is not None else quota_reset_seconds(response)


def retry_wait(exc: BaseException | None, attempt: int, *, cap: float, base: float = 1.0) -> float:
    """Seconds before retry ``attempt``: Retry-After if given (capped), else jittered expo."""
    if isinstance(exc, StaleTokenError | PageTooHeavyError):
        return 0.0
    response = getattr(exc, "response", None)
    hinted = requested_wait(response) if isinstance(response, requests.Response) else None
    if hinted is not None:
        return min(hinted, cap)
    if isinstance(exc, RateLimitedError):
        cap = min(cap, RATE_LIMITED_MAX_WAIT)
    # Full jitter spreads many clients apart; only used when the server gave no hint.
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311


def stop_sentence(response: requests.Response, path: str, wait: float, cap: float) -> str:
    """Say in one sentence why the run stops rather than wait, until when, and what next."""
    reason = rate_limit_reason(response)
    what = f"{response.status_code}{f', {reason}' if reason else ''}"
    if response.status_code == 429:
        head = f"Atlassian's rate limit for these credentials is spent ({path} answered {what})"
    else:
        head = f"Confluence is unavailable ({path} answered {what})"
    if wait <= _SENSIBLE_WAIT:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        asks = f"and asks for {wait:.0f} s, until {until:%Y-%m-%d %H:%M} UTC"
        rerun = f"run it again after {until:%H:%M} UTC"
    else:
        asks = "with a Retry-After no run can wait for"
        rerun = "run it again in an hour"
    return (
        f"{head} {asks}, longer than max_retry_wait_seconds ({cap:.0f} s), so the run stopped "
        f"with its work kept; {rerun} and it resumes from the last state it emitted."
    )


def setting_for_url(url: str) -> str:
    """Name the setting a request's URL comes from (for an unreachable host's sentence)."""
    path = urlsplit(url).path
    if path.endswith("/oauth/token"):
        return "auth_url"
    if path.startswith(("/ex/", "/admin/", "/oauth/")):
        return "api_url"
    return "site_url"


_TRANSIENT = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class Unreachable(Exception):  # noqa: N818 (an internal signal, not an error for users)
    """A request that never reached its host (refused, unresolvable); tried once more."""

    def __init__(self, setting: str, host: str, cause: str) -> None:
        super().__init__(cause)
        self.setting, self.host, self.cause = setting, host, cause


class RetryingStream(RESTStream[t.Any]):
    """The SDK's request retries, with a budget of their own for each kind of failure."""

    @override
    def request_decorator(self, func: Callable[..., t.Any]) -> Callable[..., t.Any]:
        """Retry ``func``: 429s, transient failures and unreachable hosts, each on its own budget.

        Innermost, a host that refuses the connection or does not resolve gets one more try
        a second later, then one sentence naming the setting; then 429s with a wait within
        the cap; outermost 5xx, resets and cut bodies (each of which restarts the 429 count).
        """

        def unreachable_sentence(details: Details) -> None:
            exc = t.cast("Unreachable", details.get("exception"))
            msg = (
                f"{exc.host} could not be reached ({exc.cause}, {details.get('tries')} tries); "
                f"check {exc.setting} and the network, then run the tap again."
            )
            raise HostUnreachableError(msg) from None

        reachable = backoff.on_exception(
            backoff.constant,
            Unreachable,
            interval=1,
            max_tries=UNREACHABLE_TRIES,
            jitter=None,
            on_giveup=unreachable_sentence,
        )
        limited = backoff.on_exception(
            self.backoff_wait_generator,
            RateLimitedError,
            max_tries=RATE_LIMITED_TRIES,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
        )
        transient = backoff.on_exception(
            self.backoff_wait_generator,
            _TRANSIENT,
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            giveup=_spent_its_own_budget,
        )
        return transient(limited(reachable(func)))

    @override
    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        """Wait as Retry-After says (capped), else exponentially with jitter."""
        cap = float(self.config.get("max_retry_wait_seconds", 300))
        attempt = 0
        exc = yield 0.0
        while True:
            wait = retry_wait(exc, attempt, cap=cap)
            attempt += 1
            exc = yield wait

    @override
    def backoff_jitter(self, value: float) -> float:
        """No extra jitter: Retry-After is exact and the fallback is already jittered."""
        return value

    @override
    def backoff_max_tries(self) -> int:
        """Give a flaky API a fair number of chances."""
        return int(self.config.get("max_retries", 8))

    @override
    def backoff_handler(self, details: Details) -> None:
        """Log the wait with the path and status only (never headers or the request)."""
        exc = details.get("exception")
        response = getattr(exc, "response", None)
        status = response.status_code if isinstance(response, requests.Response) else None
        self.logger.warning(
            "%s: retry %d in %.1f s after %s.",
            self.name,
            details.get("tries", 0),
            details.get("wait", 0.0),
            f"HTTP {status}" if status else type(exc).__name__,
        )


def _spent_its_own_budget(exc: Exception) -> bool:
    """Tell whether the outer layer must not retry: a 429 that outlasted its own tries."""
    return isinstance(exc, RateLimitedError)
