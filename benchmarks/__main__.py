"""``python -m benchmarks [--quick] [--only SECTION,...]``: every performance figure from one run.

Starts its own simulators (and a throwaway PostgreSQL for the pipeline section), runs the tap
and the ceiling loop as separate processes and prints each figure next to its target. Ratios
compare processes measured minutes apart on the same machine, so they survive a noisy host
better than absolute rates do.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from benchmarks.harness import (
    ProcessRun,
    Workdir,
    catalog_selecting,
    last_state,
    requests_by_route,
    run_measured,
    start_simulator,
    tap_argv,
)
from benchmarks.pipeline import run_pipeline
from tap_confluence.streams.audit.reader import DEFAULT_CONCURRENCY

SECTIONS = ("throughput", "memory", "requests", "latency", "pipeline")


@dataclass(frozen=True)
class Sizes:
    """Data sizes for a full or a quick run."""

    audit: int
    licensed: int
    guests: int
    memory_small: int
    memory_large: int
    latency_audit: int
    pipeline_audit: int


FULL = Sizes(200_000, 10_000, 10_000, 10_000, 1_000_000, 200_000, 200_000)
QUICK = Sizes(50_000, 2_000, 2_000, 10_000, 200_000, 40_000, 50_000)
LATENCY_MS = 150
#: Tap and ceiling pairs per stream in the throughput section (the verdict takes the median).
PAIRS = 3


class Report:
    """Collects result lines, prints them as they come and again at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        """Print a line now and keep it for the summary."""
        print(line, flush=True)
        self.lines.append(line)

    def verdict(self, label: str, ok: bool, detail: str) -> None:
        """One target, met or missed, with the figure that decides it."""
        self.say(f"  [{'MET   ' if ok else 'MISSED'}] {label}: {detail}")


def warm_bytecode_cache() -> None:
    """Let child processes cache bytecode, as an installed tap does after its first start.

    This host exports PYTHONDONTWRITEBYTECODE, under which every tap start recompiles about
    500 modules (0.6 s): a cost no installed tap pays twice, so it stays out of the figures.
    The first process of each kind (the catalog discovery) writes the caches.
    """
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def machine() -> str:
    """CPU count and model, memory and Python: what the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    total = next((ln.split()[1] for ln in mem.splitlines() if ln.startswith("Mem:")), "?")
    import os

    return (
        f"{os.cpu_count()} cores ({model}), {total} GiB RAM, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )


def ceiling_argv(what: str, sim: object) -> list[str]:
    """The ceiling loop's command line against ``sim`` with the classic API token."""
    creds = sim.creds  # type: ignore[attr-defined]
    url = sim.url  # type: ignore[attr-defined]
    return [sys.executable, "-m", "benchmarks.ceiling", what, url, creds.email, creds.classic_token]


def users_minimum(sim: object) -> int:
    """Fewest calls that can list every user and their status: pages of 200, bulk packed tight.

    user/bulk takes at most 200 ids and Atlassian refuses request lines over 8 KiB, so the
    ids are packed greedily into calls under both limits, across search pages.
    """
    import requests

    creds = sim.creds  # type: ignore[attr-defined]
    base = sim.url  # type: ignore[attr-defined]
    ids: list[str] = []
    pages = 0
    with requests.Session() as session:
        session.auth = (creds.email, creds.classic_token)
        for pfilter in ("none", "externalCollaborator"):
            start = 0
            while True:
                pages += 1
                body = session.get(
                    f"{base}/wiki/rest/api/search/user",
                    params={"cql": "type=user", "sitePermissionTypeFilter": pfilter,
                            "start": start, "limit": 200},
                    timeout=60,
                ).json()  # fmt: skip
                ids += [r["user"]["accountId"] for r in body["results"]]
                if len(body["results"]) < 200 or not body["_links"].get("next"):
                    break
                start += 200
    room = 8192 - len("GET /wiki/rest/api/user/bulk?limit=200 HTTP/1.1")
    calls, size, count = 0, room + 1, 200
    for account_id in ids:
        cost = len("&accountId=") + len(quote(account_id, safe=""))
        if count >= 200 or size + cost > room:
            calls, size, count = calls + 1, 0, 0
        size, count = size + cost, count + 1
    return pages + calls


def rate(records: int, run: ProcessRun) -> float:
    """Records per second over the whole process lifetime."""
    return records / run.seconds if run.seconds else 0.0


def fmt_routes(routes: dict[str, int]) -> str:
    """``audit=201, user_current=1``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(routes.items()))


@dataclass
class Pair:
    """One pair's processes against one fresh simulator, and the requests each made."""

    tap: ProcessRun
    ceiling: ProcessRun
    routes: dict[str, int]
    ceiling_routes: dict[str, int]
    #: audit only: the server alone, and the ceiling loop making the tap's very records.
    server: ProcessRun | None = None
    with_ids: ProcessRun | None = None


