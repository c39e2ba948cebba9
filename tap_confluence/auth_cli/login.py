"""`login`: the OAuth consent in a browser, ending with a refresh token in the tap's store."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
import time
import typing as t
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import click
import requests

from tap_confluence.auth_cli.callback import CallbackServer, redirect_target
from tap_confluence.auth_cli.common import (
    DEFAULT_API_URL,
    DEFAULT_AUTH_URL,
    HTTP_TIMEOUT,
    AuthCliError,
    error_detail,
    http_session,
    parse_scopes,
    plugin_name,
    unreachable,
    url_setting,
)
from tap_confluence.auth_cli.report import print_settings, uncovered_streams
from tap_confluence.oauth.store.location import open_store, store_path_for
from tap_confluence.oauth.store.record import (
    TokenRecord,
    TokenStore,
    TokenStoreError,
    TokenStoreSession,
    check_cloud_id,
    remember_superseded,
    seed_fingerprint,
)
from tap_confluence.redact import Secrets


@dataclass
class LoginOptions:
    """Everything `login` needs, resolved from options and the tap's environment."""

    client_id: str
    client_secret: str
    scopes: list[str]
    auth_url: str
    api_url: str
    cloud_id: str | None
    token_store_path: str | None
    env_prefix: str
    #: token_store_url and token_store_key come from the tap's environment (the key only
    #: from there, so it never lands in shell history).
    token_store_url: str | None
    token_store_key: str | None
    port: int
    redirect_uri: str | None
    open_browser: bool
    timeout: float
    show_secrets: bool
    #: Replace a store this login cannot read (sealed with a key not at hand) all the same.
    force: bool = False


@dataclass(frozen=True)
class Site:
    """One site the consent reached, as accessible-resources lists it."""

    cloud_id: str
    name: str
    url: str
    scopes: list[str]


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _exchange(
    opts: LoginOptions, code: str, redirect_uri: str, hidden: Secrets
) -> dict[str, t.Any]:
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


def _sites(opts: LoginOptions, access_token: str, hidden: Secrets) -> list[Site]:
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


def _choose(sites: list[Site], wanted: str | None) -> Site:
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


def run_login(opts: LoginOptions) -> None:
    """Consent in the browser, exchange the code, store the refresh token, print settings."""
    hidden = Secrets()
    hidden.add(opts.client_secret)
    # Check the store can be written (and, for a known site, replaced) before anyone spends
    # a consent on it.
    try:
        early = _store_for(opts, opts.cloud_id or "probe")
        early.check_writable()
        if opts.cloud_id:
            with early.session() as session:
                _replaceable(session, early, opts.force)
    except TokenStoreError as exc:
        raise AuthCliError(str(exc)) from None
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
    issued_at = time.time()
    tokens = _exchange(opts, result.code, redirect_uri, hidden)
    sites = _sites(opts, tokens["access_token"], hidden)
    site = _choose(sites, opts.cloud_id)
    granted = sorted(set(str(tokens.get("scope", "")).split()) | set(site.scopes))
    _store(opts, site, tokens, granted, issued_at)
    _report(opts, sites, site, granted)


def _store(
    opts: LoginOptions,
    site: Site,
    tokens: dict[str, t.Any],
    granted: list[str],
    issued_at: float,
) -> None:
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


def resolve_login_options(
    *,
    client_id: str | None,
    client_secret: str | None,
    secret_from_command_line: bool,
    env: t.Callable[[str], str | None],
    **rest: t.Any,
) -> LoginOptions:
    """Fill client credentials and URLs from the environment; prompt for the secret on a TTY."""
    prefix = rest["env_prefix"]
    client_id = client_id or env("client_id")
    if not client_id:
        msg = (
            f"No client ID: pass --client-id or set {prefix}CLIENT_ID to the app's client ID "
            "from the Atlassian developer console."
        )
        raise AuthCliError(msg)
    if secret_from_command_line:
        click.echo(
            "Warning: a client secret given on the command line stays in shell history and is "
            f"visible to other users in the process list; prefer {prefix}CLIENT_SECRET or the "
            "prompt.",
            err=True,
        )
    client_secret = client_secret or env("client_secret")
    if not client_secret and sys.stdin.isatty():
        client_secret = click.prompt("Client secret (input hidden)", hide_input=True, err=True)
    if not client_secret:
        msg = (
            f"No client secret: set {prefix}CLIENT_SECRET (or run in a terminal to be prompted "
            "for it)."
        )
        raise AuthCliError(msg)
    rest["auth_url"] = url_setting(
        "auth_url", rest["auth_url"] or env("auth_url") or DEFAULT_AUTH_URL
    )
    rest["api_url"] = url_setting("api_url", rest["api_url"] or env("api_url") or DEFAULT_API_URL)
    rest["cloud_id"] = rest["cloud_id"] or env("cloud_id")
    if rest["cloud_id"]:
        try:
            check_cloud_id(rest["cloud_id"])
        except TokenStoreError as exc:
            raise AuthCliError(f"--cloud-id (or {prefix}CLOUD_ID): {exc}") from None
    rest["token_store_path"] = rest["token_store_path"] or env("token_store_path")
    rest["token_store_url"] = rest.get("token_store_url") or env("token_store_url")
    rest["token_store_key"] = env("token_store_key")
    rest["scopes"] = parse_scopes(rest["scopes"])
    return LoginOptions(client_id=client_id, client_secret=str(client_secret), **rest)
