"""The leak scan that runs after every reliability test can fail: it finds planted secrets."""

from __future__ import annotations

import json
import os

import pytest

from tests.reliability.harness import LEAKS


def test_scan_finds_a_planted_token_and_a_loose_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Outside this test's tmp_path, so the autouse scan of tmp_path stays clean.
    root = tmp_path_factory.mktemp("planted")
    secret = "fake-rt-planted-for-the-scanner"
    LEAKS.secrets.add(secret)
    try:
        (root / "runs" / "00001").mkdir(parents=True)
        (root / "runs" / "00001" / "stderr").write_text(f"log line with {secret} in it\n")
        store = root / "store"
        store.mkdir(mode=0o755)
        os.chmod(store, 0o755)  # noqa: S103 - deliberately loose, the scan must object
        (store / "tokens.json").write_text("{}")
        os.chmod(store / "tokens.json", 0o644)
        (store / ".tokens.json.123.tmp").write_text(secret)
        findings = "\n".join(LEAKS.scan_tree(root))
    finally:
        LEAKS.secrets.discard(secret)
    assert "runs/00001/stderr: holds a secret" in findings
    assert ".tokens.json.123.tmp: holds a secret" in findings
    assert "mode 755, not 700" in findings
    assert "mode 644, not 600" in findings


def test_scan_finds_what_a_save_must_never_leave_in_a_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("planted-store")
    client_secret = "fake-client-secret-planted-for-the-scanner"
    LEAKS.never_stored.add(client_secret)
    try:
        store = root / "store"
        (store / "nested").mkdir(parents=True, mode=0o700)
        os.chmod(store, 0o700)
        os.chmod(store / "nested", 0o755)  # noqa: S103 - deliberately loose, the scan must object
        (store / "tokens.json").write_text(json.dumps({"client_secret": client_secret}))
        os.chmod(store / "tokens.json", 0o600)
        (store / ".tokens.json.k3x9q2.tmp").write_text("{}")
        os.symlink(root / "elsewhere", store / "tokens.json.lock")
        findings = "\n".join(LEAKS.scan_tree(root))
    finally:
        LEAKS.never_stored.discard(client_secret)
    assert "tokens.json: holds a secret no store may keep" in findings
    assert ".tokens.json.k3x9q2.tmp: a temp file left behind" in findings
    assert "nested: mode 755, not 700" in findings
    assert "tokens.json.lock: a symbolic link in a token store" in findings
