"""The groups stream and its child, group_members."""

from __future__ import annotations

import typing as t

from typing_extensions import override

from tap_confluence.http.stream import ConfluenceStream

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

GROUP_SCOPES = (frozenset({"read:group:confluence"}), frozenset({"read:confluence-groups"}))
MEMBER_SCOPES = (
    frozenset({"read:group:confluence"}),
    frozenset({"read:group:confluence", "read:user:confluence"}),
    frozenset({"read:confluence-groups"}),
)


class GroupsStream(ConfluenceStream):
    """Every group on the site, alphabetical by name."""

    name = "groups"
    path = "/wiki/rest/api/group"
    primary_keys = ("cloudId", "id")
    replication_key = None
    activates_versions = True
    required_scopes = GROUP_SCOPES
    permission_hint = "the 'Can use' global permission and a group scope"
    page_size = 200

    @override
    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Drop API links; tag with cloudId."""
        row.pop("_links", None)
        return super().post_process(row, context)

    @override
    def get_child_context(self, record: dict[str, t.Any], context: Context | None) -> Context:
        """Members are read per group id."""
        return {"groupId": record["id"]}


class GroupMembersStream(ConfluenceStream):
    """Who is in each group: one row per (group, member)."""

    name = "group_members"
    path = "/wiki/rest/api/group/{groupId}/membersByGroupId"
    primary_keys = ("cloudId", "groupId", "accountId")
    replication_key = None
    activates_versions = True
    parent_stream_type = GroupsStream
    required_scopes = MEMBER_SCOPES
    permission_hint = "the 'Can use' global permission and a group scope"
    page_size = 200

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Keep one state entry for the stream, not one per group, in every STATE message."""
        super().__init__(*args, **kwargs)
        self.state_partitioning_keys = []

    @override
    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Keep who the member is; tag with the group and cloudId."""
        member = {
            key: row.get(key)
            for key in ("accountId", "accountType", "type", "email", "publicName", "displayName")
        }
        # Cloud's member objects may lack isGuest; isExternalCollaborator says the same.
        guest = row.get("isGuest")
        if guest is None:
            guest = row.get("isExternalCollaborator", row.get("externalCollaborator"))
        member["isGuest"] = guest
        member["groupId"] = (context or {}).get("groupId")
        return super().post_process(member, context)
