"""What one token-store session costs: file (plain, sealed) against PostgreSQL (sealed).

A session is what a refresh pays on top of the HTTP call: lock, read, decode, encode, write
durably, unlock. Runs against a throwaway PostgreSQL on loopback (simulator/postgres.py).

    .venv/bin/python -m benchmarks.token_store_sessions [--sessions 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from simulator.postgres import ThrowawayPostgres
from tap_confluence.oauth.store.crypto import new_key
from tap_confluence.oauth.store.location import open_store
from tap_confluence.oauth.store.record import TokenRecord, seed_fingerprint


def _record(i: int) -> TokenRecord:
    return TokenRecord(
        refresh_token=f"fake-bench-refresh-{i:06d}" + "x" * 300,
        seed_fingerprint=seed_fingerprint("fake-refresh-token-seed"),
        scopes=["read:audit-log:confluence", "offline_access"],
        rotated_at="2026-11-29T00:00:00Z",
        family_started_at="2026-11-01T00:00:00Z",
        access_token=f"fake-bench-access-{i:06d}" + "y" * 900,
        access_token_expires_at=time.time() + 3600,
        cloud_id="bench",
    )


def _time_sessions(store: object, n: int) -> list[float]:
    durations = []
    for i in range(n):
        start = time.perf_counter()
        with store.session() as session:  # type: ignore[attr-defined]
            session.load()
            session.save(_record(i))
        durations.append((time.perf_counter() - start) * 1000)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=200)
    n = parser.parse_args().sessions
    key = new_key()
    pg = ThrowawayPostgres().start()
    try:
        url = pg.create_database("bench_tokens")
        with tempfile.TemporaryDirectory() as tmp:
            stores = {
                "file, plain": open_store(
                    cloud_id="bench", client_id="x", token_store_path=str(Path(tmp) / "a.json")
                ),
                "file, sealed": open_store(
                    cloud_id="bench",
                    client_id="x",
                    token_store_path=str(Path(tmp) / "b.json"),
                    token_store_key=key,
                ),
                "postgresql, sealed": open_store(
                    cloud_id="bench", client_id="x", token_store_url=url, token_store_key=key
                ),
            }
            print(f"{n} sessions each (lock, load, save, unlock), milliseconds per session")
            print(f"{'store':<20} {'median':>8} {'p95':>8}")
            for name, store in stores.items():
                _time_sessions(store, 5)  # warm-up: table creation, first connection
                ms = sorted(_time_sessions(store, n))
                p95 = ms[int(len(ms) * 0.95) - 1]
                print(f"{name:<20} {statistics.median(ms):>8.2f} {p95:>8.2f}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
