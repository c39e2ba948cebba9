"""Run the tap CLI, SIGKILLing itself at one exact point of a token refresh (for crash tests).

``RELIABILITY_CRASH`` chooses the point:

- ``before_save``: Atlassian has rotated the token, the tap dies before saving the new one;
- ``mid_save``: the new record is written to the temp file, the tap dies before the rename;
- ``after_save``: the new token is saved, the tap dies before anything else happens.

Only the first refresh of the process crashes; without the variable the tap runs normally.
"""

from __future__ import annotations

import os
import signal

from tap_confluence.oauth.store import file as token_store
from tap_confluence.oauth.store import safe_file
from tap_confluence.oauth.store.record import TokenRecord
from tap_confluence.tap import TapConfluence

_POINT = os.environ.get("RELIABILITY_CRASH", "")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install() -> None:
    original_write = token_store.FileTokenStore.write
    original_replace = os.replace

    def write(self: token_store.FileTokenStore, record: TokenRecord) -> None:
        if _POINT == "before_save":
            _die()
        original_write(self, record)
        if _POINT == "after_save":
            _die()

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if _POINT == "mid_save" and str(src).endswith(".tmp"):
            _die()
        original_replace(src, dst)

    token_store.FileTokenStore.write = write  # type: ignore[method-assign]
    safe_file.os.replace = replace  # type: ignore[attr-defined]


if __name__ == "__main__":
    if _POINT:
        _install()
    TapConfluence.cli()
