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

import msgspec
from singer_sdk import singerlib as singer
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.contrib.msgspec import encoder as sdk_encoder
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.streams.core import Stream
from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Generator

#: Records are written in blocks of about this many bytes.
FLUSH_BYTES = 64 * 1024
#: Record shapes (field names and value types) remembered as type-checked per stream.
MAX_SHAPES = 256


class BlockWriter(MsgSpecWriter):
    """msgspec-encoded messages; RECORDs leave in blocks, anything else flushes at once.

    A STATE message always follows its records out of the process, so a target never sees
    a bookmark ahead of the records it covers, and a killed tap loses only unconfirmed rows.
    """

    def __init__(self) -> None:
        """Start with an empty block."""
        super().__init__()
        self._block = bytearray()

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
        records: t.Iterable[dict[str, t.Any]],
        version: int | None,
        extracted: dt.datetime | None,
    ) -> None:
        """Queue ``write_record`` of each record: the same bytes, one message dict for all."""
        message: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": None}
        if version is not None:
            message["version"] = version
        if extracted is not None:
            # Encoded once, not once per record: the same bytes.
            message["time_extracted"] = msgspec.Raw(sdk_encoder.encode(extracted))
        block, encode_into = self._block, sdk_encoder.encode_into
        for record in records:
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


#: Python types each JSON Schema type admits (bool is checked apart: it is an int subclass).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _admitted(schema: dict[str, t.Any]) -> tuple[tuple[type, ...], bool, bool]:
    """(Python types, whether bool is one, whether null is) for a property's schema."""
    kinds = schema.get("type") or []
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    types = tuple(tp for kind in kinds for tp in _JSON_TYPES.get(kind, ()))
    return types, "boolean" in kinds, "null" in kinds


