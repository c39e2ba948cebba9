"""The sizes and seed a simulated site's data is derived from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


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
    #: Managed accounts of the organization with no place on this site (default users // 20).
    org_only_accounts: int | None = None
