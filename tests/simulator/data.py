"""Deterministic Confluence data derived from a seed: users, groups, audit records, content.

Nothing large is materialised as dicts: audit record i is computed from i, and only the
sorted creationDate column (8 bytes a record) is kept so that date filters are binary searches.
"""

from __future__ import annotations

import json
import random
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

MASK64 = (1 << 64) - 1

FIRST = [
    "Ada", "Grace", "Alan", "Åsa", "Zoë", "José", "Søren", "Łukasz", "Mária", "Chloé",
    "Nguyễn", "Мария", "李", "Aoife", "Ðorđe", "Ingrid", "Kwame", "Priya", "Dana", "Omar",
]  # fmt: skip
LAST = [
    "Lovelace", "Hopper", "Turing", "Öberg", "Müller", "García", "Kowalski", "Nakamura",
    "O'Brien", "Ødegaard", "Иванова", "王", "Dubois", "Smith", "Okafor", "Patel", "Reyes",
]  # fmt: skip
EMOJI = ["🚀", "☕", "🌈", "🦄", "🎉"]
TIMEZONES = ["Europe/Stockholm", "Europe/London", "America/New_York", "Asia/Tokyo", None]
SPACES = [
    ("ENG", "Engineering"),
    ("HR", "People & Culture"),
    ("DOCS", "Dokumentation 📚"),
    ("OPS", "Operações"),
    ("~ada", "Ada's space"),
]
EVENTS: list[tuple[str, str, str]] = [
    ("User added to group", "Users and groups", "Group"),
    ("User removed from group", "Users and groups", "Group"),
    ("User created", "Users and groups", "User"),
    ("User deactivated", "Users and groups", "User"),
    ("User details updated", "Users and groups", "User"),
    ("Space created", "Spaces", "Space"),
    ("Space configuration updated", "Spaces", "Space"),
    ("Space exported", "Spaces", "Space"),
    ("Global permission added", "Permissions", "Global Permission"),
    ("Space permission removed", "Permissions", "Space Permission"),
    ("Content restriction added", "Permissions", "Page"),
    ("Page archived", "Page", "Page"),
    ("Global settings changed", "Global administration", "Settings"),
    ("Public link enabled", "Public links", "Page"),
]
CONTENT_TYPES = ["page", "page", "page", "blogpost", "comment", "comment", "attachment"]


def mix(x: int) -> int:
    """Return a well-mixed 64-bit hash of x (splitmix64 finaliser)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as the ISO 8601 UTC string Confluence uses."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _strings(obj: Any) -> list[str]:
    """Return every string value (not key) inside a JSON value."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def parse_when(value: str | int) -> int:
    """Parse an ISO date/datetime or epoch-ms value into epoch milliseconds."""
    if isinstance(value, int) or str(value).lstrip("-").isdigit():
        return int(value)
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@dataclass
class DataOptions:
    """Sizes and seed the data set is derived from."""

    seed: int = 42
    users: int = 250
    guests: int = 12
    groups: int = 12
    memberships_per_user: int = 2
    audit_records: int = 2500
    audit_start: int = parse_when("2026-01-01T00:00:00Z")
    audit_end: int = parse_when("2026-11-01T00:00:00Z")
    content: int = 300
    max_users: int | None = None
    site_url: str = ""


@dataclass
class Extra:
    """An audit record added at run time (appended or late); kept in a small side list."""

    creation_date: int
    seq: int
    body: str


