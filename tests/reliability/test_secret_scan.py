"""The leak scan that runs after every reliability test can fail: it finds planted secrets."""

from __future__ import annotations

import os

from tests.reliability.harness import LEAKS


def test_scan_finds_a_planted_token_and_a_loose_store(tmp_path_factory):
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
