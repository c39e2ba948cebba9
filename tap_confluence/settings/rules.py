"""Settings rules beside the auth mode, each failing in one sentence before any request.

Secret types, dates, look-backs, stores, the admin source, unknown or clamped settings, and
the sentence for a schema error.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
import typing as t
from pathlib import Path, PurePath

from singer_sdk.exceptions import ConfigValidationError

from tap_confluence.oauth.store.record import TokenStoreError, cipher_setting


def has_value(config: t.Mapping[str, t.Any], key: str) -> bool:
    """Tell whether ``key`` is set to non-blank text."""
    value = config.get(key)
    return isinstance(value, str) and value.strip() != ""


#: Settings whose values are secrets: a wrong-typed one is named, never echoed.
SECRET_SETTINGS = (
    "client_secret",
    "refresh_token",
    "api_token",
    "org_api_key",
    "token_store_url",
    "token_store_key",
)


def check_secret_types(config: object) -> None:
    """Refuse a secret setting that is not text, naming it and its kind but never its value.

    ``config`` is what the Tap constructor was given (a mapping, or JSON file paths); this runs
    before the SDK's JSON-schema validation, whose messages quote the offending value.
    """
    config = _given_settings(config)
    for key in SECRET_SETTINGS:
        value = config.get(key)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, bool):
            kind = "a boolean"
        elif isinstance(value, int | float):
            kind = "a number"
        elif isinstance(value, list | tuple):
            kind = "a list"
        elif isinstance(value, dict):
            kind = "an object"
        else:
            kind = f"a {type(value).__name__}"
        fail(
            f"{key} must be text (a JSON string), not {kind}; set it to the plain value, e.g. "
            f"TAP_CONFLUENCE_{key.upper()} in the environment (the value is not shown here "
            "because it is a secret)."
        )


def _given_settings(config: object) -> t.Mapping[str, t.Any]:
    """Return the settings a mapping holds, or those the JSON file(s) it names hold."""
    if isinstance(config, t.Mapping):
        return config
    paths = config if isinstance(config, list) else [config]
    merged: dict[str, t.Any] = {}
    for path in paths:
        if not isinstance(path, str | PurePath):
            continue
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the SDK reports an unreadable file itself
        if isinstance(data, dict):
            merged.update(data)
    return merged


def fail(sentence: str) -> t.NoReturn:
    """Raise the SDK's config error with one sentence (the CLI prints it without a traceback)."""
    raise ConfigValidationError(sentence, errors=[sentence])


#: How a setting of each JSON Schema type must be written, for the sentence.
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "object": "an object",
    "array": "a list",
}
#: The SDK's schema errors end like `... in config['audit_concurrency']`.
_ERROR_PATH = re.compile(r" in config\['([^']+)'\]")


def config_error_sentence(exc: ConfigValidationError) -> str:
    """One sentence for a config error: the tap's own, or the SDK's schema errors retold.

    The SDK's messages quote the offending values, which may be secrets, so only the
    setting names and the types they need are told.
    """
    if exc.errors == [str(exc)]:
        return str(exc)
    props = (exc.schema or {}).get("properties", {})
    names: list[str] = []
    for error in exc.errors:
        match = _ERROR_PATH.search(error)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    needs = []
    for name in names:
        kinds = props.get(name, {}).get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else kinds
        words = [_TYPE_WORDS[k] for k in kinds if k in _TYPE_WORDS]
        needs.append(f"{name} must be {' or '.join(words) or 'set as documented'}")
    if not needs:
        return (
            f"The config does not fit the tap's settings ({len(exc.errors)} problem(s)); "
            "tap-confluence --about lists every setting and its type."
        )
    return f"{' and '.join(needs)}; tap-confluence --about lists every setting and its type."


def check_start_date(config: t.Mapping[str, t.Any]) -> None:
    """Refuse a start_date that is not ISO 8601 or lies in the future."""
    if not has_value(config, "start_date"):
        return
    raw = str(config["start_date"]).strip()
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        fail(
            f"start_date '{raw}' is not an ISO 8601 date-time; write it like 2025-01-31T00:00:00Z."
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if value > dt.datetime.now(dt.UTC):
        fail(f"start_date {raw} is in the future; set a past date or leave it empty.")


def check_lookbacks(config: t.Mapping[str, t.Any]) -> None:
    """Refuse look-back minutes that are not whole numbers, 0 or more."""
    for key in ("audit_lookback_minutes", "content_lookback_minutes"):
        value = config.get(key)
        bad = not isinstance(value, int) or isinstance(value, bool) or value < 0
        if value is not None and bad:
            fail(f"{key} must be a whole number of minutes, 0 or more, not {value!r}.")


#: Audit windows fetched at once: the audit stream uses a value in this range.
AUDIT_CONCURRENCY_RANGE = (1, 16)
#: Helper processes of an audit backfill: the audit stream uses a value in this range.
AUDIT_HELPERS_RANGE = (0, 8)


def settings_warnings(config: t.Mapping[str, t.Any], known: t.Collection[str]) -> list[str]:
    """Sentences for settings the tap does not know and for values it clamps.

    Names only, never values: a misspelt setting may well hold a secret.
    """
    warnings = []
    for key in sorted(str(k) for k in config if k not in known):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = (
            f"did you mean {close[0]}?" if close else "tap-confluence --about lists every setting."
        )
        warnings.append(f"{key[:60]} is not a setting of tap-confluence and is ignored; {hint}")
    clamps = (
        ("audit_concurrency", AUDIT_CONCURRENCY_RANGE, "{used} audit windows are fetched at once"),
        ("audit_helper_processes", AUDIT_HELPERS_RANGE, "{used} are used"),
    )
    for key, (low, high), outcome in clamps:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            used = min(max(value, low), high)
            said = outcome.format(used=used)
            warnings.append(f"{key} {value} is outside {low} to {high}, so {said}.")
    return warnings


def check_store_settings(config: t.Mapping[str, t.Any]) -> None:
    """Check token_store_url and token_store_key before any request (one sentence if wrong)."""
    url = str(config.get("token_store_url") or "").strip()
    key = str(config.get("token_store_key") or "").strip()
    try:
        cipher_setting(key)
    except TokenStoreError as exc:
        fail(str(exc))
    if not url:
        return
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.split("+", 1)[0] not in {"postgresql", "postgres"}:
        fail(
            "token_store_url must be a PostgreSQL URL like postgresql://user@host:5432/dbname "
            f"(it starts with {scheme or 'no scheme'!r}); leave it unset to keep tokens in a file."
        )
    if not key:
        fail(
            "token_store_url needs token_store_key as well, because tokens in a shared database "
            "are always encrypted; generate a key with `tap-confluence-auth new-key` and keep "
            "it with your other secrets."
        )


def check_admin_settings(config: t.Mapping[str, t.Any]) -> bool:
    """Tell whether the admin source is on; one sentence when only half of it is set."""
    given = [k for k in ("org_id", "org_api_key") if str(config.get(k) or "").strip()]
    if len(given) == 1:
        missing = "org_api_key" if given == ["org_id"] else "org_id"
        fail(
            f"The Admin API source of user_activity needs {missing} as well as {given[0]}; "
            "set both (admin.atlassian.com > Settings > API keys) or neither."
        )
    return len(given) == 2
