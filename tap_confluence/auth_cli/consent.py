"""The consent half of `login`: the browser, the callback, the code exchange and the site chosen.

Nothing here touches the token store; login_store.py keeps what this returns.
"""

from __future__ import annotations

import os
import secrets
import sys
import typing as t
import webbrowser
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import click
import requests

from tap_confluence.auth_cli.callback import CallbackServer, redirect_target
from tap_confluence.auth_cli.common import (
    HTTP_TIMEOUT,
    AuthCliError,
    error_detail,
    http_session,
    unreachable,
)
from tap_confluence.oauth.store.record import TokenStoreError, check_cloud_id

if t.TYPE_CHECKING:
    from tap_confluence.auth_cli.login_options import LoginOptions
    from tap_confluence.redact import Secrets


@dataclass(frozen=True)
class Site:
    """One site the consent reached, as accessible-resources lists it."""

    cloud_id: str
    name: str
    url: str
    scopes: list[str]


def authorization_url(opts: LoginOptions, redirect_uri: str, state: str) -> str:
    """Build the consent URL Atlassian documents, with a fresh state and prompt=consent."""
    params = {
        "audience": "api.atlassian.com",
        "client_id": opts.client_id,
        "scope": " ".join(opts.scopes),
        "redirect_uri": redirect_uri,
        "state": state,
        "response_type": "code",
        "prompt": "consent",
    }
    return f"{opts.auth_url}/authorize?{urlencode(params, quote_via=quote)}"


def _can_open_browser() -> bool:
    # Without a display, webbrowser falls back to console browsers that take over the terminal.
    if sys.platform in {"darwin", "win32"}:
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def await_consent(opts: LoginOptions, hidden: Secrets) -> tuple[str, str]:
    """Show the consent URL, wait for the browser's callback; return (code, redirect_uri)."""
    target = redirect_target(opts.redirect_uri, opts.port)
    state = secrets.token_urlsafe(32)
    server = CallbackServer(target, state)
    redirect_uri = server.redirect_uri
    url = authorization_url(opts, redirect_uri, state)
    click.echo("Open this address in a browser signed in to Atlassian, and accept:")
    click.echo(f"  {url}")
    click.echo(f"Waiting up to {opts.timeout:.0f} s for the browser to come back to {redirect_uri}")
    if opts.open_browser and _can_open_browser():
        webbrowser.open(url)
    try:
        result = server.wait(opts.timeout)
    except KeyboardInterrupt:
        raise AuthCliError("Login cancelled; nothing was stored.") from None
    if result is None:
        msg = (
            f"No callback reached {redirect_uri} within {opts.timeout:.0f} s, so nothing was "
            "stored; run login again (with a longer --timeout) and check that this address is "
            "a callback URL of the app."
        )
        raise AuthCliError(msg)
    if result.code is None:
        if result.error == "access_denied":
            msg = (
                "Consent was denied in the browser (access_denied), so nothing was stored; run "
                "login again and choose Accept, as an account with access to the site."
            )
        else:
            detail = hidden.redact(f"{result.error}: {result.error_description or ''}")[:200]
            msg = (
                f"Atlassian returned an error instead of a code ({detail}), so nothing was "
                "stored; check the app's callback URL, scopes and client ID, then run again."
            )
        raise AuthCliError(msg)
    hidden.add(result.code)
    return result.code, redirect_uri


def exchange_code(
    opts: LoginOptions, code: str, redirect_uri: str, hidden: Secrets
) -> dict[str, t.Any]:
    """Trade the consent's code for tokens; refuse an answer without a refresh token."""
    body = {
        "grant_type": "authorization_code",
        "client_id": opts.client_id,
        "client_secret": opts.client_secret,
        "code": code,
        "redirect_uri": redirect_uri,
    }
    url = f"{opts.auth_url}/oauth/token"
    try:
        response = http_session().post(url, json=body, timeout=HTTP_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise unreachable(url, exc) from None
    if response.status_code == 401:
        msg = (
            f"The authorization server rejected client_id and client_secret "
            f"({error_detail(response, hidden)}); copy both again from the app's settings in "
            "the Atlassian developer console."
        )
        raise AuthCliError(msg)
    if not response.ok:
        msg = (
            f"The authorization server refused the code ({error_detail(response, hidden)}); "
            "run login again and finish within a few minutes of consenting."
        )
        raise AuthCliError(msg)
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
        msg = "The token endpoint answered without an access_token; check --auth-url."
        raise AuthCliError(msg)
    hidden.add(data.get("access_token"))
    hidden.add(data.get("refresh_token"))
    if not isinstance(data.get("refresh_token"), str):
        msg = (
            "Atlassian returned no refresh token, so the tap could not run unattended; enable "
            "offline_access for the app and keep it in --scopes."
        )
        raise AuthCliError(msg)
    return data


def list_sites(opts: LoginOptions, access_token: str, hidden: Secrets) -> list[Site]:
    """List the sites the consent reached (accessible-resources), each ID a proper cloud ID."""
    url = f"{opts.api_url}/oauth/token/accessible-resources"
    headers = {"Authorization": f"Bearer {access_token}"}
    try:
        response = http_session().get(url, headers=headers, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise unreachable(url, exc) from None
    try:
        data = response.json() if response.ok else None
    except ValueError:
        data = None
    if not isinstance(data, list):
        msg = (
            f"Listing the sites the consent reached failed ({error_detail(response, hidden)}); "
            "check --api-url and run login again."
        )
        raise AuthCliError(msg)
    sites = []
    for entry in data:
        if not isinstance(entry, dict) or not entry.get("id"):
            continue
        try:
            # The ID names the token file: a hostile answer must not turn it into a path.
            check_cloud_id(entry["id"])
        except TokenStoreError:
            msg = (
                f"The sites the consent reached include one whose ID {str(entry['id'])[:60]!r} is "
                "not a cloud ID (letters, digits and dashes), so nothing was stored; check "
                "--api-url points at https://api.atlassian.com and run login again."
            )
            raise AuthCliError(msg) from None
        scopes = entry.get("scopes")
        sites.append(
            Site(
                cloud_id=str(entry["id"]),
                name=str(entry.get("name") or ""),
                url=str(entry.get("url") or ""),
                scopes=[str(x) for x in scopes] if isinstance(scopes, list) else [],
            )
        )
    return sites


def choose_site(sites: list[Site], wanted: str | None) -> Site:
    """Pick the wanted site, the only one, or ask on a terminal; else one sentence."""
    if not sites:
        msg = (
            "The consent reached no Confluence site; choose a site on the consent screen and "
            "make sure the account has access to Confluence there."
        )
        raise AuthCliError(msg)
    if wanted:
        for site in sites:
            if site.cloud_id == wanted:
                return site
        listed = ", ".join(f"{s.cloud_id} ({s.url})" for s in sites)
        msg = f"The consent did not reach cloud ID {wanted}, only {listed}; run login again."
        raise AuthCliError(msg)
    if len(sites) == 1:
        return sites[0]
    if sys.stdin.isatty():
        for number, site in enumerate(sites, 1):
            click.echo(f"  {number}. {site.name} {site.url} ({site.cloud_id})")
        choice = click.prompt(
            "Which site is this token for", type=click.IntRange(1, len(sites)), err=True
        )
        return sites[choice - 1]
    listed = ", ".join(f"{s.cloud_id} ({s.url})" for s in sites)
    msg = f"The consent reached several sites ({listed}); run login again with --cloud-id."
    raise AuthCliError(msg)
