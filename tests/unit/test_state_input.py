"""--state in every form a Meltano user has at hand; anything that is not a state is refused."""

from __future__ import annotations

import json

import pytest

from tap_confluence.errors import TapUserError
from tap_confluence.settings.state import parse_state

BOOKMARKS = {
    "bookmarks": {
        "audit_records": {
            "replication_key": "createdAt",
            "replication_key_value": "2026-10-31T23:59:00+00:00",
        },
        "users": {},
    }
}


def test_plain_singer_state_is_used_as_it_is() -> None:
    assert parse_state(json.dumps(BOOKMARKS)) == BOOKMARKS


def test_meltano_wrapped_state_is_unwrapped() -> None:
    # What `meltano state get <id>` prints.
    assert parse_state(json.dumps({"singer_state": BOOKMARKS})) == BOOKMARKS


def test_state_message_line_is_unwrapped() -> None:
    # The last STATE line the tap printed, copied as it is (with its newline).
    line = json.dumps({"type": "STATE", "value": BOOKMARKS}) + "\n"
    assert parse_state(line) == BOOKMARKS


def test_unwrapped_state_is_checked_like_a_plain_one() -> None:
    bad = {"bookmarks": {"audit_records": {"replication_key_value": "yesterday"}}}
    with pytest.raises(TapUserError, match="bookmark of audit_records"):
        parse_state(json.dumps({"singer_state": bad}))
    with pytest.raises(TapUserError, match="bookmark of audit_records"):
        parse_state(json.dumps({"type": "STATE", "value": bad}))


@pytest.mark.parametrize(
    "text",
    [
        # A catalog, a config and a RECORD line passed as --state by mistake.
        json.dumps({"streams": [{"tap_stream_id": "users"}]}),
        json.dumps({"cloud_id": "0f0f0f0f", "client_id": "fake-client-id"}),
        json.dumps({"type": "RECORD", "stream": "users", "record": {}}),
        # Wrappers around something that is not a state.
        json.dumps({"singer_state": "bookmarks"}),
        json.dumps({"singer_state": {"singer_state": BOOKMARKS}}),
        json.dumps({"type": "STATE", "value": [1, 2]}),
        json.dumps({"type": "STATE"}),
        json.dumps({"value": BOOKMARKS}),
    ],
)
def test_json_that_is_not_a_state_is_refused_in_one_sentence(text: str) -> None:
    with pytest.raises(TapUserError) as info:
        parse_state(text)
    message = str(info.value)
    assert message.count(". ") == 0, "one sentence"
    assert "not a Singer state" in message
    # The way out names every form the tap takes.
    assert "meltano state get" in message
    assert "STATE message" in message


def test_refusal_no_longer_asks_only_for_the_last_state_message() -> None:
    with pytest.raises(TapUserError) as info:
        parse_state("[1, 2]")
    assert "pass the last STATE message the tap emitted" not in str(info.value)
    assert "singer_state" in str(info.value)


def test_an_empty_state_still_means_a_full_read() -> None:
    assert parse_state("{}") == {}
    assert parse_state(json.dumps({"singer_state": {}})) == {}
