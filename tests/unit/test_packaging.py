"""What a user installing the package sees: licence, changelog, metadata, versions, --about."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The Apache License 2.0 exactly as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
STREAMS = (
    "users",
    "groups",
    "group_members",
    "license_subscriptions",
    "audit_records",
    "user_activity",
)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `uv build` makes of this checkout, offline (hatchling checks classifiers)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "uv"),
            "build",
            "--wheel",
            "--offline",
            "--out-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("tap_confluence-*.whl")
    return built


def test_license_file_is_the_apache_2_0_text_the_metadata_names() -> None:
    assert pyproject()["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.md5(text).hexdigest() == APACHE_2_MD5  # noqa: S324 - a fingerprint only


def test_the_wheel_carries_the_license_urls_and_classifiers(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(metadata).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in meta
    urls = re.findall(r"^Project-URL: ([^,]+), (\S+)$", meta, re.M)
    assert {label for label, _ in urls} >= {"Documentation", "Changelog"}, urls
    assert all(url.startswith("https://") for _, url in urls), urls
    classifiers = re.findall(r"^Classifier: (.+)$", meta, re.M)
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert any(c.startswith("Development Status :: ") for c in classifiers)


def test_changelog_has_a_section_for_the_current_version() -> None:
    current = pyproject()["project"]["version"]
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(current)}\]?", changelog, re.M), current


@pytest.mark.parametrize("command", ["tap-confluence", "tap-confluence-auth"])
def test_both_commands_print_the_package_version(command: str) -> None:
    exe = Path(sys.executable).parent / command
    proc = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert version("tap-confluence") in proc.stdout
    assert command in proc.stdout


def test_about_description_names_all_six_streams() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--about", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    description = json.loads(out)["description"]
    missing = [s for s in STREAMS if not re.search(rf"\b{s}\b", description)]
    assert missing == [], description


@pytest.mark.parametrize(("level", "info_lines"), [(None, True), ("WARNING", False)])
def test_tap_confluence_loglevel_sets_the_taps_log_level(
    tmp_path: Path, level: str | None, info_lines: bool
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "site_url": "https://acme.atlassian.net",
                "email": "admin@example.com",
                "api_token": "fake-classic-api-token",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in {"LOGLEVEL", "TAP_CONFLUENCE_LOGLEVEL"}}
    if level:
        env["TAP_CONFLUENCE_LOGLEVEL"] = level
    proc = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--config", str(config), "--test=schema"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    assert ("| INFO" in proc.stderr) is info_lines, proc.stderr
