"""`login`: the OAuth consent in a browser, ending with a refresh token in the tap's store.

The steps live apart: the options in login_options.py, the browser and the code exchange in
consent.py, the store writing in login_store.py; here they run in order, then the settings
to use are printed.
"""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

import click

from tap_confluence.auth_cli.common import DEFAULT_API_URL, DEFAULT_AUTH_URL, plugin_name
from tap_confluence.auth_cli.consent import await_consent, choose_site, exchange_code, list_sites
from tap_confluence.auth_cli.login_store import check_store, store_tokens
from tap_confluence.auth_cli.report import print_settings, uncovered_streams
from tap_confluence.oauth.store.location import store_path_for
from tap_confluence.redact import Secrets

if t.TYPE_CHECKING:
    from tap_confluence.auth_cli.consent import Site
    from tap_confluence.auth_cli.login_options import LoginOptions


def run_login(opts: LoginOptions) -> None:
    """Consent in the browser, exchange the code, store the refresh token, print settings."""
    hidden = Secrets()
    hidden.add(opts.client_secret)
    # Check the store can be written (and, for a known site, replaced) before anyone spends
    # a consent on it.
    check_store(opts)
    code, redirect_uri = await_consent(opts, hidden)
    issued_at = time.time()
    tokens = exchange_code(opts, code, redirect_uri, hidden)
    sites = list_sites(opts, tokens["access_token"], hidden)
    site = choose_site(sites, opts.cloud_id)
    granted = sorted(set(str(tokens.get("scope", "")).split()) | set(site.scopes))
    store_tokens(opts, site, tokens, granted, issued_at)
    _report(opts, sites, site, granted)


def _report(opts: LoginOptions, sites: list[Site], site: Site, granted: list[str]) -> None:
    click.echo("Sites this consent reaches:")
    for each in sites:
        mark = "*" if each is site else " "
        click.echo(f" {mark} {each.cloud_id}  {each.url}  scopes: {' '.join(each.scopes) or '-'}")
    if len(sites) > 1:
        click.echo(
            "The token is stored for the site marked * only: one refresh token must never serve "
            "two stores, because each use disables the previous token."
        )
    for line in uncovered_streams(frozenset(granted)):
        click.echo(f"Note: {line}")
    if os.environ.get(f"{opts.env_prefix}REFRESH_TOKEN", "").strip():
        click.echo(
            f"Note: {opts.env_prefix}REFRESH_TOKEN is set; the tap now ignores that older value "
            "in favour of the stored token, so you may remove it."
        )
    values: dict[str, str | None] = {
        "cloud_id": site.cloud_id,
        "client_id": opts.client_id,
        "client_secret": opts.client_secret if opts.show_secrets else None,
    }
    if opts.token_store_url:
        # Both are secrets (a URL may hold a password): named, never printed.
        values["token_store_url"] = None
        values["token_store_key"] = None
    else:
        values["token_store_path"] = str(Path(store_path_for(opts.token_store_path, site.cloud_id)))
    if opts.auth_url != DEFAULT_AUTH_URL:
        values["auth_url"] = opts.auth_url
    if opts.api_url != DEFAULT_API_URL:
        values["api_url"] = opts.api_url
    plugin = plugin_name(opts.env_prefix, str(store_path_for(opts.token_store_path, site.cloud_id)))
    print_settings(values, opts.env_prefix, plugin=plugin, show_secrets=opts.show_secrets)
