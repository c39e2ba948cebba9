"""Printing for people: which settings to use, and which streams a grant leaves out."""

from __future__ import annotations

import shlex

import click

from tap_confluence.streams import STREAM_TYPES

_SECRET_SETTINGS = {"client_secret", "refresh_token", "api_token"}


def scope_options(options: tuple[frozenset[str], ...]) -> str:
    """Name scope alternatives: `a or b + c` (a plus sign joins scopes needed together)."""
    return " or ".join(" + ".join(sorted(option)) for option in options)


def uncovered_streams(granted: frozenset[str]) -> list[str]:
    """One line per stream whose scope alternatives the grant does not cover."""
    lines = []
    for stream in STREAM_TYPES:
        options = stream.required_scopes
        if options and not any(option <= granted for option in options):
            need = scope_options(options)
            name = stream.__dict__.get("name", stream.__name__)
            lines.append(f"the {name} stream will be skipped: it needs {need}.")
    return lines


def print_settings(
    values: dict[str, str | None], env_prefix: str, *, plugin: str, show_secrets: bool
) -> None:
    """Print the tap settings by name, as env lines and Meltano commands; secrets only if asked."""
    click.echo("")
    if show_secrets:
        click.echo("Settings for the tap (secret values shown because of --show-secrets):")
    else:
        click.echo(
            "Settings for the tap (secret values are not printed; --show-secrets prints them):"
        )
    width = max(len(k) for k in [*values, "refresh_token"])
    for key, value in values.items():
        click.echo(f"  {key.ljust(width)}  {_shown(key, value, env_prefix)}")
    click.echo(
        f"  {'refresh_token'.ljust(width)}  (leave unset: the tap reads it from the token store)"
    )
    click.echo("As environment variables (or lines of the Meltano project's .env):")
    for key, value in values.items():
        name = f"{env_prefix}{key.upper()}"
        if value is None:
            click.echo(f"  {name}=<your {key.replace('_', ' ')}>")
        else:
            click.echo(f"  {name}={shlex.quote(value)}")
    click.echo("Or with Meltano (secrets belong in .env, not in meltano.yml):")
    for key, value in values.items():
        if key not in _SECRET_SETTINGS and value is not None:
            # Meltano 4's form; `meltano config PLUGIN set` is refused there.
            click.echo(f"  meltano config set {plugin} {key} {shlex.quote(value)}")


def _shown(key: str, value: str | None, env_prefix: str) -> str:
    if value is None:
        return f"(secret: keep it in {env_prefix}{key.upper()}, e.g. in the project's .env)"
    return value
