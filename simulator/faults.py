"""Switchable, deterministic faults: rate limits, 5xx, resets, truncation, latency, live appends.

Every-Nth faults count eligible requests (all routes except /_sim/, optionally only the routes
in `routes`), so a test that makes the same requests sees the same faults. `error_rate` draws
from a generator seeded with --seed.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, fields
from typing import Any

HUGE_RETRY_AFTER = "9223372036854775807"


@dataclass
class FaultConfig:
    """Fault switches; zero or empty means off."""

    rate_limit_every: int = 0
    rate_limit_burst: int = 1
    retry_after: str = "1"
    error_every: int = 0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504])
    reset_every: int = 0
    truncate_every: int = 0
    bad_json_every: int = 0
    latency_ms: int = 0
    append_every: int = 0
    append_count: int = 0
    late_every: int = 0
    late_count: int = 0
    late_by_ms: int = 3_600_000
    routes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FaultConfig:
        """Build from JSON/CLI options; the issue's compound names are accepted too."""
        body = dict(body)
        if "append_during_paging" in body:
            every, count = _pair(body.pop("append_during_paging"), "every", "count")
            body["append_every"], body["append_count"] = every, count
        if "late_records" in body:
            spec = body.pop("late_records")
            every, count = _pair(spec, "every", "count")
            body["late_every"], body["late_count"] = every, count
            if isinstance(spec, dict) and "late_by_ms" in spec:
                body["late_by_ms"] = spec["late_by_ms"]
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(unknown)}")
        cfg = cls()
        for name, value in body.items():
            try:
                setattr(cfg, name, _convert(name, getattr(cfg, name), value))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{name} must be a {_kind(getattr(cfg, name))}, got {value!r}"
                ) from None
        return cfg

    def as_dict(self) -> dict[str, Any]:
        """Return the options as JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _kind(current: Any) -> str:
    if isinstance(current, list):
        return "comma-separated list"
    return "number" if isinstance(current, int | float) else "string"


def _convert(name: str, current: Any, value: Any) -> Any:
    if isinstance(current, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return [int(v) if name == "error_statuses" else str(v) for v in value]
    if isinstance(current, float):
        return float(value)
    if isinstance(current, int):
        return int(value)
    return str(value)


def _pair(spec: Any, a: str, b: str) -> tuple[int, int]:
    if isinstance(spec, dict):
        return int(spec.get(a, 0)), int(spec.get(b, 0))
    if isinstance(spec, str) and ":" in spec:
        x, y = spec.split(":", 1)
        return int(x), int(y)
    if isinstance(spec, list | tuple) and len(spec) == 2:
        return int(spec[0]), int(spec[1])
    raise ValueError("expected EVERY:COUNT, [every, count] or {'every': K, 'count': M}")


@dataclass
class Decision:
    """What to do to one request: an early status, and/or a damaged body."""

    status: int | None = None
    body_fault: str | None = None  # reset | truncate | bad_json
    latency_ms: int = 0


class FaultInjector:
    """Decides faults per request and counts every one it injects."""

    def __init__(self, seed: int, config: FaultConfig | None = None) -> None:
        self.seed = seed
        self.lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the fault switches and restart their counters."""
        with self.lock:
            self.config = config
            self.eligible = 0
            self.audit_requests = 0
            self.rng = random.Random(self.seed)

    def count(self, kind: str, n: int = 1) -> None:
        """Record n injected faults of one kind."""
        with self.lock:
            self.injected[kind] = self.injected.get(kind, 0) + n

    def decide(self, route: str) -> Decision:
        """Pick the fault (if any) for the next request to `route`."""
        c = self.config
        if c.routes and route not in c.routes:
            return Decision()
        with self.lock:
            self.eligible += 1
            n = self.eligible
            d = Decision(latency_ms=c.latency_ms)
            every = c.rate_limit_every
            if every and n >= every and n % every < max(1, c.rate_limit_burst):
                d.status = 429
            if d.status is None and c.error_every and n % c.error_every == 0:
                d.status = c.error_statuses[(n // c.error_every) % len(c.error_statuses)]
            if d.status is None and c.error_rate and self.rng.random() < c.error_rate:
                d.status = self.rng.choice(c.error_statuses)
            if d.status is None:
                for kind, every in (
                    ("reset", c.reset_every),
                    ("truncate", c.truncate_every),
                    ("bad_json", c.bad_json_every),
                ):
                    if every and n % every == 0:
                        d.body_fault = kind
                        break
        if d.latency_ms:
            self.count("latency")
        if d.status is not None:
            self.count("rate_limit" if d.status == 429 else f"error_{d.status}")
        if d.body_fault:
            self.count(d.body_fault)
        return d

    def audit_tick(self) -> tuple[int, int, int]:
        """Count one audit request; return (append now, late now, late_by_ms)."""
        c = self.config
        with self.lock:
            self.audit_requests += 1
            n = self.audit_requests
        append = c.append_count if c.append_every and n % c.append_every == 0 else 0
        late = c.late_count if c.late_every and n % c.late_every == 0 else 0
        return append, late, c.late_by_ms
