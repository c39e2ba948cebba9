"""The only module that touches members the Meltano Singer SDK does not publish.

Each entry names what it relies on; tests/unit/test_sdk_compat.py fails when the SDK
renames, removes or re-types one of them, so an upgrade breaks loudly here, not silently
in a stream.
"""

from __future__ import annotations

import typing as t

from singer_sdk import Tap
from typing_extensions import override

if t.TYPE_CHECKING:
    from requests import Response
    from singer_sdk import RESTStream
    from singer_sdk.streams.core import Stream


class EndOfRunTap(Tap):
    """A tap that gets a last word once every stream has synced (``end_of_run``)."""

    # The SDK marks sync_all final, and offers no hook after it; the run's report of streams
    # that ended early must come after every stream, so it is wrapped here.
    @override  # type: ignore[misc]
    def sync_all(self) -> None:
        """Sync every stream as the SDK does, then give the tap its last word."""
        self.before_run()
        super().sync_all()
        self.end_of_run()

    def before_run(self) -> None:
        """Prepare what the streams share (the catalog's selection is known now)."""

    def end_of_run(self) -> None:
        """Report on the run once every stream is done; may raise to fail it."""


def tap_of(stream: Stream) -> Tap:
    """Return the tap a stream belongs to (the SDK keeps it in ``Stream._tap``)."""
    return stream._tap


def write_request_metric(stream: RESTStream[t.Any], endpoint: str, response: Response) -> None:
    """Write the SDK's http_request_duration metric for one response of ``stream``."""
    stream._write_request_duration_log(
        endpoint=endpoint, response=response, context=None, extra_tags=None
    )
