"""What `login` is asked to do: its options, completed from the tap's environment."""

from __future__ import annotations

import sys
import typing as t
from dataclasses import dataclass

import click

from tap_confluence.auth_cli.common import (
    DEFAULT_API_URL,
    DEFAULT_AUTH_URL,
    AuthCliError,
    parse_scopes,
    url_setting,
)
from tap_confluence.oauth.store.record import TokenStoreError, check_cloud_id


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
