"""`tap-confluence-auth login` end to end: a real HTTP client plays the browser."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import seed_fingerprint
from tests.support.auth_cli import (
    CLI,
    REPO_ROOT,
    LoginProcess,
    issued_secrets,
    run_cli,
    sim_env,
    start_login,
)
from tests.support.tap_cli import run_tap

SMALL = {"users": 4, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}
LoginRunner = Callable[[list[str], dict[str, str]], LoginProcess]


@pytest.fixture
def login_runner() -> Iterator[LoginRunner]:
    """Start `login` processes; any still running after the test is killed."""
    started: list[LoginProcess] = []

    def start(args: list[str], env: dict[str, str]) -> LoginProcess:
        process = start_login(args, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _store_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.json")) if directory.exists() else []


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    query = _query(url) | {"state": state}
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_login_stores_a_refresh_token_the_tap_then_syncs_with(
    login_runner: LoginRunner, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--token-store-path", f"{store_dir}/"], sim_env(sim, tmp_path)
    )
    url = login.authorization_url()
    query = _query(url)
    assert url.startswith(sim.url + "/authorize?")
    assert query["audience"] == "api.atlassian.com"
    assert query["client_id"] == sim.creds.client_id
    assert query["response_type"] == "code"
    assert query["prompt"] == "consent"
    assert "offline_access" in query["scope"].split()
    assert "read:audit-log:confluence" in query["scope"].split()
    assert urlsplit(query["redirect_uri"]).hostname == "localhost"
    assert len(query["state"]) >= 40  # token_urlsafe(32): 256 random bits

    # The "browser": fetch the consent address and follow the redirect to the callback.
    page = requests.get(url, timeout=60)
    assert page.status_code == 200
    assert "Authorization received" in page.text
    assert urlsplit(page.url).path == "/callback"

    code, out, err = login.finish()
    assert code == 0, err
    assert _store_files(store_dir) == [f"{sim.cloud_id}.json"]
    record = FileTokenStore(store_dir / f"{sim.cloud_id}.json").read()
    assert record is not None
    assert record.cloud_id == sim.cloud_id
    assert record.seed_fingerprint == seed_fingerprint(record.refresh_token)
    assert "read:audit-log:confluence" in record.scopes
    states = {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}
    assert states[record.refresh_token] == "current"

    # Names and non-secret values are printed; no token, code or client secret is.
    assert f"TAP_CONFLUENCE_CLOUD_ID={sim.cloud_id}" in out
    assert "TAP_CONFLUENCE_CLIENT_SECRET=<your client secret>" in out
    assert f"meltano config set tap-confluence client_id {sim.creds.client_id}" in out
    for secret in issued_secrets(sim):
        assert secret not in out + err

    # The next run of the tap needs no refresh_token: the store has it.
    config = sim.tap_config("oauth", token_store_path=str(store_dir))
    del config["refresh_token"]
    run = run_tap(tmp_path, config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("users")) == SMALL["users"] + SMALL["guests"]
    assert len(run.records("audit_records")) == SMALL["audit_records"]


@pytest.mark.slow
def test_login_twice_gives_each_attempt_its_own_state(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    env = sim_env(simulator, tmp_path)
    states = []
    for attempt in range(2):
        login = login_runner(
            ["--port", "0", "--timeout", "1", "--token-store-path", str(tmp_path / f"s{attempt}")],
            env,
        )
        states.append(_query(login.authorization_url())["state"])
        code, _, err = login.finish()
        assert code == 1
        assert "No callback reached" in err
    assert states[0] != states[1]


@pytest.mark.slow
def test_a_callback_with_a_forged_state_is_rejected_and_nothing_is_stored(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--timeout", "6", "--token-store-path", f"{store_dir}/"],
        sim_env(simulator, tmp_path),
    )
    url = login.authorization_url()
    # An attacker's consent: a valid code of the attacker's, delivered with a state they chose.
    forged = requests.get(_with_state(url, "forged-state"), allow_redirects=False, timeout=60)
    callback = forged.headers["Location"]
    assert _query(callback)["state"] == "forged-state"
    answer = requests.get(callback, timeout=60)
    assert answer.status_code == 400
    assert "nothing was stored" in answer.text

    code, _, err = login.finish()
    assert code == 1
    assert "Ignored a callback whose state does not match" in err
    assert "nothing was stored" in err
    assert "Traceback" not in err
    assert _store_files(store_dir) == []
    # The attacker's code was never spent: it still exchanges once.
    exchange = requests.post(
        simulator.url + "/oauth/token",
        json={
            "grant_type": "authorization_code",
            "client_id": simulator.creds.client_id,
            "client_secret": simulator.creds.client_secret,
            "code": _query(callback)["code"],
            "redirect_uri": _query(url)["redirect_uri"],
        },
        timeout=60,
    )
    assert exchange.status_code == 200


def test_the_genuine_callback_still_works_after_a_forged_one(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--token-store-path", f"{store_dir}/"], sim_env(simulator, tmp_path)
    )
    url = login.authorization_url()
    assert requests.get(_with_state(url, "x" * 43), timeout=60).status_code == 400
    assert requests.get(url, timeout=60).status_code == 200
    code, _, err = login.finish()
    assert code == 0, err
    assert _store_files(store_dir) == [f"{simulator.cloud_id}.json"]


def test_an_idle_connection_does_not_block_the_callback(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--token-store-path", f"{store_dir}/"], sim_env(simulator, tmp_path)
    )
    url = login.authorization_url()
    port = urlsplit(_query(url)["redirect_uri"]).port
    # Like a browser's speculative preconnect: a socket that never sends a request.
    with socket.create_connection(("127.0.0.1", port)):
        assert requests.get(url, timeout=60).status_code == 200
        code, _, err = login.finish()
    assert code == 0, err
    assert _store_files(store_dir) == [f"{simulator.cloud_id}.json"]


def test_denied_consent_ends_with_one_sentence_and_stores_nothing(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    simulator.control("consent", {"consent": "deny"})
    store_dir = tmp_path / "tokens"
    login = login_runner(
        ["--port", "0", "--token-store-path", f"{store_dir}/"], sim_env(simulator, tmp_path)
    )
    page = requests.get(login.authorization_url(), timeout=60)
    assert "Access not granted" in page.text
    code, _, err = login.finish()
    assert code == 1
    assert err.strip().splitlines() == [
        "tap-confluence-auth: Consent was denied in the browser (access_denied), so nothing was "
        "stored; run login again and choose Accept, as an account with access to the site."
    ]
    assert _store_files(store_dir) == []


def test_port_in_use_gives_one_sentence_suggesting_port(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            ["login", "--no-browser", "--port", str(port)], sim_env(simulator, tmp_path)
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in lines[0]
    assert "--port" in lines[0]
    assert "/authorize?" not in result.stdout  # no consent is started that could not finish


def test_secret_on_the_command_line_warns_and_is_never_echoed(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    env = sim_env(simulator, tmp_path)
    del env["TAP_CONFLUENCE_CLIENT_SECRET"]
    result = run_cli(
        ["login", "--no-browser", "--client-secret", "fake-cli-secret-value",
         "--redirect-uri", "http://example.com/callback"],
        env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "stays in shell history" in result.stderr
    assert "must be a plain http URL on localhost" in result.stderr
    assert "fake-cli-secret-value" not in result.stdout + result.stderr


def test_missing_client_secret_without_a_terminal_says_which_variable(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    env = sim_env(simulator, tmp_path)
    del env["TAP_CONFLUENCE_CLIENT_SECRET"]
    result = run_cli(["login", "--no-browser", "--port", "0"], env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tap-confluence-auth: No client secret: set TAP_CONFLUENCE_CLIENT_SECRET (or run in a "
        "terminal to be prompted for it)."
    )


def test_wrong_client_secret_is_named_after_consent_and_nothing_is_stored(
    login_runner: LoginRunner, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tokens"
    env = sim_env(simulator, tmp_path, TAP_CONFLUENCE_CLIENT_SECRET="fake-wrong-secret")
    login = login_runner(["--port", "0", "--token-store-path", f"{store_dir}/"], env)
    requests.get(login.authorization_url(), timeout=60)
    code, out, err = login.finish()
    assert code == 1
    assert "rejected client_id and client_secret" in err
    assert "fake-wrong-secret" not in out + err
    assert _store_files(store_dir) == []


@pytest.mark.slow
def test_login_again_makes_a_stale_configured_refresh_token_lose(
    login_runner: LoginRunner, simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)
    store = tmp_path / "store.json"
    first = run_tap(tmp_path, sim.tap_config("oauth", token_store_path=str(store)))
    assert first.returncode == 0, first.stderr[-2000:]
    # A new consent replaces the family the configured seed started.
    login = login_runner(["--port", "0", "--token-store-path", str(store)], sim_env(sim, tmp_path))
    requests.get(login.authorization_url(), timeout=60)
    code, _, err = login.finish()
    assert code == 0, err
    fresh = json.loads(store.read_text())["refresh_token"]
    sim.control("expire-access-tokens", {})  # so the tap must spend a refresh token
    second = run_tap(tmp_path, sim.tap_config("oauth", token_store_path=str(store)))
    assert second.returncode == 0, second.stderr[-2000:]
    states = {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}
    assert states[fresh] == "rotated"  # the tap spent the consent's token, not the old seed
    assert "older than the one a later consent stored" in second.stderr


@pytest.mark.parametrize(
    ("redirect", "sentence"),
    [
        ("https://localhost/callback", "must be a plain http URL on localhost"),
        ("http://localhost:8790/callback?x=1", "must be a plain http URL on localhost"),
    ],
)
def test_redirect_uri_must_be_loopback_http(
    simulator: SimulatorProcess, tmp_path: Path, redirect: str, sentence: str
) -> None:
    result = run_cli(
        ["login", "--no-browser", "--redirect-uri", redirect], sim_env(simulator, tmp_path)
    )
    assert result.returncode == 1
    assert sentence in result.stderr


def _read_until(fd: int, needle: bytes, seen: bytearray, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{needle!r} never came; got {bytes(seen)!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"{needle!r} never came; got {bytes(seen)!r}")
        seen += chunk


def test_on_a_terminal_the_client_secret_is_prompted_without_echo(
    simulator: SimulatorProcess, tmp_path: Path
) -> None:
    env = sim_env(simulator, tmp_path)
    del env["TAP_CONFLUENCE_CLIENT_SECRET"]
    store_dir = tmp_path / "tokens"
    args = [*CLI, "login", "--no-browser", "--port", "0", "--token-store-path", f"{store_dir}/"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        try:
            os.chdir(REPO_ROOT)
            os.execve(args[0], args, env)  # noqa: S606 (a fixed argv, no shell involved)
        finally:
            os._exit(127)  # never run the rest of pytest in the forked child
    try:
        seen = bytearray()
        _read_until(fd, b"Client secret (input hidden):", seen)
        os.write(fd, simulator.creds.client_secret.encode() + b"\n")
        _read_until(fd, b"Waiting up to", seen)
        url = next(line.strip() for line in seen.decode().splitlines() if "/authorize?" in line)
        assert requests.get(url, timeout=60).status_code == 200
        _read_until(fd, b"Or with Meltano", seen)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
        assert simulator.creds.client_secret.encode() not in seen
        assert _store_files(store_dir) == [f"{simulator.cloud_id}.json"]
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
