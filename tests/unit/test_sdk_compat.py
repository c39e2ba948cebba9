"""Every SDK member that sdk_compat relies on but the SDK does not publish, as it must be.

A failure here after an SDK upgrade names the member that moved: change sdk_compat.py (the
only module that touches them), not the streams.
"""

from __future__ import annotations

import inspect
import json
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
