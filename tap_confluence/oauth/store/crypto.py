"""Encryption at rest for stored OAuth tokens: Fernet keys from the token_store_key setting.

Fernet (AES-128-CBC with HMAC-SHA256, from the ``cryptography`` package) authenticates what
it decrypts, so a wrong key or a tampered value is detected, never turned into garbage that
would then be sent to Atlassian. Several keys may be given: the first seals, all open, so a
key is rotated by putting the new one first and dropping the old one after every store has
been rewritten (each refresh rewrites its record with the first key).
"""

from __future__ import annotations

import binascii
import re
import typing as t

if t.TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# cryptography is imported where a key is used, not here: most runs keep no key, and loading
# it (with its Rust and cffi bindings) costs every start of the tap ~30-60 ms of CPU.

__all__ = ["KeyFormatError", "TokenCipher", "new_key"]

_SEPARATORS = re.compile(r"[\s,]+")


class KeyFormatError(ValueError):
    """token_store_key is not a list of Fernet keys; the message is one sentence."""


def new_key() -> str:
    """Return a fresh random Fernet key (44 characters of URL-safe base64)."""
    from cryptography.fernet import Fernet  # noqa: PLC0415

    return Fernet.generate_key().decode()


class TokenCipher:
    """Seals and opens token text with one or more Fernet keys (the first one seals)."""

    def __init__(self, keys: list[str]) -> None:
        """Build from key strings; raise KeyFormatError naming the bad one by position only."""
        from cryptography.fernet import Fernet, MultiFernet  # noqa: PLC0415

        if not keys:
            msg = "token_store_key is empty; set it to a key from `tap-confluence-auth new-key`."
            raise KeyFormatError(msg)
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, binascii.Error):
                # Never echo the value: it is (meant to be) a secret.
                which = f"key {position} of {len(keys)} in " if len(keys) > 1 else ""
                msg = (
                    f"{which}token_store_key is not a Fernet key (44 characters of URL-safe "
                    "base64); generate one with `tap-confluence-auth new-key`."
                )
                raise KeyFormatError(msg) from None
        self._fernet: MultiFernet = MultiFernet(fernets)

    @classmethod
    def from_setting(cls, value: str | None) -> TokenCipher | None:
        """Parse the setting: None when unset, else comma- or space-separated keys."""
        if value is None or not value.strip():
            return None
        return cls([k for k in _SEPARATORS.split(value.strip()) if k])

    def seal(self, plaintext: bytes) -> str:
        """Encrypt and authenticate with the first key."""
        return self._fernet.encrypt(plaintext).decode()

    def open(self, sealed: str) -> bytes | None:
        """Decrypt with whichever key fits; None when none does (wrong key or tampering)."""
        from cryptography.fernet import InvalidToken  # noqa: PLC0415

        try:
            return self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            return None
