"""Run the tap against the simulator (in-process or as a process), keep figures, scan for leaks.

Every tap run writes into its own directory under ``<tmp>/runs/``; token stores live under
``<tmp>/store*/``. The leak scan reads exactly those, so inputs the tests write themselves (the
config holds the client secret on purpose) are never mistaken for the tap's output.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from singer_sdk.logging import ConsoleFormatter

from simulator.process import REPO_ROOT, SimulatorProcess
from tap_confluence.tap import TapConfluence
from tests.support.tap_cli import select_streams as select_streams  # noqa: PLC0414 (a re-export)

_RUN_IDS = itertools.count(1)
_INPROCESS_LOCK = threading.Lock()

#: Primary keys of the streams the reliability suite compares, as the tap declares them.
KEYS = {
    "users": ("cloudId", "accountId"),
    "groups": ("cloudId", "id"),
    "group_members": ("cloudId", "groupId", "accountId"),
    "license_subscriptions": ("cloudId", "snapshotDate"),
    "audit_records": ("cloudId", "id"),
}


class Figures:
    """Counters the suite reports at the end (runs, faults, records compared, kills)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.notes: dict[str, Any] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def add_faults(self, stats: dict[str, Any]) -> None:
        for kind, n in stats.get("faults_injected", {}).items():
            self.faults[kind] += int(n)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "faults_injected": dict(sorted(self.faults.items())),
            "notes": self.notes,
        }


FIGURES = Figures()
FIGURES_PATH = Path(__file__).with_name("last-figures.json")
#: Where an xdist worker leaves its figures for the controller (``workeroutput``).
FIGURES_KEY = "reliability_figures"


def add_up_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the figures of several xdist workers: every count, fault and note is a number."""
    total: dict[str, Any] = {"counts": Counter(), "faults_injected": Counter(), "notes": Counter()}
    for part in parts:
        for section, counter in total.items():
            counter.update(part.get(section, {}))
    return {section: dict(sorted(counter.items())) for section, counter in total.items()}


def write_figures(data: dict[str, Any]) -> None:
    """Write the figures to stderr and last-figures.json."""
    FIGURES_PATH.write_text(json.dumps(data, indent=2) + "\n")
    sys.stderr.write("\nreliability figures: " + json.dumps(data, indent=2) + "\n")


class LeakWatch:
    """Knows every secret in play and every place the tap wrote; scans them."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        #: Secrets no token store may ever hold, sealed or not: client secret, API tokens, keys.
        self.never_stored: set[str] = set()
        self.live: list[SimulatorProcess] = []
        self.bytes_scanned = 0
        self.files_scanned = 0
        self.stores_checked = 0

    def harvest(self, sim: SimulatorProcess) -> None:
        """Add every token this simulator issued, and its static fake secrets."""
        listing = sim.control("tokens")
        for entry in listing["access_tokens"] + listing["refresh_tokens"]:
            self.secrets.add(entry["token"])
        self.secrets.update(listing["secrets"])
        self.secrets.update(sim.creds.secrets())
        c = sim.creds
        self.never_stored.update([c.client_secret, c.classic_token, c.scoped_token, c.org_api_key])

    def scan_tree(self, root: Path) -> list[str]:
        """Return findings for everything the tap wrote under ``root``."""
        for sim in self.live:
            if sim.proc.poll() is None:
                self.harvest(sim)
        findings: list[str] = []
        secrets = [s.encode() for s in self.secrets if len(s) >= 8]
        for run_dir in sorted(root.glob("runs/*")):
            for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
                findings += self._scan_file(path, secrets)
        for store_dir in sorted(p for p in root.glob("store*") if p.is_dir()):
            findings += self._check_store_dir(store_dir, secrets)
        return findings

    def _scan_file(self, path: Path, secrets: list[bytes]) -> list[str]:
        data = path.read_bytes()
        self.files_scanned += 1
        self.bytes_scanned += len(data)
        return [f"{path}: holds a secret ({s[:10].decode()}...)" for s in secrets if s in data]

    def _check_store_dir(self, store_dir: Path, secrets: list[bytes]) -> list[str]:
        """A token store: every directory 0700, every store 0600 without a never-stored secret,
        no symlink, no temp file left behind, and nothing else holding a secret."""
        findings = []
        never = [s.encode() for s in self.never_stored if len(s) >= 8]
        entries = sorted(store_dir.rglob("*"))
        for directory in [store_dir, *(p for p in entries if p.is_dir() and not p.is_symlink())]:
            mode = directory.stat().st_mode & 0o777
            if mode != 0o700:
                findings.append(f"{directory}: mode {mode:o}, not 700")
        for path in entries:
            if path.is_symlink():
                findings.append(f"{path}: a symbolic link in a token store")
            elif not path.is_file():
                continue
            elif path.suffix == ".json" and not path.name.startswith("."):
                self.stores_checked += 1
                mode = path.stat().st_mode & 0o777
                if mode != 0o600:
                    findings.append(f"{path}: mode {mode:o}, not 600")
                findings += [
                    f"{path}: holds a secret no store may keep ({s[:10].decode()}...)"
                    for s in never
                    if s in path.read_bytes()
                ]
            else:
                if path.name.endswith(".tmp"):
                    findings.append(f"{path}: a temp file left behind by a save")
                findings += self._scan_file(path, secrets)
        return findings


