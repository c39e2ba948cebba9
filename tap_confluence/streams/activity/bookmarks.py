"""A source's ledger in its state partition: read when a pass starts, written at each checkpoint."""

from __future__ import annotations

import typing as t

from tap_confluence.errors import StreamAccessError
from tap_confluence.streams.activity.ledger import Ledger, StateShapeError
from tap_confluence.streams.activity.source import iso_ms
from tap_confluence.streams.audit.rows import ms_to_iso

if t.TYPE_CHECKING:
    from collections.abc import Mapping

#: user_activity's replication key, which the bookmark of each partition is kept under.
REPLICATION_KEY = "lastActivityAt"


def unusable_state(source: str, exc: Exception) -> StreamAccessError:
    """End a source whose state cannot be read, saying what to pass instead."""
    return StreamAccessError(
        f"user_activity from {source}: its state is unusable ({exc}); pass the last "
        "STATE the tap emitted, or none to read this source afresh."
    )


def load_ledger(source: str, state: Mapping[str, t.Any], overlap: int, floor: int | None) -> Ledger:
    """Read a source's ledger from its state, or end the source in one sentence."""
    try:
        raw = state.get("replication_key_value")
        bookmark = iso_ms(str(raw)) if raw else None
        return Ledger.load(state, bookmark, overlap, floor)
    except (StateShapeError, ValueError) as exc:
        raise unusable_state(source, exc) from None


def save_ledger(ledger: Ledger, state: dict[str, t.Any]) -> None:
    """Write the ledger, and its bookmark as the partition's replication key value."""
    # The ledger decides the bookmark: the SDK would keep the last row's value, which
    # for late or unordered activity may be older than what was emitted before.
    bookmark = ledger.save(state)
    if bookmark is not None:
        state["replication_key"] = REPLICATION_KEY
        state["replication_key_value"] = ms_to_iso(bookmark)
