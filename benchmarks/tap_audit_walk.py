"""Measure audit_records over the simulator: wall time, requests against records/1000, peak RSS.

Run: .venv/bin/python -m benchmarks.tap_audit_walk [records ...]  (default 200000)
Each size starts a fresh simulator, runs the tap CLI (audit_records only) to /dev/null and
reports what the simulator counted. Figures are machine-dependent; see the report in the tap's
issue for the numbers measured on the project machine.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulator.process import SimulatorProcess

REPO = Path(__file__).resolve().parents[1]


def _catalog(config_path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tap_confluence", "--config", str(config_path), "--discover"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    catalog = json.loads(out)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] == "audit_records"
    return catalog


def measure(records: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sim = SimulatorProcess(tmp_path / "sim", audit_records=records, users=20, groups=2)
        try:
            config = tmp_path / "config.json"
            config.write_text(json.dumps(sim.tap_config("classic_token")))
            catalog = tmp_path / "catalog.json"
            catalog.write_text(json.dumps(_catalog(config)))
            sim.control("reset-stats", {})
            start = time.perf_counter()
            with open("/dev/null", "w") as sink:
                subprocess.run(
                    [sys.executable, "-m", "tap_confluence", "--config", str(config),
                     "--catalog", str(catalog)],
                    cwd=REPO, stdout=sink, stderr=subprocess.DEVNULL, check=True,
                )  # fmt: skip
            seconds = time.perf_counter() - start
            audit_requests = sim.stats()["requests"].get("audit", 0)
        finally:
            sim.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "audit_requests": audit_requests,
        "ideal_requests": -(-records // 1000),
        "overhead_pct": round(100 * (audit_requests / (records / 1000) - 1), 1),
        "peak_rss_mb_any_child": round(rss_mb, 1),
    }


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [200_000]
    for size in sizes:
        print(json.dumps(measure(size)))
