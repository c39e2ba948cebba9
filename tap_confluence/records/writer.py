"""The cheap way out for records: written by msgspec, flushed in blocks.

Profiling a 50,000-record audit sync showed the SDK's per-record path (type conformance, the
deselection walk over every nested dict, simplejson, a flush per message) taking about two
thirds of the tap's time; this writer is the output half of the way around it (shaping.py is
the other).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import sys
import typing as t
import weakref

import msgspec
from singer_sdk import singerlib as singer
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.contrib.msgspec import encoder as sdk_encoder
from typing_extensions import override

#: Records are written in blocks of about this many bytes.
FLUSH_BYTES = 64 * 1024


class BlockWriter(MsgSpecWriter):
    """msgspec-encoded messages; RECORDs leave in blocks, anything else flushes at once.

    A STATE message always follows its records out of the process, so a target never sees
    a bookmark ahead of the records it covers, and a killed tap loses only unconfirmed rows.
    """

    def __init__(self) -> None:
        """Start with an empty block (written out at exit at the latest)."""
        super().__init__()
        self._block = bytearray()
        # A process that ends without collecting the writer (``__main__.leave``) still
        # writes out what it holds.
        atexit.register(_flush_if_alive, weakref.ref(self))

    @override
    def write_message(self, message: singer.Message) -> None:
        """Queue a RECORD; write the block out on any other message or when it is full."""
        if type(message) is singer.RecordMessage:
            self.write_record(
                message.stream, message.record, message.version, message.time_extracted
            )
            return
        self._block += self.format_message(message)
        self.flush()

    def write_record(
        self,
        stream: str,
        record: dict[str, t.Any],
        version: int | None,
        extracted: dt.datetime | None,
    ) -> None:
        """Queue what ``RecordMessage(...)`` would write (``extracted`` must be aware UTC).

        The SDK's own encoder and message dict, appended straight to the block.
        """
        message: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": record}
        if version is not None:
            message["version"] = version
        if extracted is not None:
            message["time_extracted"] = extracted
        sdk_encoder.encode_into(message, self._block, -1)
        self._block += b"\n"
        if len(self._block) >= FLUSH_BYTES:
            self.flush()

    def write_records(
        self,
        stream: str,
        records: t.Iterable[dict[str, t.Any] | bytes],
        version: int | None,
        extracted: dt.datetime | None,
    ) -> None:
        """Queue ``write_record`` of each record: the same bytes, one message dict for all.

        A record may come as its JSON, already encoded (as the SDK's encoder would): it is
        put between the message's encoded head and tail as it is.
        """
        message: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": None}
        if version is not None:
            message["version"] = version
        if extracted is not None:
            # Encoded once, not once per record: the same bytes.
            message["time_extracted"] = msgspec.Raw(sdk_encoder.encode(extracted))
        block, encode_into = self._block, sdk_encoder.encode_into
        head = tail = b""
        for record in records:
            if type(record) is bytes:
                if not head:
                    head, tail = message_frame(message)
                block += head
                block += record
                block += tail
                continue
            message["record"] = record
            encode_into(message, block, -1)
            block += b"\n"
        if len(block) >= FLUSH_BYTES:
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


def message_frame(message: dict[str, t.Any]) -> tuple[bytes, bytes]:
    """Return the encoded message's bytes before and after its ``record`` (with the newline).

    msgspec writes a dict's keys in order, compactly, so a message is its keys before
    ``record``, the record, then its keys after.
    """
    keys = list(message)
    at = keys.index("record")
    before = sdk_encoder.encode({k: message[k] for k in keys[:at]})
    after = sdk_encoder.encode({k: message[k] for k in keys[at + 1 :]})
    head = before[:-1] + (b',"record":' if len(before) > 2 else b'"record":')
    tail = (b"," + after[1:] if len(after) > 2 else b"}") + b"\n"
    return head, tail


def _flush_if_alive(ref: weakref.ref[BlockWriter]) -> None:
    """Write out what a writer still holds at exit."""
    writer = ref()
    if writer is not None:
        with contextlib.suppress(ValueError, OSError):
            writer.flush()
