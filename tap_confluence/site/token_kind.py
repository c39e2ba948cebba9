"""Which kind an API token is (classic or scoped), learned once and remembered.

A classic API token works at the site, a scoped one only through the gateway. Telling them
apart when both cloud_id and site_url are set takes one request at the site, which fails
for a scoped token; Atlassian may demand a CAPTCHA after repeated failed Basic logins and
then block the account's REST calls, so that request is made once per token, never per run.
The answer is kept beside the token store under a fingerprint, never the token itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import typing as t
from pathlib import Path

KINDS = ("classic", "scoped")
#: A dot file, so tools that list the store files beside it (status) pass it by.
FILE_NAME = ".api-token-kinds.json"


def fingerprint(email: str, api_token: str, site_url: str) -> str:
    """Name one (account, token, site) without keeping the token."""
    raw = "\0".join(("tap-confluence/api-token-kind/v1", email, api_token, site_url))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _read(path: Path) -> dict[str, t.Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_kind(directory: Path, key: str) -> str | None:
    """Return the kind learned earlier for ``key``, if any."""
    kind = _read(directory / FILE_NAME).get(key)
    return kind if kind in KINDS else None


def remember_kind(directory: Path, key: str, kind: str) -> bool:
    """Keep ``kind`` for ``key``; False when the directory cannot be written."""
    path = directory / FILE_NAME
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = _read(path)
        data[key] = kind
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{FILE_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
