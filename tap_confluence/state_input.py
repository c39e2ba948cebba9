"""Check the --state file before the SDK reads it: one sentence for anything it cannot use."""

from __future__ import annotations

import datetime as dt
import json
import typing as t

from tap_confluence.errors import TapUserError

_FIX = "pass the last STATE message the tap emitted, or no state for a full run."


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


def parse_state(text: str) -> dict[str, t.Any]:
    """Parse state text; raise TapUserError unless it is a usable Singer state object."""
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"file is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    if not isinstance(state, dict):
        _fail(f"must be a JSON object with 'bookmarks', not a {type(state).__name__}")
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
    return state
