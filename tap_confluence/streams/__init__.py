"""The streams this tap offers, in the order they run."""

from __future__ import annotations

from tap_confluence.http.stream import ConfluenceStream
from tap_confluence.streams.activity.stream import UserActivityStream
from tap_confluence.streams.audit.stream import AuditRecordsStream
from tap_confluence.streams.groups import GroupMembersStream, GroupsStream
from tap_confluence.streams.license import LicenseSubscriptionsStream
from tap_confluence.streams.users import UsersStream

STREAM_TYPES: tuple[type[ConfluenceStream], ...] = (
    UsersStream,
    GroupsStream,
    GroupMembersStream,
    LicenseSubscriptionsStream,
    AuditRecordsStream,
    UserActivityStream,
)
