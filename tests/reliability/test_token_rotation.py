"""Rotating refresh tokens: long chains, crashes around a refresh, concurrent runs, bad stores."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.process import SimulatorProcess
from tests.reliability.harness import (
    FIGURES,
    discover,
    finish_process,
    run_inprocess,
    select_streams,
    start_process,
    tap_config,
    tap_env,
)

pytestmark = pytest.mark.slow

SMALL = {"users": 3, "guests": 1, "groups": 2, "audit_records": 20}
ROTATION_RUNS = 200


def _licence_only(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    return select_streams(discover(tmp_path, config), {"license_subscriptions"})


def _refresh_tokens(sim: SimulatorProcess) -> dict[str, str]:
    return {e["token"]: e["state"] for e in sim.control("tokens")["refresh_tokens"]}


def _stored_refresh_token(config: dict[str, Any]) -> str:
    token: str = json.loads(Path(config["token_store_path"]).read_text())["refresh_token"]
    return token


def test_200_runs_with_one_second_tokens_never_lock_the_user_out(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    # No reuse leeway at all: a single replay of a rotated token would revoke the family.
    sim = sims(token_ttl=1, reuse_leeway=0, **SMALL)
    config = tap_config(sim, tmp_path)
    catalog = _licence_only(tmp_path, config)
    rng = random.Random(7)
    for run_number in range(ROTATION_RUNS):
        # Move the server's clock so stored access tokens are often dead on arrival.
        sim.control("clock", {"advance_s": rng.choice([0, 0, 0.5, 1.5, 3])})
        if rng.random() < 0.1:
            sim.control("expire-access-tokens", {})
        run = run_inprocess(tmp_path, config, catalog=catalog)
        assert run.crashed is None, f"run {run_number}: {run.crashed!r}"
        assert run.returncode == 0, f"run {run_number}: {run.stderr[-2000:]}"
        assert len(run.records("license_subscriptions")) == 1
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
    assert stats["refreshes"] >= ROTATION_RUNS // 4, "tokens really rotated along the way"
    assert _refresh_tokens(sim)[_stored_refresh_token(config)] == "current"
    FIGURES.add("rotation_runs", ROTATION_RUNS)
    FIGURES.add("token_refreshes_in_rotation_runs", stats["refreshes"])


@pytest.mark.parametrize(
    ("point", "leeway"),
    [("after_save", 0), ("mid_save", 600), ("before_save", 600)],
)
def test_run_killed_around_a_refresh_keeps_the_token_chain_alive(
    sims: Callable[..., SimulatorProcess], tmp_path: Path, point: str, leeway: int
) -> None:
    """after_save needs no leeway; the others rely on Atlassian's 10-minute reuse leeway."""
    sim = sims(reuse_leeway=leeway, **SMALL)
    config = tap_config(sim, tmp_path)
    catalog = _licence_only(tmp_path, config)
    for round_number in range(3):
        # A dead access token makes the crashing run refresh, so it reaches its crash point.
        sim.control("expire-access-tokens", {})
        env = tap_env(RELIABILITY_CRASH=point)
        proc, run_dir = start_process(
            tmp_path, config, catalog=catalog, env=env, module="tests.reliability.crash_runner"
        )
        crashed = finish_process(proc, run_dir, timeout=120)
        assert crashed.returncode == -9, f"round {round_number}: the crash point was reached"
        FIGURES.add("kills_around_refresh")
        sim.control("expire-access-tokens", {})
        after = run_inprocess(tmp_path, config, catalog=catalog)
        assert after.returncode == 0, after.stderr[-2000:]
        assert len(after.records("license_subscriptions")) == 1
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0
    assert _refresh_tokens(sim)[_stored_refresh_token(config)] == "current"


def test_two_runs_started_together_on_one_store_never_revoke_the_family(
    sims: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = sims(token_ttl=1, reuse_leeway=0, **SMALL)
    config = tap_config(sim, tmp_path)
    catalog = _licence_only(tmp_path, config)
    for round_number in range(5):
        sim.control("clock", {"advance_s": 2})
        pair = [start_process(tmp_path, config, catalog=catalog) for _ in range(2)]
        runs = [finish_process(proc, run_dir, timeout=120) for proc, run_dir in pair]
        for run in runs:
            assert run.returncode == 0, f"round {round_number}: {run.stderr[-2000:]}"
            assert len(run.records("license_subscriptions")) == 1
        FIGURES.add("concurrent_run_pairs")
    stats = sim.stats()
    assert stats["revoked_families"] == 0
    assert stats["refresh_failures"] == 0


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("needs a tmpfs mount (root with CAP_SYS_ADMIN) for a truly read-only path")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


@pytest.mark.parametrize("populated", [False, True], ids=["first-run", "stored-token"])
def test_store_on_a_read_only_path_fails_before_spending_the_token(
    sims: Callable[..., SimulatorProcess], tmp_path: Path, populated: bool
) -> None:
    sim = sims(**SMALL)
    with _tmpfs(tmp_path / "store") as store_dir:
        config = tap_config(sim, tmp_path)
        catalog = _licence_only(tmp_path, config)
        if populated:
            first = run_inprocess(tmp_path, config, catalog=catalog)
            assert first.returncode == 0, first.stderr[-2000:]
        _remount_read_only(store_dir)
        sim.control("expire-access-tokens", {})
        sim.control("reset-stats", {})
        before = _refresh_tokens(sim)
        run = run_inprocess(tmp_path, config, catalog=catalog)
        line = run.assert_clean_failure()
        assert "token store" in line
        assert "cannot be written" in line
        assert sim.stats()["refreshes"] == 0, "no refresh token was spent"
        assert _refresh_tokens(sim) == before
        assert not run.records("license_subscriptions")


CORRUPTIONS = {
    "empty": b"",
    "binary": bytes(range(256)),
    "truncated": b'{"version": 1, "refresh_token": "fake-rt-',
    "a list": b"[1, 2, 3]",
    "a string": b'"fake"',
    "no token": b'{"version": 1}',
    "token not a string": b'{"version":1,"refresh_token":7,"seed_fingerprint":"x",'
    b'"rotated_at":"x","family_started_at":"x"}',
    "nul bytes": b"\x00" * 64,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupted_store_gives_one_sentence_and_spends_nothing(
    sims: Callable[..., SimulatorProcess], tmp_path: Path, kind: str
) -> None:
    sim = sims(**SMALL)
    config = tap_config(sim, tmp_path)
    catalog = _licence_only(tmp_path, config)
    store = Path(config["token_store_path"])
    store.parent.mkdir(mode=0o700)
    store.write_bytes(CORRUPTIONS[kind])
    os.chmod(store, 0o600)
    run = run_inprocess(tmp_path, config, catalog=catalog)
    line = run.assert_clean_failure()
    assert str(store) in line
    assert sim.stats()["refreshes"] == 0
