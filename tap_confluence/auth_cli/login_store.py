"""The store half of `login`: whether the tap's store may take a token, and keeping it there."""

from __future__ import annotations

import datetime as dt
import os
import typing as t

import click

from tap_confluence.auth_cli.common import AuthCliError
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStore,
    TokenStoreError,
    TokenStoreSession,
    remember_superseded,
    seed_fingerprint,
)

if t.TYPE_CHECKING:
    from tap_confluence.auth_cli.consent import Site
    from tap_confluence.auth_cli.login_options import LoginOptions


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_for(opts: LoginOptions, cloud_id: str) -> TokenStore:
    try:
        return open_store(
            cloud_id=cloud_id,
            client_id=opts.client_id,
            token_store_path=opts.token_store_path,
            token_store_url=opts.token_store_url,
            token_store_key=opts.token_store_key,
            lock_timeout=30.0,
        )
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None


def check_store(opts: LoginOptions) -> None:
    """Raise unless the store can be written (and, for a known site, replaced) right now."""
    try:
        early = _store_for(opts, opts.cloud_id or "probe")
        early.check_writable()
        if opts.cloud_id:
            with early.session() as session:
                _replaceable(session, early, opts.force)
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None


def _superseded(old: TokenRecord | None, env_prefix: str) -> list[str]:
    """Seeds a configured refresh_token may still hold that this consent replaces."""
    configured = os.environ.get(f"{env_prefix}REFRESH_TOKEN", "").strip()
    return remember_superseded(old, *([seed_fingerprint(configured)] if configured else []))


def _replaceable(session: TokenStoreSession, store: TokenStore, force: bool) -> TokenRecord | None:
    """Return what the store holds now (tokens empty if they cannot be opened here).

    A store this login cannot open (its tokens sealed with a key not at hand) is refused
    unless --force: replacing it would drop its encryption or its key. Its fingerprints are
    carried over either way, so no stale seed is ever spent again.
    """
    try:
        return session.load()
    except TokenStoreError as exc:
        reason = str(exc)
    try:
        old = session.load_metadata()
    except TokenStoreError:
        return None  # unreadable: a fresh consent is the documented way to start over
    if old is not None and not force:
        msg = (
            f"{reason.rstrip('.')}; login would replace what {store.location} holds with a token "
            "sealed differently (or in clear text), so set the key the tap uses (in the "
            "environment, as token_store_key) or pass --force to replace it anyway."
        )
        raise AuthCliError(msg)
    return old


def store_tokens(
    opts: LoginOptions,
    site: Site,
    tokens: dict[str, t.Any],
    granted: list[str],
    issued_at: float,
) -> None:
    """Keep the consent's tokens as the site's record, replacing (and superseding) the old one."""
    store = _store_for(opts, site.cloud_id)
    refresh_token = str(tokens["refresh_token"])
    now = _now_iso()
    old: TokenRecord | None = None
    try:
        with store.session() as session:
            old = _replaceable(session, store, opts.force)
            seed = seed_fingerprint(refresh_token)
            # A second store for this app and site (a sibling file, another row) is refused
            # here as the tap would refuse it: better before the consent's token is stored.
            session.check_unshared(seed)
            record = TokenRecord(
                refresh_token=refresh_token,
                seed_fingerprint=seed,
                scopes=granted,
                rotated_at=now,
                family_started_at=now,
                access_token=str(tokens["access_token"]),
                access_token_expires_at=issued_at + _seconds(tokens.get("expires_in")),
                cloud_id=site.cloud_id,
                superseded_seeds=_superseded(old, opts.env_prefix),
                client_id=opts.client_id,
            )
            session.save(record)
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None
    click.echo(
        f"Stored the refresh token for {site.url} (cloud ID {site.cloud_id}) in {store.location}."
    )
    if old is not None:
        click.echo(f"It replaces the token stored there before (last rotated {old.rotated_at}).")


def _seconds(value: object) -> int:
    """expires_in as a whole number of seconds; an odd value counts as Atlassian's hour."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 3600
