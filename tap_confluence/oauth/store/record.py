"""What a token store keeps for one site, and how it is written down (tokens sealed with a key).

Shared by both backends (the file in file.py, the row in postgres.py) and by
tap-confluence-auth; it does no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import typing as t

from tap_confluence.errors import TapUserError
from tap_confluence.oauth.store.crypto import KeyFormatError, TokenCipher

if t.TYPE_CHECKING:
    from collections.abc import Mapping

STORE_FORMAT_VERSION = 1
#: How many stale seed fingerprints a record remembers (older ones are long dead anyway).
MAX_SUPERSEDED = 20
#: What Atlassian's cloud IDs are made of; anything else never becomes a file name or a key.
_CLOUD_ID = re.compile(r"[A-Za-z0-9-]+")


class TokenStoreError(TapUserError):
    """The token store cannot be read, written or locked; the message is one sentence."""


def seed_fingerprint(refresh_token: str) -> str:
    """Identify a configured refresh token without keeping it (the store compares these)."""
    digest = hashlib.sha256(b"tap-confluence/seed/v1\0" + refresh_token.encode()).hexdigest()
    return digest[:32]


def check_cloud_id(cloud_id: str) -> str:
    """Return ``cloud_id`` if it is a cloud ID (letters, digits, dashes), else one sentence."""
    if not isinstance(cloud_id, str) or not _CLOUD_ID.fullmatch(cloud_id):
        # repr() so that control characters from a hostile answer cannot reach the terminal.
        shown = repr(cloud_id)[:60]
        msg = (
            f"{shown} is not a cloud ID (only letters, digits and dashes, like "
            "0f0f0f0f-1111-4222-8333-444455556666), so it is not used as a token store name; "
            "copy the cloud ID from https://SITE.atlassian.net/_edge/tenant_info."
        )
        raise TokenStoreError(msg)
    return cloud_id


@dataclasses.dataclass
class TokenRecord:
    """What the store keeps for one site: the live refresh token and where it came from."""

    refresh_token: str
    #: seed_fingerprint() of the configured refresh_token this token descends from.
    seed_fingerprint: str
    scopes: list[str]
    #: ISO 8601 UTC time of the last successful refresh.
    rotated_at: str
    #: ISO 8601 UTC time the family was first used here (Atlassian expires it after 365 days).
    family_started_at: str
    access_token: str | None = None
    #: Epoch seconds at which access_token expires.
    access_token_expires_at: float | None = None
    #: The site this token is for (absent in records written before it was kept).
    cloud_id: str | None = None
    #: seed_fingerprint() of configured tokens that a later consent replaced: a configured
    #: refresh_token listed here is stale, so the stored token wins over it.
    superseded_seeds: list[str] = dataclasses.field(default_factory=list)
    #: The OAuth app this token belongs to (absent in records written before it was kept);
    #: with cloud_id it tells two stores of one app and site apart.
    client_id: str | None = None

    def to_json(self) -> dict[str, t.Any]:
        """Serialise with a format version so later backends can migrate."""
        return {"version": STORE_FORMAT_VERSION, **dataclasses.asdict(self)}

    def lineage(self) -> list[str]:
        """Every seed fingerprint this record's family has replaced, and its own, newest last."""
        return [*self.superseded_seeds, self.seed_fingerprint]

    @classmethod
    def from_json(cls, data: t.Any, location: str) -> TokenRecord:
        """Parse a stored record, or raise one sentence naming the file and the fix."""
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {"refresh_token", "seed_fingerprint", "rotated_at", "family_started_at"}
        if (
            not isinstance(data, dict)
            or not required <= data.keys()
            or not isinstance(data.get("refresh_token"), str)
        ):
            raise TokenStoreError(corrupt_sentence(location, "it lacks the token fields"))
        values = {k: v for k, v in data.items() if k in fields}
        values.setdefault("scopes", [])
        return cls(**values)


def remember_superseded(old: TokenRecord | None, *extra: str) -> list[str]:
    """Return superseded_seeds for a record replacing ``old``: its lineage, then ``extra``."""
    stale: list[str] = [*old.lineage()] if old is not None else []
    stale += extra
    return list(dict.fromkeys(s for s in stale if s))[-MAX_SUPERSEDED:]


#: The record fields that are secrets; with a key they are kept only inside ``sealed``.
_SEALED_FIELDS = ("refresh_token", "access_token")


def encode_record(
    record: TokenRecord, cipher: TokenCipher | None, *, identity: Mapping[str, str] | None = None
) -> dict[str, t.Any]:
    """Turn a record into the stored document, its tokens sealed when there is a key.

    ``identity`` (the row's client_id and cloud_id) is sealed beside the tokens, so a sealed
    value copied to another row's key is recognised there.
    """
    data = record.to_json()
    if cipher is None:
        return data
    sealed: dict[str, t.Any] = {name: data.pop(name) for name in _SEALED_FIELDS}
    sealed |= dict(identity or {})
    data["sealed"] = cipher.seal(json.dumps(sealed).encode())
    return data


