"""Make a record's top-level values match the schema's types, for payloads the API got wrong."""

from __future__ import annotations

import json
import typing as t

_CHECKS: dict[str, t.Callable[[t.Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def field_types(schema: t.Mapping[str, t.Any]) -> dict[str, tuple[str, ...]]:
    """Map each top-level property to the JSON types the schema allows for it."""
    out: dict[str, tuple[str, ...]] = {}
    for name, prop in schema.get("properties", {}).items():
        kinds = prop.get("type", [])
        out[name] = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    return out


def conform(record: dict[str, t.Any], types: t.Mapping[str, tuple[str, ...]]) -> list[str]:
    """Fix wrong-typed values in place; return the names of the fields changed.

    A scalar where text is expected becomes its JSON text (7 -> "7", true -> "true");
    anything else that does not fit becomes null, or is removed when null is not allowed.
    """
    changed = []
    for name, kinds in types.items():
        if name not in record or not kinds:
            continue
        value = record[name]
        if any(_CHECKS[k](value) for k in kinds if k in _CHECKS):
            continue
        changed.append(name)
        if "string" in kinds and isinstance(value, int | float | bool):
            record[name] = json.dumps(value)
        elif "null" in kinds:
            record[name] = None
        else:
            del record[name]
    return changed
