"""Measure how fast the simulator serves audit records: `python -m simulator.bench`.

Starts a server with 1,000,000 audit records, then pages through all of them with one
keep-alive session (1000 a page), as the tap does; prints startup time and records/s for a
cold pass (pages built on demand), a warm pass (pages from the encoded-page cache) and a
warm pass where the client also parses every page.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import requests

from simulator.process import SimulatorProcess

SIZE = re.compile(rb'"size":(\d+)')
CLASSIC = ("admin@example.com", "fake-classic-api-token")


def read_all(session: requests.Session, url: str, *, parse: bool) -> tuple[int, int]:
    """Page through the whole audit log; return (records, bytes).

    Without `parse` only the small tail of each page is decoded, so the figure is the
    server's (plus HTTP), not the client's JSON parser's.
    """
    start = n = size = 0
    while True:
        r = session.get(url, params={"start": start, "limit": 1000}, timeout=120)
        r.raise_for_status()
        size += len(r.content)
        if parse:
            page = json.loads(r.content)["size"]
        else:
            page = int(SIZE.search(r.content[-400:]).group(1))  # type: ignore[union-attr]
        n += page
        if page < 1000:
            return n, size
        start += page


def main() -> None:
    """Run the measurement and print the figures."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--preencode-audit", action="store_true", help="serve pages as slices")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = SimulatorProcess(
            Path(tmp),
            audit_records=args.records,
            users=1000,
            preencode_audit=args.preencode_audit,
        )
        startup = time.perf_counter() - t0
        try:
            url = sim.url + "/wiki/rest/api/audit"
            with requests.Session() as s:
                s.auth = CLASSIC
                for label, parse in (
                    ("cold pages, server+HTTP", False),
                    ("warm pages, server+HTTP", False),
                    ("warm pages, client json.loads too", True),
                ):
                    t = time.perf_counter()
                    n, size = read_all(s, url, parse=parse)
                    dt = time.perf_counter() - t
                    print(
                        f"{label}: {n} records, {size / 1e6:.0f} MB in {dt:.2f} s = "
                        f"{n / dt:,.0f} records/s"
                    )
        finally:
            sim.stop()
    print(f"startup with {args.records} records: {startup:.2f} s")


if __name__ == "__main__":
    main()
