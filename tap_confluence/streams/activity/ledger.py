"""Bookkeeping for user_activity, apart from HTTP and Singer: what is new, and what was read.

``Ledger`` is one source's memory across runs, ``Latest`` each user's newest activity within a
run, and ``SharedAuditRead`` lets audit_records hand what it read to user_activity, so one run
reads the audit log once when both streams are selected.
"""

from __future__ import annotations

import dataclasses
import typing as t

from tap_confluence.streams.audit.rows import Activity, audit_activity

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class StateShapeError(ValueError):
    """A source's state holds an entry of the wrong type; the message names it."""


def millis(value: t.Any, what: str) -> int:
    """Return ``value`` as epoch milliseconds, or raise StateShapeError naming ``what``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    msg = f"{what} is {type(value).__name__} {str(value)[:40]!r}, not epoch milliseconds"
    raise StateShapeError(msg)


@dataclasses.dataclass
class Ledger:
    """One source's memory across runs: the bookmark and who was active just before it.

    Times are epoch milliseconds; the stream turns the bookmark into the SDK's ISO value.

    A run re-reads from ``lower`` (bookmark less an overlap, for late or coarse data). Users
    active at or after ``lower`` are remembered with their latest time, so a re-read emits
    them only if something newer turned up; anyone not remembered was last seen before
    ``lower``, so whatever the re-read finds for them is new.
    """

    overlap_ms: int
    bookmark_ms: int | None = None
    #: Earliest activity this run reads, fixed when the run starts (None: everything).
    lower: int | None = None
    known: dict[str, int] = dataclasses.field(default_factory=dict)
    #: When a state holds a bookmark but no memory, nothing at or before it counts as new.
    default_known: int = -1

    @classmethod
    def load(
        cls,
        state: Mapping[str, t.Any],
        bookmark: int | None,
        overlap_ms: int,
        floor_ms: int | None,
    ) -> Ledger:
        """Read the ledger from a partition's state and its bookmark."""
        recent = state.get("recent")
        if recent is not None and not isinstance(recent, dict):
            msg = f"'recent' is a {type(recent).__name__}, not an object of accountId to time"
            raise StateShapeError(msg)
        known = {str(k): millis(v, f"'recent' of {str(k)[:40]}") for k, v in (recent or {}).items()}
        default = bookmark if bookmark is not None and recent is None else -1
        lows = [v for v in (floor_ms,) if v is not None]
        if bookmark is not None:
            lows.append(bookmark - overlap_ms)
        return cls(overlap_ms, bookmark, max(lows) if lows else None, known, default)

    def observe(self, account_id: str, at_ms: int) -> bool:
        """Remember a user's activity; True when it is newer than anything emitted before."""
        lower = self.lower
        if lower is not None and at_ms < lower:
            return False
        known = self.known.get(account_id, self.default_known)
        self.known[account_id] = max(at_ms, known)
        if at_ms <= known:
            return False
        self.bookmark_ms = max(at_ms, self.bookmark_ms or at_ms)
        return True

    def save(self, state: dict[str, t.Any]) -> int | None:
        """Write the recent users; return the bookmark (the newest activity ever emitted)."""
        if self.bookmark_ms is None:
            return None
        lower = self.bookmark_ms - self.overlap_ms
        state["recent"] = {a: v for a, v in sorted(self.known.items()) if v >= lower}
        self.default_known = -1
        return self.bookmark_ms


class Latest:
    """Each user's newest activity seen in one run, with what it was."""

    def __init__(self) -> None:
        """Start empty."""
        self.by_user: dict[str, tuple[int, str]] = {}
        self.events = 0

    def offer(self, account_id: t.Any, at_ms: int, detail: str) -> None:
        """Keep this activity if it is the user's newest so far."""
        if not account_id:
            return
        self.events += 1
        best = self.by_user.get(str(account_id))
        if best is None or at_ms > best[0]:
            self.by_user[str(account_id)] = (at_ms, detail)

    def offer_audit(self, records: Iterable[Mapping[str, t.Any]]) -> None:
        """Offer audit records: the author's activity at creationDate, with the summary."""
        for record in records:
            found = audit_activity(record)
            if found is not None:
                self.offer(*found)

    def oldest_first(self) -> list[tuple[str, int, str]]:
        """(accountId, time, detail) sorted by time, then accountId."""
        rows = [(a, at, d) for a, (at, d) in self.by_user.items()]
        return sorted(rows, key=lambda r: (r[1], r[0]))


class SharedAuditRead:
    """What audit_records read in this run, per author, so user_activity need not read it again.

    audit_records calls ``begin`` with its range, ``add`` per record of a complete window
    (before the record goes out, as selection may strip fields from it) and ``finish`` once
    the whole range is read.
    """

    def __init__(self) -> None:
        """Nothing read yet."""
        self.latest = Latest()
        self.start_ms = 0
        self.end_ms = 0
        self.complete = False

    def begin(self, start_ms: int, end_ms: int) -> None:
        """Start a read of ``[start_ms, end_ms]``."""
        self.latest, self.start_ms, self.end_ms, self.complete = Latest(), start_ms, end_ms, False

    def add(self, activity: Activity | None) -> None:
        """Take in what one record of a complete window says (``rows.audit_activity``)."""
        if activity is not None:
            self.latest.offer(*activity)

    def finish(self) -> None:
        """Mark the whole range as read."""
        self.complete = True

    def covers_up_from(self, lo: int) -> bool:
        """Tell whether a complete read exists that ends at or after ``lo``."""
        return self.complete and self.end_ms >= lo
