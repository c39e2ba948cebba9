"""Every SDK member that sdk_compat relies on but the SDK does not publish, as it must be.

A failure here after an SDK upgrade names the member that moved: change sdk_compat.py (the
only module that touches them), not the streams.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.authenticators import OAuthAuthenticator

from tap_confluence import sdk_compat
from tap_confluence.oauth.authenticator import AtlassianOAuthAuthenticator
from tap_confluence.tap import TapConfluence

CONFIG = {"site_url": "http://127.0.0.1:9", "email": "a@example.com", "api_token": "x" * 12}


def params(member: Any) -> list[str]:
    return list(inspect.signature(member).parameters)


def stdout_of(capfd: pytest.CaptureFixture[str], action: Any) -> list[dict[str, Any]]:
    """The Singer messages ``action`` writes (the tap writes to the stdout file descriptor)."""
    capfd.readouterr()
    action()
    out = capfd.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_stream_knows_its_tap_as_stream_tap() -> None:
    tap = TapConfluence(config=CONFIG)
    stream = tap.streams["users"]
    assert sdk_compat.tap_of(stream) is tap


def test_the_request_metric_hook_takes_endpoint_response_context_and_tags() -> None:
    assert params(RESTStream._write_request_duration_log) == [
        "self",
        "endpoint",
        "response",
        "context",
        "extra_tags",
    ]


def test_state_is_written_through_write_state_message_and_the_flush_flag(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert params(Stream._write_state_message) == ["self"]
    tap = TapConfluence(config=CONFIG)
    stream = tap.streams["audit_records"]
    stream.state_manager.is_flushed = True
    messages = stdout_of(capfd, lambda: sdk_compat.write_state_now(stream))
    assert [m["type"] for m in messages] == ["STATE"]


def test_the_sdk_still_writes_state_every_state_msg_frequency_records() -> None:
    assert isinstance(Stream.STATE_MSG_FREQUENCY, int)
    assert sdk_compat.StateAtOwnPoints.STATE_MSG_FREQUENCY > 10**8


def test_versions_schema_and_activate_version_hooks_are_where_versioned_streams_use_them(
    capfd: pytest.CaptureFixture[str],
) -> None:
    tap = TapConfluence(config=CONFIG)
    users = tap.streams["users"]
    assert isinstance(users, sdk_compat.VersionedStream)
    assert users.table_version == tap.initialized_at // 1000
    assert params(Stream._write_activate_version_message) == ["self", "full_table_version"]
    assert params(Stream._write_schema_message) == ["self"]

    def schema_then_version() -> None:
        users.write_schema_now()
        users.write_activate_version(7)

    messages = stdout_of(capfd, schema_then_version)
    assert [m["type"] for m in messages] == ["SCHEMA", "ACTIVATE_VERSION"]
    assert messages[1]["version"] == 7
    # Once per run: a second SCHEMA is not due.
    assert stdout_of(capfd, users.write_schema_now) == []


def test_sync_all_is_the_one_call_invoke_makes_and_takes_no_arguments() -> None:
    assert params(Tap.sync_all) == ["self"]
    assert "tap.sync_all()" in inspect.getsource(Tap.invoke)


def test_the_tap_has_a_last_word_after_every_stream(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    tap = TapConfluence(config=CONFIG)
    calls: list[str] = []
    for name in list(tap.streams):
        stream = tap.streams[name]
        monkeypatch.setattr(stream, "sync", lambda *a, n=name, **k: calls.append(n))
        monkeypatch.setattr(stream, "finalize_state_progress_markers", lambda *a, **k: None)
    monkeypatch.setattr(tap, "end_of_run", lambda: calls.append("end of run"))
    stdout_of(capfd, tap.sync_all)
    assert calls[-1] == "end of run"
    assert len(calls) > 1


def test_an_oauth_authenticator_keeps_its_default_expiration() -> None:
    assert "default_expiration" in params(OAuthAuthenticator.__init__)
    auth = OAuthAuthenticator(auth_endpoint="http://127.0.0.1:9/t", default_expiration=1234)
    assert sdk_compat.default_expiration(auth) == 1234
    assert issubclass(AtlassianOAuthAuthenticator, OAuthAuthenticator)


def test_record_hooks_are_the_sdks_per_record_message_steps(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert params(Stream._generate_record_messages) == ["self", "record"]
    assert params(Stream._write_record_message) == ["self", "record"]
    tap = TapConfluence(config=CONFIG)
    groups = tap.streams["groups"]
    assert isinstance(groups, sdk_compat.RecordHooks)
    assert groups.message_writer is tap.message_writer
    record = {"cloudId": "c", "id": "g1", "name": "team"}
    messages = list(groups._generate_record_messages(dict(record)))
    assert [(m.stream, m.record) for m in messages] == [("groups", record)]

    def write_one() -> None:
        groups._write_record_message(dict(record))
        tap.message_writer.flush()  # type: ignore[attr-defined]

    written = stdout_of(capfd, write_one)
    assert [(m["type"], m["record"]) for m in written] == [("RECORD", record)]
    assert groups.state_manager.is_flushed is False


def test_the_bookmark_step_and_own_record_loop_are_where_the_sdk_calls_them() -> None:
    assert params(Stream._increment_stream_state) == ["self", "latest_record", "context"]
    assert params(Stream._sync_records) == ["self", "context", "write_messages"]
    assert params(Stream._write_starting_replication_value) == ["self", "context"]
    assert params(Stream._finalize_state) == ["self", "state"]
    source = inspect.getsource(Stream._sync_records)
    assert "self._increment_stream_state(" in source
    assert "self._write_starting_replication_value(" in source
    assert "self._sync_records(" in inspect.getsource(Stream.sync)
    tap = TapConfluence(config=CONFIG)
    audit = tap.streams["audit_records"]
    assert isinstance(audit, sdk_compat.OwnRecordLoop)
    audit.advance_state({"createdAt": "2026-01-02T00:00:00.000Z", "id": "a"}, None)
    assert audit.stream_state["replication_key_value"] == "2026-01-02T00:00:00.000Z"


def test_batch_types_and_the_deselection_walk_are_where_sdk_compat_takes_them() -> None:
    assert sdk_compat.BatchConfig.__name__ == "BatchConfig"
    assert {"encoding", "storage"} <= set(inspect.signature(sdk_compat.BatchConfig).parameters)
    assert hasattr(sdk_compat.StorageTarget, "open")
    tap = TapConfluence(config=CONFIG)
    users = tap.streams["users"]
    record = {"accountId": "a", "extra": {"keep": 1}}
    sdk_compat.drop_deselected(record, users)
    assert record["accountId"] == "a"


def test_nothing_else_in_the_tap_names_a_private_sdk_member() -> None:
    # The streams, records and HTTP layers reach the SDK's private members only through
    # sdk_compat, so an SDK upgrade that changes one fails the tests above, not a stream.
    root = Path(sdk_compat.__file__).parent
    private = re.compile(
        r"\._(tap|stream_version|write_state_message|write_schema_message|"
        r"write_activate_version_message|increment_stream_state|write_record_message|"
        r"generate_record_messages|write_request_duration_log|default_expiration|"
        r"finalize_state|write_starting_replication_value|sync_records)\b"
        r"|helpers\._|STATE_MSG_FREQUENCY|state_manager"
    )
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "sdk_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if private.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)
