"""A secret setting of the wrong type is named, never printed (through the real CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tap_cli import run_tap

SECRET_SETTINGS = (
    "client_secret",
    "refresh_token",
    "api_token",
    "org_api_key",
    "token_store_url",
    "token_store_key",
)
BASE = {
    "cloud_id": "0f0f0f0f-1111-4222-8333-444455556666",
    "client_id": "fake-client-id",
    "client_secret": "fake-client-secret-ok",
    "refresh_token": "fake-refresh-token-ok",
}


KINDS = (
    (["fake-secret-in-a-list-7f3a"], "a list"),
    ({"value": "fake-secret-in-an-object-7f3a"}, "an object"),
    (74738291047382910, "a number"),
)


@pytest.mark.parametrize(
    ("setting", "value", "kind"),
    # Every setting, each kind of wrong value twice over: six runs of the real CLI.
    [(name, *KINDS[i % len(KINDS)]) for i, name in enumerate(SECRET_SETTINGS)],
)
def test_a_secret_setting_of_the_wrong_type_is_named_without_its_value(
    tmp_path: Path, setting: str, value: object, kind: str
) -> None:
    run = run_tap(tmp_path, BASE | {setting: value})
    output = run.stdout + run.stderr
    assert run.returncode == 1
    for shown in ("fake-secret-in-a-list-7f3a", "fake-secret-in-an-object-7f3a", "7473829104"):
        assert shown not in output, f"the value of {setting} was printed"
    assert "Traceback" not in run.stderr
    assert f"{setting} must be text" in run.stderr
    assert kind in run.stderr
