"""Check the --state file before the SDK reads it: one sentence for anything it cannot use.

Three forms are states: the Singer state itself (``{"bookmarks": ...}``), Meltano's wrapper
(``{"singer_state": ...}``, what ``meltano state get`` prints) and a STATE message line
(``{"type": "STATE", "value": ...}``). Anything else is refused, never read as "no state": that
would silently re-read every stream from start_date.
"""

from __future__ import annotations

import datetime as dt
import json
import typing as t

from tap_confluence.errors import TapUserError

_FIX = (
    "pass what `meltano state get <state ID>` prints (its singer_state is unwrapped), the "
    "tap's last STATE message or its value, or no --state at all for a full read."
)


def _fail(what: str) -> t.NoReturn:
    raise TapUserError(f"The state {what}; {_FIX}")


def _check_bookmark(stream: str, value: t.Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        _fail(f"bookmark of {stream} is {value!r}, not an ISO 8601 date-time")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"bookmark of {stream} is {value[:40]!r}, not an ISO 8601 date-time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if moment > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        _fail(f"bookmark of {stream} is {value[:40]} in the future, so nothing would be read")


def _unwrap(state: t.Any) -> t.Any:
    """Take the Singer state out of Meltano's wrapper or a STATE message; else return as is."""
    if not isinstance(state, dict):
        return state
    if set(state) == {"singer_state"}:
        return state["singer_state"]
    if state.get("type") == "STATE" and "bookmarks" not in state:
        return state.get("value")
    return state


def _is_state(state: t.Any) -> bool:
    """Tell a Singer state (it has bookmarks; an empty object has none: a full read)."""
    return isinstance(state, dict) and ("bookmarks" in state or state == {})


def parse_state(text: str) -> dict[str, t.Any]:
    """Parse state text; raise TapUserError unless it is a usable Singer state object."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"file is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    state = _unwrap(raw)
    if not _is_state(state):
        _fail(f"file is not a Singer state (it holds {_describe(raw)})")
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        _fail("'bookmarks' must be an object keyed by stream name")
    for stream, bookmark in bookmarks.items():
        if not isinstance(bookmark, dict):
            _fail(f"bookmark of {stream} must be an object, not {type(bookmark).__name__}")
        _check_bookmark(stream, bookmark.get("replication_key_value"))
        partitions = bookmark.get("partitions", [])
        if not isinstance(partitions, list) or not all(isinstance(p, dict) for p in partitions):
            _fail(f"partitions of {stream} must be a list of objects")
        for partition in partitions:
            _check_bookmark(stream, partition.get("replication_key_value"))
    return t.cast("dict[str, t.Any]", state)


def _describe(raw: t.Any) -> str:
    """Say in a few words what the file holds instead of a state (never its values)."""
    if not isinstance(raw, dict):
        return f"a JSON {type(raw).__name__}"
    if raw.get("type") == "STATE":
        return "a STATE message whose value has no 'bookmarks'"
    if "singer_state" in raw:
        return "a singer_state without 'bookmarks'"
    if isinstance(raw.get("type"), str):
        return f"a {raw['type'][:20]} message"
    keys = ", ".join(sorted(str(k)[:30] for k in raw)[:5])
    return f"an object with {keys}" if keys else "an empty object"