LEAKS = LeakWatch()


@dataclass
class Run:
    """One tap run: exit code, what it printed, and the exception if it crashed in-process."""

    returncode: int
    stdout: str
    stderr: str
    crashed: BaseException | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    def last_state(self) -> dict[str, Any] | None:
        states = self.states()
        return states[-1] if states else None

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if "| ERROR" in ln or "ERROR" in ln[:40]]

    def assert_clean_failure(self) -> str:
        """A failed run must end with one error sentence: no traceback, no crash."""
        assert self.crashed is None, f"crashed with {type(self.crashed).__name__}: {self.crashed}"
        assert self.returncode != 0
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        errors = [e for e in self.error_lines() if not any(g in e for g in SDK_TRAILERS)]
        assert errors, f"no error line; stderr tail: {self.stderr[-2000:]}"
        return errors[-1]


#: Generic lines the SDK logs around the tap's own error sentence.
SDK_TRAILERS = ("Config validation failed", "An unhandled error occurred while syncing")


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Parse whole Singer lines; a line cut by a kill (no newline) is dropped."""
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def new_run_dir(root: Path) -> Path:
    run_dir = root / "runs" / f"{next(_RUN_IDS):05d}"
    run_dir.mkdir(parents=True)
    return run_dir


def write_inputs(
    root: Path,
    config: dict[str, Any],
    state: dict[str, Any] | None,
    catalog: dict[str, Any] | None,
) -> list[str]:
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    tag = f"{next(_RUN_IDS):05d}"
    args = ["--config", str(_dump(inputs / f"config-{tag}.json", config))]
    if state is not None:
        args += ["--state", str(_dump(inputs / f"state-{tag}.json", state))]
    if catalog is not None:
        args += ["--catalog", str(_dump(inputs / f"catalog-{tag}.json", catalog))]
    return args


def _dump(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def run_inprocess(
    root: Path,
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    args: list[str] | None = None,
) -> Run:
    """Run the tap's real click command in this process, its output captured to files.

    An exception escaping the command is what the CLI would print as a traceback; it is
    returned in ``crashed`` rather than raised, so tests can assert it never happens.
    """
    FIGURES.add("tap_runs_in_process")
    run_dir = new_run_dir(root)
    argv = args if args is not None else write_inputs(root, config, state, catalog)
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter())
    crashed: BaseException | None = None
    code = 0
    with (
        _INPROCESS_LOCK,
        (run_dir / "stdout").open("w", encoding="utf-8") as out,
        (run_dir / "stderr").open("w", encoding="utf-8") as err,
    ):
        handler.setStream(err)
        root_logger = logging.getLogger()
        old_level = root_logger.level
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.INFO)
        # The SDK installs SIGTERM/SIGINT handlers per tap; keep them out of the test process.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                # Without standalone mode click returns an Exit's code instead of raising it.
                result = TapConfluence.get_singer_command().main(argv, standalone_mode=False)
            code = result if isinstance(result, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except click.ClickException as exc:
            err.write(f"Error: {exc.format_message()}\n")
            code = exc.exit_code
        except Exception as exc:  # noqa: BLE001 - the very thing under test
            crashed, code = exc, 1
        finally:
            for sig, previous in handlers.items():
                signal.signal(sig, previous)
            root_logger.removeHandler(handler)
            root_logger.setLevel(old_level)
    stdout = (run_dir / "stdout").read_text(encoding="utf-8")
    stderr = (run_dir / "stderr").read_text(encoding="utf-8")
    messages = parse_lines(stdout) if "--discover" not in argv else []
    return Run(code, stdout, stderr, crashed, messages)


def tap_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_CONFLUENCE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def start_process(
    root: Path,
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    module: str = "tap_confluence",
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the tap CLI as a process writing stdout and stderr to files in a new run dir."""
    FIGURES.add("tap_runs_as_process")
    run_dir = new_run_dir(root)
    argv = [sys.executable, "-m", module, *write_inputs(root, config, state, catalog)]
    with (run_dir / "stdout").open("wb") as out, (run_dir / "stderr").open("wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=err, env=env or tap_env())
    return proc, run_dir


def finish_process(proc: subprocess.Popen[bytes], run_dir: Path, timeout: float = 300) -> Run:
    """Wait for a process started by start_process (killing it by pid on timeout)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    stdout = (run_dir / "stdout").read_text(encoding="utf-8")
    stderr = (run_dir / "stderr").read_text(encoding="utf-8")
    return Run(proc.returncode, stdout, stderr, None, parse_lines(stdout))


def run_process(root: Path, config: dict[str, Any], **kwargs: Any) -> Run:
    """Run the tap CLI as a process to completion."""
    proc, run_dir = start_process(root, config, **kwargs)
    return finish_process(proc, run_dir)


def kill_after_lines(
    proc: subprocess.Popen[bytes], run_dir: Path, lines: int, timeout: float = 120
) -> Run:
    """SIGKILL the process once its stdout holds ``lines`` lines (or it ends, or time runs out)."""
    path = run_dir / "stdout"
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with path.open("rb") as f:
            count = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if count >= lines:
            break
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stdout = path.read_text(encoding="utf-8", errors="replace")
    run = Run(proc.returncode, stdout, (run_dir / "stderr").read_text(), None, parse_lines(stdout))
    if killed:
        FIGURES.add("kills")
    return run


def capture_text(buffer: io.StringIO) -> str:
    return buffer.getvalue()


def discover(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    run = run_inprocess(root, config, args=[*write_inputs(root, config, None, None), "--discover"])
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def by_key(run_records: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    """Index records by primary key, asserting that repeats of a key carry identical records."""
    out: dict[tuple[Any, ...], Any] = {}
    for record in run_records:
        key = tuple(record[k] for k in keys)
        if key in out:
            assert out[key] == record, f"two different records share the key {key}"
        out[key] = record
    return out


GROUP_SCOPES = [
    "read:content-details:confluence",
    "read:audit-log:confluence",
    "read:configuration:confluence",
    "read:group:confluence",
    "read:user:confluence",
    "offline_access",
]


def tap_config(
    sim: SimulatorProcess, root: Path, mode: str = "oauth", store: str = "store", **overrides: Any
) -> dict[str, Any]:
    """The simulator's config for ``mode`` with the token store in ``root/store``."""
    path = root / store / "tokens.json"
    return sim.tap_config(mode, token_store_path=str(path), **overrides)


def oauth_with_groups(sim: SimulatorProcess, root: Path, **overrides: Any) -> dict[str, Any]:
    """OAuth config whose grant includes the group scopes, so every stream is extracted."""
    token = sim.control("grant", {"scopes": GROUP_SCOPES, "admin": True})["refresh_token"]
    return tap_config(sim, root, "oauth", refresh_token=token, **overrides)
