"""The file token store: atomic 0600 writes, a lock held across refresh, clear errors."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest

from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import store_path_for
from tap_confluence.oauth.store.record import TokenRecord, TokenStoreError, seed_fingerprint


def _record(token: str = "fake-rotated-1") -> TokenRecord:  # noqa: S107
    return TokenRecord(
        refresh_token=token,
        seed_fingerprint=seed_fingerprint("fake-refresh-token-seed"),
        scopes=["read:audit-log:confluence"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
    )


def test_saved_record_reads_back_with_mode_0600_in_a_0700_directory(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "state" / "cloud.json")
    with store.session() as session:
        assert session.load() is None
        session.save(_record())
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    with store.session() as session:
        assert session.load() == _record()
    # Nothing but the store and its lock is left behind (no temp files).
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["cloud.json", "cloud.json.lock"]


def test_store_keeps_only_a_fingerprint_of_the_configured_token(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "cloud.json")
    with store.session() as session:
        session.save(_record())
    text = store.path.read_text()
    assert "fake-refresh-token-seed" not in text
    assert json.loads(text)["seed_fingerprint"] == seed_fingerprint("fake-refresh-token-seed")
    assert seed_fingerprint("a-different-token") != seed_fingerprint("fake-refresh-token-seed")


@pytest.mark.parametrize(
    ("content", "why"),
    [("{not json", "not valid JSON"), ('{"refresh_token": 5}', "lacks the token fields")],
)
def test_corrupt_store_gives_one_sentence_naming_the_file_and_the_fix(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "cloud.json"
    path.write_text(content)
    with pytest.raises(TokenStoreError) as info, FileTokenStore(path).session() as session:
        session.load()
    message = str(info.value)
    assert str(path) in message
    assert why in message
    assert "set refresh_token to a fresh token" in message


def test_unwritable_location_is_reported_before_anything_is_saved(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # The parent "directory" is a regular file, so nothing can ever be written there
    # (this holds even for root, unlike a chmod).
    store = FileTokenStore(blocker / "cloud.json")
    with pytest.raises(TokenStoreError, match="cannot be written") as info:
        store.check_writable()
    assert str(blocker / "cloud.json") in str(info.value)


def test_lock_is_held_for_the_whole_session(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "cloud.json")
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with store.session():
            order.append("first-in")
            inside.set()
            time.sleep(0.3)
            order.append("first-out")

    worker = threading.Thread(target=first)
    worker.start()
    inside.wait(10)
    with FileTokenStore(tmp_path / "cloud.json").session():
        order.append("second-in")
    worker.join()
    assert order == ["first-in", "first-out", "second-in"]


def test_waiting_too_long_for_the_lock_says_another_run_holds_it(tmp_path: Path) -> None:
    holder = FileTokenStore(tmp_path / "cloud.json")
    waiter = FileTokenStore(tmp_path / "cloud.json", lock_timeout=0.2)
    with holder.session(), pytest.raises(TokenStoreError, match="Another tap-confluence run"):  # noqa: SIM117
        with waiter.session():
            pass


def test_store_path_defaults_under_xdg_state_home_per_cloud_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert store_path_for(None, "abc") == tmp_path / "xdg" / "tap-confluence" / "abc.json"
    (tmp_path / "dir").mkdir()
    assert store_path_for(str(tmp_path / "dir"), "abc") == tmp_path / "dir" / "abc.json"
    assert store_path_for(str(tmp_path / "x.json"), "abc") == tmp_path / "x.json"