class ShapedRecords(Stream):
    """Stream mix-in: records leave with only their selected schema fields, type-checked."""

    # The API's JSON already has the schema's types; conforming every value cost the most.
    # The top-level check below names and nulls the odd value instead.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    _selection: tuple[frozenset[str], bool] | None = None
    _admits: dict[str, tuple[tuple[type, ...], bool, bool]] | None = None
    _warned: set[str] | None = None
    _good_shapes: set[tuple[tuple[str, ...], tuple[type, ...]]] | None = None
    _map_plan: list[tuple[str, t.Callable[[dict[str, t.Any]], t.Any] | None]] | None = None

    def selected_fields(self) -> tuple[frozenset[str], bool]:
        """Top-level fields to keep, and whether any nested field is deselected."""
        if self._selection is None:
            mask = self.mask
            keep = frozenset(k for k in self.schema["properties"] if mask[("properties", k)])
            nested_off = any(len(crumb) > 2 and not on for crumb, on in mask.items())
            self._selection = (keep, nested_off)
            props = self.schema["properties"]
            self._admits = {k: _admitted(props[k]) for k in keep}
            self._warned = set()
            self._good_shapes = set()
        return self._selection

    def _warn_once(self, key: str, message: str, *args: t.Any) -> None:
        warned = t.cast("set[str]", self._warned)
        if key not in warned:
            warned.add(key)
            self.logger.warning(message, *args)

    def _check_types(self, record: dict[str, t.Any]) -> None:
        """Null (and name, once per field) any top-level value of a type the schema forbids.

        Records of one stream nearly always have the same fields of the same types, so each
        shape (field names and value types) is checked once and remembered as good.
        """
        shape = (tuple(record), tuple(map(type, record.values())))
        good = t.cast("set[tuple[tuple[str, ...], tuple[type, ...]]]", self._good_shapes)
        if shape in good:
            return
        admits = t.cast("dict[str, tuple[tuple[type, ...], bool, bool]]", self._admits)
        clean = True
        for key, value in record.items():
            types, bool_ok, null_ok = admits[key]
            if isinstance(value, types) and (bool_ok or value.__class__ is not bool):
                continue
            clean = False
            kinds = self.schema["properties"][key].get("type")
            if null_ok:
                record[key] = None
            self._warn_once(
                f"type:{key}",
                "%s: the API sent %s for %s, which the schema types as %s; %s (further such "
                "values of this field are handled the same way without another warning).",
                self.name,
                type(value).__name__,
                key,
                kinds,
                "emitted it as null" if null_ok else "emitted it as sent",
            )
        if clean and len(good) < MAX_SHAPES:
            good.add(shape)

    def _selected_record(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """Project a record onto the selected fields and null values of a forbidden type."""
        keep, nested_off = self.selected_fields()
        shaped = (
            record if keep.issuperset(record) else {k: v for k, v in record.items() if k in keep}
        )
        if len(shaped) < len(record):
            unknown = sorted(k for k in record if k not in self.schema["properties"])
            if unknown:
                self._warn_once(
                    "unknown",
                    "%s: left out fields the schema does not have: %s (the API added them; "
                    "they are not loaded).",
                    self.name,
                    ", ".join(unknown[:20]),
                )
        self._check_types(shaped)
        if nested_off:
            # Rare (a catalog deselecting e.g. author.displayName): the SDK's walk is right.
            pop_deselected_record_properties(shaped, self.schema, self.mask)
        return shaped

    def good_shapes(self) -> set[tuple[tuple[str, ...], tuple[type, ...]]]:
        """Shapes (field names, value types) of records known to go out unchanged.

        A record of such a shape needs no ``_selected_record``: it has only selected fields,
        each of a type the schema admits. The set grows as ``_selected_record`` meets more.
        """
        self.selected_fields()
        return t.cast("set[tuple[tuple[str, ...], tuple[type, ...]]]", self._good_shapes)

    def fast_records(self) -> bool:
        """Tell whether records may go out through ``good_shapes`` and ``write_records``.

        Only when nothing but the tap's own shaping applies: a BlockWriter, no nested field
        deselected, and no stream map but the SDK's identity (no alias, no flattening).
        """
        _, nested_off = self.selected_fields()
        plan = self._map_plan or self._plan_maps()
        return (
            isinstance(self._tap.message_writer, BlockWriter)
            and not nested_off
            and plan == [(self.name, None)]
        )

    def _mapped(self, record: dict[str, t.Any]) -> list[tuple[str, dict[str, t.Any]]]:
        """(stream alias, record) for each stream map that keeps the shaped record."""
        record = self._selected_record(record)
        out = []
        for alias, transform in self._map_plan or self._plan_maps():
            mapped = record if transform is None else transform(record)
            if mapped is not None:
                out.append((alias, mapped))
        return out

    @override
    def _generate_record_messages(
        self, record: dict[str, t.Any]
    ) -> Generator[singer.RecordMessage, None, None]:
        """Like the SDK's, minus its per-record walks: project onto the selected fields."""
        now = dt.datetime.now(dt.UTC)
        for alias, mapped in self._mapped(record):
            yield singer.RecordMessage(
                stream=alias, record=mapped, version=self._stream_version, time_extracted=now
            )

    @override
    def _write_record_message(self, record: dict[str, t.Any]) -> None:
        """Write RECORDs as the SDK does, handing a BlockWriter plain values, no message object.

        The same lines come out (tested); what goes is a message object, a generator and
        three calls per record.
        """
        writer = self._tap.message_writer
        if not isinstance(writer, BlockWriter):
            super()._write_record_message(record)
            return
        now = dt.datetime.now(dt.UTC)
        for alias, mapped in self._mapped(record):
            writer.write_record(alias, mapped, self._stream_version, now)
        self.state_manager.is_flushed = False

    def _plan_maps(self) -> list[tuple[str, t.Callable[[dict[str, t.Any]], t.Any] | None]]:
        """Each stream map's alias and transform; None where the map hands records back as is."""
        self._map_plan = [
            (
                stream_map.stream_alias,
                None
                if type(stream_map) is SameRecordTransform and not stream_map.flattening_enabled
                else stream_map.transform,
            )
            for stream_map in self.stream_maps
        ]
        return self._map_plan
