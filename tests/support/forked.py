"""Start the tap and tap-confluence-auth by forking a process that has already imported them.

`python -m tap_confluence` spends ~0.4 s of CPU importing the SDK, requests and the tap
before it does anything, and the suite starts the tap and the auth CLI some 300 times:
two minutes of CPU on a 2-core machine. So `run_tap` and `run_cli` ask a fork server
instead: one process per test process that imports both once, then forks a child per
run. The child is what `python -m MODULE ARGS` would be from there on: the test's
environment, working directory, argv and stdin/stdout/stderr (the test's own pipes,
passed over a Unix socket), `runpy` running the module as `__main__`, the exit code
reported from `waitpid`. It still talks to the simulator over real sockets and exits
through the tap's own `leave()`.

What a fork cannot change falls back to a real `python -m`: an environment whose PYTHON*,
LANG, LC_* or TZ variables differ from the server's (they act at interpreter start-up), any
other module, and every run when TAP_TESTS_FORK=0. Children of one server share its hash
seed; the packaging, Meltano and kill tests start the installed commands for real.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = ("tap_confluence", "tap_confluence.auth_cli")
#: Variables the interpreter reads once, at start-up (TZ: when `time` is imported); a run
#: that changes one is not forked.
STARTUP_PREFIXES = ("PYTHON", "LANG", "LC_", "TZ")
_HEADER = struct.Struct("!Q")


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES)}


class ForkServer:
    """The client side: one server process per test process, started on first use."""

    def __init__(self) -> None:
        self.env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
        self.dir = Path(tempfile.mkdtemp(prefix="tapconf-fork-"))
        self.path = self.dir / "server.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.forked", str(self.path)],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != b"ready":
            raise RuntimeError(f"the fork server did not start: {ready!r}")

    def accepts(self, module: str, env: dict[str, str]) -> bool:
        """Whether a run of `module` with `env` is the same forked as started afresh."""
        return module in MODULES and _startup_env(env) == _startup_env(self.env)

    def run(
        self,
        module: str,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m module args` as a forked child; stdin is /dev/null."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self.path))
            body = json.dumps({"module": module, "args": args, "env": env, "cwd": str(cwd)})
            data = body.encode()
            socket.send_fds(conn, [_HEADER.pack(len(data))], [stdin, out_w, err_w])
            conn.sendall(data)
        finally:
            for fd in (stdin, out_w, err_w):
                os.close(fd)
        try:
            pid = _HEADER.unpack(_read_exactly(conn, _HEADER.size))[0]
            out, err = _drain(out_r, err_r, pid=pid, args=args, timeout=timeout)
            status = _read_exactly(conn, _HEADER.size)
        finally:
            conn.close()
        code = _HEADER.unpack(status)[0]
        returncode = code - (1 << 64) if code >= 1 << 63 else code
        return subprocess.CompletedProcess(
            [sys.executable, "-m", module, *args], returncode, _text(out), _text(err)
        )

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the server exits at end of input
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise RuntimeError("the fork server hung up")
        data += chunk
    return data


def _drain(
    out_r: int, err_r: int, *, pid: int, args: list[str], timeout: float
) -> tuple[bytes, bytes]:
    """Read the child's stdout and stderr to their ends, as Popen.communicate does."""
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(args, timeout)
                for key, _ in sel.select(left):
                    fd = int(key.fd)
                    chunk = os.read(fd, 1 << 16)
                    if chunk:
                        chunks[fd].append(chunk)
                    else:
                        sel.unregister(fd)
        finally:
            os.close(out_r)
            os.close(err_r)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


def _text(data: bytes) -> str:
    # What text=True gives: the locale's UTF-8 with universal newlines.
    return data.decode("utf-8", errors="strict").replace("\r\n", "\n").replace("\r", "\n")


_SERVER: ForkServer | None = None
_LOCK = threading.Lock()


def server() -> ForkServer | None:
    """This test process's fork server, or None when TAP_TESTS_FORK=0."""
    global _SERVER  # noqa: PLW0603
    if os.environ.get("TAP_TESTS_FORK", "1") == "0":
        return None
    with _LOCK:
        if _SERVER is None:
            _SERVER = ForkServer()
            atexit.register(_SERVER.stop)
        return _SERVER


def run_module(
    module: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path = REPO_ROOT,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` to completion, stdin empty, output captured as text."""
    forks = server()
    if forks is not None and forks.accepts(module, env):
        return forks.run(module, args, env=env, cwd=cwd, timeout=timeout)
    return run_started_afresh(module, args, env=env, cwd=cwd, timeout=timeout)


def run_started_afresh(
    module: str, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` in a new interpreter, as run_module's fallback."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- the server ---------------------------------------------------------------------------


def _serve(path: str) -> None:
    # What `python -m` of either module imports first; runpy runs their __main__ afresh.
    import tap_confluence.auth_cli
    import tap_confluence.tap  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    waiting: dict[int, socket.socket] = {}
    sel = selectors.EpollSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    sel.register(0, selectors.EVENT_READ)
    os.write(1, b"ready\n")
    own_fds = [listener.fileno(), wake_r, wake_w, sel.fileno()]
    while True:
        for key, _ in sel.select(1.0):
            if key.fd == 0:
                if not os.read(0, 4096):
                    return  # the test process is gone or done
            elif key.fd == listener.fileno():
                conn, _ = listener.accept()
                try:
                    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
                    rest = _read_exactly(conn, _HEADER.size - len(header))
                    request = json.loads(_read_exactly(conn, _HEADER.unpack(header + rest)[0]))
                except (OSError, RuntimeError, ValueError):
                    conn.close()  # a test process that went away mid-request
                    continue
                pid = os.fork()
                if pid == 0:
                    held = [c.fileno() for c in waiting.values()]
                    _child(request, fds, [*own_fds, conn.fileno(), *held])
                for fd in fds:
                    os.close(fd)
                waiting[pid] = conn
                conn.sendall(_HEADER.pack(pid))
            else:
                os.read(wake_r, 4096)
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):  # the test gave up on it (a timeout)
                conn.sendall(_HEADER.pack(code % (1 << 64)))
            conn.close()


def _child(request: dict[str, object], fds: list[int], close: list[int]) -> None:
    """Become `python -m MODULE ARGS`; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(str(request["cwd"]))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        args = request["args"]
        assert isinstance(args, list)
        sys.argv = ["-m", *args]
        runpy.run_module(str(request["module"]), run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report as the interpreter does
        traceback.print_exc()
    # The interpreter's own exit, in its order: other threads finish, exit handlers run
    # (the tap's leave() has done both when it ends the run itself), stdout and stderr flush.
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if callable(shutdown):
            shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _serve(sys.argv[1])