@dataclass(eq=False)
class Dataset:
    """The whole fake site: users and guests, groups, audit log and content."""

    opts: DataOptions
    dates: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    extras: list[Extra] = field(default_factory=list)
    extras_version: int = 0
    #: Last active dates set through the control API (user index -> YYYY-MM-DD).
    last_active_overrides: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._newest_extra = -(2**62)
        self._seed = mix(self.opts.seed)
        self.n_total = self.opts.users + self.opts.guests
        self._build_audit_dates()
        self._build_groups()
        self._build_content()
        self._event_fragments = self._build_event_fragments()

    # ---- hashing -------------------------------------------------------------------------
    def h(self, kind: int, i: int) -> int:
        """Return the hash of (seed, kind, i); kinds keep unrelated choices independent."""
        return mix(self._seed ^ mix((kind << 40) ^ i))

    # ---- users ---------------------------------------------------------------------------
    def is_guest(self, i: int) -> bool:
        """Guests (external collaborators) follow the licensed users in index order."""
        return i >= self.opts.users

    @cache  # noqa: B019 - the dataset lives as long as the process
    def account_id(self, i: int) -> str:
        """Return user i's accountId, in either of the two forms Atlassian issues."""
        a, b = self.h(1, i), self.h(2, i)
        if a % 3 == 0 and i != 0:
            u = f"{a:016x}{b:016x}"
            return f"557058:{u[:8]}-{u[8:12]}-4{u[13:16]}-8{u[17:20]}-{u[20:32]}"
        return f"5{a:015x}{b:08x}"[:24]

    @cache  # noqa: B019
    def user_core(self, i: int) -> dict[str, Any]:
        """Return user i's fields shared by every route (no accountStatus)."""
        h = self.h(3, i)
        guest = self.is_guest(i)
        status = self.account_status(i)
        app = not guest and i % 97 == 3
        email: str | None
        if i == 0:
            first, last, email = "Site", "Admin", "admin@example.com"
        else:
            first, last = FIRST[h % len(FIRST)], LAST[(h >> 8) % len(LAST)]
            email = f"user{i:05d}@{'guest.example.org' if guest else 'example.com'}"
        name = f"{first} {last}"
        if i % 50 == 7:
            name = "Alex Kim"  # duplicate display names are common in real directories
        elif i % 41 == 5:
            name = f"{first} {EMOJI[h % len(EMOJI)]} {last}"
        display: str | None = name
        public = name
        if app:
            display = public = f"Automation bot {i}"
            email = None
        elif status == "closed":
            display = public = "Former user"
            email = None
        elif i != 0 and (h >> 16) % 11 == 0:
            email = None  # hidden by the user's privacy settings
        if i != 0 and status != "closed" and (h >> 20) % 29 == 0:
            display = None
            public = first
        aid = self.account_id(i)
        base = self.opts.site_url + "/wiki"
        return {
            "type": "known",
            "accountId": aid,
            "accountType": "app" if app else "atlassian",
            "email": email,
            "publicName": public,
            "profilePicture": {
                "path": f"/wiki/aa-avatar/{aid}",
                "width": 48,
                "height": 48,
                "isDefault": (h >> 24) % 2 == 0,
            },
            "displayName": display,
            "timeZone": TIMEZONES[(h >> 28) % len(TIMEZONES)],
            "isExternalCollaborator": guest,
            "externalCollaborator": guest,
            "isGuest": guest,
            "_expandable": {"operations": "", "personalSpace": ""},
            "_links": {"self": f"{base}/rest/api/user?accountId={aid}"},
        }

    def account_status(self, i: int) -> str:
        """Return active, inactive or closed; only user and user/bulk reveal it."""
        if i == 0:
            return "active"
        r = self.h(4, i) % 100
        return "closed" if r < 4 else "inactive" if r < 13 else "active"

    def user_full(self, i: int) -> dict[str, Any]:
        """Return user i as the user and user/bulk routes show it (with accountStatus)."""
        return {**self.user_core(i), "accountStatus": self.account_status(i), "locale": "en_US"}

    @cache  # noqa: B019
    def index_of(self) -> dict[str, int]:
        """Map accountId to user index."""
        return {self.account_id(i): i for i in range(self.n_total)}

    def search_user_indexes(self, permission_filter: str) -> range | list[int]:
        """Return the user indexes search/user lists for a sitePermissionTypeFilter."""
        if permission_filter == "externalCollaborator":
            return range(self.opts.users, self.n_total)
        if permission_filter == "all":
            return range(self.n_total)
        return range(self.opts.users)

    def licensed_active(self) -> int:
        """Count licensed users holding a seat (active, not guests, not apps)."""
        return sum(
            1
            for i in range(self.opts.users)
            if self.account_status(i) == "active" and self.user_core(i)["accountType"] != "app"
        )

    def last_active_date(self, i: int) -> str | None:
        """Return the Admin API's last active date for user i, or None if never active."""
        if i in self.last_active_overrides:
            return self.last_active_overrides[i]
        h = self.h(5, i)
        if self.account_status(i) == "closed" or h % 7 == 0:
            return None
        ms = self.opts.audit_end - (h >> 8) % (60 * 86_400_000)
        return iso_ms(ms)[:10]

    # ---- groups --------------------------------------------------------------------------
    def _build_groups(self) -> None:
        fixed = ["confluence-users", "confluence-admins", "site-admins", "administrators"]
        extra = ["équipe-données", "開発チーム", "🚀-launch", "support", "marketing", "research"]
        names: list[str] = []
        for g in range(self.opts.groups):
            if g < len(fixed):
                names.append(fixed[g])
            elif g - len(fixed) < len(extra):
                names.append(extra[g - len(fixed)])
            else:
                names.append(f"team-{g:04d}")
        ids = []
        for g in range(len(names)):
            u = f"{self.h(6, g):016x}{self.h(7, g):016x}"
            ids.append(f"{u[:8]}-{u[8:12]}-4{u[13:16]}-9{u[17:20]}-{u[20:32]}")
        self.groups = sorted(zip(names, ids, strict=True))
        self.group_by_id = {gid: k for k, (_, gid) in enumerate(self.groups)}
        members: list[list[int]] = [[] for _ in self.groups]
        by_name = {name: k for k, (name, _) in enumerate(self.groups)}
        n = len(self.groups)
        for i in range(self.n_total):
            chosen: set[int] = set()
            if not self.is_guest(i) and "confluence-users" in by_name:
                chosen.add(by_name["confluence-users"])
            if i == 0:
                chosen.update(
                    by_name[x] for x in ("confluence-admins", "site-admins") if x in by_name
                )
            h = self.h(8, i)
            while n and len(chosen) < min(self.opts.memberships_per_user, n):
                chosen.add(h % n)
                h = mix(h)
            for k in sorted(chosen):
                members[k].append(i)
        self.members = members

    def group_json(self, k: int) -> dict[str, Any]:
        """Return group k as the group routes show it."""
        name, gid = self.groups[k]
        return {
            "type": "group",
            "name": name,
            "id": gid,
            "usageType": "USERBASE_GROUP",
            "managedBy": "ADMINS",
            "resourceAri": f"ari:cloud:identity::group/{gid}",
            "_links": {"self": f"{self.opts.site_url}/wiki/rest/api/group/by-id?id={gid}"},
        }

    # ---- audit ---------------------------------------------------------------------------
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
            matched += [
                r for r in page if any(needle in v.lower() for v in _strings(json.loads(r)))
            ]
            if len(page) < chunk:
                break
            pos += chunk
        return matched[start : start + limit]

    # ---- content -------------------------------------------------------------------------
    def _build_content(self) -> None:
        items: list[dict[str, Any]] = []
        span = max(1, self.opts.audit_end - self.opts.audit_start)
        for i in range(self.opts.content):
            h = self.h(10, i)
            ctype = CONTENT_TYPES[h % len(CONTENT_TYPES)]
            created = self.opts.audit_start + (h >> 8) % span
            modified = created + (h >> 40) % max(1, self.opts.audit_end - created)
            if i % 23 == 0 and i:
                modified = items[-1]["modified"]  # edits saved in the same millisecond
            space = SPACES[(h >> 12) % len(SPACES)]
            title = f"{['Plan', 'Notizen', 'Réunion', '議事録', 'Roadmap 🚀'][(h >> 16) % 5]} {i}"
            items.append(
                {
                    "id": str(65_536 + i * 3),
                    "type": ctype,
                    "title": title if ctype != "attachment" else f"diagram-{i}.png",
                    "space": space,
                    "created": created,
                    "modified": modified,
                    "creator": (h >> 20) % self.n_total,
                    "modifier": (h >> 28) % self.n_total,
                    "version": 1 + (h >> 36) % 12,
                }
            )
        self.content = items

    def edit_content(self, author: int, count: int, when: int) -> list[str]:
        """Have user ``author`` update the ``count`` least recently modified items at ``when``."""
        with self.lock:
            oldest = sorted(self.content, key=lambda it: (it["modified"], it["id"]))[:count]
            for it in oldest:
                it["modifier"] = author
                it["modified"] = when
                it["version"] += 1
            return [it["id"] for it in oldest]
