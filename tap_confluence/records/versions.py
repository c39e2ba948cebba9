"""One SCHEMA per stream run, and Singer table versions for full-table streams that say so.

Users, groups and memberships are read in full every run. Their records carry the run's
version, and one ACTIVATE_VERSION after the last of them tells the target that rows of older
versions are gone from the site (MeltanoLabs target-postgres sets their `_sdc_deleted_at`).

The SDK's own ACTIVATE_VERSION is not used: it goes out before the records (so a run that
dies half-way leaves every unread row marked deleted), once per sync call (once per group
for group_members) and for every full-table stream, licence history included.
"""

from __future__ import annotations

import typing as t

from typing_extensions import override

from tap_confluence.sdk_compat import VersionedStream


class FullTableVersions(VersionedStream):
    """Stream mix-in: SCHEMA once per run; versions and ACTIVATE_VERSION where enabled."""

    #: True on full-table streams whose rows gone from the site are to be soft-deleted.
    activates_versions: t.ClassVar[bool] = False
    _schema_written = False
    _read_complete = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Give the stream its run's version: one for the whole run, every context included."""
        super().__init__(*args, **kwargs)
        if self.versions_enabled:
            # Seconds, as the SDK's own versions, so the two never go backwards between runs.
            self.table_version = self.run_started_at_ms() // 1000

    @property
    def versions_enabled(self) -> bool:
        """Whether this stream's records are versioned and activated this run."""
        return (
            self.activates_versions
            and bool(self.config.get("emit_activate_version_messages", True))
            # BATCH files carry no version, so activating one would delete every row.
            and self.get_batch_config(self.config) is None
        )

    @property
    @override
    def emit_activate_version_messages(self) -> bool:
        """Never the SDK's ACTIVATE_VERSION (see the module docstring); this mix-in sends one."""
        return False

    def mark_incomplete(self) -> None:
        """Note that this run did not read the whole stream: no row may be called gone.

        Nor of its children's (a member list read for only some groups is not complete).
        """
        self._read_complete = False
        for child in self.child_streams:
            if isinstance(child, FullTableVersions):
                child.mark_incomplete()

    @property
    def read_complete(self) -> bool:
        """True when this run read the whole stream (for a child: its parent's too)."""
        # A record limit (`--test` syncs one record per stream) reads a sample, never all.
        return self._read_complete and self.ABORT_AT_RECORD_COUNT is None

    @override
    def schema_due(self) -> bool:
        """Write the SCHEMA once per run (the SDK writes one per sync call, per group)."""
        due, self._schema_written = not self._schema_written, True
        return due

    @override
    def finalize_state_progress_markers(self, state: dict[str, t.Any] | None = None) -> None:
        """At the end of a complete run, activate its version, then finish the state."""
        version = self.table_version
        if state is None and version is not None and self.selected and self.read_complete:
            # A stream that read nothing (no groups at all) still owes the target its SCHEMA.
            self.write_schema_now()
            self.write_activate_version(version)
        super().finalize_state_progress_markers(state)
