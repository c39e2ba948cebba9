"""The cheap way out for records: shaped once by the tap, written by msgspec, flushed in blocks.

Profiling a 50,000-record audit sync showed the SDK's per-record path (type conformance, the
deselection walk over every nested dict, simplejson, a flush per message) taking about two
thirds of the tap's time. Records here come from JSON, so there is nothing to conform; the
tap drops what the schema or the catalog leaves out itself, which keeps selection working.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import typing as t

from singer_sdk import singerlib as singer
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.streams.core import Stream

if t.TYPE_CHECKING:
    from collections.abc import Generator

#: Records are written in blocks of about this many bytes.
FLUSH_BYTES = 64 * 1024


class BlockWriter(MsgSpecWriter):
    """msgspec-encoded messages; RECORDs leave in blocks, anything else flushes at once.

    A STATE message always follows its records out of the process, so a target never sees
    a bookmark ahead of the records it covers, and a killed tap loses only unconfirmed rows.
    """

    def __init__(self) -> None:
        """Start with an empty block."""
        super().__init__()
        self._block = bytearray()

    def write_message(self, message: singer.Message) -> None:
        """Queue a RECORD; write the block out on any other message or when it is full."""
        self._block += self.format_message(message)
        if message.type != singer.SingerMessageType.RECORD or len(self._block) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write out and flush whatever is queued."""
        if self._block:
            sys.stdout.buffer.write(self._block)
            self._block.clear()
        sys.stdout.buffer.flush()

    def __del__(self) -> None:
        """Never drop queued records, even if the tap forgets a final flush."""
        with contextlib.suppress(ValueError, OSError):
            self.flush()


class ShapedRecords(Stream):
    """Stream mix-in: records leave with only their selected schema fields, unconformed."""

    # The API's JSON already has the schema's types; conforming every value cost the most.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    _selection: tuple[frozenset[str], bool] | None = None

    def selected_fields(self) -> tuple[frozenset[str], bool]:
        """Top-level fields to keep, and whether any nested field is deselected."""
        if self._selection is None:
            mask = self.mask
            keep = frozenset(k for k in self.schema["properties"] if mask[("properties", k)])
            nested_off = any(len(crumb) > 2 and not on for crumb, on in mask.items())
            self._selection = (keep, nested_off)
        return self._selection

    def _generate_record_messages(
        self, record: dict[str, t.Any]
    ) -> Generator[singer.RecordMessage, None, None]:
        """Like the SDK's, minus its per-record walks: project onto the selected fields."""
        keep, nested_off = self.selected_fields()
        record = {k: v for k, v in record.items() if k in keep}
        if nested_off:
            # Rare (a catalog deselecting e.g. author.displayName): the SDK's walk is right.
            pop_deselected_record_properties(record, self.schema, self.mask)
        now = dt.datetime.now(dt.UTC)
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=now,
                )
