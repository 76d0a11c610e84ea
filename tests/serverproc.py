"""Run the collab server as a real subprocess for end-to-end, durability and browser tests.

Why a subprocess and not aiohttp's in-process test server: these tests kill the
server with SIGKILL, restart it on the same database, and point Node clients
and Chromium at it, so it must be a separate process with a real port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


_given: set[int] = set()
# Under pytest-xdist, worker N of K takes only ports equal to N modulo K, so two workers never hand out
# the same port either (a worker that replaces an ended one is numbered on: gw2 takes gw0's ports).
# Ports are drawn from 20000 up to the ephemeral range (32768 by Linux's default; at least up to
# 30000), where the kernel puts no local end of an outgoing connection, and above every port browsers
# and Node's fetch refuse (the Fetch standard's "bad ports", 10080 the highest). Binding port 0 would
# not do: Linux hands out even ports first.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % _WORKERS
_random = random.Random()


def _ports_below_ephemeral() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(20000, max(low, 30000))


_PORTS = _ports_below_ephemeral()


def free_port() -> int:
    """A port free on 127.0.0.1 now and never handed out before by this process (nor by another
    pytest-xdist worker of the run).

    (Checking that a port is free alone, two calls in a row may return the
    same port: two servers started together would then race for it, and the
    loser's /healthz would be answered by the winner.)"""
    for _ in range(10000):
        port = _random.randrange(_PORTS.start + _WORKER, _PORTS.stop, _WORKERS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port found in {_PORTS}")


@contextlib.asynccontextmanager
async def silent_server():
    """A listener on 127.0.0.1 that takes connections and never answers (a stalled server, a half-dead
    proxy): yields (its port, the sockets it took so far); closes them all at the end."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.setblocking(False)
    taken: list[socket.socket] = []

    async def accept():
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(silent)
            taken.append(conn)  # read nothing, answer nothing

    acceptor = asyncio.create_task(accept())
    try:
        yield silent.getsockname()[1], taken
    finally:
        acceptor.cancel()
        for conn in taken:
            conn.close()
        silent.close()


def wait_healthy(server, what: str, timeout: float):
    """`server` (with `proc`, a Popen; `url`; `log()`; `kill()`) once its /healthz answers 200. Raises with
    the tail of its output if it exits first or does not answer in `timeout` seconds (then it is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"{what} did not become healthy in {timeout}s:\n{server.log()[-4000:]}")


def end_on_sigterm() -> None:
    """Make SIGTERM end this program the way Ctrl-C does, through its `finally` blocks and context
    managers, so that the servers and load generators it started are stopped with it.

    For the benchmarks in bench/, which start servers and run for minutes: by
    default SIGTERM (a `kill PID`, a harness giving up on them) ended the
    process at once and left its collab, PostgreSQL, Redis, nginx and Node
    processes running. A second SIGTERM while cleaning up is let pass, so the
    cleanup finishes (by a handler that does nothing, not SIG_IGN, which the
    programs the cleanup starts would inherit)."""
    def ended(signum, frame):
        signal.signal(signum, lambda *_: None)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, ended)


def under_load(extra_args: list[str] | None) -> list[str]:
    """`collab serve` options for a server under synthetic load: `extra_args`, with the per-connection rate
    limit raised unless they set `--rate` (see ServerProcess)."""
    args = list(extra_args or [])
    return args if "--rate" in args else args + ["--rate", "1000000", "--burst", "1000000"]


class ServerProcess:
    """One `python -m collab serve` on 127.0.0.1 with its own database (a SQLite file or a PostgreSQL URL).

    `start()` blocks until `/healthz` answers 200 (or raises with the server's
    output); `kill()` sends SIGKILL; `stop()` sends SIGTERM and waits;
    `restart()` starts it again on the same port and database.

    These servers carry synthetic load (clients pushing as fast as they are
    acknowledged), so the per-connection rate limit is raised unless a test
    passes its own `--rate`; the limit itself is tested in-process.
    """

    def __init__(self, db: Path | str, port: int | None = None, extra_args: list[str] | None = None,
                 log_path: Path | None = None, checkout: Path | None = None):
        # A SQLite file (its log beside it) or a PostgreSQL URL (then give log_path, or one in a new temporary folder
        # is used). The server runs in its log's folder.
        url = "://" in str(db)
        self.db = str(db) if url else Path(db)
        self.port = port or free_port()
        self.extra_args = under_load(extra_args)
        if log_path is None and url:
            log_path = Path(tempfile.mkdtemp(prefix="collab-server-")) / "server.log"
        elif log_path is None:
            log_path = self.db.with_suffix(".log")
        self.log_path = Path(log_path)
        self.checkout = Path(checkout or ROOT)  # whose collab package runs (benchmarks compare another commit's)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> "ServerProcess":
        """Start the process and return at once (several servers starting together: then `wait_ready`)."""
        if self.proc is not None and self.proc.poll() is None:
            # A second one would lose the port to the first and exit, while the first, no longer
            # held here, outlived the test.
            raise RuntimeError(f"server already running (pid {self.proc.pid}): stop or kill it first")
        self._log = open(self.log_path, "ab")
        # the checkout's collab, whatever the venv has installed (the server does not run in the checkout)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(self.checkout), os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--db", str(self.db), *self.extra_args],
            # in the folder of its log, not the checkout: what a server writes by a relative path
            # (./data/admin-link, with a PostgreSQL URL and access control on) stays out of the checkout
            cwd=self.log_path.parent, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        return self

    def wait_ready(self, timeout: float = 20.0) -> "ServerProcess":
        """Block until /healthz answers 200 (raises with the server's output if it exits or times out)."""
        return wait_healthy(self, f"server on {self.port}", timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the graceful path (commits flushed, clients closed with 1001)."""
        code = 0
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        self._close_log()
        return code

    def restart(self) -> "ServerProcess":
        self.kill()
        return self.start()

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def get_json(url: str):
    import json
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())
