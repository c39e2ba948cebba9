"""Deterministic Confluence data derived from a seed: users, groups, audit records, content.

Users are derived from their index on demand; the audit log lives in audit_log.py.
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from typing_extensions import override

from simulator.audit_log import AuditMixin, Extra
from simulator.hashing import mix
from simulator.options import DataOptions
from simulator.vocab import CONTENT_TYPES, EMOJI, FIRST, LAST, SPACES, TIMEZONES


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as the ISO 8601 UTC string Confluence uses."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(eq=False)
class Dataset(AuditMixin):
    """The whole fake site: users and guests, groups, audit log and content."""

    opts: DataOptions
    dates: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    extras: list[Extra] = field(default_factory=list)
    extras_version: int = 0
    #: Last active dates set through the control API (user index -> YYYY-MM-DD).
    last_active_overrides: dict[int, str] = field(default_factory=dict)
    #: Users removed from the site through the control API (user indexes).
    removed: set[int] = field(default_factory=set)
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
    @override
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
    @override
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
            pool = range(self.opts.users, self.n_total)
        elif permission_filter == "all":
            pool = range(self.n_total)
        else:
            pool = range(self.opts.users)
        return [i for i in pool if i not in self.removed] if self.removed else pool

    def licensed_active(self) -> int:
        """Count licensed users holding a seat (active, not guests, not apps)."""
        return sum(
            1
            for i in range(self.opts.users)
            if self.account_status(i) == "active"
            and self.user_core(i)["accountType"] != "app"
            and i not in self.removed
        )

    def remove_user(self, i: int) -> None:
        """Remove user i from the site, as an admin does: out of user search, groups and seats.

        The Atlassian account lives on (user/bulk and audit records still know it).
        """
        with self.lock:
            self.removed.add(i)
            self.members: list[list[int]] = [[m for m in group if m != i] for group in self.members]

    def is_managed(self, i: int) -> bool:
        """Whether the organization manages user i's account (its email domain is verified).

        Most licensed people are; guests and apps never are, and about one licensed user in
        six is not (a contractor on a domain the organization has not claimed).
        """
        if self.is_guest(i) or self.user_core(i)["accountType"] == "app":
            return False
        return i == 0 or self.h(6, i) % 6 != 0

    def org_only_accounts(self) -> list[str]:
        """Account ids the organization manages that have no place on this site."""
        count = self.opts.org_only_accounts
        if count is None:
            count = max(1, self.opts.users // 20)
        return [f"6{self.h(7, k):023x}"[:24] for k in range(count)]

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

    def edit_content(
        self, author: int, count: int, when: int, *, unindexed: bool = False
    ) -> list[str]:
        """Have user ``author`` update the ``count`` least recently modified items at ``when``.

        ``unindexed``: search keeps showing the old version until ``index_content`` (a
        search index that lags behind edits on a busy site).
        """
        with self.lock:
            oldest = sorted(self.content, key=lambda it: (it["modified"], it["id"]))[:count]
            for it in oldest:
                change = {"modifier": author, "modified": when, "version": it["version"] + 1}
                if unindexed:
                    it["pending"] = change
                else:
                    it.update(change)
            return [it["id"] for it in oldest]

    def index_content(self) -> int:
        """Let search see every edit still waiting for the index; return how many."""
        with self.lock:
            waiting = [it for it in self.content if "pending" in it]
            for it in waiting:
                it.update(it.pop("pending"))
            return len(waiting)
