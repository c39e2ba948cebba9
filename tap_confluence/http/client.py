"""The one request path every stream uses: authenticated tries, limits, retries, sentences.

Every request goes through ``fetch_json``: it authenticates each try, stops when the run has
been halted (a spent rate-limit quota), reads at most ``MAX_RESPONSE_BYTES``, writes the
SDK's request-duration metric, and turns each status into a retry or a sentence. Listings
page through ``fetch_pages`` with the SDK's paginators.
"""

from __future__ import annotations

import contextlib
import typing as t
from collections import abc
from http import HTTPStatus
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec
import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_confluence.errors import (
    RouteGoneError,
    StreamAccessError,
    TapUserError,
    UnexpectedAnswerError,
    never_sent,
)
from tap_confluence.http.limits import PageSizeGovernor
from tap_confluence.http.retry import (
    MisshapenAnswerError,
    PageTooHeavyError,
    RateLimitedError,
    RetryingStream,
    StaleTokenError,
    Unreachable,
    requested_wait,
    setting_for_url,
    stop_sentence,
)
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.sdk_compat import write_request_metric

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from singer_sdk.helpers.types import Auth, Context
    from singer_sdk.pagination import BaseAPIPaginator

    from tap_confluence.http.limits import RequestGate
    from tap_confluence.http.paginators import PageRequests
    from tap_confluence.site.connection import SiteConnection

_SCOPE_MISMATCH = "scope does not match"
#: No page of any endpoint comes near this; past it a request fails instead of eating memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: The smallest page a listing asks for after 502/504s on larger ones.
MIN_LISTING_PAGE = 25
_READ_CHUNK = 1 << 20

#: JSON bodies to Python values; several times faster than requests' ``response.json()``.
decode_json: t.Callable[[bytes], t.Any] = msgspec.json.Decoder().decode

Parse = t.Callable[[requests.Response], t.Any]


def parse_object(response: requests.Response) -> dict[str, t.Any]:
    """Return the body as a JSON object; a list or a string where one belongs is misshapen."""
    body = decode_json(response.content)
    if not isinstance(body, dict):
        msg = f"a JSON {type(body).__name__} instead of an object"
        raise msgspec.ValidationError(msg)
    return body


class ApiClient(RetryingStream):
    """A stream's requests: the one path they take, and what each answer means."""

    #: How the stream reaches the site (set by ConfluenceStream).
    site: SiteConnection
    #: Any one of these scope sets lets the stream run (classic or granular alternatives).
    required_scopes: t.ClassVar[tuple[frozenset[str], ...]] = ()
    #: What a 403 means for this stream, for the error sentence.
    permission_hint: t.ClassVar[str] = "permission to read this data"

    def fetch_pages(
        self,
        url: str,
        params: dict[str, t.Any],
        paginator: BaseAPIPaginator[t.Any],
        *,
        auth: Auth | None = None,
        context: Context | None = None,
        endpoint: str | None = None,
    ) -> Iterator[dict[str, t.Any]]:
        """Yield each page's body of a listing, asked for as ``paginator`` says, to its end.

        ``endpoint`` names the route in metrics (the stream's path, with its placeholders).
        """
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
                    endpoint=endpoint,
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
        self.site.check_halted()
        try:
            response = self.requests_session.send(auth(prepared), timeout=self.timeout, stream=True)
        except requests.exceptions.ConnectionError as exc:
            if never_sent(exc):
                request_url = getattr(exc.request, "url", None) or prepared.url or ""
                setting = setting_for_url(str(request_url))
                host = urlsplit(str(request_url)).netloc
                raise Unreachable(setting, host, type(exc).__name__) from None
            raise
        try:
            response._content = self._read_capped(response)
        finally:
            response.close()
        write_request_metric(self, endpoint, response)
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
        auth = self.site.api_authenticator
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
            self.site.check_cloud_id(response)
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
            raise self.site.halt(stop_sentence(response, path, wait, cap))
        msg = f"{self.name}: {response.status_code} from {path}; retrying."
        raise RateLimitedError(msg, response)

    def _on_unauthorized(self, response: requests.Response, message: str) -> None:
        auth = self.site.api_authenticator
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
        who = self.site.config.get("email", "the account")
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
        return self.site.secrets.redact(text)[:200]


def _with_response(response: requests.Response) -> tuple[dict[str, t.Any], requests.Response]:
    return parse_object(response), response


def sent_limit(response: requests.Response) -> int | None:
    """Return the ``limit`` a request asked for, read back from its URL."""
    for key, value in parse_qsl(urlsplit(response.request.url or "").query):
        if key == "limit" and value.isdigit():
            return int(value)
    return None
