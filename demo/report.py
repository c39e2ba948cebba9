"""Seat report read back from the demo's DuckDB file: seats, users, idle users, audit categories.

Run it with the demo loader's Python, which has the DuckDB that wrote the file:
`.meltano/loaders/target-duckdb/venv/bin/python demo/report.py DB.duckdb [--counts-json]`.
The queries live in demo/report.sql.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import duckdb

SCHEMA = "tap_confluence"
QUERIES = {
    m.group(1): m.group(2).strip()
    for m in re.finditer(
        r"^-- name: (\w+)\n(.*?)(?=^-- name:|\Z)",
        (Path(__file__).with_name("report.sql")).read_text(encoding="utf-8"),
        re.S | re.M,
    )
}


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Return the tables the pipeline created in the tap's schema."""
    found = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1",
        [SCHEMA],
    ).fetchall()
    return [r[0] for r in found]


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per table (names come from information_schema, quoted)."""
    return {
        t: con.execute(f'SELECT count(*) FROM {SCHEMA}."{t}"').fetchone()[0]  # noqa: S608
        for t in tables(con)
    }


def rows(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[Any, ...]]:
    """Run the named query from report.sql."""
    return con.execute(QUERIES[name]).fetchall()


def print_report(con: duckdb.DuckDBPyConnection) -> None:
    """Print the four sections of the report."""
    print("Seats (latest snapshot per site)")
    for cloud, day, bought, used, free, source in rows(con, "seats"):
        print(f"  {cloud}  {day}: bought {bought}, used {used}, free {free}  (from {source})")

    print("\nUsers by kind and status")
    for kind, status, n in rows(con, "users_by_status"):
        print(f"  {kind:<9} {status:<9} {n:>6}")

    if "user_activity" in tables(con):
        source, query = "user_activity", "idle_from_activity"
    else:
        source = "the audit records they authored; user_activity is not loaded yet"
        query = "idle_from_audit"
    print(f"\nSeat holders (licensed, active, not apps) idle for 90 days (from {source})")
    for cloud, seated, idle in rows(con, query):
        print(f"  {cloud}: {idle} of {seated} seat holders")

    print("\nAudit records by category")
    for category, n in rows(con, "audit_by_category"):
        print(f"  {category:<24} {n:>6}")


def main(argv: list[str]) -> int:
    """`report.py DB [--counts-json]`: the report, or the row count per table as JSON."""
    if not argv:
        print("usage: report.py DATABASE.duckdb [--counts-json]", file=sys.stderr)
        return 2
    con = duckdb.connect(argv[0], read_only=True)
    try:
        if "--counts-json" in argv[1:]:
            print(json.dumps(counts(con)))
        else:
            print_report(con)
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
