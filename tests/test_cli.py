"""The command line answers --about with every declared setting, secrets marked."""

import json
import subprocess
import sys


def test_about_lists_every_setting_and_marks_secrets():
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--about", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    about = json.loads(out)
    props = about["settings"]["properties"]
    for name in (
        "cloud_id",
        "site_url",
        "client_id",
        "client_secret",
        "refresh_token",
        "email",
        "api_token",
        "start_date",
        "token_store_path",
        "api_url",
        "auth_url",
    ):
        assert name in props, name
    for secret in ("client_secret", "refresh_token", "api_token"):
        assert props[secret].get("secret") is True, secret
    assert props["api_url"]["default"] == "https://api.atlassian.com"
