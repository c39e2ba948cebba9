"""Errors the tap raises, each carrying one sentence meant for the person running it."""

from __future__ import annotations

import requests
import urllib3
from singer_sdk.exceptions import FatalAPIError, FatalSyncError


class TapUserError(FatalSyncError):
    """Stops the run; the message says what is wrong and what to do, with no secret in it."""


class StreamAccessError(FatalAPIError):
    """Ends one stream (missing scope or permission); the other streams carry on.

    A missing scope is the user's choice of grant (a warning); a missing permission on a
    granted scope is a misconfiguration that fails the run once the other streams are done.
    """

    def __init__(
        self, message: str, *, scope_missing: bool = False, status: int | None = None
    ) -> None:
        """Keep the sentence, whether a scope was not granted, and the HTTP status if any."""
        super().__init__(message)
        self.scope_missing = scope_missing
        self.status = status


class RouteGoneError(StreamAccessError):
    """The API answered 410: Atlassian removed the route (v1 routes with a v2 successor)."""


class UnexpectedAnswerError(StreamAccessError):
    """An answer the stream cannot use (wrong JSON shape, absurdly large) even after retries."""


class RunHaltedError(TapUserError):
    """Every stream must stop now (a spent rate-limit quota); the sentence says until when."""


class HostUnreachableError(TapUserError):
    """A configured host refused the connection or does not resolve; the sentence names it."""


# Below http/ and oauth/, which both tell an unreachable host from a failed request.
def never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """Tell whether a request surely never reached the server (refused, unresolvable host)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
