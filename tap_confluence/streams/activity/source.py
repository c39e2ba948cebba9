"""What every user_activity source shares: the stream it reads as, and lenient answers."""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_confluence.errors import StreamAccessError
from tap_confluence.streams.audit.rows import iso_to_ms

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from tap_confluence.http.stream import ConfluenceStream


class ActivitySource:
    """One place user_activity reads activity from, read as the stream (its requests and logs)."""

    #: The source's name in state partitions, rows and sentences.
    name: t.ClassVar[str]
    #: The access the source needs, named in the sentence it ends with when access is missing.
    needs: t.ClassVar[str]

    def __init__(self, client: ConfluenceStream) -> None:
        """Read as ``client``: its auth, retries, error sentences and logger."""
        self.client = client
        self.config = client.config
        self.logger = client.logger

    def access_error(self, exc: StreamAccessError) -> StreamAccessError:
        """Say what access this source needs, keeping whether a scope was not granted."""
        return StreamAccessError(
            f"user_activity from {self.name} needs {self.needs} ({exc})",
            scope_missing=exc.scope_missing,
        )


def iso_ms(value: str) -> int:
    """Return an ISO 8601 date (``Z`` or an offset; naive means UTC) in epoch milliseconds."""
    return iso_to_ms(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


def json_object(value: t.Any) -> Mapping[str, t.Any]:
    """Return ``value`` when it is a JSON object, else an empty one (the API sent oddities)."""
    return value if isinstance(value, dict) else {}
