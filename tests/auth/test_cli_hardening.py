"""tap-confluence-auth against idle sockets, hostile answers, sealed stores and Meltano 4.

`login` runs as a real process; a real HTTP client plays the browser; the simulator or a tiny
loopback server plays Atlassian.
"""

from __future__ import annotations

import json
import queue
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import requests

from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.crypto import TokenCipher, new_key
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint
from tests.support.auth_cli import (
    CLI,
    REPO_ROOT,
    LoginProcess,
    clean_env,
    issued_secrets,
    run_cli,
    sim_env,
)
from tests.support.loopback import LoopbackServer, QuietHandler

SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}
MELTANO = REPO_ROOT / ".tools" / "meltano" / "bin" / "meltano"


def _start(group_args: list[str], args: list[str], env: dict[str, str]) -> LoginProcess:
    """Like start_login, with options of the command group (--env-prefix) before `login`."""
    proc = subprocess.Popen(
        [*CLI, *group_args, "login", "--no-browser", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    login = LoginProcess(proc, queue.Queue(), [])
    login.start_reader()
    return login


@pytest.fixture
def login_runner() -> Iterator[Callable[..., LoginProcess]]:
    """Start `login` processes (args, env[, group_args]); any left running is killed after."""
    started: list[LoginProcess] = []

    def start(args: list[str], env: dict[str, str], group_args: Sequence[str] = ()) -> LoginProcess:
        process = _start(list(group_args), args, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _url_or_end(login: LoginProcess, timeout: float = 60) -> str | None:
    """The consent address, or None when login ended before printing one."""
    while True:
        line = login.lines.get(timeout=timeout)
        if line is None:
            return None
        if "/authorize?" in line:
            return line.strip()


# ---- item 12: the callback server ----------------------------------------------------------


def test_idle_local_connections_do_not_hold_the_callback_back(
    login_runner: Callable[..., LoginProcess], simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--timeout", "20", "--token-store-path", f"{store_dir}/"],
        sim_env(simulator, tmp_path),
    )
    url = login.authorization_url()
    port = urlsplit(_query(url)["redirect_uri"]).port
    # Browsers open speculative connections and may leave them idle; so may anything local.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        started = time.monotonic()
        try:
            page = requests.get(url, timeout=4)
        except requests.Timeout:
            pytest.fail("the genuine callback waited behind idle connections")
        assert page.status_code == 200
        assert "Authorization received" in page.text
        assert time.monotonic() - started < 4
        code, _, err = login.finish()
    finally:
        for sock in idle:
            sock.close()
    assert code == 0, err
    assert sorted(p.name for p in store_dir.glob("*.json")) == [f"{simulator.cloud_id}.json"]


def test_a_localhost_callback_is_answered_on_ipv6_loopback_too(
    login_runner: Callable[..., LoginProcess], simulator: SimulatorProcess, tmp_path: Path
) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--timeout", "30", "--token-store-path", f"{store_dir}/"],
        sim_env(simulator, tmp_path),
    )
    url = login.authorization_url()
    assert urlsplit(_query(url)["redirect_uri"]).hostname == "localhost"
    consent = requests.get(url, allow_redirects=False, timeout=30)
    callback = urlsplit(consent.headers["Location"])
    # A browser that resolves localhost to ::1 first comes back on IPv6.
    over_ipv6 = urlunsplit(callback._replace(netloc=f"[::1]:{callback.port}"))
    page = requests.get(over_ipv6, timeout=30)
    assert page.status_code == 200
    assert "Authorization received" in page.text
    code, _, err = login.finish()
    assert code == 0, err


@pytest.mark.parametrize(
    "redirect", ["http://localhost:99999/callback", "http://localhost:port/callback"]
)
def test_a_bad_redirect_uri_port_is_one_sentence(
    simulator: SimulatorProcess, tmp_path: Path, redirect: str
) -> None:
    result = run_cli(
        ["login", "--no-browser", "--redirect-uri", redirect], sim_env(simulator, tmp_path)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--redirect-uri" in lines[0]
    assert "port" in lines[0]


# ---- item 13: a cloud ID from the network or a flag never becomes a path -------------------


class _HostileAtlassian:
    """Token exchange and accessible-resources whose site id is a path, not a cloud ID."""

    def __init__(self, site_id: str) -> None:
        outer = self
        self.site_id = site_id

        class Handler(QuietHandler):
            def _send(self, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(
                    {
                        "access_token": "fake-access-hostile-1",
                        "refresh_token": "fake-refresh-hostile-1",
                        "expires_in": 3600,
                        "scope": "offline_access read:audit-log:confluence",
                    }
                )

            def do_GET(self) -> None:
                self._send(
                    [{"id": outer.site_id, "name": "x", "url": "https://x.example", "scopes": []}]
                )

        self.loop = LoopbackServer(Handler)
        self.url = f"http://127.0.0.1:{self.loop.port}"

    def stop(self) -> None:
        self.loop.stop()


@pytest.fixture
def hostile() -> Iterator[_HostileAtlassian]:
    server = _HostileAtlassian("../../escaped-from-the-store")
    yield server
    server.stop()


def test_a_site_id_that_is_a_path_is_refused_before_anything_is_written(
    login_runner: Callable[..., LoginProcess], hostile: _HostileAtlassian, tmp_path: Path
) -> None:
    store_dir = tmp_path / "deep" / "er" / "tokens"
    env = clean_env(
        tmp_path,
        TAP_CONFLUENCE_CLIENT_ID="fake-client-id",
        TAP_CONFLUENCE_CLIENT_SECRET="fake-client-secret",
        TAP_CONFLUENCE_AUTH_URL=hostile.url,
        TAP_CONFLUENCE_API_URL=hostile.url,
    )
    login = login_runner(["--port", "0", "--token-store-path", f"{store_dir}/"], env)
    query = _query(login.authorization_url())
    callback = f"{query['redirect_uri']}?code=fake-code-1&state={query['state']}"
    assert requests.get(callback, timeout=30).status_code == 200
    code, out, err = login.finish()
    assert code == 1
    assert "Traceback" not in err
    assert "cloud ID" in err
    written = [p for p in tmp_path.rglob("*.json") if "xdg-state" not in p.parts]
    assert written == [], written
    assert "fake-refresh-hostile-1" not in out + err


def test_a_cloud_id_flag_that_is_a_path_is_one_sentence(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    result = run_cli(
        ["login", "--no-browser", "--port", "0", "--timeout", "5", "--cloud-id", "../x",
         "--token-store-path", f"{tmp_path}/tokens/"],
        sim_env(simulator, tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cloud ID" in lines[0]
    assert "/authorize?" not in result.stdout


# ---- item 5: login never downgrades a sealed store, and keeps its fingerprints ---------------


def _sealed_store(path: Path, key: str) -> TokenRecord:
    record = TokenRecord(
        refresh_token="fake-refresh-sealed-old",
        seed_fingerprint=seed_fingerprint("fake-seed-old"),
        scopes=["offline_access"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        cloud_id="0f0f0f0f-1111-4222-8333-444455556666",
        superseded_seeds=[seed_fingerprint("fake-seed-older")],
    )
    FileTokenStore(path, cipher=TokenCipher([key])).write(record)
    return record


def test_login_without_the_key_refuses_to_replace_a_sealed_store(
    login_runner: Callable[..., LoginProcess], simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    path = store_dir / f"{simulator.cloud_id}.json"
    _sealed_store(path, new_key())
    before = path.read_bytes()
    login = login_runner(["--port", "0", "--token-store-path", f"{store_dir}/"],
                         sim_env(simulator, tmp_path))  # fmt: skip
    url = _url_or_end(login)
    if url is not None:
        requests.get(url, timeout=60)
    code, _, err = login.finish()
    assert code == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "token_store_key" in last
    assert "--force" in last
    assert path.read_bytes() == before


def test_login_with_force_replaces_a_sealed_store_but_keeps_its_fingerprints(
    login_runner: Callable[..., LoginProcess], simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    path = store_dir / f"{simulator.cloud_id}.json"
    old = _sealed_store(path, new_key())
    login = login_runner(["--port", "0", "--force", "--token-store-path", f"{store_dir}/"],
                         sim_env(simulator, tmp_path))  # fmt: skip
    requests.get(login.authorization_url(), timeout=60)
    code, _, err = login.finish()
    assert code == 0, err
    stored = json.loads(path.read_text())
    assert old.seed_fingerprint in stored["superseded_seeds"]
    assert old.superseded_seeds[0] in stored["superseded_seeds"]


# ---- issue 15 item 12: check verifies client_secret without spending the refresh token -------


def _check(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"check-config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    return run_cli(["check", "--config", str(path)], clean_env(tmp_path))


def test_check_with_a_wrong_client_secret_fails_while_a_cached_token_is_valid(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    config = sim.tap_config("oauth", token_store_path=str(tmp_path / "store" / "tokens.json"))
    first = _check(tmp_path, config)
    assert first.returncode == 0, first.stdout + first.stderr
    refreshes = sim.stats()["refreshes"]

    wrong = _check(tmp_path, config | {"client_secret": "fake-wrong-client-secret"})
    assert wrong.returncode == 1, wrong.stdout
    assert "Everything configured works" not in wrong.stdout
    assert "client_secret" in wrong.stdout
    assert "fake-wrong-client-secret" not in wrong.stdout + wrong.stderr
    assert sim.stats()["refreshes"] == refreshes, "the check spent the refresh token"

    right = _check(tmp_path, config)
    assert right.returncode == 0, right.stdout
    assert "client_secret verified" in right.stdout
    assert sim.stats()["refreshes"] == refreshes
    states = {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}
    stored = json.loads((tmp_path / "store" / "tokens.json").read_text())["refresh_token"]
    assert states[stored] == "current"
    for secret in issued_secrets(sim):
        assert secret not in right.stdout + right.stderr + wrong.stdout + wrong.stderr


# ---- issue 15 item 13: what login prints works with Meltano 4 ------------------------------


def _login_output(
    login_runner: Callable[..., LoginProcess],
    group_args: list[str],
    args: list[str],
    env: dict[str, str],
) -> str:
    login = login_runner(["--port", "0", *args], env, group_args)
    url = login.authorization_url()
    scopes = _query(url)["scope"].split()
    assert "read:group:confluence" in scopes
    assert "read:user:confluence" in scopes
    assert requests.get(url, timeout=60).status_code == 200
    code, out, err = login.finish()
    assert code == 0, err
    return out


def _meltano_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("meltano ")]


@pytest.mark.slow
def test_login_prints_meltano_4_commands_for_the_plugin_its_prefix_names(
    login_runner: Callable[..., LoginProcess], simulator: SimulatorProcess, tmp_path: Path
) -> None:
    prefix = "TAP_CONFLUENCE__SITE_B_"
    env = clean_env(
        tmp_path,
        **{
            f"{prefix}CLIENT_ID": simulator.creds.client_id,
            f"{prefix}CLIENT_SECRET": simulator.creds.client_secret,
            f"{prefix}AUTH_URL": simulator.url,
            f"{prefix}API_URL": simulator.url,
        },
    )
    project = tmp_path / "project"
    store = project / ".meltano" / "tokens" / "tap-confluence--site-b.json"
    out = _login_output(
        login_runner, ["--env-prefix", prefix], ["--token-store-path", str(store)], env
    )
    lines = _meltano_lines(out)
    assert lines, out
    for line in lines:
        assert line.startswith("meltano config set tap-confluence--site-b "), line
    # Meltano 4 itself accepts the printed command, in a copy of this project.
    shutil.copy(REPO_ROOT / "meltano.yml", project / "meltano.yml")
    cloud_line = next(line for line in lines if " cloud_id " in line)
    done = subprocess.run(
        [str(MELTANO), *shlex.split(cloud_line)[1:]],
        cwd=project,
        env=clean_env(tmp_path, MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"cloud_id: {simulator.cloud_id}" in (project / "meltano.yml").read_text()


@pytest.mark.parametrize(
    ("store_name", "plugin"),
    [("tap-confluence--site-c.json", "tap-confluence--site-c"),
     ("cloud.json", "tap-confluence")],
)  # fmt: skip
def test_login_names_the_plugin_from_the_store_file_without_a_prefix(
    login_runner: Callable[..., LoginProcess],
    simulator: SimulatorProcess,
    tmp_path: Path,
    store_name: str,
    plugin: str,
) -> None:
    store = tmp_path / ".meltano" / "tokens" / store_name
    out = _login_output(
        login_runner, [], ["--token-store-path", str(store)], sim_env(simulator, tmp_path)
    )
    lines = _meltano_lines(out)
    assert lines, out
    for line in lines:
        assert line.startswith(f"meltano config set {plugin} "), line


def test_readme_shows_a_headless_login_over_an_ssh_tunnel() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Getting credentials with tap-confluence-auth", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "ssh -L 8790:localhost:8790" in section
    assert "--no-browser" in section
