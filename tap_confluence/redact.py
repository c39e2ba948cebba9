"""Every secret this process knows, so text can be scrubbed before it is logged or raised."""

from __future__ import annotations


class Secrets:
    """Every secret value this process knows, so text can be scrubbed before it is logged."""

    _MIN_LEN = 6

    def __init__(self) -> None:
        """Start with no secrets."""
        self._values: set[str] = set()

    def add(self, value: str | None) -> None:
        """Remember a secret (short values are ignored: they would mangle ordinary text)."""
        if value and len(value) >= self._MIN_LEN:
            self._values.add(value)

    def redact(self, text: str) -> str:
        """Replace every known secret in ``text`` with ``***``."""
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, "***")
        return text
