"""The only module that touches members the Meltano Singer SDK does not publish.

Each entry names what it relies on; tests/unit/test_sdk_compat.py fails when the SDK
renames, removes or re-types one of them, so an upgrade breaks loudly here, not silently
in a stream.
"""

from __future__ import annotations

import typing as t

from singer_sdk import Tap
from singer_sdk.streams.core import Stream
from typing_extensions import override

if t.TYPE_CHECKING:
    from requests import Response
    from singer_sdk import RESTStream
    from singer_sdk.authenticators import OAuthAuthenticator


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


def write_state_now(stream: Stream) -> None:
    """Write the stream's STATE at once, even with no record since the last one."""
    stream.state_manager.is_flushed = False
    stream._write_state_message()


class StateAtOwnPoints(Stream):
    """A stream that writes STATE only where its own bookkeeping is consistent."""

    # The SDK writes STATE every STATE_MSG_FREQUENCY records, mid-stream; never here.
    STATE_MSG_FREQUENCY = 10**9


class VersionedStream(Stream):
    """The SDK's table version, SCHEMA and ACTIVATE_VERSION hooks, under names of our own."""

    @property
    def table_version(self) -> int | None:
        """The version on this stream's records (None: unversioned)."""
        return self._stream_version

    @table_version.setter
    def table_version(self, version: int) -> None:
        self._stream_version = version

    def run_started_at_ms(self) -> int:
        """Return when the tap started this run, in epoch milliseconds (as the SDK's versions)."""
        return int(tap_of(self).initialized_at)

    def sibling_streams(self) -> list[Stream]:
        """Every stream of this stream's tap."""
        return list(tap_of(self).streams.values())

    @override
    def _write_schema_message(self) -> None:
        if self.schema_due():
            super()._write_schema_message()

    def schema_due(self) -> bool:
        """Tell whether the SDK may write the SCHEMA now (it asks once per sync call)."""
        return True

    def write_schema_now(self) -> None:
        """Write the SCHEMA if it is due."""
        self._write_schema_message()

    def write_activate_version(self, version: int) -> None:
        """Write ACTIVATE_VERSION for ``version``."""
        self._write_activate_version_message(version)


def default_expiration(authenticator: OAuthAuthenticator) -> int | None:
    """Return the token lifetime an OAuth authenticator was built with (answers without one)."""
    return authenticator._default_expiration
