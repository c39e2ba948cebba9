"""A misspelt setting or a value out of range is said out loud, never silently ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tap_confluence.streams.audit.stream import AuditRecordsStream
from tap_confluence.streams.audit.workers import helpers_wanted
from tap_confluence.tap import TapConfluence
from tests.support.tap_cli import REPO_ROOT, write_json

TOKEN = {
    "site_url": "https://acme.atlassian.net",
    "email": "admin@example.com",
    "api_token": "fake-classic-api-token",
}


def warnings_of(tmp_path: Path, config: dict[str, Any]) -> list[str]:
    """Run the real CLI in schema-test mode (no request is sent) and return its warnings."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tap_confluence",
            "--config",
            str(write_json(tmp_path / "c.json", config)),
            "--test=schema",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if "| WARNING" in line]


def test_a_misspelt_setting_is_named_with_the_setting_meant(tmp_path: Path) -> None:
    warned = warnings_of(tmp_path, {**TOKEN, "start_dat": "2026-01-01T00:00:00Z"})
    assert len(warned) == 1, warned
    assert "start_dat is not a setting of tap-confluence" in warned[0]
    assert "did you mean start_date?" in warned[0]
    assert "ignored" in warned[0]


def test_an_unknown_setting_far_from_any_is_named_without_a_guess(tmp_path: Path) -> None:
    warned = warnings_of(tmp_path, {**TOKEN, "colour_scheme": "dark"})
    assert len(warned) == 1, warned
    assert "colour_scheme is not a setting of tap-confluence" in warned[0]
    assert "did you mean" not in warned[0]


def test_unknown_settings_never_show_their_values(tmp_path: Path) -> None:
    warned = warnings_of(tmp_path, {**TOKEN, "api_tokn": "fake-secret-value-98765"})
    assert "did you mean api_token?" in warned[0]
    assert "fake-secret-value-98765" not in "\n".join(warned)


@pytest.mark.parametrize(("given", "used"), [(40, 16), (0, 1), (-3, 1)])
def test_audit_concurrency_out_of_range_says_what_is_used(
    tmp_path: Path, given: int, used: int
) -> None:
    warned = warnings_of(tmp_path, {**TOKEN, "audit_concurrency": given})
    assert len(warned) == 1, warned
    assert f"audit_concurrency {given} is outside 1 to 16" in warned[0]
    assert f"{used} audit windows are fetched at once" in warned[0]
    # The number told is the number the audit stream really uses.
    tap = TapConfluence(config={**TOKEN, "audit_concurrency": given})
    audit = tap.streams["audit_records"]
    assert isinstance(audit, AuditRecordsStream)
    assert audit.concurrency == used


@pytest.mark.parametrize(("given", "used"), [(40, 8), (-1, 0)])
def test_audit_helper_processes_out_of_range_says_what_is_used(
    tmp_path: Path, given: int, used: int
) -> None:
    warned = warnings_of(tmp_path, {**TOKEN, "audit_helper_processes": given})
    assert len(warned) == 1, warned
    assert warned[0].endswith(
        f"audit_helper_processes {given} is outside 0 to 8, so {used} are used."
    )
    # The number told is the number the backfill would start.
    assert helpers_wanted({"audit_helper_processes": given}) == used


def test_a_clean_config_gets_no_warning(tmp_path: Path) -> None:
    assert warnings_of(tmp_path, {**TOKEN, "audit_concurrency": 16}) == []
