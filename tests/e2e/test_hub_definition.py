"""`meltano add --from-ref` with the Hub-style definition, in a fresh project, offline.

The definition installs `tap-confluence` from a package index. Here the index is a wheel of
this checkout (built offline), uv runs with --offline and every proxy points at a closed
port, so any attempt to reach the network fails the test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.meltano import FOREIGN_ENV_PREFIXES, MELTANO, REPO

pytestmark = pytest.mark.slow

HUB_FILE = REPO / "plugins" / "extractors" / "tap-confluence.yml"
DEAD_PROXY = "http://127.0.0.1:9"


def offline_env(wheels: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_VENV_BACKEND="uv",
        UV_OFFLINE="1",
        UV_FIND_LINKS=str(wheels),
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        NO_COLOR="1",
    )
    env.pop("NO_PROXY", None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"{args[:3]} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def test_meltano_add_from_ref_installs_the_tap_offline_in_a_fresh_project(tmp_path: Path) -> None:
    if not MELTANO.is_file():
        pytest.fail("this test needs Meltano: run ./scripts/setup, which installs it")
    wheels = tmp_path / "wheels"
    uv = REPO / ".venv" / "bin" / "uv"
    run(
        [str(uv), "build", "--wheel", "--offline", "--out-dir", str(wheels), str(REPO)],
        REPO,
        {**os.environ, "UV_OFFLINE": "1"},
    )
    env = offline_env(wheels)
    run([str(MELTANO), "init", "fresh", "--no-usage-stats"], tmp_path, env)
    project = tmp_path / "fresh"

    run([str(MELTANO), "add", "--from-ref", str(HUB_FILE), "tap-confluence"], project, env)

    venv = project / ".meltano" / "extractors" / "tap-confluence" / "venv"
    (dist,) = venv.glob("lib/python*/site-packages/tap_confluence-*.dist-info")
    # Installed from the package, not linked to this checkout.
    assert not (dist / "direct_url.json").exists()
    version = run([str(venv / "bin" / "tap-confluence"), "--version"], project, env)
    assert "tap-confluence v0." in version.stdout
    listed = run([str(MELTANO), "config", "list", "--all", "tap-confluence"], project, env).stdout
    for setting in ("cloud_id", "refresh_token", "flattening_enabled", "audit_concurrency"):
        assert setting in listed, setting
    # The plugin's commands came along, with this project's own token store path.
    status = subprocess.run(
        [str(MELTANO), "invoke", "tap-confluence:status"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert str(project / ".meltano" / "tokens" / "tap-confluence.json") in status.stdout + (
        status.stderr
    )
