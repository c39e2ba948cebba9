"""Base REST stream for Confluence: URLs, paging by ``_links.next``, retries and error sentences."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import random
import time
import typing as t
from http import HTTPStatus
from urllib.parse import urlencode, urlsplit

import msgspec
import requests
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import BaseHATEOASPaginator

from tap_confluence import schemas
from tap_confluence.auth import AtlassianOAuthAuthenticator
from tap_confluence.errors import StreamAccessError, TapUserError
from tap_confluence.output import ShapedRecords
from tap_confluence.request_gate import RequestGate
from tap_confluence.versions import FullTableVersions

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Mapping

    from backoff.types import Details
    from singer_sdk.helpers.types import Auth, Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_confluence.tap import TapConfluence

_SCOPE_MISMATCH = "scope does not match"

#: JSON bodies to Python values; several times faster than requests' ``response.json()``.
decode_json: t.Callable[[bytes], t.Any] = msgspec.json.Decoder().decode


class _StaleTokenError(RetriableAPIError):
    """A 401 on an OAuth token that a refresh may cure; retried at once."""


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


def retry_wait(exc: BaseException | None, attempt: int, *, cap: float, base: float = 1.0) -> float:
    """Seconds before retry ``attempt``: Retry-After if given (capped), else jittered expo."""
    if isinstance(exc, _StaleTokenError):
        return 0.0
    response = getattr(exc, "response", None)
    hinted = retry_after_seconds(response if isinstance(response, requests.Response) else None)
    if hinted is not None:
        return min(hinted, cap)
    # Full jitter spreads many clients apart; only used when the server gave no hint.
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311


class NextLinkPaginator(BaseHATEOASPaginator):
    """Follows Confluence's ``_links.next``; stops on a short page or when there is no link."""

    def __init__(self, rebase: t.Callable[[str], str], page_size: int) -> None:
        """``rebase`` turns an API link (relative, or on another host) into one of our URLs."""
        super().__init__()
        self._rebase = rebase
        self._page_size = page_size

    def get_next_url(self, response: requests.Response) -> str | None:
        """Return the rebased next link, or None at the end."""
        body = response.json()
        results = body.get("results") or []
        if len(results) < self._page_size:
            return None
        link = (body.get("_links") or {}).get("next")
        return self._rebase(str(link)) if link else None


