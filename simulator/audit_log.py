"""The audit log part of the data set: record i derived from i, side lists for live traffic.

Only the sorted creationDate column is stored (8 bytes a record), so a date filter is a
binary search and 1,000,000 records cost 8 MB; appended and late records live in a small
side list merged in when a page is served.
"""

from __future__ import annotations

import json
import random
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from simulator.hashing import strings
from simulator.vocab import EVENTS, SPACES

if TYPE_CHECKING:
    from simulator.options import DataOptions


@dataclass
class Extra:
    """An audit record added at run time (appended or late); kept in a small side list."""

    creation_date: int
    seq: int
    body: str


class AuditMixin:
    """Audit-log methods of the Dataset (which supplies options, users and groups)."""

    opts: DataOptions
    dates: array  # type: ignore[type-arg]
    #: The whole base log encoded once, newest first, each record followed by a comma, and
    #: where each record starts in it (``preencode``); None: pages are built when asked.
    encoded: bytes | None = None
    encoded_at: array | None = None  # type: ignore[type-arg]
    extras: list[Extra]
    extras_version: int
    lock: threading.Lock
    groups: list[tuple[str, str]]
    n_total: int
    _event_fragments: list[str]
    _newest_extra: int

    def h(self, kind: int, i: int) -> int:  # pragma: no cover - provided by Dataset
        raise NotImplementedError

    def user_core(self, i: int) -> dict[str, Any]:  # pragma: no cover - provided by Dataset
        raise NotImplementedError

    def _build_audit_dates(self) -> None:
        n = self.opts.audit_records
        rng = random.Random(self.opts.seed)
        ties = bytearray(n)
        for i in range(1, n):
            # Forced ties where (n - i) % 100 == 0 straddle every newest-first page boundary
            # whose offset is a multiple of 100; random ones land everywhere else.
            if (n - i) % 100 == 0 or rng.getrandbits(8) < 40:
                ties[i] = 1
        slots = n - sum(ties)
        span = max(1, self.opts.audit_end - self.opts.audit_start)
        step = span / max(1, slots)
        jitter_max = max(1, int(step) // 2)
        dates = array("q", bytes(8 * n))
        slot = -1
        value = self.opts.audit_start
        for i in range(n):
            if not ties[i]:
                slot += 1
                value = self.opts.audit_start + int(slot * step) + rng.randrange(jitter_max)
            dates[i] = value
        self.dates = dates

    def _build_event_fragments(self) -> list[str]:
        frags = []
        for e, (summary, category, obj_type) in enumerate(EVENTS):
            for v in range(8):
                if obj_type in ("Group",):
                    obj_name = self.groups[v % len(self.groups)][0] if self.groups else "group"
                elif obj_type == "User":
                    obj_name = str(self.user_core(v % self.n_total)["publicName"])
                elif obj_type.startswith("Space"):
                    obj_name = SPACES[v % len(SPACES)][1]
                else:
                    obj_name = f"Seite {v} \u2013 Übersicht ✨" if v % 2 else f"Page {v}"
                changed = []
                if summary.endswith("updated") or summary.endswith("changed"):
                    changed = [{"name": "Name", "oldValue": f"old {v}", "newValue": obj_name}]
                assoc = []
                if obj_type == "Group":
                    assoc = [{"name": str(self.user_core((v * 7) % self.n_total)["publicName"]),
                              "objectType": "User"}]  # fmt: skip
                frag = {
                    "summary": summary,
                    "description": "" if v % 3 else f"{summary} via admin console",
                    "category": category,
                    "sysAdmin": e % 5 == 0,
                    "superAdmin": False,
                    "affectedObject": {"name": obj_name, "objectType": obj_type},
                    "changedValues": changed,
                    "associatedObjects": assoc,
                }
                frags.append(json.dumps(frag, ensure_ascii=False, separators=(",", ":"))[1:-1])
        return frags

    @lru_cache(maxsize=4096)  # noqa: B019
    def _author_fragment(self, i: int) -> str:
        u = self.user_core(i)
        author = {
            "type": "user",
            "displayName": u["displayName"],
            "operations": None,
            "accountId": u["accountId"],
            "accountType": u["accountType"],
            "externalCollaborator": u["isGuest"],
            "isExternalCollaborator": u["isGuest"],
            "isGuest": u["isGuest"],
            "publicName": u["publicName"],
        }
        return json.dumps(author, ensure_ascii=False, separators=(",", ":"))

    def audit_json(self, i: int, creation_date: int, author: int | None = None) -> str:
        """Return audit record i (fields derived from i, author too unless given) as JSON."""
        h = self.h(9, i)
        if author is None:
            # Most audit traffic comes from a handful of administrators.
            author = h % min(20, self.n_total) if h % 10 < 6 else (h >> 8) % self.n_total
        frag = self._event_fragments[(h >> 24) % len(self._event_fragments)]
        ip = f"10.{(h >> 32) & 255}.{(h >> 40) & 255}.{(h >> 48) & 255}"
        return (
            f'{{"author":{self._author_fragment(author)},"remoteAddress":"{ip}",'
            f'"creationDate":{creation_date},{frag}}}'
        )

    def preencode(self) -> None:
        """Encode every base record once, newest first, so any page is one slice of bytes.

        For the benchmark: building a page's records when asked costs the server about as
        much as a fast client spends reading them, which would cap what it measures.
        """
        n = len(self.dates)
        parts = [self.audit_json(i, self.dates[i]).encode() + b"," for i in range(n - 1, -1, -1)]
        at = array("q", bytes(8 * (n + 1)))
        pos = 0
        for p, part in enumerate(parts):
            at[p] = pos
            pos += len(part)
        at[n] = pos
        self.encoded, self.encoded_at = b"".join(parts), at

    def audit_slice(
        self, start_ms: int, end_ms: int, start: int, limit: int
    ) -> tuple[bytes, int] | None:
        """``audit_page`` as (one JSON array, its length), sliced from the pre-encoded log.

        None when not pre-encoded, or when the range holds appended or late records.
        """
        if self.encoded is None or self.encoded_at is None:
            return None
        dates = self.dates
        lo, hi = bisect_left(dates, start_ms), bisect_right(dates, end_ms)
        if self.extras:
            with self.lock:
                if any(start_ms <= e.creation_date <= end_ms for e in self.extras):
                    return None
        n = len(dates)
        # Newest-first position p holds record n - 1 - p; the range's newest is record hi - 1.
        first = n - hi + min(start, hi - lo)
        last = n - hi + min(start + limit, hi - lo)
        if first >= last:
            return b"[]", 0
        at = self.encoded_at
        return b"[" + self.encoded[at[first] : at[last] - 1] + b"]", last - first

    def audit_selection(self, start_ms: int, end_ms: int) -> tuple[int, int, int, int]:
        """Identify the records [start_ms, end_ms] selects (for cache keys)."""
        lo, hi = bisect_left(self.dates, start_ms), bisect_right(self.dates, end_ms)
        with self.lock:
            seqs = tuple(e.seq for e in self.extras if start_ms <= e.creation_date <= end_ms)
        return lo, hi, len(seqs), hash(seqs)

    def audit_total(self) -> int:
        """Count every audit record, base and side lists."""
        return len(self.dates) + len(self.extras)

    def newest_date(self) -> int:
        """Return the newest creationDate in the log (or audit_start when empty)."""
        newest = self.dates[-1] if len(self.dates) else self.opts.audit_start
        return max(newest, self._newest_extra)

    def add_extra(
        self,
        count: int,
        creation_date: int | None,
        late_by_ms: int = 0,
        author: int | None = None,
    ) -> list[int]:
        """Append records at the newest end (or late_by_ms before it); return their dates."""
        with self.lock:
            out = []
            now_ms = int(time.time() * 1000)
            for _ in range(count):
                newest = self.newest_date()
                if creation_date is not None:
                    cd = creation_date
                elif late_by_ms:
                    cd = newest - late_by_ms
                else:
                    # Live traffic is stamped with the current time, so a client that pinned
                    # endDate when it started never sees these; one that did not sees pages shift.
                    cd = max(now_ms, newest + 1)
                self._newest_extra = max(self._newest_extra, cd)
                seq = len(self.extras)
                body = self.audit_json(len(self.dates) + seq, cd, author)
                self.extras.append(Extra(cd, seq, body))
                out.append(cd)
            self.extras_version += 1
            return out

    def audit_page(self, start_ms: int, end_ms: int, start: int, limit: int) -> list[str]:
        """Return records newest first within [start_ms, end_ms], positions start..start+limit."""
        dates = self.dates
        lo, hi = bisect_left(dates, start_ms), bisect_right(dates, end_ms)
        with self.lock:
            extras = [e for e in self.extras if start_ms <= e.creation_date <= end_ms]
        # Newest first; among equal dates the later-added record comes first.
        extras.sort(key=lambda e: (-e.creation_date, -e.seq))
        # An extra precedes every base record with a date <= its own.
        positions = [k + (hi - bisect_right(dates, e.creation_date, lo, hi)) for k, e in
                     enumerate(extras)]  # fmt: skip
        total = (hi - lo) + len(extras)
        end = min(total, start + limit)
        out: list[str] = []
        k = bisect_left(positions, start)
        rank = start - k
        for p in range(start, end):
            if k < len(positions) and positions[k] == p:
                out.append(extras[k].body)
                k += 1
            else:
                i = hi - 1 - rank
                out.append(self.audit_json(i, dates[i]))
                rank += 1
        return out

    def audit_search(
        self, start_ms: int, end_ms: int, needle: str, start: int, limit: int
    ) -> list[str]:
        """Like audit_page, keeping only records with a string value containing `needle`."""
        needle = needle.lower()
        matched: list[str] = []
        pos, chunk = 0, 5000
        while len(matched) < start + limit:
            page = self.audit_page(start_ms, end_ms, pos, chunk)
            matched += [r for r in page if any(needle in v.lower() for v in strings(json.loads(r)))]
            if len(page) < chunk:
                break
            pos += chunk
        return matched[start : start + limit]