def run_pair(
    work: Workdir, root: Path, name: str, stream: str, options: dict[str, int], *, first: bool
) -> Pair:
    """Run the tap, the ceiling (and for audit the server alone) against a fresh simulator."""
    what = "audit" if stream == "audit_records" else "users"
    sim = start_simulator(root, name, **options)
    try:
        config = work.write("config", sim.tap_config("classic_token"))
        catalog = catalog_selecting(work, config, {stream})
        sim.control("reset-stats", {})
        tap = run_measured(tap_argv(config, catalog))
        tap.check(f"tap ({stream})")
        routes = requests_by_route(sim)
        sim.control("reset-stats", {})
        ceiling = run_measured(ceiling_argv(what, sim))
        ceiling.check(f"ceiling ({what})")
        pair = Pair(tap, ceiling, routes, requests_by_route(sim))
        if what == "audit":
            pair.server = run_measured(ceiling_argv("serve", sim))
            pair.server.check("server alone")
            # The serving time it measured itself, without the client interpreter's start.
            if found := re.search(r"server alone: \d+ records in ([\d.]+) s", pair.server.stderr):
                pair.server.seconds = float(found.group(1))
            pair.with_ids = run_measured(ceiling_argv("audit-ids", sim))
            pair.with_ids.check("ceiling with ids")
        if what == "users" and first:
            routes["minimum"] = users_minimum(sim)
    finally:
        sim.stop()
    return pair


def throughput(
    report: Report,
    work: Workdir,
    root: Path,
    *,
    stream: str,
    options: dict[str, int],
    total: int,
    pairs: int = PAIRS,
) -> dict[str, int]:
    """Tap against ceiling for one stream; returns the tap's requests per route.

    Each pair runs the tap, then the ceiling, against a fresh simulator (both cold, as a
    first backfill is): one pair moves by 10-20% from one minute to the next on a shared
    host, so the verdict takes the median ratio of ``pairs`` pairs, and every pair is shown.
    """
    what = "audit" if stream == "audit_records" else "users"
    ratios: list[float] = []
    headroom: list[float] = []
    same_data: list[float] = []
    tap_routes: dict[str, int] = {}
    for n in range(pairs):
        pair = run_pair(work, root, f"sim-{what}-{n}", stream, options, first=n == 0)
        tap, ceiling = pair.tap, pair.ceiling
        got = tap.counts.get(stream, 0)
        if got != total:
            msg = f"the tap emitted {got} {stream} records, expected {total}"
            raise RuntimeError(msg)
        tap_rate, ceiling_rate = rate(total, tap), rate(total, ceiling)
        ratios.append(tap_rate / ceiling_rate)
        served = ""
        if pair.server is not None:
            headroom.append(rate(total, pair.server) / ceiling_rate)
            served = (
                f", server alone {pair.server.seconds:.2f} s = {rate(total, pair.server):,.0f}/s "
                f"({headroom[-1]:.1f}x the ceiling)"
            )
        report.say(
            f"  {stream} ({n + 1}/{pairs}): {total:,} records; tap {tap.seconds:.2f} s = "
            f"{tap_rate:,.0f}/s, ceiling {ceiling.seconds:.2f} s = {ceiling_rate:,.0f}/s"
            f"{served}, tap/ceiling {ratios[-1]:.2f}"
        )
        # Wall time is the target; the CPU both spent says what the tap's helpers cost.
        report.say(
            f"    CPU (user + system): tap {tap.cpu_seconds:.2f} s "
            f"({tap.helpers} helper processes), ceiling {ceiling.cpu_seconds:.2f} s"
        )
        if pair.with_ids is not None:
            same_data.append(tap_rate / rate(total, pair.with_ids))
            report.say(
                f"    the ceiling loop making the tap's very records (id, createdAt, cloudId): "
                f"{pair.with_ids.seconds:.2f} s = {rate(total, pair.with_ids):,.0f}/s, tap/that "
                f"{same_data[-1]:.2f}"
            )
        if not tap_routes:
            tap_routes = pair.routes
            report.say(f"    tap requests: {fmt_routes(pair.routes)}")
            report.say(f"    ceiling requests: {fmt_routes(pair.ceiling_routes)}")
    ratio = statistics.median(ratios)
    report.say(
        f"  {stream}: median tap/ceiling {ratio:.2f} of {', '.join(f'{r:.2f}' for r in ratios)}"
    )
    if same_data:
        report.say(
            f"  {stream}: median tap against the same-records loop "
            f"{statistics.median(same_data):.2f} (information, no target)"
        )
    if headroom:
        # The ceiling is honest only if the server could serve much faster than it reads.
        least = min(headroom)
        report.verdict(
            "server alone >= 1.5x the ceiling (every pair)", least >= 1.5, f"least {least:.1f}x"
        )
    if stream == "audit_records":
        report.verdict("tap/ceiling >= 0.6 for audit_records", ratio >= 0.6, f"{ratio:.2f}")
    return tap_routes


