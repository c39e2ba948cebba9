"""meltano.yml and README stay true to the tap: same settings, same secrets, fresh table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# Settings every SDK tap has; Meltano knows them from the capabilities, not the settings list.
SDK_BUILTIN = {
    "stream_maps",
    "stream_map_config",
    "faker_config",
    "flattening_enabled",
    "flattening_max_depth",
    "flattening_max_key_length",
    "flattening_separator",
    "batch_config",
}


def about() -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--about", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def meltano_yml() -> dict:
    return yaml.safe_load((REPO / "meltano.yml").read_text())


def plugin(kind: str, name: str) -> dict:
    return next(p for p in meltano_yml()["plugins"][kind] if p["name"] == name)


def test_meltano_yml_declares_every_tap_setting_and_only_those():
    props = about()["settings"]["properties"]
    declared = {s["name"] for s in plugin("extractors", "tap-confluence")["settings"]}
    assert declared == set(props) - SDK_BUILTIN


def test_meltano_yml_marks_exactly_the_tap_secrets_sensitive():
    props = about()["settings"]["properties"]
    secrets = {name for name, p in props.items() if p.get("secret")}
    sensitive = {
        s["name"]
        for s in plugin("extractors", "tap-confluence")["settings"]
        if s.get("sensitive") is True
    }
    assert secrets, "the tap declares no secret settings at all"
    assert sensitive == secrets


def test_meltano_yml_keeps_secrets_out_of_the_file():
    for s in plugin("extractors", "tap-confluence")["settings"]:
        if s.get("sensitive"):
            assert "value" not in s, f"{s['name']} is sensitive but has a value in meltano.yml"


def test_every_plugin_is_defined_inline_so_meltano_never_asks_the_hub():
    project = meltano_yml()
    assert project.get("send_anonymous_usage_stats") is False
    assert "version" not in project
    for kind, plugins in project["plugins"].items():
        for p in plugins:
            if "inherit_from" in p:
                continue
            missing = {"namespace", "pip_url", "executable"} - set(p)
            assert not missing, f"{kind} {p['name']} lacks {sorted(missing)}"


def test_auth_groups_in_meltano_yml_name_only_declared_settings():
    tap = plugin("extractors", "tap-confluence")
    declared = {s["name"] for s in tap["settings"]}
    groups = tap["settings_group_validation"]
    assert len(groups) >= 3
    for group in groups:
        assert set(group) <= declared, group


def test_token_store_defaults_to_one_file_per_plugin_instance():
    tap = plugin("extractors", "tap-confluence")
    store = next(s for s in tap["settings"] if s["name"] == "token_store_path")
    assert "$MELTANO_PROJECT_ROOT" in store["value"]
    assert "$MELTANO_EXTRACTOR_NAME" in store["value"]
    site_b = plugin("extractors", "tap-confluence--site-b")
    assert site_b["inherit_from"] == "tap-confluence"


def test_readme_settings_table_matches_the_tap_about_output():
    proc = subprocess.run(
        [str(REPO / "scripts" / "readme-settings"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_settings_check_fails_on_a_stale_table(tmp_path):
    readme = (REPO / "README.md").read_text()
    row = "| cloud_id | False | None | Old text. |"
    stale = re.sub(r"^\| cloud_id \|.*$", row, readme, flags=re.M)
    assert stale != readme
    path = tmp_path / "README.md"
    path.write_text(stale)
    proc = subprocess.run(
        [str(REPO / "scripts" / "readme-settings"), "--check", "--readme", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "stale" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert first_block is not None
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/test\s*$", ci, re.M)
