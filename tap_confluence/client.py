"""Base REST stream for Confluence: one request path, paging, retries and error sentences.

Every request of every stream goes through ``fetch_json``: it authenticates each try, stops
when the run has been halted (a spent rate-limit quota), reads at most ``MAX_RESPONSE_BYTES``,
writes the SDK's request-duration metric, and turns each status into a retry or a sentence.
"""

from __future__ import annotations

import contextlib
import functools
import time
import typing as t
from collections import abc
from http import HTTPStatus
from urllib.parse import parse_qsl, urlencode, urlsplit

import backoff
import msgspec
import requests
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_confluence import schemas
from tap_confluence.auth import AtlassianOAuthAuthenticator
from tap_confluence.errors import (
    HostUnreachableError,
    RouteGoneError,
    StreamAccessError,
    TapUserError,
    UnexpectedAnswerError,
)
from tap_confluence.output import ShapedRecords
from tap_confluence.paging import NextLinkPaginator
from tap_confluence.request_gate import PageSizeGovernor
from tap_confluence.retry import (
    RATE_LIMITED_TRIES,
    UNREACHABLE_TRIES,
    MisshapenAnswerError,
    PageTooHeavyError,
    RateLimitedError,
    StaleTokenError,
    never_sent,
    requested_wait,
    retry_wait,
    stop_sentence,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Mapping

    from backoff.types import Details

    # Private SDK module, for the type only: the SDK exports BatchConfig nowhere else.
    from singer_sdk.helpers._batch import BatchConfig
    from singer_sdk.helpers.types import Auth, Context
    from singer_sdk.pagination import BaseAPIPaginator

    from tap_confluence.paging import PageRequests
    from tap_confluence.request_gate import RequestGate
    from tap_confluence.tap import TapConfluence

_SCOPE_MISMATCH = "scope does not match"
#: No page of any endpoint comes near this; past it a request fails instead of eating memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: The smallest page a listing asks for after 502/504s on larger ones.
MIN_LISTING_PAGE = 25
_READ_CHUNK = 1 << 20
_TRANSIENT = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

#: JSON bodies to Python values; several times faster than requests' ``response.json()``.
decode_json: t.Callable[[bytes], t.Any] = msgspec.json.Decoder().decode

Parse = t.Callable[[requests.Response], t.Any]
_T = t.TypeVar("_T")


def parse_object(response: requests.Response) -> dict[str, t.Any]:
    """Return the body as a JSON object; a list or a string where one belongs is misshapen."""
    body = decode_json(response.content)
    if not isinstance(body, dict):
        msg = f"a JSON {type(body).__name__} instead of an object"
        raise msgspec.ValidationError(msg)
    return body


class _Unreachable(Exception):  # noqa: N818 (an internal signal, not an error for users)
    """A request that never reached its host (refused, unresolvable); tried once more."""

    def __init__(self, setting: str, host: str, cause: str) -> None:
        super().__init__(cause)
        self.setting, self.host, self.cause = setting, host, cause


class ConfluenceStream(ShapedRecords, RESTStream[t.Any]):
    """Common behaviour of every Confluence REST stream in this tap."""

    schema = StreamSchema(SchemaDirectory(schemas))
    #: Any one of these scope sets lets the stream run (classic or granular alternatives).
    required_scopes: t.ClassVar[tuple[frozenset[str], ...]] = ()
    #: What a 403 means for this stream, for the error sentence.
    permission_hint: t.ClassVar[str] = "permission to read this data"
    page_size: t.ClassVar[int] = 200
    #: Whether ``batch_config`` makes this stream write batch files. Only audit_records does:
    #: the other streams are small, and some write STATE mid-stream, which the SDK's own
    #: batcher would put ahead of the batch holding the records it covers.
    writes_batches: t.ClassVar[bool] = False

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
        """Follow ``_links.next`` until it is missing or a page is empty."""
        return NextLinkPaginator(self.rebase_link)

    def get_batch_config(self, config: Mapping[str, t.Any]) -> BatchConfig | None:
        """``batch_config`` for a stream that writes batches; None (RECORD messages) otherwise."""
        return super().get_batch_config(config) if self.writes_batches else None

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        """Query parameters of a listing's first page."""
        return {"limit": self.page_size}

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
        """Yield records; a missing scope, permission or route ends this stream in a sentence."""
        yield from self.guarded(self.extract_records(context))

    def guarded(self, items: Iterable[_T]) -> Iterator[_T]:
        """Yield ``items`` (records, or pages of them); lacking access ends only this stream.

        A missing scope, permission or route ends the stream in a sentence, not the run.
        """
        if self.confluence_tap.missing_scopes(self):
            self.logger.warning(
                "Skipping %s: the OAuth token was not granted %s; authorise the app again with "
                "that scope to extract it.",
                self.name,
                self.scope_hint(),
            )
            return
        try:
            yield from items
        except StreamAccessError as exc:
            self.confluence_tap.note_stream_ended(self.name, exc)
        except MisshapenAnswerError as exc:
            # Retried already: the API keeps answering something this stream cannot read.
            sentence = str(exc).removesuffix("; retrying.").rstrip(".")
            self.confluence_tap.note_stream_ended(
                self.name,
                UnexpectedAnswerError(
                    f"{sentence} on every retry, so {self.name} stopped; the other streams "
                    "carry on."
                ),
            )

    def finalize_state_progress_markers(self, state: dict[str, t.Any] | None = None) -> None:
        """Finish the stream's state; after the last stream, report streams that ended early."""
        super().finalize_state_progress_markers(state)
        if state is None and not self.parent_stream_type:
            self.confluence_tap.after_stream(self)

    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield the records of the stream's listing; multi-endpoint streams override this."""
        url = self.get_url(context)
        params = self.get_url_params(context, None)
        for body in self.fetch_pages(url, params, self.get_new_paginator(), context=context):
            yield from self.page_records(body)

    def page_records(self, body: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """Yield the records of one listing page; entries that are not objects are counted."""
        results = body.get("results") or []
        kept = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        dropped = (len(results) if isinstance(results, list) else 1) - len(kept)
        if dropped:
            self.logger.warning(
                "%s: %d entries of a page were not JSON objects and cannot be loaded; the API "
                "returned a malformed page.",
                self.name,
                dropped,
            )
        yield from kept

    # One request path.

    def fetch_pages(
        self,
        url: str,
        params: dict[str, t.Any],
        paginator: BaseAPIPaginator[t.Any],
        *,
        auth: Auth | None = None,
        context: Context | None = None,
    ) -> Iterator[dict[str, t.Any]]:
        """Yield each page's body of a listing, asked for as ``paginator`` says, to its end."""
        pages = t.cast("PageRequests", paginator)
        # A page that times out is asked again smaller; links the API sends carry their own.
        limit = params.get("limit")
        governor = PageSizeGovernor(limit, MIN_LISTING_PAGE) if isinstance(limit, int) else None
        with self.get_http_request_counter() as counter:
            counter.with_context(context)
            while not paginator.finished:
                page_url, page_params = pages.page_request(url, params)
                body, response = self.fetch_json(
                    page_url,
                    page_params,
                    auth=auth,
                    parse=_with_response,
                    governor=governor if page_params is not None else None,
                )
                counter.increment()
                yield body
                paginator.advance(response)

    def fetch_json(
        self,
        url: str,
        params: Mapping[str, t.Any] | list[tuple[str, t.Any]] | None = None,
        *,
        auth: Auth | None = None,
        parse: Parse = parse_object,
        gate: RequestGate | None = None,
        governor: PageSizeGovernor | None = None,
        json_body: t.Any = None,
        endpoint: str | None = None,
    ) -> t.Any:
        """GET ``url`` (POST ``json_body``) with this stream's auth, retries and error handling.

        ``parse`` turns the response into the result: a ``msgspec.ValidationError`` means
        valid JSON of the wrong shape, any other ValueError a body cut short; both are tried
        again. ``gate``, shared by concurrent workers, holds every try to the number of
        requests the API currently accepts at once; ``governor`` sets the ``limit`` of each
        try, smaller after a 502/504. ``endpoint`` names the route in metrics.
        """
        pairs: list[tuple[str, t.Any]] = (
            list(params.items()) if isinstance(params, abc.Mapping) else list(params or [])
        )
        authenticator = auth or self.authenticator
        label = endpoint or self._endpoint_of(url)
        headers = {**self.http_headers, "User-Agent": self.user_agent}
        parsed: list[t.Any] = []

        def send() -> None:
            sent = pairs
            if governor is not None:
                sent = [(k, governor.limit(int(v)) if k == "limit" else v) for k, v in pairs]
            query = urlencode(sent)
            prepared = requests.Request(
                "POST" if json_body is not None else "GET",
                f"{url}?{query}" if query else url,
                headers=headers,
                json=json_body,
            ).prepare()
            # Authenticate on every try, so a token refreshed after a 401 is used.
            with gate.slot() if gate else contextlib.nullcontext():
                response = self.send_request(prepared, authenticator, label)
            if gate:
                if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                    gate.refused()
                elif response.ok:
                    gate.answered()
            self.validate_status(response, governor=governor)
            if governor is not None:
                governor.succeeded()
            try:
                parsed.append(parse(response))
            except msgspec.ValidationError as exc:
                path = urlsplit(response.url).path
                msg = f"{self.name}: the answer from {path} is not what it should be ({exc})"
                raise MisshapenAnswerError(f"{msg}; retrying.", response) from None
            except ValueError:
                raise self._unreadable(response) from None

        self.request_decorator(send)()
        return parsed[-1]

    def send_request(
        self, prepared: requests.PreparedRequest, auth: Auth, endpoint: str
    ) -> requests.Response:
        """Send one try: never while the run is halted; at most MAX_RESPONSE_BYTES read."""
        self.confluence_tap.check_halted()
        try:
            response = self.requests_session.send(auth(prepared), timeout=self.timeout, stream=True)
        except requests.exceptions.ConnectionError as exc:
            if never_sent(exc):
                request_url = getattr(exc.request, "url", None) or prepared.url or ""
                setting = self.confluence_tap.setting_for_url(str(request_url))
                host = urlsplit(str(request_url)).netloc
                raise _Unreachable(setting, host, type(exc).__name__) from None
            raise
        try:
            response._content = self._read_capped(response)
        finally:
            response.close()
        self._write_request_duration_log(
            endpoint=endpoint, response=response, context=None, extra_tags=None
        )
        return response

    def _read_capped(self, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        too_big = declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES
        chunks: list[bytes] = []
        size = 0
        if not too_big:
            for chunk in response.iter_content(_READ_CHUNK):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    too_big = True
                    break
                chunks.append(chunk)
        if too_big:
            path = urlsplit(response.url).path
            msg = (
                f"{self.name}: the answer from {path} is over {MAX_RESPONSE_BYTES >> 20} MiB, "
                f"far more than any page should be, so {self.name} stopped rather than run "
                "out of memory; the other streams carry on."
            )
            raise UnexpectedAnswerError(msg)
        return b"".join(chunks)

    def _endpoint_of(self, url: str) -> str:
        """Return the route part of a URL (gateway prefix stripped), for metrics."""
        path = urlsplit(url).path
        base_path = urlsplit(self.url_base).path
        return path.removeprefix(base_path) if base_path else path

    # Errors and retries.

    def _unreadable(self, response: requests.Response) -> RetriableAPIError | FatalAPIError:
        path = urlsplit(response.url).path
        kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind and "json" not in kind:
            # A login page or a portal's HTML where JSON belongs: asking again changes nothing.
            msg = f"{self.name}: {path} answered {kind or 'something'}, not JSON."
            return FatalAPIError(msg)
        # A body cut short or garbled in transit: the same request will most likely succeed.
        msg = f"{self.name}: the answer from {path} is not complete JSON; retrying."
        return RetriableAPIError(msg, response)

    def validate_status(
        self, response: requests.Response, *, governor: PageSizeGovernor | None = None
    ) -> None:
        """Raise for HTTP error statuses (the body of a success is checked by the caller)."""
        status = response.status_code
        auth = self.confluence_tap.api_authenticator
        if status < 400:
            if isinstance(auth, AtlassianOAuthAuthenticator):
                auth.note_success()
            return
        path = urlsplit(response.url).path
        message = self._api_message(response)
        if status == 401:
            self._on_unauthorized(response, message)
        if status == 403:
            raise StreamAccessError(
                f"{self.name} needs {self.permission_hint}; the API answered 403 ({message}).",
                status=status,
            )
        if status == 404:
            self.confluence_tap.check_cloud_id(response)
        if status == 410:
            raise RouteGoneError(
                f"{self.name}: Atlassian has removed {self._endpoint_of(response.url)} for "
                f"these credentials (410 Gone: {message[:120]}), so {self.name} stopped; the "
                "other streams carry on.",
                status=status,
            )
        if status == 429 or (status == 503 and requested_wait(response) is not None):
            self._on_rate_limited(response, self._endpoint_of(response.url))
        if status in (502, 504) and governor is not None:
            sent = sent_limit(response)
            if sent is not None and governor.shrink(sent):
                msg = (
                    f"{self.name}: {status} from {path} on a page of {sent}; asking again for "
                    f"{governor.limit(sent)}."
                )
                raise PageTooHeavyError(msg, response)
        if status >= 500:
            msg = f"{self.name}: {status} from {path}; retrying."
            raise RetriableAPIError(msg, response)
        msg = f"{self.name}: {status} from {path} ({message})."
        error = FatalAPIError(msg)
        error.status = status  # type: ignore[attr-defined]
        raise error

    def _on_rate_limited(self, response: requests.Response, path: str) -> None:
        """Wait as asked, or stop every stream when the wait is longer than the cap allows."""
        cap = float(self.config.get("max_retry_wait_seconds", 300))
        wait = requested_wait(response)
        if wait is not None and wait > cap:
            # Never retry before Retry-After: Atlassian answers with the same or a longer one.
            raise self.confluence_tap.halt(stop_sentence(response, path, wait, cap))
        msg = f"{self.name}: {response.status_code} from {path}; retrying."
        raise RateLimitedError(msg, response)

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
                raise StaleTokenError(msg, response)
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

    def request_decorator(self, func: Callable[..., t.Any]) -> Callable[..., t.Any]:
        """Retry ``func``: 429s, transient failures and unreachable hosts, each on its own budget.

        Innermost, a host that refuses the connection or does not resolve gets one more try
        a second later, then one sentence naming the setting; then 429s with a wait within
        the cap; outermost 5xx, resets and cut bodies (each of which restarts the 429 count).
        """

        def unreachable_sentence(details: Details) -> None:
            exc = t.cast("_Unreachable", details.get("exception"))
            msg = (
                f"{exc.host} could not be reached ({exc.cause}, {details.get('tries')} tries); "
                f"check {exc.setting} and the network, then run the tap again."
            )
            raise HostUnreachableError(msg) from None

        reachable = backoff.on_exception(
            backoff.constant,
            _Unreachable,
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
        """Give a flaky API a fair number of chances."""
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


def _spent_its_own_budget(exc: Exception) -> bool:
    """Tell whether the outer layer must not retry: a 429 that outlasted its own tries."""
    return isinstance(exc, RateLimitedError)


def _with_response(response: requests.Response) -> tuple[dict[str, t.Any], requests.Response]:
    return parse_object(response), response


def sent_limit(response: requests.Response) -> int | None:
    """Return the ``limit`` a request asked for, read back from its URL."""
    for key, value in parse_qsl(urlsplit(response.request.url or "").query):
        if key == "limit" and value.isdigit():
            return int(value)
    return None


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