class ConfluenceStream(FullTableVersions, ShapedRecords, RESTStream[t.Any]):
    """Common behaviour of every Confluence REST stream in this tap."""

    schema = StreamSchema(SchemaDirectory(schemas))
    #: Any one of these scope sets lets the stream run (classic or granular alternatives).
    required_scopes: t.ClassVar[tuple[frozenset[str], ...]] = ()
    #: What a 403 means for this stream, for the error sentence.
    permission_hint: t.ClassVar[str] = "permission to read this data"
    page_size: t.ClassVar[int] = 200

    @property
    def confluence_tap(self) -> TapConfluence:
        """The tap that owns this stream (its auth plan and shared authenticator)."""
        return t.cast("TapConfluence", self._tap)

    @property
    def url_base(self) -> str:
        """Gateway ``{api_url}/ex/confluence/{cloud_id}`` or the site URL, per auth mode."""
        return self.confluence_tap.connection_plan.base_url

    @property
    def authenticator(self) -> Auth:
        """The tap's single authenticator, shared by every stream."""
        return self.confluence_tap.api_authenticator

    @property
    def http_headers(self) -> dict[str, str]:
        """Ask for JSON and English error text."""
        return {"Accept": "application/json", "Accept-Language": "en"}

    @functools.cached_property
    def cloud_id(self) -> str:
        """The site's cloud ID (from config, or the site URL's host under a classic token)."""
        return self.confluence_tap.cloud_key

    def rebase_link(self, link: str) -> str:
        """Join a ``_links.next`` to our base URL; never follow a link to another host."""
        parts = urlsplit(link)
        path = parts.path
        gateway_prefix = f"/ex/confluence/{self.confluence_tap.config.get('cloud_id', '')}"
        if path.startswith(gateway_prefix):
            path = path[len(gateway_prefix) :]
        if not path.startswith("/wiki/"):
            # v1 links are relative to _links.base, which ends in /wiki.
            path = "/wiki" + (path if path.startswith("/") else "/" + path)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.url_base}{path}{query}"

    def get_new_paginator(self) -> NextLinkPaginator:
        """Page by ``_links.next`` at the largest page size the endpoint accepts."""
        return NextLinkPaginator(self.rebase_link, self.page_size)

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        """First-page query parameters; later pages use the API's own next link."""
        return {"limit": self.page_size}

    def get_http_request(self, *, page: PageContext[t.Any]) -> HTTPRequest:
        """Build the first request from params, later ones from the rebased next link."""
        request = super().get_http_request(page=page)
        if page.next_page_token:
            request.url = page.next_page_token.geturl()
            request.params = {}
        return request

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """Yield ``results`` directly (cheaper than a JSONPath walk on every page)."""
        body = response.json()
        yield from body.get("results") or []

    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        """Tag every record with the site's cloudId, which leads every primary key."""
        row["cloudId"] = self.cloud_id
        return row

    def generate_child_contexts(
        self, record: dict[str, t.Any], context: Context | None
    ) -> Iterable[Context | None]:
        """No child context at all for a stream without children (the SDK copies every record)."""
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    # Records, with a clean end on a missing scope or permission.

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield records; a missing scope or permission ends this stream with one sentence."""
        if self.confluence_tap.missing_scopes(self):
            self.mark_incomplete()
            self.logger.warning(
                "Skipping %s: the OAuth token was not granted %s; authorise the app again with "
                "that scope to extract it.",
                self.name,
                self.scope_hint(),
            )
            return
        try:
            yield from self.extract_records(context)
        except StreamAccessError as exc:
            self.mark_incomplete()
            self.confluence_tap.note_stream_ended(self.name, exc)

    def finalize_state_progress_markers(self, state: dict[str, t.Any] | None = None) -> None:
        """Finish the stream's state; after the last stream, report streams that ended early."""
        super().finalize_state_progress_markers(state)
        if state is None and not self.parent_stream_type:
            self.confluence_tap.after_stream(self)

    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield the raw records; streams that need more than one endpoint override this."""
        yield from self.request_records(context)

    # Errors and retries.

    def validate_response(self, response: requests.Response) -> None:
        """Turn HTTP errors into retries or one-sentence errors that name the missing scope."""
        self.validate_status(response)
        try:
            response.json()
        except ValueError:
            raise self._unreadable(response) from None

    def _unreadable(self, response: requests.Response) -> RetriableAPIError:
        # A body cut short or garbled in transit: the same request will most likely succeed.
        path = urlsplit(response.url).path
        msg = f"{self.name}: the answer from {path} is not complete JSON; retrying."
        return RetriableAPIError(msg, response)

    def validate_status(self, response: requests.Response) -> None:
        """Raise for HTTP error statuses (the body of a success is checked by the caller)."""
        status = response.status_code
        auth = self.confluence_tap.api_authenticator
        if status < 400:
            if isinstance(auth, AtlassianOAuthAuthenticator):
                auth.note_success()
            return
        message = self._api_message(response)
        if status == 401:
            self._on_unauthorized(response, message)
        if status == 403:
            raise StreamAccessError(
                f"{self.name} needs {self.permission_hint}; the API answered 403 ({message})."
            )
        if status == 429 or status >= 500:
            msg = f"{self.name}: {status} from {urlsplit(response.url).path}; retrying."
            raise RetriableAPIError(msg, response)
        msg = f"{self.name}: {status} from {urlsplit(response.url).path} ({message})."
        raise FatalAPIError(msg)

    def _on_unauthorized(self, response: requests.Response, message: str) -> None:
        auth = self.confluence_tap.api_authenticator
        if _SCOPE_MISMATCH in message.lower():
            raise StreamAccessError(
                f"Skipping {self.name}: it needs the scope {self.scope_hint()}, which the token "
                "was not granted; add it to the app or API token to extract this stream.",
                scope_missing=True,
            )
        sent = str(response.request.headers.get("Authorization", ""))
        if isinstance(auth, AtlassianOAuthAuthenticator) and sent.startswith("Bearer "):
            if auth.note_rejected(sent.removeprefix("Bearer ")):
                msg = f"{self.name}: 401 on the access token; refreshing once and retrying."
                raise _StaleTokenError(msg, response)
            raise TapUserError(
                "The API rejected a freshly refreshed OAuth access token (401); check that the "
                "app is still installed on the site and that cloud_id is right."
            )
        who = self.confluence_tap.config.get("email", "the account")
        raise TapUserError(
            f"The API rejected the API token for {who} (401); check email and api_token, and "
            "that a scoped token is used with cloud_id and a classic one with site_url."
        )

    def scope_hint(self) -> str:
        """Name the scope(s) to ask for, classic and granular alternatives joined by 'or'."""
        options = [" and ".join(sorted(s)) for s in self.required_scopes]
        return " or ".join(options) if options else "this endpoint needs"

    def _api_message(self, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        text = ""
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error_description") or "")
        if not text:
            text = response.reason or ""
        return self.confluence_tap.secrets.redact(text)[:200]

    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        """Wait as Retry-After says (capped), else exponentially with jitter."""
        cap = float(self.config.get("max_retry_wait_seconds", 300))
        attempt = 0
        exc = yield 0.0
        while True:
            wait = retry_wait(exc, attempt, cap=cap)
            attempt += 1
            exc = yield wait

    def backoff_jitter(self, value: float) -> float:
        """No extra jitter: Retry-After is exact and the fallback is already jittered."""
        return value

    def backoff_max_tries(self) -> int:
        """Give a rate-limited or flaky API a fair number of chances."""
        return int(self.config.get("max_retries", 8))

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

    # One-off JSON calls (user/bulk, systemInfo, licence counts) with the same retries.

    def fetch_json(
        self,
        url: str,
        params: Mapping[str, t.Any] | list[tuple[str, t.Any]] | None = None,
        *,
        auth: Auth | None = None,
        parse: t.Callable[[bytes], t.Any] = decode_json,
        gate: RequestGate | None = None,
    ) -> t.Any:
        """GET ``url`` with this stream's auth (or ``auth``), retries and error handling.

        ``parse`` turns the body into the result; a ValueError from it means the body came
        incomplete, and the request is retried. ``gate``, shared by concurrent workers, holds
        every try to the number of requests the API currently accepts at once.
        """
        query = urlencode(list(params.items()) if isinstance(params, dict) else params or [])
        full = f"{url}?{query}" if query else url
        authenticator = auth or self.authenticator

        parsed: list[t.Any] = []

        def send(prepared: requests.PreparedRequest, context: Context | None) -> requests.Response:
            # Authenticate on every try, so a token refreshed after a 401 is used.
            with gate.slot() if gate else contextlib.nullcontext():
                response = self.requests_session.send(authenticator(prepared), timeout=self.timeout)
            if gate:
                if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                    gate.refused()
                elif response.ok:
                    gate.answered()
            self.validate_status(response)
            try:
                parsed.append(parse(response.content))
            except ValueError:
                raise self._unreadable(response) from None
            return response

        prepared = requests.Request(
            "GET", full, headers={**self.http_headers, "User-Agent": self.user_agent}
        ).prepare()
        self.request_decorator(send)(prepared, None)
        return parsed[-1]


def log_progress_every(seconds: float) -> t.Callable[[], bool]:
    """Return a gate that opens at most once per ``seconds`` (for progress lines)."""
    last = [0.0]

    def ready() -> bool:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            return True
        return False

    return ready
