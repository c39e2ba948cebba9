"""A throwaway PostgreSQL server on a free loopback port, for the pipeline tests and demos.

Run as a script (`scripts/pg start|stop DATADIR`) or use `ThrowawayPostgres` from Python.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SETUP_HINT = "run ./scripts/setup, which installs postgresql-15 from Debian's packages"


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL cannot be started here; the message says why and what to do."""


def find_bindir() -> Path:
    """Return the directory with initdb and pg_ctl, newest major version first."""
    override = os.environ.get("PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries (initdb, pg_ctl) were not found under "
        f"/usr/lib/postgresql/*/bin: {SETUP_HINT}."
    )


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory, trust auth, fsync off, loopback only."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tapconf-pg-")))
    port: int = 0
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def _as_owner(self, argv: list[str]) -> list[str]:
        # initdb and the server refuse to run as root, so run them as the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self) -> ThrowawayPostgres:
        """Create the cluster and start the server; raise PostgresUnavailableError if it fails."""
        bindir = find_bindir()
        # Every parent must be traversable by the postgres user when we run as root.
        self.root.chmod(0o755)
        self.datadir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        last_error = ""
        for _ in range(3):  # another process may grab the port between probe and bind
            self.port = free_port()
            options = (
                f"-c listen_addresses={self.host} -p {self.port} -k {self.datadir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.datadir / "server.log"),
                        "-w",
                        "-t",
                        "30",
                        "-o",
                        options,
                        "start",
                    ]
                )
            except PostgresUnavailableError as exc:
                last_error = str(exc)
                continue
            return self
        raise PostgresUnavailableError(last_error)

    def stop(self) -> None:
        """Stop the server this object started and delete its directory."""
        if (self.datadir / "postmaster.pid").exists():
            pg_ctl = str(find_bindir() / "pg_ctl")
            subprocess.run(
                self._as_owner([pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """Return a libpq connection URL for `database`."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(self._as_owner(argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.datadir / "server.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise PostgresUnavailableError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-800:]} {tail}".strip()
            )


def main(argv: list[str] | None = None) -> int:
    """`start` prints shell exports for a new server; `stop ROOT` stops and removes it."""
    parser = argparse.ArgumentParser(prog="scripts/pg", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("start", help="start a throwaway server and print its settings")
    stop = sub.add_parser("stop", help="stop the server started in ROOT and delete ROOT")
    stop.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "stop":
        if not (args.root / "data" / "PG_VERSION").exists():
            print(
                f"scripts/pg: no server started by scripts/pg in {args.root}; nothing stopped.",
                file=sys.stderr,
            )
            return 1
        ThrowawayPostgres(root=args.root).stop()
        return 0
    try:
        pg = ThrowawayPostgres().start()
    except PostgresUnavailableError as exc:
        print(f"scripts/pg: {exc}", file=sys.stderr)
        return 1
    print(f"export PGHOST={pg.host} PGPORT={pg.port} PGUSER={pg.user}")
    print(f"export TARGET_POSTGRES_HOST={pg.host} TARGET_POSTGRES_PORT={pg.port}")
    print(f"export TARGET_POSTGRES_USER={pg.user} TARGET_POSTGRES_DATABASE=postgres")
    print("export TARGET_POSTGRES_PASSWORD=unused  # trust auth; target-postgres wants one")
    print(f"# stop with: scripts/pg stop {pg.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
