"""The command line answers --about with every declared setting, secrets marked."""

import json
import subprocess
import sys


def test_about_lists_every_setting_and_marks_secrets() -> None:
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


def test_discover_lists_every_stream_with_cloud_id_leading_its_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--discover"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    streams = {s["tap_stream_id"]: s for s in json.loads(out)["streams"]}
    expected = {
        "users": ["cloudId", "accountId"],
        "groups": ["cloudId", "id"],
        "group_members": ["cloudId", "groupId", "accountId"],
        "license_subscriptions": ["cloudId", "snapshotDate"],
        "audit_records": ["cloudId", "id"],
    }
    for name, key in expected.items():
        assert streams[name]["key_properties"] == key, name
        props = streams[name]["schema"]["properties"]
        assert all(p.get("description") for p in props.values()), name
    assert streams["audit_records"]["replication_key"] == "createdAt"
    assert streams["audit_records"]["schema"]["properties"]["createdAt"]["format"] == "date-time"
    assert streams["audit_records"]["schema"]["properties"]["creationDate"]["type"] == ["integer"]
