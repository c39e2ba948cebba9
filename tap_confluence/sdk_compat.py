"""The only module that touches members the Meltano Singer SDK does not publish.

Each entry names what it relies on; tests/unit/test_sdk_compat.py fails when the SDK
renames, removes or re-types one of them, so an upgrade breaks loudly here, not silently
in a stream.
"""

from __future__ import annotations

import typing as t

from singer_sdk import Tap

# The SDK's batch types and its deselection walk live only in private modules.
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig, StorageTarget
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.streams.core import Stream
from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Generator

    from requests import Response
    from singer_sdk import RESTStream
    from singer_sdk import singerlib as singer
    from singer_sdk.authenticators import OAuthAuthenticator
    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib.encoding.base import GenericSingerWriter

__all__ = [
    "BaseBatchFileEncoding",
    "BatchConfig",
    "BookmarkHooks",
    "EndOfRunTap",
    "OwnRecordLoop",
    "RecordHooks",
    "StateAtOwnPoints",
    "StorageTarget",
    "TableVersion",
    "VersionedStream",
    "default_expiration",
    "drop_deselected",
    "tap_of",
    "write_request_metric",
    "write_state_now",
]


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


class TableVersion(Stream):
    """The SDK's table version of a stream's records, under a name of our own."""

    @property
    def table_version(self) -> int | None:
        """The version on this stream's records (None: unversioned)."""
        return self._stream_version

    @table_version.setter
    def table_version(self, version: int) -> None:
        self._stream_version = version


def drop_deselected(record: dict[str, t.Any], stream: Stream) -> None:
    """Remove from ``record`` the nested properties the catalog deselects (the SDK's walk)."""
    pop_deselected_record_properties(record, stream.schema, stream.mask)


class StateAtOwnPoints(Stream):
    """A stream that writes STATE only where its own bookkeeping is consistent."""

    # The SDK writes STATE every STATE_MSG_FREQUENCY records, mid-stream; never here.
    STATE_MSG_FREQUENCY = 10**9


class BookmarkHooks(Stream):
    """The SDK's per-record bookmark step, under names of our own."""

    @override
    def _increment_stream_state(
        self, latest_record: dict[str, t.Any], *, context: Context | None = None
    ) -> None:
        self.note_record(latest_record, context)

    def note_record(self, latest_record: dict[str, t.Any], context: Context | None) -> None:
        """Note a record written (the SDK's bookmark by default, see ``advance_state``)."""
        self.advance_state(latest_record, context)

    def advance_state(self, latest_record: dict[str, t.Any], context: Context | None) -> None:
        """Move the bookmark to ``latest_record``, as the SDK does after each record."""
        super()._increment_stream_state(latest_record, context=context)

    def write_state(self) -> None:
        """Write STATE if records went out since the last one (as the SDK does)."""
        self._write_state_message()


class RecordHooks(TableVersion):
    """The SDK's per-record hooks (its RECORD messages, their writing) under names of our own."""

    @property
    def message_writer(self) -> GenericSingerWriter[t.Any, t.Any]:
        """The tap's writer of Singer messages (stdout)."""
        return tap_of(self).message_writer

    @override
    def _generate_record_messages(
        self, record: dict[str, t.Any]
    ) -> Generator[singer.RecordMessage, None, None]:
        yield from self.record_messages(record)

    def record_messages(
        self, record: dict[str, t.Any]
    ) -> Generator[singer.RecordMessage, None, None]:
        """Yield the RECORD messages of one record (the SDK's own by default)."""
        yield from super()._generate_record_messages(record)

    @override
    def _write_record_message(self, record: dict[str, t.Any]) -> None:
        self.write_record_message(record)

    def write_record_message(self, record: dict[str, t.Any]) -> None:
        """Write one record's RECORD messages (the SDK's own way by default)."""
        super()._write_record_message(record)

    def note_unflushed(self) -> None:
        """Tell the SDK that records went out since its last STATE, so the next is written."""
        self.state_manager.is_flushed = False


class OwnRecordLoop(BookmarkHooks):
    """A stream that may write its records itself, instead of the SDK's record-by-record loop."""

    @override
    def _sync_records(
        self, context: Context | None = None, *, write_messages: bool = True
    ) -> Generator[dict[str, t.Any], t.Any, t.Any]:
        if write_messages and context is None and self.writes_own_records():
            self.write_own_records()
            return
        yield from super()._sync_records(context, write_messages=write_messages)

    def writes_own_records(self) -> bool:
        """Tell whether this sync's records go out through ``write_own_records``."""
        return False

    def write_own_records(self) -> None:
        """Write every record of a context-free sync (``begin_own`` ... ``end_own`` around)."""
        raise NotImplementedError

    def begin_own(self) -> None:
        """Do what the SDK's loop does before the first record (the starting bookmark)."""
        self._write_starting_replication_value(None)

    def end_own(self) -> None:
        """Do what the SDK's loop does after the last record, inside its counter and timer."""
        self._finalize_state(self.get_context_state(None))

    def finalize_own(self) -> None:
        """Do what the SDK does once a stream's records are out: finalize its state."""
        self._finalize_state(self.stream_state)


class VersionedStream(TableVersion):
    """The SDK's table version, SCHEMA and ACTIVATE_VERSION hooks, under names of our own."""

    def run_started_at_ms(self) -> int:
        """Return when the tap started this run, in epoch milliseconds (as the SDK's versions)."""
        return int(tap_of(self).initialized_at)

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
