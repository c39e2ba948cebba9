"""The file store's optional encryption (the same sealing as the PostgreSQL store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.process import SimulatorProcess
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStoreError,
    cipher_setting,
    seed_fingerprint,
)
from tests.support.tap_cli import run_tap

KEY = new_key()


def _record(token: str = "fake-rotated-token-1") -> TokenRecord:  # noqa: S107
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint("fake-refresh-token-seed"),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        access_token="fake-access-token-1",
        access_token_expires_at=1.0e10,
    )


def _file_store(path: Path, key: str | None = KEY) -> FileTokenStore:
    store = open_store(cloud_id="c", client_id="x", token_store_path=str(path), token_store_key=key)
    assert isinstance(store, FileTokenStore)
    return store


def test_with_a_key_the_file_holds_only_sealed_tokens_and_reads_back(tmp_path: Path) -> None:
    store = _file_store(tmp_path / "c.json")
    with store.session() as session:
        session.save(_record())
    text = store.path.read_text()
    assert "fake-rotated-token-1" not in text
    assert "fake-access-token-1" not in text
    assert json.loads(text)["rotated_at"] == "2026-11-29T00:00:00Z"
    with _file_store(tmp_path / "c.json").session() as session:
        assert session.load() == _record()


def test_a_plaintext_file_is_read_with_a_key_and_sealed_at_its_next_save(tmp_path: Path) -> None:
    with _file_store(tmp_path / "c.json", key=None).session() as session:
        session.save(_record())
    assert "fake-rotated-token-1" in (tmp_path / "c.json").read_text()
    with _file_store(tmp_path / "c.json").session() as session:
        record = session.load()
        assert record == _record()
        session.save(record)
    assert "fake-rotated-token-1" not in (tmp_path / "c.json").read_text()


def test_a_sealed_file_without_the_key_is_one_sentence_never_a_plaintext_guess(
    tmp_path: Path,
) -> None:
    with _file_store(tmp_path / "c.json").session() as session:
        session.save(_record())
    with (
        pytest.raises(TokenStoreError, match="encrypted but token_store_key is not set"),
        _file_store(tmp_path / "c.json", key=None).session() as session,
    ):
        session.load()
    with (
        pytest.raises(TokenStoreError, match="does not open the tokens"),
        _file_store(tmp_path / "c.json", key=new_key()).session() as session,
    ):
        session.load()


def test_status_can_read_the_dates_of_a_sealed_file_without_the_key(tmp_path: Path) -> None:
    with _file_store(tmp_path / "c.json").session() as session:
        session.save(_record())
    record = FileTokenStore(tmp_path / "c.json").read(need_tokens=False)
    assert record is not None
    assert record.rotated_at == "2026-11-29T00:00:00Z"
    assert record.refresh_token == ""


def test_a_file_moved_to_postgresql_refuses_to_be_used(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"moved_to": "postgresql://tap@db/x", "moved_at": "2026-11-29"}))
    with pytest.raises(TokenStoreError, match="was moved to postgresql://tap@db/x on 2026-11-29"):
        FileTokenStore(path).read()


def test_a_tampered_sealed_value_is_detected(tmp_path: Path) -> None:
    with _file_store(tmp_path / "c.json").session() as session:
        session.save(_record())
    data = json.loads((tmp_path / "c.json").read_text())
    sealed = data["sealed"]
    middle = len(sealed) // 2
    flipped = "B" if sealed[middle] == "A" else "A"
    data["sealed"] = sealed[:middle] + flipped + sealed[middle + 1 :]
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(TokenStoreError, match="does not open the tokens"):
        FileTokenStore(tmp_path / "c.json", cipher=cipher_setting(KEY)).read()


def test_the_tap_runs_with_an_encrypted_file_store_and_never_writes_a_token_in_clear(
    simulator_factory: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator_factory(users=4, guests=1, groups=2, audit_records=10, content=2)
    config = sim.tap_config("oauth", token_store_key=KEY)
    for _ in range(2):
        sim.control("expire-access-tokens", {})
        run = run_tap(tmp_path, config)
        assert run.returncode == 0, run.stderr[-2000:]
        assert KEY not in run.stderr
    assert sim.stats()["refreshes"] == 2
    text = (tmp_path / "sim0" / "token_store.json").read_text()
    issued = sim.control("tokens")
    tokens = [t["token"] for k in ("access_tokens", "refresh_tokens") for t in issued[k]]
    assert len(tokens) >= 4
    assert not [t[:8] for t in tokens if t in text]
    assert "sealed" in json.loads(text)
