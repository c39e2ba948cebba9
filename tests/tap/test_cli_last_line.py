"""The useful sentence is the last line on stderr, which `meltano config test` shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.tap_cli import REPO_ROOT, write_json

CLOUD = "0f0f0f0f-1111-4222-8333-444455556666"
TOKEN = {"cloud_id": CLOUD, "email": "admin@example.com", "api_token": "fake-scoped-api-token"}
SDK_SUMMARIES = ("Config validation failed", "An unhandled error occurred while syncing")


def run_cli(
    tmp_path: Path, config: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tap_confluence",
            "--config",
            str(write_json(tmp_path / "c.json", config)),
            *extra,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # The tap's own settings rules.
        ({"cloud_id": CLOUD, "client_id": "fake-client-id"}, "OAuth needs client_secret"),
        ({**TOKEN, "audit_lookback_minutes": -5}, "audit_lookback_minutes must be"),
        # The SDK's schema check: a value of the wrong type.
        ({**TOKEN, "audit_concurrency": "many"}, "audit_concurrency must be a whole number"),
        ({**TOKEN, "flattening_enabled": "yes"}, "flattening_enabled must be true or false"),
    ],
)
def test_config_errors_end_stderr_with_the_taps_sentence(
    tmp_path: Path, config: dict[str, Any], expected: str
) -> None:
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    assert proc.stdout == ""
    last = last_line(proc.stderr)
    assert expected in last, proc.stderr
    assert not any(summary in last for summary in SDK_SUMMARIES)
    assert "Traceback" not in proc.stderr


def test_a_secret_of_the_wrong_type_is_named_but_never_printed(tmp_path: Path) -> None:
    secret = 918273645546372819
    proc = run_cli(tmp_path, {**TOKEN, "api_token": secret})
    assert proc.returncode == 1
    assert "api_token must be text" in last_line(proc.stderr), proc.stderr
    assert str(secret) not in proc.stderr


def test_several_settings_of_the_wrong_type_are_named_in_one_last_sentence(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, {**TOKEN, "audit_concurrency": "x", "max_retry_wait_seconds": []})
    last = last_line(proc.stderr)
    assert "audit_concurrency must be a whole number" in last
    assert "max_retry_wait_seconds must be a whole number" in last


def test_a_run_that_gives_up_ends_stderr_with_its_sentence(tmp_path: Path) -> None:
    # Nothing listens on port 9: two quick tries, then the sentence naming the setting.
    config = {
        **TOKEN,
        "api_url": "http://127.0.0.1:9",
        "max_retry_wait_seconds": 0,
    }
    proc = run_cli(tmp_path, config)
    assert proc.returncode == 1
    last = last_line(proc.stderr)
    assert "could not be reached" in last, proc.stderr[-3000:]
    assert "check api_url" in last
    assert not any(summary in last for summary in SDK_SUMMARIES)


@pytest.mark.parametrize("mode", ["--test", "--test=schema"])
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"cloud_id": CLOUD, "client_id": "fake-client-id"}, "OAuth needs client_secret"),
        ({**TOKEN, "audit_concurrency": "many"}, "audit_concurrency must be a whole number"),
    ],
)
def test_test_mode_with_a_bad_config_ends_with_the_sentence_not_a_traceback(
    tmp_path: Path, mode: str, config: dict[str, Any], expected: str
) -> None:
    proc = run_cli(tmp_path, config, mode)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert expected in last_line(proc.stderr), proc.stderr[-3000:]
