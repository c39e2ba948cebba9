"""meltano.yml and README stay true to the tap: same settings, same secrets, fresh table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# Meltano setting kinds for JSON Schema types (a string's format refines its kind).
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}
STRING_FORMATS = {"date-time": "date_iso8601", "email": "email"}
# Defaults only a Meltano project can give, each for a reason.
MELTANO_ONLY_VALUES = {
    # One token file per plugin instance, named after it (the tap alone has no project root).
    "token_store_path": "$MELTANO_PROJECT_ROOT/.meltano/tokens/$MELTANO_EXTRACTOR_NAME.json",
}


def about() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--about", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def meltano_yml() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((REPO / "meltano.yml").read_text())
    return parsed


def plugin(kind: str, name: str) -> dict[str, Any]:
    return next(p for p in meltano_yml()["plugins"][kind] if p["name"] == name)


def meltano_kind(prop: dict[str, Any]) -> str:
    """The Meltano kind a setting of this JSON Schema must have."""
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    (json_type,) = [x for x in types if x != "null"]
    if json_type == "string" and "enum" in prop:
        return "options"
    if json_type == "string" and prop.get("format") in STRING_FORMATS:
        return STRING_FORMATS[prop["format"]]
    return KINDS[json_type]


def test_meltano_yml_declares_every_tap_setting_and_only_those() -> None:
    props = about()["settings"]["properties"]
    declared = {s["name"] for s in plugin("extractors", "tap-confluence")["settings"]}
    # The SDK's own settings (stream maps, flattening, batch, faker) included: Meltano
    # refuses to `config set` a setting it does not know, and passes it untyped.
    assert sorted(set(props) - declared) == [], "the tap has them, meltano.yml does not"
    assert sorted(declared - set(props)) == [], "meltano.yml has them, the tap does not"


def test_meltano_yml_gives_every_setting_the_kind_of_the_taps_schema() -> None:
    props = about()["settings"]["properties"]
    for setting in plugin("extractors", "tap-confluence")["settings"]:
        name = setting["name"]
        # Meltano's kind defaults to string.
        assert setting.get("kind", "string") == meltano_kind(props[name]), name


def test_meltano_yml_defaults_are_the_taps_defaults() -> None:
    props = about()["settings"]["properties"]
    for setting in plugin("extractors", "tap-confluence")["settings"]:
        name = setting["name"]
        expected = MELTANO_ONLY_VALUES.get(name, props[name].get("default"))
        assert setting.get("value") == expected, name


def test_meltano_yml_capabilities_are_the_taps() -> None:
    declared = set(plugin("extractors", "tap-confluence")["capabilities"])
    assert declared == set(about()["capabilities"])


def test_meltano_yml_marks_exactly_the_tap_secrets_sensitive() -> None:
    props = about()["settings"]["properties"]
    secrets = {name for name, p in props.items() if p.get("secret")}
    sensitive = {
        s["name"]
        for s in plugin("extractors", "tap-confluence")["settings"]
        if s.get("sensitive") is True
    }
    assert secrets, "the tap declares no secret settings at all"
    assert sensitive == secrets


def test_meltano_yml_keeps_secrets_out_of_the_file() -> None:
    for s in plugin("extractors", "tap-confluence")["settings"]:
        if s.get("sensitive"):
            assert "value" not in s, f"{s['name']} is sensitive but has a value in meltano.yml"


def test_every_plugin_is_defined_inline_so_meltano_never_asks_the_hub() -> None:
    project = meltano_yml()
    assert project.get("send_anonymous_usage_stats") is False
    assert "version" not in project
    for kind, plugins in project["plugins"].items():
        for p in plugins:
            if "inherit_from" in p:
                continue
            missing = {"namespace", "pip_url", "executable"} - set(p)
            assert not missing, f"{kind} {p['name']} lacks {sorted(missing)}"


def test_auth_groups_in_meltano_yml_name_only_declared_settings() -> None:
    tap = plugin("extractors", "tap-confluence")
    declared = {s["name"] for s in tap["settings"]}
    groups = tap["settings_group_validation"]
    assert len(groups) >= 3
    for group in groups:
        assert set(group) <= declared, group


def test_token_store_defaults_to_one_file_per_plugin_instance() -> None:
    tap = plugin("extractors", "tap-confluence")
    store = next(s for s in tap["settings"] if s["name"] == "token_store_path")
    assert "$MELTANO_PROJECT_ROOT" in store["value"]
    assert "$MELTANO_EXTRACTOR_NAME" in store["value"]
    site_b = plugin("extractors", "tap-confluence--site-b")
    assert site_b["inherit_from"] == "tap-confluence"


def test_readme_settings_table_matches_the_tap_about_output() -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "readme-settings"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_settings_check_fails_on_a_stale_table(tmp_path: Path) -> None:
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


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert first_block is not None
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/test\s*$", ci, re.M)


HUB_FILE = REPO / "plugins" / "extractors" / "tap-confluence.yml"


def hub_definition() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(HUB_FILE.read_text())
    return parsed


def test_hub_definition_declares_what_meltano_yml_declares() -> None:
    hub, tap = hub_definition(), plugin("extractors", "tap-confluence")
    for key in (
        "name",
        "namespace",
        "executable",
        "capabilities",
        "settings_group_validation",
        "settings",
        "commands",
    ):
        assert hub[key] == tap[key], key


def test_hub_definition_installs_a_published_package_not_this_checkout() -> None:
    pip_url = hub_definition()["pip_url"]
    assert not pip_url.startswith("-e"), pip_url
    assert pip_url.split("==")[0] == "tap-confluence" or pip_url.startswith("git+https://")


def test_readme_tells_an_existing_project_how_to_add_the_tap_from_the_definition() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^meltano add --from-ref (\S+) tap-confluence\s*$", readme, re.M)
    assert commands, "no `meltano add --from-ref ... tap-confluence` in the README"
    assert any(c.endswith("plugins/extractors/tap-confluence.yml") for c in commands), commands


def test_readme_state_clear_commands_carry_force() -> None:
    readme = (REPO / "README.md").read_text()
    clears = re.findall(r"^meltano state clear\b.*$", readme, re.M)
    assert clears, "the README no longer shows how to clear state"
    assert all("--force" in line for line in clears), clears


def test_readme_says_what_an_unset_start_date_reads() -> None:
    readme = (REPO / "README.md").read_text()
    section = re.search(r"\*\*Without `start_date`\*\*(.*?)\n\n", readme, re.S)
    assert section, "the README does not say what a run without start_date reads"
    for stream in ("audit_records", "user_activity", "users", "license_subscriptions"):
        assert stream in section.group(1), stream
    assert "retention" in section.group(1)


def test_readme_names_the_log_level_variable() -> None:
    readme = (REPO / "README.md").read_text()
    assert "TAP_CONFLUENCE_LOGLEVEL" in readme