def decode_record(
    data: t.Any,
    location: str,
    cipher: TokenCipher | None,
    *,
    need_tokens: bool = True,
    identity: Mapping[str, str] | None = None,
    require_sealed: bool = False,
) -> TokenRecord:
    """Parse a stored document, opening sealed tokens, or raise one sentence.

    With ``need_tokens=False`` a sealed document whose key is absent still yields its
    metadata (for ``status``), with an empty refresh_token. ``identity`` must match what was
    sealed with the tokens; ``require_sealed`` refuses tokens kept in clear text.
    """
    if isinstance(data, dict) and "moved_to" in data:
        raise TokenStoreError(
            f"The token store {location} was moved to {data['moved_to']} on "
            f"{data.get('moved_at', 'an earlier date')}; set token_store_url (and "
            "token_store_key) so the tap uses the moved token, never this file."
        )
    if isinstance(data, dict) and "sealed" in data:
        tokens = _open_sealed(data, location, cipher, need_tokens=need_tokens, identity=identity)
        data = {k: v for k, v in data.items() if k != "sealed"} | tokens
    elif require_sealed and isinstance(data, dict) and data.get("refresh_token"):
        raise TokenStoreError(
            f"{_capitalised(location)} holds its tokens in clear text, which the tap never "
            "writes there (with token_store_key set every token is sealed), so it will not use "
            "them; run "
            "`tap-confluence-auth login` (or `migrate` a token file) to store a sealed token."
        )
    return TokenRecord.from_json(data, location)


def _open_sealed(
    data: dict[str, t.Any],
    location: str,
    cipher: TokenCipher | None,
    *,
    need_tokens: bool,
    identity: Mapping[str, str] | None,
) -> dict[str, t.Any]:
    if cipher is None:
        if not need_tokens:
            return {"refresh_token": "", "access_token": None}
        raise TokenStoreError(
            f"The tokens in {location} are encrypted but token_store_key is not set; set it "
            "to the key they were written with."
        )
    opened = cipher.open(str(data["sealed"]))
    if opened is None:
        raise TokenStoreError(
            f"token_store_key does not open the tokens in {location} (they were sealed with "
            "another key, or altered); set the key they were written with, or list the new "
            "key first and the old one after it, comma-separated."
        )
    try:
        tokens = json.loads(opened)
    except ValueError:
        tokens = None
    if not isinstance(tokens, dict):
        raise TokenStoreError(corrupt_sentence(location, "its sealed tokens are not JSON"))
    for name, expected in (identity or {}).items():
        # Values sealed before the identity was kept have none: their next save adds it.
        if name in tokens and tokens[name] != expected:
            raise TokenStoreError(
                f"{_capitalised(location)} holds tokens sealed for another app or site (the "
                "value was copied from another row), so the tap will not use them; run "
                "`tap-confluence-auth login` for this site (or `migrate` its token file) to "
                "store its own token."
            )
    return {name: tokens.get(name) for name in _SEALED_FIELDS}


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def cipher_setting(token_store_key: str | None) -> TokenCipher | None:
    """Parse token_store_key, or raise TokenStoreError with the sentence saying what is wrong."""
    try:
        return TokenCipher.from_setting(token_store_key)
    except KeyFormatError as exc:
        raise TokenStoreError(str(exc)) from None


def corrupt_sentence(location: str, why: str) -> str:
    """One sentence for a store that cannot be parsed: which one, why, and how to start over."""
    return (
        f"The token store {location} is unreadable ({why}); move it aside and set "
        "refresh_token to a fresh token from the OAuth consent flow, which starts a new store."
    )


def shared_family_sentence(other: str, location: str, cloud_id: str, *, same_key: bool) -> str:
    """One sentence refusing a second store for one site, or for one refresh-token family."""
    if same_key:
        why = f"already holds this app's token for cloud {cloud_id}, the site {location} is for"
    else:
        why = f"(cloud {cloud_id}) descends from the same refresh token as {location}"
    return (
        f"The token store {other} {why}, and one token family must live in one store only, "
        "because each refresh disables the token before it; nothing was spent: give this "
        "plugin its own cloud_id and its own refresh_token (from `tap-confluence-auth login`), "
        "or point it at that store instead."
    )


def lineage_of(document: t.Any) -> list[str]:
    """Return the seed fingerprints a stored document's family descends from (none if odd)."""
    if not isinstance(document, dict):
        return []
    superseded = document.get("superseded_seeds")
    seeds = [s for s in superseded if isinstance(s, str)] if isinstance(superseded, list) else []
    own = document.get("seed_fingerprint")
    return [*seeds, own] if isinstance(own, str) else seeds


class TokenStoreSession(t.Protocol):
    """A locked view of one site's record: load, then save a new record before using it."""

    def load(self) -> TokenRecord | None:
        """Return the stored record, or None when there is none yet."""

    def load_metadata(self) -> TokenRecord | None:
        """Return the stored record without opening sealed tokens (they come back empty)."""

    def save(self, record: TokenRecord) -> None:
        """Persist the record durably before returning."""

    def check_unshared(self, seed: str) -> None:
        """Raise TokenStoreError if another store holds this site or the family of ``seed``."""


class TokenStore(t.Protocol):
    """Where rotated refresh tokens live; shared by the tap and the tap-confluence-auth CLI."""

    #: Human-readable location for messages (never contains a secret).
    location: str

    def check_writable(self) -> None:
        """Raise TokenStoreError unless a new record could be saved right now."""

    def session(self) -> contextlib.AbstractContextManager[TokenStoreSession]:
        """Hold the store's lock for a whole read-refresh-write."""