def memory(report: Report, work: Workdir, root: Path, sizes: Sizes) -> None:
    """Peak RSS of the tap (with its helper processes) for a small and a large backfill."""
    peaks: dict[int, float] = {}
    for n in (sizes.memory_small, sizes.memory_large):
        sim = start_simulator(root, f"sim-mem-{n}", audit_records=n, users=100)
        try:
            config = work.write("config", sim.tap_config("classic_token"))
            catalog = catalog_selecting(work, config, {"audit_records"})
            run = run_measured(tap_argv(config, catalog))
            run.check(f"tap ({n} audit records)")
        finally:
            sim.stop()
        if run.counts.get("audit_records") != n:
            msg = f"memory run emitted {run.counts} records, expected {n}"
            raise RuntimeError(msg)
        # The tap and its helper processes together: each one's peak, summed.
        peaks[n] = run.total_rss_mb
        helpers = (
            f" = tap {run.max_rss_mb:.1f} + {run.helpers} helpers {run.helpers_rss_mb:.1f}"
            if run.helpers
            else " (no helper process)"
        )
        report.say(
            f"  {n:>9,} audit records: peak RSS {run.total_rss_mb:.1f} MB{helpers} "
            f"({run.seconds:.1f} s, {rate(n, run):,.0f}/s)"
        )
    small, large = peaks[sizes.memory_small], peaks[sizes.memory_large]
    growth = large / small - 1
    report.verdict(f"peak RSS < 150 MB at {sizes.memory_large:,}", large < 150, f"{large:.1f} MB")
    report.verdict(
        f"within 20% of the {sizes.memory_small:,}-record figure",
        growth <= 0.2,
        f"{growth:+.0%}",
    )


def requests_section(
    report: Report, work: Workdir, root: Path, sizes: Sizes, measured: dict[str, dict[str, int]]
) -> None:
    """Requests per stream against the API's minimum; then a no-change incremental run."""
    audit_min = sizes.audit // 1000 + 1
    if "audit_records" in measured:
        routes = measured["audit_records"]
        pages, retention = routes.get("audit", 0), routes.get("audit_retention", 0)
        got = pages + retention
        over = got / audit_min - 1
        report.say(
            f"  audit_records backfill: {got} requests ({pages} audit pages + {retention} "
            f"audit/retention); minimum {audit_min} ({sizes.audit:,} / 1000 a page, "
            "+1 for the short last page)"
        )
        report.verdict("requests within 5% of the minimum (audit)", over <= 0.05, f"{over:+.1%}")
    if "users" in measured:
        routes = measured["users"]
        got = routes.get("search_user", 0) + routes.get("user_bulk", 0)
        minimum = routes["minimum"]
        over = got / minimum - 1
        report.say(
            f"  users: {got} requests ({routes.get('search_user', 0)} search/user + "
            f"{routes.get('user_bulk', 0)} user/bulk); minimum {minimum} (pages of 200, and "
            "user/bulk calls of at most 200 ids in an 8 KiB request line)"
        )
        report.verdict("requests within 5% of the minimum (users)", over <= 0.05, f"{over:+.1%}")
    # A second run straight after the first, with its state and nothing new in the log.
    sim = start_simulator(root, "sim-incremental", audit_records=sizes.memory_small, users=100)
    try:
        config = work.write("config", sim.tap_config("classic_token"))
        catalog = catalog_selecting(work, config, {"audit_records"})
        out = work.path("first-run.jsonl")
        run_measured(tap_argv(config, catalog), stdout=out).check("first incremental run")
        state = work.write("state", last_state(out))
        sim.control("reset-stats", {})
        second = run_measured(tap_argv(config, catalog, state))
        second.check("no-change incremental run")
        routes = requests_by_route(sim)
    finally:
        sim.stop()
    audit_calls = routes.get("audit", 0) + routes.get("audit_retention", 0)
    report.say(
        f"  no-change incremental run (audit_records): {fmt_routes(routes)}; "
        f"{second.counts.get('audit_records', 0)} records re-emitted from the look-back"
    )
    report.verdict(
        "no-change incremental run <= 3 requests per incremental stream",
        audit_calls <= 3,
        f"{audit_calls} audit request(s)",
    )


