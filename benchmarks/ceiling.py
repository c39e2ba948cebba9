"""The ceiling: the least work that extracts the same data, to compare the tap against.

``python -m benchmarks.ceiling audit|users URL EMAIL TOKEN`` fetches the same pages the tap
fetches from the same simulator with one keep-alive ``requests`` session, parses each page's
JSON and writes every record to stdout as a Singer RECORD line with the fastest JSON encoder
installed (orjson, else msgspec, else the standard library). No state, no schema, no typing.

``python -m benchmarks.ceiling audit-ids URL EMAIL TOKEN`` is the same loop producing the same
records as the tap: each also gets its ``id`` (sha256 of the canonical JSON, sorted keys by
orjson), ``createdAt`` and ``cloudId``. It shows what the record id alone costs.

``python -m benchmarks.ceiling serve URL EMAIL TOKEN`` is the server's own rate: the same
audit pages read over one keep-alive ``http.client`` connection and nothing else done with
them (only each page's ``size`` is read, from its last bytes), timed from the first request
to the last byte (the time is on stderr). The ceiling means something only while this is
well above it: a ceiling near the server's rate measures the server.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

AUDIT_PAGE = 1000
USER_PAGE = 200
#: The simulator's default cloud id, which the tap puts on every record.
CLOUD_ID = "0f0f0f0f-1111-4222-8333-444455556666"


def _sorted_encoder() -> Callable[[Any], bytes]:
    """Canonical JSON (sorted keys, compact, UTF-8) with the fastest encoder there is."""
    try:
        import orjson
    except ImportError:
        import msgspec

        return msgspec.json.Encoder(order="sorted").encode
    return lambda value: orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def encoder() -> tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]:
    """The fastest JSON (encode, decode) pair available, and its name."""
    try:
        import orjson
    except ImportError:
        pass
    else:
        return "orjson", orjson.dumps, orjson.loads
    try:
        import msgspec
    except ImportError:
        import json

        return "json", lambda v: json.dumps(v).encode(), json.loads
    enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
    return "msgspec", enc.encode, dec.decode


#: "YYYY-MM-DDTHH:MM:" per epoch minute, built as met (records come in time order).
_MINUTES: dict[int, str] = {}
_SECONDS = tuple(f"{s:02d}.{ms:03d}Z" for s in range(60) for ms in range(1000))


def _iso(ms: int) -> str:
    minute, rest = divmod(ms, 60_000)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        prefix = _MINUTES[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
    return prefix + _SECONDS[rest]


def audit(session: requests.Session, base: str, out: Any, *, ids: bool = False) -> int:
    """Offset-page the whole audit log, 1000 a page; return the records written.

    ``ids`` gives each record the fields the tap adds: id, createdAt, cloudId.
    """
    _, dumps, loads = encoder()
    sort_keys = _sorted_encoder()
    sha256 = hashlib.sha256
    n = start = 0
    while True:
        r = session.get(
            f"{base}/wiki/rest/api/audit", params={"start": start, "limit": AUDIT_PAGE}, timeout=120
        )
        r.raise_for_status()
        page = loads(r.content)["results"]
        for rec in page:
            if ids:
                rec["id"] = sha256(sort_keys(rec)).hexdigest()
                rec["createdAt"] = _iso(rec["creationDate"])
                rec["cloudId"] = CLOUD_ID
            out.write(dumps({"type": "RECORD", "stream": "audit_records", "record": rec}))
            out.write(b"\n")
        n += len(page)
        if len(page) < AUDIT_PAGE:
            return n
        start += len(page)


_SIZE = re.compile(rb'"size":(\d+)')


def serve(base: str, email: str, token: str) -> int:
    """Read the audit log's pages as ``audit`` does, parsing nothing; return the records."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    basic = base64.b64encode(f"{email}:{token}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
    n = start = 0
    try:
        while True:
            query = urlencode({"start": start, "limit": AUDIT_PAGE})
            conn.request("GET", f"{parts.path}/wiki/rest/api/audit?{query}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                msg = f"the server answered {response.status}"
                raise RuntimeError(msg)
            # The envelope's size follows the results array, so its last mention is it.
            found = _SIZE.match(body, body.rfind(b'"size":'))
            size = int(found.group(1)) if found else 0
            n += size
            if size < AUDIT_PAGE:
                return n
            start += size
    finally:
        conn.close()


def users(session: requests.Session, base: str, out: Any) -> int:
    """Search licensed users then guests, 200 a page, each page's status from user/bulk."""
    # Here, not at the top: it imports the SDK, which the audit loop has no use for.
    from tap_confluence.streams.users import bulk_batches

    _, dumps, loads = encoder()
    n = 0
    for pfilter in ("none", "externalCollaborator"):
        start = 0
        while True:
            r = session.get(
                f"{base}/wiki/rest/api/search/user",
                params={
                    "cql": "type=user",
                    "sitePermissionTypeFilter": pfilter,
                    "start": start,
                    "limit": USER_PAGE,
                },
                timeout=120,
            )
            r.raise_for_status()
            body = loads(r.content)
            found = [x["user"] for x in body["results"]]
            status: dict[str, Any] = {}
            # The same request-line limit as the tap, or the server refuses the call.
            for batch in bulk_batches([u["accountId"] for u in found]):
                b = session.get(
                    f"{base}/wiki/rest/api/user/bulk",
                    params=[("limit", USER_PAGE), *(("accountId", a) for a in batch)],
                    timeout=120,
                )
                b.raise_for_status()
                status.update((u["accountId"], u) for u in loads(b.content)["results"])
            for user in found:
                user["accountStatus"] = status.get(user["accountId"], {}).get("accountStatus")
                out.write(dumps({"type": "RECORD", "stream": "users", "record": user}))
                out.write(b"\n")
            n += len(found)
            if len(found) < USER_PAGE or not body["_links"].get("next"):
                break
            start += len(found)
    return n


def main(argv: list[str]) -> int:
    """Run one ceiling loop; print the record count and encoder on stderr."""
    what, base, email, token = argv
    if what == "serve":
        # Timed here, without this interpreter's start: the server's rate, not the client's.
        started = time.perf_counter()
        n = serve(base, email, token)
        seconds = time.perf_counter() - started
        print(f"server alone: {n} records in {seconds:.4f} s", file=sys.stderr)
        return 0
    out = sys.stdout.buffer
    with requests.Session() as session:
        session.auth = (email, token)
        session.headers["Accept"] = "application/json"
        if what.startswith("audit"):
            n = audit(session, base, out, ids=what == "audit-ids")
        else:
            n = users(session, base, out)
    out.flush()
    print(f"ceiling {what}: {n} records, encoder {encoder()[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
