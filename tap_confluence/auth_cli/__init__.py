"""tap-confluence-auth: get, inspect and check the credentials tap-confluence uses.

Commands: ``cloud-id`` (a site's cloud ID), ``login`` (OAuth consent in a browser, refresh
token into the tap's token store), ``status`` (what the store holds, no secrets), ``check``
(one cheap call per configured auth method), ``migrate`` (token files into the PostgreSQL
token store, unspent) and ``new-key`` (a key for token_store_key).
"""

from __future__ import annotations

import sys

import click

from tap_confluence.auth_cli.check import run_check
from tap_confluence.auth_cli.common import DEFAULT_ENV_PREFIX, AuthCliError, env_setting
from tap_confluence.auth_cli.login import run_login
from tap_confluence.auth_cli.login_options import resolve_login_options
from tap_confluence.auth_cli.migrate import migrate_command, new_key_command
from tap_confluence.auth_cli.status import run_cloud_id, run_status, run_status_pg

__all__ = ["AuthCliError", "main"]

DEFAULT_PORT = 8790
_STORE_URL_HELP = (
    "The tap's token_store_url (PostgreSQL; its token_store_key comes from the environment)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tap-confluence", prog_name="tap-confluence-auth")
@click.option(
    "--env-prefix",
    default=DEFAULT_ENV_PREFIX,
    show_default=True,
    help="Prefix of the tap's environment variables (e.g. TAP_CONFLUENCE__SITE_B_).",
)
@click.pass_context
def cli(ctx: click.Context, env_prefix: str) -> None:
    """Get, inspect and check the credentials tap-confluence uses."""
    ctx.obj = env_prefix


@cli.command("cloud-id")
@click.argument("site", required=False)
@click.option("--site-url", help="Full site URL to ask instead of SITE (http only on loopback).")
@click.pass_obj
def cloud_id_command(env_prefix: str, site: str | None, site_url: str | None) -> None:
    """Print the cloud ID of SITE (acme, acme.atlassian.net or any URL on the site)."""
    target = site_url or site or env_setting(env_prefix, "site_url")
    if not target:
        raise AuthCliError("Name the site: tap-confluence-auth cloud-id acme (or --site-url URL).")
    click.echo(run_cloud_id(target))


@cli.command("login")
@click.option("--client-id", help="OAuth app client ID [env: TAP_CONFLUENCE_CLIENT_ID].")
@click.option(
    "--client-secret",
    help="OAuth app client secret [env: TAP_CONFLUENCE_CLIENT_SECRET]; prompted on a terminal.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Loopback port for the callback http://localhost:PORT/callback.")  # fmt: skip
@click.option("--redirect-uri", help="Callback URL registered for the app (loopback http).")
@click.option("--scopes", help="Scopes, comma- or space-separated [default: what the tap needs].")
@click.option("--auth-url", help="Authorization server [default: https://auth.atlassian.com].")
@click.option("--api-url", help="API gateway [default: https://api.atlassian.com].")
@click.option("--cloud-id", help="Site to store the token for, when the consent reaches several.")
@click.option("--token-store-path", help="The tap's token_store_path (file or directory).")
@click.option("--token-store-url", help=_STORE_URL_HELP)
@click.option("--no-browser", is_flag=True, help="Only print the address; open no browser.")
@click.option("--timeout", type=click.FloatRange(1), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")  # fmt: skip
@click.option("--show-secrets", is_flag=True, help="Also print the client secret's value.")
@click.option(
    "--force", is_flag=True, help="Replace a stored token this login cannot open (key not at hand)."
)
@click.pass_context
def login_command(
    ctx: click.Context,
    *,
    client_id: str | None,
    client_secret: str | None,
    port: int,
    redirect_uri: str | None,
    scopes: str | None,
    auth_url: str | None,
    api_url: str | None,
    cloud_id: str | None,
    token_store_path: str | None,
    token_store_url: str | None,
    no_browser: bool,
    timeout: float,
    show_secrets: bool,
    force: bool,
) -> None:
    """Consent in a browser and store the refresh token where the tap reads it."""
    env_prefix = str(ctx.obj)
    source = ctx.get_parameter_source("client_secret")
    opts = resolve_login_options(
        client_id=client_id,
        client_secret=client_secret,
        secret_from_command_line=source is click.core.ParameterSource.COMMANDLINE,
        env=lambda key: env_setting(env_prefix, key),
        env_prefix=env_prefix,
        port=port,
        redirect_uri=redirect_uri,
        scopes=scopes,
        auth_url=auth_url,
        api_url=api_url,
        cloud_id=cloud_id,
        token_store_path=token_store_path,
        token_store_url=token_store_url,
        open_browser=not no_browser,
        timeout=timeout,
        show_secrets=show_secrets,
        force=force,
    )
    run_login(opts)


@cli.command("status")
@click.option("--token-store-path", help="The tap's token_store_path (file or directory).")
@click.option("--token-store-url", help=_STORE_URL_HELP)
@click.pass_obj
def status_command(
    env_prefix: str, token_store_path: str | None, token_store_url: str | None
) -> None:
    """Show the token store's sites, rotation dates, scopes and expiries (never a token)."""
    url = token_store_url or env_setting(env_prefix, "token_store_url")
    key = env_setting(env_prefix, "token_store_key")
    if url:
        sys.exit(run_status_pg(url, key))
    path = token_store_path or env_setting(env_prefix, "token_store_path")
    sys.exit(run_status(path, key=key))


@cli.command("check")
@click.option("--config", "config_path", help="The tap's config JSON (environment wins over it).")
@click.pass_obj
def check_command(env_prefix: str, config_path: str | None) -> None:
    """Make one cheap call per configured auth method and say what works and what is missing."""
    sys.exit(run_check(config_path, env_prefix))


cli.add_command(migrate_command)
cli.add_command(new_key_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tap-confluence-auth")
