"""Settings validation: every accepted combination resolves, everything else gets one sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import ConfigValidationError

from tap_confluence.settings.auth import AuthMode, resolve_auth
from tap_confluence.tap import TapConfluence
from tests.support.tap_cli import REPO_ROOT, write_json

CLOUD = "0f0f0f0f-1111-4222-8333-444455556666"
OAUTH = {
    "cloud_id": CLOUD,
    "client_id": "fake-client-id",
    "client_secret": "fake-client-secret",
    "refresh_token": "fake-refresh-token-seed",
}
TOKEN = {"email": "admin@example.com", "api_token": "fake-scoped-api-token"}


@pytest.mark.parametrize(
    ("config", "mode", "base", "licence_site"),
    [
        (OAUTH, AuthMode.OAUTH, f"https://api.atlassian.com/ex/confluence/{CLOUD}", None),
        (
            {"cloud_id": CLOUD, **TOKEN},
            AuthMode.SCOPED_TOKEN,
            f"https://api.atlassian.com/ex/confluence/{CLOUD}",
            None,
        ),
        (
            {"site_url": "https://acme.atlassian.net/", **TOKEN},
            AuthMode.CLASSIC_TOKEN,
            "https://acme.atlassian.net",
            "https://acme.atlassian.net",
        ),
        (
            {**OAUTH, **TOKEN, "site_url": "https://acme.atlassian.net"},
            AuthMode.OAUTH_PLUS_TOKEN,
            f"https://api.atlassian.com/ex/confluence/{CLOUD}",
            "https://acme.atlassian.net",
        ),
        (
            {**OAUTH, "api_url": "http://127.0.0.1:9999"},
            AuthMode.OAUTH,
            f"http://127.0.0.1:9999/ex/confluence/{CLOUD}",
            None,
        ),
    ],
)
def test_accepted_combinations_resolve_to_their_mode_and_base_url(
    config: dict[str, Any], mode: AuthMode, base: str, licence_site: str | None
) -> None:
    plan = resolve_auth(config)
    assert plan.mode is mode
    assert plan.base_url == base
    assert plan.license_site_url == licence_site


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"cloud_id": CLOUD, "client_id": "x", "refresh_token": "fake-refresh-token-seed"},
            "OAuth needs client_secret as well as client_id and refresh_token; "
            "or set email and api_token for API-token auth.",
        ),
        ({k: v for k, v in OAUTH.items() if k != "cloud_id"}, "OAuth needs cloud_id"),
        ({"cloud_id": CLOUD, "email": "a@example.com"}, "API-token auth needs api_token"),
        ({"cloud_id": CLOUD, "api_token": "fake-tok-1234"}, "API-token auth needs email"),
        (TOKEN, "needs cloud_id (scoped token, through the gateway) or site_url"),
        ({**OAUTH, **TOKEN}, "so set site_url as well or remove them"),
        ({}, "No credentials are set"),
        ({**OAUTH, "api_url": "http://api.example.com"}, "plain http, which is refused"),
        ({**OAUTH, "auth_url": "not a url"}, "auth_url 'not a url' is not a URL"),
        ({**OAUTH, "start_date": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({**OAUTH, "start_date": "yesterday"}, "is not an ISO 8601 date-time"),
        ({**OAUTH, "audit_lookback_minutes": -5}, "audit_lookback_minutes must be"),
    ],
)
def test_bad_settings_fail_with_one_sentence_naming_the_problem(
    config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigValidationError) as info:
        resolve_auth(config)
    assert info.value.errors == [str(info.value)]
    assert expected in str(info.value)
    assert str(info.value).count(". ") == 0, "one sentence, not several"


def test_tap_refuses_bad_config_at_construction_before_any_request() -> None:
    # api_url points at a port nothing listens on: a request would fail differently.
    config = {**OAUTH, "client_secret": "", "api_url": "http://127.0.0.1:9"}
    with pytest.raises(ConfigValidationError, match="OAuth needs client_secret"):
        TapConfluence(config=config, validate_config=True)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"cloud_id": CLOUD, "client_id": "fake-client-id"}, "OAuth needs client_secret and "),
        ({**TOKEN, "cloud_id": CLOUD, "start_date": 12}, "start_date"),
        ({**TOKEN, "site_url": "http://wiki.example.com"}, "plain http"),
    ],
)
def test_cli_prints_one_error_line_and_no_traceback(
    tmp_path: Path, config: dict[str, Any], expected: str
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tap_confluence",
            "--config",
            str(write_json(tmp_path / "c.json", config)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "| ERROR" in line]
    assert any(expected in line for line in errors), proc.stderr


CLASSIC = {"site_url": "https://acme.atlassian.net", **TOKEN}


@pytest.mark.parametrize(
    ("config", "stray", "needs"),
    [
        # Classic token complete, plus one OAuth setting.
        ({**CLASSIC, "client_secret": "fake-client-secret"}, "client_secret", "client_id"),
        ({**CLASSIC, "refresh_token": "fake-refresh-token-seed"}, "refresh_token", "client_id"),
        # Scoped token complete, plus two OAuth settings.
        (
            {"cloud_id": CLOUD, **TOKEN, "client_id": "x", "refresh_token": "fake-refresh-1"},
            "client_id and refresh_token",
            "client_secret",
        ),
        # OAuth complete, plus half of the API token.
        ({**OAUTH, "api_token": "fake-tok-1234"}, "api_token", "email"),
        ({**OAUTH, "email": "a@example.com"}, "email", "api_token"),
    ],
)
def test_complete_credentials_plus_a_stray_setting_name_the_stray_setting(
    config: dict[str, Any], stray: str, needs: str
) -> None:
    with pytest.raises(ConfigValidationError) as info:
        resolve_auth(config)
    message = str(info.value)
    assert f"{stray} {'are' if ' and ' in stray else 'is'} set too" in message, message
    assert needs in message
    # Never the claim that the complete method lacks something.
    assert "or set email and api_token" not in message
    assert not message.startswith("OAuth needs")
    assert message.count(". ") == 0, "one sentence"
