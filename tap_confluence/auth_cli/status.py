"""`status` (what the token store holds, without secrets) and `cloud-id` (a site's cloud ID)."""

from __future__ import annotations

import datetime as dt
import typing as t

import click
import requests
from singer_sdk.exceptions import ConfigValidationError

from tap_confluence.auth_cli.common import (
    HTTP_TIMEOUT,
    AuthCliError,
    error_detail,
    http_session,
    site_root,
    unreachable,
)
from tap_confluence.oauth.store.file import FileTokenStore
from tap_confluence.oauth.store.location import default_store_dir, store_files
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStoreError,
    cipher_setting,
    decode_record,
)
from tap_confluence.settings.rules import check_store_settings

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_confluence.oauth.store.crypto import TokenCipher

#: Atlassian: a refresh token dies 90 days after it was issued if unused, and its family
#: 365 days after consent however often it rotates.
INACTIVITY = dt.timedelta(days=90)
ABSOLUTE = dt.timedelta(days=365)
WARN_WITHIN = dt.timedelta(days=14)


def _parse(iso: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _when(value: dt.datetime, now: dt.datetime) -> str:
    days = (value - now).total_seconds() / 86400
    stamp = value.strftime("%Y-%m-%d %H:%M UTC")
    if days >= 0:
        return f"{stamp} (in {days:.0f} days)"
    return f"{stamp} ({-days:.0f} days ago)"


def _expiry_lines(record: TokenRecord, now: dt.datetime) -> tuple[list[str], bool]:
    """Lines for both expiries, flagged when near or past; True when already expired."""
    lines: list[str] = []
    expired = False
    rotated = _parse(record.rotated_at)
    started = _parse(record.family_started_at)
    checks = [
        ("inactivity expiry", rotated + INACTIVITY if rotated else None, "any tap run resets it"),
        (
            "absolute expiry",
            started + ABSOLUTE if started else None,
            "only a new consent (tap-confluence-auth login) resets it",
        ),
    ]
    for label, when, reset in checks:
        if when is None:
            lines.append(f"{label}: unknown (the store's date is unreadable)")
            continue
        line = f"{label}: {_when(when, now)}; {reset}"
        if when <= now:
            expired = True
            line += "  EXPIRED: run tap-confluence-auth login again"
        elif when - now <= WARN_WITHIN:
            line += "  WARNING: near"
        lines.append(line)
    return lines, expired


def _describe(path: Path | str, record: TokenRecord, now: dt.datetime, *, sealed: bool) -> bool:
    click.echo(f"{path}")
    cloud = record.cloud_id or "not recorded yet (the tap records it at its next refresh)"
    click.echo(f"  cloud ID: {cloud}")
    rotated = _parse(record.rotated_at)
    click.echo(f"  last rotated: {_when(rotated, now) if rotated else record.rotated_at}")
    click.echo(f"  granted scopes: {' '.join(record.scopes) or 'not recorded'}")
    expires = record.access_token_expires_at
    if (record.access_token or sealed) and expires and expires > now.timestamp():
        left = dt.datetime.fromtimestamp(expires, dt.UTC)
        click.echo(f"  cached access token: valid until {left.strftime('%H:%M UTC')}")
    else:
        click.echo("  cached access token: none valid (the next run refreshes)")
    lines, expired = _expiry_lines(record, now)
    for line in lines:
        click.echo(f"  {line}")
    return expired


def _show(
    label: Path | str,
    document: t.Any,
    location: str,
    cipher: TokenCipher | None,
    now: dt.datetime,
) -> bool:
    """Describe one stored document; True when it is unusable or expired."""
    sealed = isinstance(document, dict) and "sealed" in document
    try:
        record = decode_record(document, location, cipher, need_tokens=cipher is not None)
    except TokenStoreError as exc:
        click.echo(f"{label}\n  unusable: {exc}")
        return True
    expired = _describe(label, record, now, sealed=sealed)
    if sealed and cipher is not None:
        click.echo("  tokens: encrypted; token_store_key opens them")
    elif sealed:
        click.echo("  tokens: encrypted (set token_store_key to check that it opens them)")
    else:
        click.echo("  tokens: in clear text (with token_store_key set, the next save seals them)")
    return expired


def _cipher(token_store_key: str | None) -> TokenCipher | None:
    try:
        return cipher_setting(token_store_key)
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None


def run_status(
    token_store_path: str | None, now: dt.datetime | None = None, *, key: str | None = None
) -> int:
    """Describe every store file at the path (or the default directory); 1 if any is unusable."""
    now = now or dt.datetime.now(dt.UTC)
    cipher = _cipher(key)
    location = token_store_path or str(default_store_dir())
    files = store_files(token_store_path)
    if not files:
        msg = (
            f"No token store at {location}; run `tap-confluence-auth login` first, or pass "
            "--token-store-path with the tap's token_store_path."
        )
        raise AuthCliError(msg)
    click.echo(f"Token store: {location}")
    bad = 0
    for path in files:
        try:
            document = FileTokenStore(path).read_document()
        except TokenStoreError as exc:
            click.echo(f"{path}\n  unusable: {exc}")
            bad += 1
            continue
        if document is not None and _show(path, document, str(path), cipher, now):
            bad += 1
    return 1 if bad else 0


def run_status_pg(url: str, key: str | None, now: dt.datetime | None = None) -> int:
    """Describe every row of a PostgreSQL token store; 1 if any is unusable or expired."""
    now = now or dt.datetime.now(dt.UTC)
    # Imported here so that the other commands never load the PostgreSQL driver.
    from tap_confluence.oauth.store.postgres import PostgresTokenStore  # noqa: PLC0415

    try:
        check_store_settings({"token_store_url": url, "token_store_key": key})
        store = PostgresTokenStore(url, client_id="", cloud_id="", cipher=_cipher(key))
        rows = store.list_documents()
    except ConfigValidationError as exc:
        raise AuthCliError(str(exc.errors[0] if exc.errors else exc)) from None
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None
    if not rows:
        msg = (
            f"No tokens are stored in {store.location} yet; run `tap-confluence-auth login` "
            "with token_store_url set, or `tap-confluence-auth migrate` from a token file."
        )
        raise AuthCliError(msg)
    click.echo(f"Token store: {store.location}")
    bad = 0
    for client_id, cloud_id, document in rows:
        label = f"client {client_id}, cloud {cloud_id}"
        if _show(label, document, f"{store.location} ({label})", store.cipher, now):
            bad += 1
    return 1 if bad else 0


def run_cloud_id(site: str) -> str:
    """Ask the site's /_edge/tenant_info (no authentication) for its cloud ID."""
    root = site_root(site)
    url = f"{root}/_edge/tenant_info"
    try:
        response = http_session().get(url, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise unreachable(url, exc) from None
    try:
        cloud = response.json().get("cloudId") if response.ok else None
    except (ValueError, AttributeError):
        cloud = None
    if not isinstance(cloud, str) or not cloud:
        msg = (
            f"{root} gave no cloud ID at /_edge/tenant_info ({error_detail(response)}); check "
            "the site name, which is the part before .atlassian.net."
        )
        raise AuthCliError(msg)
    return cloud
