"""Progress lines for long work: at most one every few seconds."""

from __future__ import annotations

import time
import typing as t


def log_progress_every(seconds: float) -> t.Callable[[], bool]:
    """Return a gate that opens at most once per ``seconds`` (for progress lines)."""
    last = [0.0]

    def ready() -> bool:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            return True
        return False

    return ready
