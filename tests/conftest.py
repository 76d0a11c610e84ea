"""Shared fixtures: a real server subprocess per test (`server`), the database it runs on (`db`), and the Node tools.

Backends: a test that takes `db` (or `server`) runs on SQLite unless it is
parametrised with `BOTH_BACKENDS` (`@BOTH_BACKENDS` on a test, or
`pytestmark = BOTH_BACKENDS` in a module whose every test takes `db`); then it
runs once per backend with the same assertions. PostgreSQL runs as one real
server per test session (`pg_server`, started on first use), with one fresh
database per test. A test that cannot start PostgreSQL fails; it is never
skipped.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import subprocess
import sys
import threading

import pytest

from serverproc import ROOT, ServerProcess

JS_DIR = ROOT / "tests" / "js"
BACKENDS = ("sqlite", "postgres")
BOTH_BACKENDS = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


# A test that runs over pyproject's `timeout` (300 s) fails, with its stack, and the run goes on
# (pytest-timeout). But pytest-timeout, like pytest's own faulthandler timer, stops its clock once a
# test has failed, and a teardown can hang after a failure too: a test still not done after
# HANG_LIMIT seconds (or twice `--timeout N`, or twice the test's own `timeout` mark, whichever is
# more; none with `--timeout 0`) ends the process running it, its name and every thread's stack
# printed, rather than stall CI until CI's own limit: under pytest-xdist (pyproject's `-n 2`), that
# worker, which xdist reports as a failure of the test and replaces; with `-n 0`, the whole run, with
# exit status 3. (Servers that process started are then left to the machine.)
HANG_LIMIT = 600.0
_stderr_fd: int | None = None
_hang_limit: float | None = None


def pytest_configure(config) -> None:
    global _stderr_fd, _hang_limit
    _stderr_fd = os.dup(sys.stderr.fileno())  # the terminal's, before output capture takes fd 2
    given = config.getoption("timeout", None)
    timeout = float(given if given is not None else config.getini("timeout") or 0)
    _hang_limit = max(HANG_LIMIT, 2 * timeout) if timeout > 0 else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _hang_limit is None:
        return (yield)
    limit = _hang_limit
    mark = item.get_closest_marker("timeout")
    if mark is not None and mark.args and float(mark.args[0]) > 0:
        limit = max(limit, 2 * float(mark.args[0]))
    watchdog = threading.Timer(limit, _hung, (item.nodeid, limit))
    watchdog.daemon = True
    watchdog.start()
    try:
        return (yield)
    finally:
        watchdog.cancel()


def _hung(nodeid: str, limit: float) -> None:
    os.write(_stderr_fd, f"\n\n{nodeid} is still not done after {limit:g} s (set-up, test and teardown): "
                         "ending its process. Every thread's stack:\n".encode())
    faulthandler.dump_traceback(file=_stderr_fd, all_threads=True)
    os._exit(3)


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the whole session (tests get a database each: `db`)."""
    from pgserver import PgServer, PgUnavailable
    try:
        pg = PgServer().start()
    except PgUnavailable as exc:
        pytest.fail(f"cannot start PostgreSQL for the tests: {exc}")
    yield pg
    pg.destroy()


@pytest.fixture
def pg_database(pg_server):
    """The name of a fresh, empty database on the session's PostgreSQL, dropped at the end of the test."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def pg_url(pg_server, pg_database) -> str:
    """The URL of `pg_database`."""
    return pg_server.url(pg_database)


@pytest.fixture
def redis(tmp_path):
    """A real redis-server on a free port of 127.0.0.1 (never 6379, nothing saved), stopped by its pid."""
    from clusterproc import RedisServer
    server = RedisServer(workdir=tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def backend(request) -> str:
    """"sqlite" unless the test is parametrised over BACKENDS."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def db(backend, tmp_path, request) -> str:
    """A fresh, empty database: a SQLite file path, or the URL of a new database on the session's PostgreSQL."""
    if backend == "sqlite":
        return str(tmp_path / "collab.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_db(backend, tmp_path, request):
    """make_db(name, exists=True) -> another database of the test's backend, fresh and empty.

    SQLite: a path in a new folder (the file is not made: collab makes it).
    PostgreSQL: the URL of a new empty database, or with exists=False of one
    that does not exist.
    """
    made = []

    def make(name: str = "other", exists: bool = True) -> str:
        if backend == "sqlite":
            return str(tmp_path / name / f"{name}.db")
        pg = request.getfixturevalue("pg_server")
        if not exists:
            return pg.url(f"missing_{name}")
        made.append(pg.create_database())
        return pg.url(made[-1])

    yield make
    for name in made:
        request.getfixturevalue("pg_server").drop_database(name)


@pytest.fixture
def server(db, tmp_path):
    """A running server on a fresh database; killed at the end of the test."""
    proc = ServerProcess(db, log_path=tmp_path / "server.log")
    proc.start()
    yield proc
    proc.kill()


def install_node_packages() -> None:
    """`npm ci` in tests/js and static/ where their packages are missing (./run.sh test installs them first)."""
    for folder in (JS_DIR, ROOT / "static"):
        if not (folder / "node_modules" / "@codemirror" / "collab").is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=True)


def pytest_sessionstart(session) -> None:
    # Once, before pytest-xdist starts its workers: two `npm ci` in one folder at once would break each other.
    if not hasattr(session.config, "workerinput") and shutil.which("npm"):
        install_node_packages()


@pytest.fixture(scope="session")
def node() -> str:
    """Path to node, with the Node packages of tests/js and static/ installed (client.mjs loads the
    shared client core from static/src, and CodeMirror from static/node_modules); fails loudly otherwise."""
    exe = shutil.which("node")
    if not exe:
        pytest.fail("node is not installed: the differential and client tests need it (run ./run.sh test)")
    install_node_packages()
    return exe