def latency(report: Report, work: Workdir, root: Path, sizes: Sizes) -> None:
    """Backfill wall time with 150 ms per request: sequential paging against the shipped tap."""
    n = sizes.latency_audit
    sim = start_simulator(root, "sim-latency", audit_records=n, users=100, latency_ms=LATENCY_MS)
    try:
        sequential = run_measured(ceiling_argv("audit", sim))
        sequential.check("sequential paging under latency")
        config = work.write("config", sim.tap_config("classic_token"))
        one = work.write("config", sim.tap_config("classic_token", audit_concurrency=1))
        catalog = catalog_selecting(work, config, {"audit_records"})
        tap_one = run_measured(tap_argv(one, catalog))
        tap_one.check("tap, one window at a time, under latency")
        eight = work.write("config", sim.tap_config("classic_token", audit_concurrency=8))
        tap_eight = run_measured(tap_argv(eight, catalog))
        tap_eight.check("tap, eight windows at a time, under latency")
        sim.control("reset-stats", {})
        shipped = run_measured(tap_argv(config, catalog))
        shipped.check("tap under latency")
        routes = requests_by_route(sim)
    finally:
        sim.stop()
    report.say(
        f"  {n:,} audit records, {LATENCY_MS} ms a request: sequential paging (ceiling loop) "
        f"{sequential.seconds:.1f} s; tap one window at a time {tap_one.seconds:.1f} s; "
        f"tap as shipped ({DEFAULT_CONCURRENCY} windows at a time) {shipped.seconds:.1f} s "
        f"({fmt_routes(routes)})"
    )
    report.say(
        f"    with audit_concurrency=8: {tap_eight.seconds:.1f} s "
        f"({sequential.seconds / tap_eight.seconds:.1f}x faster than sequential paging)"
    )
    speedup = sequential.seconds / shipped.seconds
    report.verdict("backfill >= 3x faster than sequential paging", speedup >= 3, f"{speedup:.1f}x")


def pipeline(report: Report, work: Workdir, root: Path, sizes: Sizes) -> None:
    """End to end into PostgreSQL with `meltano run`: RECORD messages, then batch files."""
    n = sizes.pipeline_audit
    result = run_pipeline(root, work, n)
    records, batches = result.records, result.batches
    report.say(
        f"  {n:,} audit records, meltano run tap-confluence target-postgres (RECORD messages, "
        f"as shipped): {records.seconds:.1f} s = {n / records.seconds:,.0f} records/s"
    )
    report.say(
        f"  {n:,} audit records, meltano run tap-confluence--batch target-postgres (gzip JSONL, "
        f"one file per window): {batches.seconds:.1f} s = {n / batches.seconds:,.0f} records/s"
    )
    same = records.column_types == batches.column_types
    report.say(
        f"    rows loaded {records.rows:,} and {batches.rows:,}, distinct keys "
        f"{records.distinct_ids:,} and {batches.distinct_ids:,}; audit_records column types "
        f"{'the same' if same else 'DIFFERENT'} ({len(records.column_types)} columns)"
    )
    speedup = records.seconds / batches.seconds
    report.verdict("meltano run with batches >= 3x today's records/s", speedup >= 3,
                   f"{speedup:.1f}x")  # fmt: skip
    report.say(
        f"    the tap alone: RECORD messages {result.tap_records:.1f} s, its batch files "
        f"{result.tap_batches:.1f} s, the SDK's own batcher {result.tap_sdk_batches:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print the figures and verdicts."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller data sets (a few minutes)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else FULL
    report = Report()
    warm_bytecode_cache()
    report.say(f"tap-confluence benchmark ({'quick' if args.quick else 'full'}); {machine()}")
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tapconf-bench-"))
    work = Workdir(root)
    measured: dict[str, dict[str, int]] = {}
    try:
        if "throughput" in chosen or "requests" in chosen:
            report.say("\n1-2. Throughput to /dev/null, tap against the ceiling loop")
            measured["audit_records"] = throughput(
                report, work, root, stream="audit_records",
                options={"audit_records": sizes.audit, "users": 100, "preencode_audit": True},
                total=sizes.audit,
            )  # fmt: skip
            measured["users"] = throughput(
                report, work, root, stream="users",
                options={"users": sizes.licensed, "guests": sizes.guests, "audit_records": 100},
                total=sizes.licensed + sizes.guests,
            )  # fmt: skip
        if "memory" in chosen:
            report.say("\n3. Peak memory (RSS) of the tap and its helper processes, summed")
            memory(report, work, root, sizes)
        if "requests" in chosen:
            report.say("\n4. HTTP requests against the minimum the API allows")
            requests_section(report, work, root, sizes, measured)
        if "latency" in chosen:
            report.say(f"\n5. Audit backfill with {LATENCY_MS} ms latency per request")
            latency(report, work, root, sizes)
        if "pipeline" in chosen:
            report.say("\n6. End to end into PostgreSQL (meltano run, target-postgres)")
            pipeline(report, work, root, sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.say(f"\nDone in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
