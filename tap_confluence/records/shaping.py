"""Records shaped once by the tap: the selected fields only, each of a type the schema admits.

Records here come from JSON, so there is nothing to conform as the SDK does for every value
(which cost about a third of the tap's time); the tap drops what the schema or the catalog
leaves out itself, which keeps selection working, and checks each record's top-level types
against the schema in one place: ``admits`` serves both the stream check (``ShapedRecords``)
and the user payload repair (``conform``).
"""

from __future__ import annotations

import datetime as dt
import json
import typing as t

from singer_sdk import singerlib as singer
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from typing_extensions import override

from tap_confluence.records.writer import BlockWriter
from tap_confluence.sdk_compat import RecordHooks, drop_deselected

if t.TYPE_CHECKING:
    from collections.abc import Generator, Mapping

#: Record shapes (field names and value types) remembered as type-checked per stream.
MAX_SHAPES = 256

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


Admits = tuple[tuple[type, ...], bool, bool]


def json_kinds(schema: Mapping[str, t.Any]) -> tuple[str, ...]:
    """Return the JSON types a property's schema allows (``type`` as a string or a list)."""
    kinds = schema.get("type") or ()
    return (kinds,) if isinstance(kinds, str) else tuple(kinds)


def admitted(kinds: tuple[str, ...]) -> Admits:
    """(Python types, whether bool is one, whether null is) for a property's JSON types."""
    types = tuple(tp for kind in kinds for tp in _JSON_TYPES.get(kind, ()))
    return types, "boolean" in kinds, "null" in kinds


def admits(allowed: Admits, value: t.Any) -> bool:
    """Tell whether a value is of a type the property admits (a bool only where boolean is)."""
    types, bool_ok, _ = allowed
    return isinstance(value, types) and (bool_ok or value.__class__ is not bool)


def field_types(schema: Mapping[str, t.Any]) -> dict[str, tuple[str, ...]]:
    """Map each top-level property to the JSON types the schema allows for it."""
    return {name: json_kinds(prop) for name, prop in schema.get("properties", {}).items()}


def conform(record: dict[str, t.Any], types: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Fix wrong-typed values in place; return the names of the fields changed.

    A scalar where text is expected becomes its JSON text (7 -> "7", true -> "true");
    anything else that does not fit becomes null, or is removed when null is not allowed.
    """
    changed = []
    for name, kinds in types.items():
        if name not in record or not kinds:
            continue
        value = record[name]
        allowed = admitted(kinds)
        if admits(allowed, value):
            continue
        changed.append(name)
        if "string" in kinds and isinstance(value, int | float | bool):
            record[name] = json.dumps(value)
        elif allowed[2]:
            record[name] = None
        else:
            del record[name]
    return changed


class ShapedRecords(RecordHooks):
    """Stream mix-in: records leave with only their selected schema fields, type-checked."""

    # The API's JSON already has the schema's types; conforming every value cost the most.
    # The top-level check below names and nulls the odd value instead.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    _selection: tuple[frozenset[str], bool] | None = None
    _admits: dict[str, Admits] | None = None
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
            self._admits = {k: admitted(json_kinds(props[k])) for k in keep}
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
        allowed = t.cast("dict[str, Admits]", self._admits)
        clean = True
        for key, value in record.items():
            if admits(allowed[key], value):
                continue
            null_ok = allowed[key][2]
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
            drop_deselected(shaped, self)
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
            isinstance(self.message_writer, BlockWriter)
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
    def record_messages(
        self, record: dict[str, t.Any]
    ) -> Generator[singer.RecordMessage, None, None]:
        """Like the SDK's, minus its per-record walks: project onto the selected fields."""
        now = dt.datetime.now(dt.UTC)
        for alias, mapped in self._mapped(record):
            yield singer.RecordMessage(
                stream=alias, record=mapped, version=self.table_version, time_extracted=now
            )

    @override
    def write_record_message(self, record: dict[str, t.Any]) -> None:
        """Write RECORDs as the SDK does, handing a BlockWriter plain values, no message object.

        The same lines come out (tested); what goes is a message object, a generator and
        three calls per record.
        """
        writer = self.message_writer
        if not isinstance(writer, BlockWriter):
            super().write_record_message(record)
            return
        now = dt.datetime.now(dt.UTC)
        for alias, mapped in self._mapped(record):
            writer.write_record(alias, mapped, self.table_version, now)
        self.note_unflushed()

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
