"""Which token store the settings choose, and where a file store lives."""

from __future__ import annotations

import os
from pathlib import Path

from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.record import TokenStore, check_cloud_id, cipher_setting


def open_store(
    *,
    cloud_id: str,
    client_id: str | None,
    token_store_path: str | None = None,
    token_store_url: str | None = None,
    token_store_key: str | None = None,
    lock_timeout: float = 300.0,
) -> TokenStore:
    """Return the store the settings choose: PostgreSQL when token_store_url is set, else a file."""
    cipher = cipher_setting(token_store_key)
    check_cloud_id(cloud_id)
    if token_store_url and token_store_url.strip():
        # Imported here so that file-store users never load the PostgreSQL driver.
        from tap_confluence.oauth.store.postgres import PostgresTokenStore  # noqa: PLC0415

        return PostgresTokenStore(
            token_store_url.strip(),
            client_id=client_id or "",
            cloud_id=cloud_id,
            cipher=cipher,
            lock_timeout=lock_timeout,
        )
    path = store_path_for(token_store_path, cloud_id)
    return FileTokenStore(
        path, lock_timeout=lock_timeout, cipher=cipher, client_id=client_id, cloud_id=cloud_id
    )


def default_store_dir() -> Path:
    """Return $XDG_STATE_HOME/tap-confluence, falling back to ~/.local/state/tap-confluence."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tap-confluence"


def store_files(token_store_path: str | None) -> list[Path]:
    """List the store files a token_store_path setting (file or directory) or the default holds."""
    path = Path(token_store_path).expanduser() if token_store_path else default_store_dir()
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file() and not p.name.startswith("."))
    return [path] if path.is_file() else []


def store_path_for(token_store_path: str | None, cloud_id: str) -> Path:
    """Resolve the store file: the setting as a file or a directory, else the default."""
    # The cloud ID may come from the network (accessible-resources): it names a file only
    # once it is known to be letters, digits and dashes.
    check_cloud_id(cloud_id)
    if not token_store_path:
        return default_store_dir() / f"{cloud_id}.json"
    path = Path(token_store_path).expanduser()
    if path.is_dir() or token_store_path.endswith(os.sep):
        return path / f"{cloud_id}.json"
    return path
