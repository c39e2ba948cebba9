"""The file token store against a full disk, a hostile directory and names from the network.

Real things only: a child process with a small RLIMIT_FSIZE for the short write, real
symlinks, real modes and owners, the real tap CLI against the simulator.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import open_store, store_path_for
from tap_confluence.oauth.store.record import TokenRecord, TokenStoreError, seed_fingerprint
from tests.support.tap_cli import REPO_ROOT, run_tap, tap_command, write_json

SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 10, "content": 2}
#: Well below one store document (about 600 bytes), well above nothing.
FILE_SIZE_LIMIT = 256


def _record(token: str = "fake-rotated-1") -> TokenRecord:  # noqa: S107
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint("fake-refresh-token-seed"),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
    )


def _small_files_only() -> None:
    """In the child: files may not grow past FILE_SIZE_LIMIT; a write past it is short."""
    # Ignored, SIGXFSZ does not kill the writer: the write stops short or fails with EFBIG,
    # as it does on a full disk or an exhausted quota.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _tap_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Bytecode caches are files too; the limit is for the store, not for them.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ---- item 1: a short write never replaces the good file ----------------------------------------


def test_short_write_keeps_the_old_token_file(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(**SMALL)  # reuse leeway: Atlassian's 10 minutes
    store = tmp_path / "store" / "tokens.json"
    config = sim.tap_config("oauth", token_store_path=str(store))
    first = run_tap(tmp_path, config)
    assert first.returncode == 0, first.stderr[-2000:]
    good = store.read_bytes()
    assert len(good) > FILE_SIZE_LIMIT  # so the limit really cuts the next save short
    old_token = json.loads(good)["refresh_token"]

    # The stored access token dies, so the next run must spend the refresh token.
    sim.control("expire-access-tokens", {})
    refreshes = sim.stats()["refreshes"]
    proc = subprocess.run(
        tap_command(write_json(tmp_path / "config-limited.json", config)),
        cwd=REPO_ROOT,
        env=_tap_env(),
        capture_output=True,  # pipes: RLIMIT_FSIZE does not apply to them
        text=True,
        timeout=300,
        preexec_fn=_small_files_only,
        check=False,
    )
    assert sim.stats()["refreshes"] == refreshes + 1, "the child really spent the token"
    assert proc.returncode != 0, "a run that could not save the rotated token must fail"
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "the refresh token was spent; rerun within 10 minutes" in last, last
    assert str(store) in last
    assert store.read_bytes() == good, "the good file was replaced by a cut one"
    leftovers = [p.name for p in store.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []

    # Within the reuse leeway the kept (spent) token still works, and the chain goes on.
    second = run_tap(tmp_path, config)
    assert second.returncode == 0, second.stderr[-2000:]
    states = {t["token"]: t["state"] for t in sim.control("tokens")["refresh_tokens"]}
    assert states[old_token] == "rotated"
    assert states[json.loads(store.read_text())["refresh_token"]] == "current"
    assert sim.stats()["revoked_families"] == 0


# ---- item 2: temp and lock files never follow symlinks; hostile directories ----------------


def test_a_symlink_planted_at_the_temp_name_is_never_written_through(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    store = FileTokenStore(directory / "cloud.json")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    with store.session() as session:
        # Planted after the stale-temp cleanup, at the name the old code wrote to.
        os.symlink(victim, directory / f".cloud.json.{os.getpid()}.tmp")
        session.save(_record())
    assert victim.read_text() == "precious\n"
    assert not store.path.is_symlink()
    assert store.read() == _record()


def test_a_symlinked_lock_file_is_refused_without_touching_its_target(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    target = tmp_path / "elsewhere" / "created-by-the-tap"
    target.parent.mkdir()
    os.symlink(target, directory / "cloud.json.lock")
    store = FileTokenStore(directory / "cloud.json")
    with pytest.raises(TokenStoreError) as info, store.session():
        pass
    assert not target.exists()
    message = str(info.value)
    assert "cloud.json.lock" in message
    assert "symbolic link" in message


def test_a_store_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)  # e.g. a /tmp-like place anyone can swap files in
    store = FileTokenStore(directory / "cloud.json")
    with pytest.raises(TokenStoreError) as info:
        store.check_writable()
    assert str(directory) in str(info.value)
    assert "writable by other users" in str(info.value)
    with pytest.raises(TokenStoreError), store.session():
        pass
    assert not (directory / "cloud.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_store_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)  # nobody
    with pytest.raises(TokenStoreError) as info:
        FileTokenStore(directory / "cloud.json").check_writable()
    assert "not owned by the user running the tap" in str(info.value)


def test_a_store_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    FileTokenStore(path).write(_record())
    path.chmod(0o666)
    with pytest.raises(TokenStoreError) as info, FileTokenStore(path).session() as session:
        session.load()
    assert str(path) in str(info.value)
    assert "writable by other users" in str(info.value)


def test_a_store_file_others_can_read_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cloud.json"
    FileTokenStore(path).write(_record())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING), FileTokenStore(path).session() as session:
        assert session.load() == _record()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in w and "0600" in w for w in warnings), warnings
    assert not any("fake-rotated-1" in w for w in warnings)


def test_every_directory_the_tap_creates_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = FileTokenStore(tmp_path / "a" / "b" / "cloud.json")
        store.check_writable()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


# ---- item 13: a cloud ID from the network never becomes a path outside the store ------------


@pytest.mark.parametrize("cloud_id", ["../../escaped", "a/b", "..", "x.y", ""])
def test_a_cloud_id_that_is_not_letters_digits_and_dashes_never_becomes_a_path(
    tmp_path: Path, cloud_id: str
) -> None:
    with pytest.raises(TokenStoreError) as info:
        store_path_for(f"{tmp_path}/", cloud_id)
    assert "cloud ID" in str(info.value)
    with pytest.raises(TokenStoreError):
        open_store(cloud_id=cloud_id, client_id="fake-client-id", token_store_path=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_real_cloud_id_still_names_the_store_file(tmp_path: Path) -> None:
    cloud = "0f0f0f0f-1111-4222-8333-444455556666"
    assert store_path_for(f"{tmp_path}/", cloud) == tmp_path / f"{cloud}.json"
