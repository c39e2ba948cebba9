"""``python -m benchmarks.profile [--records N] [--top K]``: where the tap's time goes.

Runs the tap under cProfile against a fresh simulator (audit_records only, stdout to
/dev/null) and prints the top entries by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO, Workdir, catalog_selecting, start_simulator


def main(argv: list[str] | None = None) -> int:
    """Profile one audit_records sync and print the top entries."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    from benchmarks.__main__ import warm_bytecode_cache

    warm_bytecode_cache()
    with tempfile.TemporaryDirectory(prefix="tapconf-profile-") as tmp:
        root = Path(tmp)
        work = Workdir(root)
        sim = start_simulator(
            root, "sim", audit_records=args.records, users=100, preencode_audit=True
        )
        try:
            config = work.write("config", sim.tap_config("classic_token"))
            catalog = catalog_selecting(work, config, {"audit_records"})
            out = root / "tap.prof"
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "tap_confluence",
                 "--config", str(config), "--catalog", str(catalog)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
            )  # fmt: skip
            seconds = time.perf_counter() - started
        finally:
            sim.stop()
        print(f"{args.records:,} audit records under cProfile: {seconds:.1f} s wall")
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            stats = pstats.Stats(str(out), stream=text)
            stats.strip_dirs().sort_stats(order).print_stats(args.top)
            body = text.getvalue()
            print(f"\n--- top {args.top} by {order} ---")
            print(body[body.index("ncalls") :].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
