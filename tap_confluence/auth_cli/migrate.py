"""`migrate` (token files into the PostgreSQL token store, unspent) and `new-key`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import click
from singer_sdk.exceptions import ConfigValidationError

from tap_confluence.auth_cli.common import AuthCliError, env_setting
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import store_files
from tap_confluence.oauth.store.record import TokenStoreError, cipher_setting
from tap_confluence.settings.rules import check_store_settings

_EPILOG = (
    "Nothing is sent to Atlassian: the same refresh token moves, unspent, and the file is "
    "replaced by a note saying where the token went, so no run can spend it from there again."
)


@click.command("new-key", epilog="Only the key goes to stdout, so it can be captured.")
def new_key_command() -> None:
    """Print a new random key for token_store_key (keep it with your other secrets)."""
    click.echo(new_key())
    click.echo(
        "Keep this key as a secret (e.g. TAP_CONFLUENCE_TOKEN_STORE_KEY in the project's .env "
        "or the orchestrator's secret store): without it the stored tokens cannot be read.",
        err=True,
    )


@click.command("migrate", epilog=_EPILOG)
@click.option(
    "--token-store-path", help="Token file, or directory of them, to move [env: …TOKEN_STORE_PATH]."
)
@click.option(
    "--token-store-url", help="PostgreSQL token store to move into [env: …TOKEN_STORE_URL]."
)
@click.option("--client-id", help="The OAuth app's client ID, part of each row's key [env].")
@click.option("--cloud-id", help="Site of a token file that does not record it [env].")
@click.option("--replace", is_flag=True, help="Overwrite a different token stored for the site.")
@click.pass_obj
def migrate_command(
    env_prefix: str,
    token_store_path: str | None,
    token_store_url: str | None,
    client_id: str | None,
    cloud_id: str | None,
    *,
    replace: bool,
) -> None:
    """Move tokens from a token file into the PostgreSQL token store without spending them."""
    path = token_store_path or env_setting(env_prefix, "token_store_path")
    url = token_store_url or env_setting(env_prefix, "token_store_url")
    client = client_id or env_setting(env_prefix, "client_id")
    if not path:
        raise AuthCliError(
            f"Name the token file: --token-store-path or {env_prefix}TOKEN_STORE_PATH."
        )
    if not url:
        raise AuthCliError(
            f"Name the PostgreSQL token store: --token-store-url or {env_prefix}TOKEN_STORE_URL."
        )
    if not client:
        raise AuthCliError(
            f"Name the OAuth app (its client ID keys the row): --client-id or "
            f"{env_prefix}CLIENT_ID."
        )
    key = env_setting(env_prefix, "token_store_key")
    try:
        check_store_settings({"token_store_url": url, "token_store_key": key})
    except ConfigValidationError as exc:
        raise AuthCliError(str(exc.errors[0] if exc.errors else exc)) from None
    wanted_cloud = cloud_id or env_setting(env_prefix, "cloud_id")
    try:
        moved = run_migrate(path, url, key, client, wanted_cloud, replace=replace)
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None
    if not moved:
        raise AuthCliError(
            f"No token to move at {path}; it holds no token file, or only moved ones."
        )


def run_migrate(
    path: str,
    url: str,
    key: str | None,
    client_id: str,
    cloud_id: str | None,
    *,
    replace: bool,
) -> int:
    """Move every token file at ``path`` into the store at ``url``; return how many moved."""
    # Imported here so that the other commands never load the PostgreSQL driver.
    from tap_confluence.oauth.store.postgres import PostgresTokenStore  # noqa: PLC0415

    cipher = cipher_setting(key)
    in_directory = Path(path).expanduser().is_dir()
    moved = 0
    for file in store_files(path):
        source = FileTokenStore(file, cipher=cipher, lock_timeout=30.0)
        document = source.read_document()
        if isinstance(document, dict) and "moved_to" in document:
            click.echo(f"{file}: already moved to {document['moved_to']}; skipped.")
            continue
        # Hold the file's lock throughout, so no run can spend the token mid-move.
        with source.session() as file_session:
            record = file_session.load()
            if record is None:
                continue
            cloud = record.cloud_id or (file.stem if in_directory else cloud_id)
            if not cloud:
                msg = (
                    f"The token file {file} does not record its site; pass --cloud-id (from "
                    "https://SITE.atlassian.net/_edge/tenant_info)."
                )
                raise AuthCliError(msg)
            target = PostgresTokenStore(url, client_id=client_id, cloud_id=cloud, cipher=cipher)
            with target.session() as row:
                existing = row.load()
                if existing and existing.refresh_token != record.refresh_token and not replace:
                    msg = (
                        f"{target.location} already holds a different token for cloud {cloud} "
                        f"(rotated {existing.rotated_at}; the file's was rotated "
                        f"{record.rotated_at}); pass --replace to store the file's token "
                        "instead, or keep the stored one and leave the file alone."
                    )
                    raise AuthCliError(msg)
                row.save(dataclasses.replace(record, cloud_id=cloud))
            source.write_document(
                {
                    "version": 1,
                    "moved_to": target.location,
                    "moved_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "cloud_id": cloud,
                    "client_id": client_id,
                }
            )
        moved += 1
        click.echo(
            f"Moved the token for cloud {cloud} from {file} to {target.location}, unspent; "
            "the file now only says where it went."
        )
    return moved
