"""Every shared fixture: the simulator, a session PostgreSQL and Meltano project, pipelines.

Nothing here skips: when PostgreSQL or Meltano is missing the tests that need them fail and
say how to install it, so CI can never pass by running none of them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.postgres import PostgresUnavailableError, ThrowawayPostgres
from simulator.process import SimulatorProcess
from tests.support.meltano import MELTANO, REPO, MeltanoProject, PipelineSite
from tests.support.pg_store import TokenServer

# This host exports PYTHONDONTWRITEBYTECODE=1, under which each of the suite's hundreds of tap,
# simulator, Meltano and target processes compiles singer-sdk, SQLAlchemy or Meltano from
# source again: a Meltano start-up costs 4 s instead of 1.3 s. Caching bytecode changes nothing
# under test (an installed tap caches it too); tests about file limits still set it themselves.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


@pytest.fixture
def simulator_factory(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators with options (`users=10`, `rate_limit_every=3`, ...); all stop after."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", **options)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    """A fresh simulator with the default data set."""
    return simulator_factory()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One PostgreSQL server for the whole session, stopped by the datadir it started."""
    try:
        pg = ThrowawayPostgres().start()
    except PostgresUnavailableError as exc:
        pytest.fail(f"the pipeline tests need PostgreSQL: {exc}", pytrace=False)
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def start_simulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators as processes (`start_simulator(seed=42, ...)`); all stop at session end."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path_factory.mktemp("simulator"), **options)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


#: Names the directory of the session's one Meltano install (see installed_meltano_project).
SHARED_MELTANO = "TAP_TESTS_MELTANO_INSTALL"


def pytest_configure(config: pytest.Config) -> None:
    """On the controller (or the only process), make the directory of the Meltano install."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[SHARED_MELTANO] = tempfile.mkdtemp(prefix="tapconf-meltano-")


@pytest.fixture(scope="session")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeltanoProject]:
    """The repo's meltano.yml in a temporary project, so tests never touch a developer's state.

    `meltano install` runs once per test session, into a project the xdist workers share
    (`installed_meltano_project`); each test process gets a project of its own beside it,
    whose plugin directories link to that install, as orchestrator workers share one image.
    Meltano writes a run's files (`.meltano/run`, tokens) under the project, never under the
    plugin directories, so two workers never write the same file.
    """
    installed = installed_meltano_project(tmp_path_factory)
    root = tmp_path_factory.mktemp("meltano-project")
    (root / "meltano.yml").write_text((installed / "meltano.yml").read_text())
    (root / ".meltano").mkdir()
    for kind in ("extractors", "loaders"):
        (root / ".meltano" / kind).symlink_to(installed / ".meltano" / kind)
    yield MeltanoProject(root)
    shutil.rmtree(root, ignore_errors=True)


def installed_meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one Meltano project with its plugins installed; made by the first caller.

    Its directory is the one pytest_configure made for the session (the xdist workers
    inherit its path); pytest_sessionfinish removes it (the plugin virtualenvs are the bulk).
    """
    if not MELTANO.is_file():
        pytest.fail(
            f"the pipeline tests need Meltano at {MELTANO.relative_to(REPO)}: "
            "run ./scripts/setup, which installs it",
            pytrace=False,
        )
    shared = Path(os.environ[SHARED_MELTANO])
    root = shared / "project"
    with (shared / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait for the install
        if (root / ".installed").is_file():
            return root
        shutil.rmtree(root, ignore_errors=True)  # a worker that died mid-install
        root.mkdir()
        text = (REPO / "meltano.yml").read_text()
        # The tap is installed editable from this checkout, so the run exercises this code.
        text = text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n")
        assert f"-e {REPO}" in text, "meltano.yml no longer installs the tap with `pip_url: -e .`"
        (root / "meltano.yml").write_text(text)
        install_dir = tmp_path_factory.mktemp("meltano-install")
        MeltanoProject(root).meltano("install", run_dir=install_dir, env={})
        (root / ".installed").touch()
        return root


@pytest.fixture(scope="module")
def pipeline(
    meltano_project: MeltanoProject,
    postgres: ThrowawayPostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PipelineSite]:
    """A fresh database and Meltano system DB, wired to target-postgres, for one test module."""
    run_dir = tmp_path_factory.mktemp("pipeline")
    database = f"tap_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    env = {
        "TARGET_POSTGRES_HOST": postgres.host,
        "TARGET_POSTGRES_PORT": str(postgres.port),
        "TARGET_POSTGRES_USER": postgres.user,
        # Trust auth ignores it, but target-postgres insists on having one.
        "TARGET_POSTGRES_PASSWORD": "not-a-real-password",
        "TARGET_POSTGRES_DATABASE": database,
    }
    site = PipelineSite(meltano_project, postgres, run_dir, database, env)
    yield site
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def token_db_url(postgres: ThrowawayPostgres) -> str:
    """A fresh database of the session's PostgreSQL, for one test."""
    return postgres.create_database(f"tokh_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def token_server() -> Iterator[Callable[..., TokenServer]]:
    """Start loopback token servers (`token_server(delay=...)`); all stop after the test."""
    started: list[TokenServer] = []

    def start(delay: float = 0.0) -> TokenServer:
        server = TokenServer(delay)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# ---- running in parallel (pytest-xdist, `-n auto --dist loadfile` in scripts/test) ----------
# loadfile keeps a module's tests on one worker, so module fixtures are still built once; each
# worker has its own session PostgreSQL and Meltano project, on free ports and in its own
# temporary directory. (loadgroup would also pin the Meltano modules to one worker, but
# pytest-xdist 3.8 cannot set the group on pytest 9's node ids, so its groups do nothing.)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` starts one worker more than there are cores.

    Most tests wait on a subprocess (the tap, Meltano, a target) starting up or on a socket,
    so with one worker per core a core sits idle now and then; on 2 cores the daily loop
    (`-m "not slow"`) took 145 s with 3 workers against 162 s with 2, at the same CPU time.
    PYTEST_XDIST_AUTO_NUM_WORKERS still chooses, as xdist documents.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, modules with a slow test go first (collection order otherwise).

    With `--no-loadscope-reorder` xdist hands out modules in this order, so the long Meltano
    and reliability modules start at once and the many short ones fill in beside them,
    instead of one long module starting last and running alone. Every worker sorts alike, so
    their collections still match.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


_WORKER_FIGURES: list[dict[str, Any]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Keep the reliability figures an xdist worker reports as it finishes."""
    from tests.reliability.harness import FIGURES_KEY

    figures = getattr(node, "workeroutput", {}).get(FIGURES_KEY)
    if figures:
        _WORKER_FIGURES.append(figures)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's Meltano install; on the xdist controller, add up the workers'
    reliability figures and report them."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and SHARED_MELTANO in os.environ:
        shutil.rmtree(os.environ.pop(SHARED_MELTANO), ignore_errors=True)
    if _WORKER_FIGURES:
        from tests.reliability.harness import add_up_figures, write_figures

        write_figures(add_up_figures(_WORKER_FIGURES))
