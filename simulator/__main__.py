"""Command line: `python -m simulator --port N [options]` prints `READY <url>` and serves."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from simulator.auth import Credentials
from simulator.faults import FaultConfig
from simulator.options import DataOptions, parse_when
from simulator.server import make_server
from simulator.site import Simulator
from simulator.strict import Strictness

FAULT_HELP = {
    "rate_limit_every": "answer every Nth request with 429",
    "rate_limit_burst": "each rate-limit episode lasts K consecutive requests",
    "retry_after": "Retry-After value on 429/503 (e.g. 9223372036854775807)",
    "error_every": "answer every Nth request with a 5xx (cycling through --error-statuses)",
    "error_rate": "fraction of requests answered with a random 5xx (seeded)",
    "error_statuses": "comma-separated 5xx statuses to use",
    "reset_every": "every Nth response: send headers and half the body, then TCP RST",
    "truncate_every": "every Nth response: full Content-Length but half the body, then close",
    "bad_json_every": "every Nth response: a complete 200 whose JSON is cut in half",
    "latency_ms": "added latency per request",
    "append_every": "every K audit requests append --append-count records at the newest end",
    "append_count": "records appended each time",
    "late_every": "every K audit requests insert --late-count late records",
    "late_count": "late records inserted each time",
    "late_by_ms": "how far before the newest record late records are dated",
    "routes": "comma-separated route names faults apply to (default: all but /_sim/)",
}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (data sizes, credentials, token lifetimes, faults)."""
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--verbose", action="store_true", help="log each request on stderr")
    p.add_argument("--page-cache-mb", type=int, default=1024, help="memory for encoded audit pages")
    p.add_argument(
        "--preencode-audit",
        action="store_true",
        help="encode the whole audit log at start (about 0.6 KB a record), so every page is a "
        "slice of bytes: for benchmarks, where building pages would cap what is measured",
    )
    d = DataOptions()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--users", type=int, default=d.users, help="licensed users")
    p.add_argument("--guests", type=int, default=d.guests, help="guests (external collaborators)")
    p.add_argument("--groups", type=int, default=d.groups)
    p.add_argument("--memberships-per-user", type=int, default=d.memberships_per_user)
    p.add_argument("--audit-records", type=int, default=d.audit_records)
    p.add_argument("--audit-start", default="2026-01-01T00:00:00Z", help="ISO date or epoch ms")
    p.add_argument("--audit-end", default="2026-11-01T00:00:00Z", help="ISO date or epoch ms")
    p.add_argument("--content", type=int, default=d.content, help="content items for CQL search")
    p.add_argument("--max-users", type=int, default=None, help="licence tier (default: next tier)")
    p.add_argument(
        "--org-only-accounts",
        type=int,
        default=None,
        help="managed accounts of the organization not on this site (default: users // 20)",
    )
    p.add_argument("--site-url", default="", help="URL used in links (default: own URL)")
    p.add_argument("--token-ttl", type=int, default=3600, help="access token expires_in, seconds")
    p.add_argument(
        "--reuse-leeway", type=int, default=600, help="seconds a rotated refresh token still works"
    )
    c = Credentials()
    for f in fields(Credentials):
        p.add_argument("--" + f.name.replace("_", "-"), default=getattr(c, f.name))
    fc = FaultConfig()
    for f in fields(FaultConfig):
        default = getattr(fc, f.name)
        if isinstance(default, list):
            default = ",".join(str(x) for x in default)
        p.add_argument(
            "--" + f.name.replace("_", "-"), default=str(default), help=FAULT_HELP.get(f.name)
        )
    p.add_argument(
        "--strict",
        action="store_true",
        help="as unkind as Atlassian's docs allow: page caps, no search/user next links, CQL "
        "in UTC-7, licence endpoints gone, v1 user/bulk gone, 504 on big pages, real user "
        "fields, CAPTCHA after 3 failed logins (simulator/strict.py)",
    )
    p.add_argument(
        "--strict-json",
        default="{}",
        help="strict switches as JSON on top of --strict, e.g. '{\"oauth_quota\": 50}'",
    )
    p.add_argument("--append-during-paging", default=None, metavar="K:M", help="append M every K")
    p.add_argument("--late-records", default=None, metavar="K:M", help="late M every K")
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the server, print READY and serve until killed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        start, end = parse_when(args.audit_start), parse_when(args.audit_end)
    except ValueError:
        parser.error("--audit-start and --audit-end take an ISO 8601 date or epoch milliseconds")
    if end < start:
        parser.error("--audit-end is before --audit-start; swap them")
    opts = DataOptions(
        seed=args.seed,
        users=args.users,
        guests=args.guests,
        groups=args.groups,
        memberships_per_user=args.memberships_per_user,
        audit_records=args.audit_records,
        audit_start=start,
        audit_end=end,
        content=args.content,
        max_users=args.max_users,
        org_only_accounts=args.org_only_accounts,
        site_url=args.site_url.rstrip("/"),
    )
    creds = Credentials(**{f.name: getattr(args, f.name) for f in fields(Credentials)})
    fault_opts = {f.name: getattr(args, f.name) for f in fields(FaultConfig)}
    if args.append_during_paging:
        fault_opts["append_during_paging"] = args.append_during_paging
    if args.late_records:
        fault_opts["late_records"] = args.late_records
    try:
        faults = FaultConfig.from_dict(fault_opts)
    except ValueError as e:
        print(f"simulator: bad fault option: {e}", file=sys.stderr)
        return 2
    try:
        switches = json.loads(args.strict_json)
        strict = Strictness.from_dict({"preset": args.strict, **switches})
    except (ValueError, TypeError) as e:
        print(f"simulator: bad strict option: {e}", file=sys.stderr)
        return 2
    sim = Simulator(
        opts,
        creds,
        faults,
        token_ttl=args.token_ttl,
        reuse_leeway=args.reuse_leeway,
        verbose=args.verbose,
        page_cache_mb=args.page_cache_mb,
        strict=strict,
        preencode_audit=args.preencode_audit,
    )
    try:
        server = make_server(sim, args.host, args.port)
    except OSError as e:
        print(
            f"simulator: cannot listen on {args.host}:{args.port} ({e.strerror})", file=sys.stderr
        )
        return 2
    print(f"READY {sim.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
