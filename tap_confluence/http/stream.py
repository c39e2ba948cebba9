"""Base REST stream for Confluence: URLs, records, and a clean end on missing access.

Requests go through the one path in client.py; this class says where they go (the gateway
or the site, from the SiteConnection the stream receives instead of the tap) and what the
stream's records are.
"""

from __future__ import annotations

import functools
import typing as t
from urllib.parse import urlsplit

from singer_sdk import SchemaDirectory, StreamSchema
from typing_extensions import override

from tap_confluence import schemas
from tap_confluence.errors import StreamAccessError, UnexpectedAnswerError
from tap_confluence.http.client import ApiClient
from tap_confluence.http.paginators import NextLinkPaginator
from tap_confluence.http.retry import MisshapenAnswerError
from tap_confluence.records.shaping import ShapedRecords
from tap_confluence.records.versions import FullTableVersions

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Auth, Context

    from tap_confluence.sdk_compat import BatchConfig
    from tap_confluence.site.connection import SiteConnection

_T = t.TypeVar("_T")


class ConfluenceStream(FullTableVersions, ShapedRecords, ApiClient):
    """Common behaviour of every Confluence REST stream in this tap."""

    schema = StreamSchema(SchemaDirectory(schemas))
    page_size: t.ClassVar[int] = 200
    #: Whether ``batch_config`` makes this stream write batch files. Only audit_records does:
    #: the other streams are small, and some write STATE mid-stream, which the SDK's own
    #: batcher would put ahead of the batch holding the records it covers.
    writes_batches: t.ClassVar[bool] = False

    def __init__(self, tap: Tap, site: SiteConnection, **kwargs: t.Any) -> None:
        """Build a stream of ``tap`` that reaches the site through ``site``, never the tap."""
        self.site = site
        super().__init__(tap, **kwargs)

    @property
    @override
    def url_base(self) -> str:
        """Gateway ``{api_url}/ex/confluence/{cloud_id}`` or the site URL, per auth mode."""
        return self.site.base_url

    @property
    @override
    def authenticator(self) -> Auth:
        """The run's single authenticator, shared by every stream."""
        return self.site.api_authenticator

    @property
    @override
    def http_headers(self) -> dict[str, str]:
        """Ask for JSON and English error text."""
        return {"Accept": "application/json", "Accept-Language": "en"}

    @functools.cached_property
    def cloud_id(self) -> str:
        """The site's cloud ID (from config, or the site URL's host under a classic token)."""
        return self.site.cloud_id

    def rebase_link(self, link: str) -> str:
        """Join a ``_links.next`` to our base URL; never follow a link to another host."""
        parts = urlsplit(link)
        path = parts.path
        gateway_prefix = f"/ex/confluence/{self.site.config.get('cloud_id', '')}"
        if path.startswith(gateway_prefix):
            path = path[len(gateway_prefix) :]
        if not path.startswith("/wiki/"):
            # v1 links are relative to _links.base, which ends in /wiki.
            path = "/wiki" + (path if path.startswith("/") else "/" + path)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.url_base}{path}{query}"

    @override
    def get_new_paginator(self) -> NextLinkPaginator:
        """Follow ``_links.next`` until it is missing or a page is empty."""
        return NextLinkPaginator(self.rebase_link)

    @override
    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        """Query parameters of a listing's first page."""
        return {"limit": self.page_size}

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        """Tag every record with the site's cloudId, which leads every primary key."""
        row["cloudId"] = self.cloud_id
        return row

    @override
    def generate_child_contexts(
        self, record: dict[str, t.Any], context: Context | None
    ) -> Iterable[Context | None]:
        """No child context at all for a stream without children (the SDK copies every record)."""
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    @override
    def get_batch_config(self, config: Mapping[str, t.Any]) -> BatchConfig | None:
        """``batch_config`` for a stream that writes batches; None (RECORD messages) otherwise."""
        return super().get_batch_config(config) if self.writes_batches else None

    # Records, with a clean end on a missing scope or permission.

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield records; a missing scope, permission or route ends this stream in a sentence."""
        yield from self.guarded(self.extract_records(context))

    def guarded(self, items: Iterable[_T]) -> Iterator[_T]:
        """Yield ``items`` (records, or pages of them); lacking access ends only this stream.

        A missing scope, permission or route ends the stream in a sentence, not the run.
        """
        if self.site.missing_scopes(self.required_scopes):
            self.mark_incomplete()
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
            self.mark_incomplete()
            self.site.note_stream_ended(exc)
        except MisshapenAnswerError as exc:
            # Retried already: the API keeps answering something this stream cannot read.
            self.mark_incomplete()
            sentence = str(exc).removesuffix("; retrying.").rstrip(".")
            self.site.note_stream_ended(
                UnexpectedAnswerError(
                    f"{sentence} on every retry, so {self.name} stopped; the other streams "
                    "carry on."
                ),
            )

    def extract_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield the records of the stream's listing; multi-endpoint streams override this."""
        url = self.get_url(context)
        params = self.get_url_params(context, None)
        paginator = self.get_new_paginator()
        for body in self.fetch_pages(url, params, paginator, context=context, endpoint=self.path):
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
