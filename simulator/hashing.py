"""Cheap deterministic hashing: every derived value in the data set comes from mix()."""

from __future__ import annotations

from typing import Any

MASK64 = (1 << 64) - 1


def mix(x: int) -> int:
    """Return a well-mixed 64-bit hash of x (splitmix64 finaliser)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def strings(obj: Any) -> list[str]:
    """Return every string value (not key) inside a JSON value."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []
