"""The token's bad days, through the harness so the leak scan reads every byte they leave.

A full disk between spending the refresh token and saving the new one, and a token endpoint
that redirects: each run ends in one sentence, keeps the good token, and leaks nothing.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import REPO_ROOT, SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    Run,
    discover,
    new_run_dir,
    parse_lines,
    run_inprocess,
    select_streams,
    tap_config,
    tap_env,
    write_inputs,
)
from tests.support.loopback import LoopbackServer, QuietHandler

SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 10}
FILE_SIZE_LIMIT = 256


def _small_files_only() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _licence_only(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    return select_streams(discover(root, config), {"license_subscriptions"})


def test_a_full_disk_between_spend_and_save_keeps_the_token_and_leaks_nothing(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = sims(**SMALL)
    config = tap_config(sim, tmp_path)
    store = Path(config["token_store_path"])
    catalog = _licence_only(tmp_path, config)
    first = run_inprocess(tmp_path, config, catalog=catalog)
    assert first.returncode == 0, first.stderr[-2000:]
    good = store.read_bytes()

    sim.control("expire-access-tokens", {})
    run_dir = new_run_dir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "tap_confluence", *write_inputs(tmp_path, config, None, catalog)],
        cwd=REPO_ROOT,
        env=tap_env(PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,  # pipes, which the file size limit does not cut
        preexec_fn=_small_files_only,
        timeout=300,
        check=False,
    )
    # Kept where the leak scan reads every run's output.
    (run_dir / "stdout").write_bytes(proc.stdout)
    (run_dir / "stderr").write_bytes(proc.stderr)
    stdout = proc.stdout.decode()
    run = Run(proc.returncode, stdout, proc.stderr.decode(), None, parse_lines(stdout))
    line = run.assert_clean_failure()
    assert "the refresh token was spent; rerun within 10 minutes" in line
    assert store.read_bytes() == good
    assert run.records("license_subscriptions") == [], "no record after an unsaved refresh"

    again = run_inprocess(tmp_path, config, catalog=catalog)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sim.stats()["revoked_families"] == 0
    FIGURES.add("full_disk_saves")


class _Redirector:
    """Answers every POST with a 307 to ``target``, as a hijacked or misconfigured host might."""

    def __init__(self, target: str) -> None:
        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(307)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.loop = LoopbackServer(Handler)
        self.url = f"http://127.0.0.1:{self.loop.port}"

    def stop(self) -> None:
        self.loop.stop()


@pytest.fixture
def redirector(
    sims: Callable[..., SimulatorProcess],
) -> Iterator[tuple[SimulatorProcess, _Redirector]]:
    sim = sims(**SMALL)
    server = _Redirector(f"{sim.url}/oauth/token?next=fake-location-query")
    yield sim, server
    server.stop()


def test_a_redirecting_token_endpoint_gets_nothing_resent_and_leaks_nothing(
    redirector: tuple[SimulatorProcess, _Redirector], tmp_path: Path
) -> None:
    sim, server = redirector
    config = tap_config(sim, tmp_path, auth_url=server.url)
    catalog = _licence_only(tmp_path, config)
    run = run_inprocess(tmp_path, config, catalog=catalog)
    line = run.assert_clean_failure()
    assert server.url.removeprefix("http://") in line
    assert "redirect" in line
    assert "fake-location-query" not in run.stderr
    stats = sim.stats()
    assert stats["refreshes"] == 0, "the refresh token followed the redirect"
    assert stats["refresh_failures"] == 0
    FIGURES.add("redirects_refused")
