"""A real PostgreSQL server for the tests and benchmarks, from Debian's binaries, stopped by its pid.

How it runs:
  * the binaries are found by a glob on /usr/lib/postgresql/*/bin/ (Debian's
    `postgresql` package, any version; the newest wins), else on PATH;
  * initdb and postgres refuse to run as root, so as root every PostgreSQL
    program runs as the `postgres` user through `runuser -u postgres --`, on
    a temporary directory owned by it (not pytest's tmp_path: the postgres
    user cannot enter root's 0700 folders);
  * the server listens on a free port on 127.0.0.1 and puts its socket in
    that directory (`-k`). Socket connections are trusted (the tests' own
    administration, as the superuser `postgres`, through psql); TCP
    connections need a password (scram-sha-256), so the password in a URL
    collab gets is really checked;
  * `stop()` signals the postmaster's pid (read from postmaster.pid; runuser
    stays its parent) and waits; nothing is ever stopped by name.
A server that cannot start raises PgUnavailable, which the fixtures turn into
a failure, never a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from serverproc import free_port

USER = "collab"


class PgUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what is missing."""


def bin_dir() -> Path:
    """The folder of initdb/postgres/psql: Debian's newest /usr/lib/postgresql/N/bin, else PATH's."""
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.split("/postgresql/")[1].split("/")[0]))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PgUnavailable("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb and no initdb on PATH "
                        "(Debian: apt-get install postgresql; ./run.sh test installs it when run as root)")


class PgServer:
    """One PostgreSQL cluster in a temporary directory; `url(db)` is what collab gets."""

    def __init__(self, fsync: bool = False, settings: dict[str, str] | None = None):
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="collab-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(10)
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self._counter = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("there is no `postgres` user to run PostgreSQL as (install Debian's "
                                    "postgresql package)") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o700)

    # ------------------------------------------------------------ running programs

    def _cmd(self, program: str, *args: str) -> list[str]:
        cmd = [str(self.bin / program), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run(self._cmd(program, *args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if proc.returncode != 0:
            raise PgUnavailable(f"{program} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    # ------------------------------------------------------------ life

    def start(self, timeout: float = 30.0) -> "PgServer":
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
            fresh = True
        else:
            fresh = False
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.root),
                   "fsync": "on" if self.fsync else "off", "full_page_writes": "on" if self.fsync else "off",
                   "max_connections": "200", "shared_buffers": "64MB", "log_min_messages": "warning",
                   **self.settings}
        args = ["-D", str(self.data)]
        for k, v in options.items():
            args += ["-c", f"{k}={v}"]
        log = open(self.root / "postgres.log", "ab")
        try:
            self.proc = subprocess.Popen(self._cmd("postgres", *args), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PgUnavailable(f"postgres exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            status = self._pidfile()
            if status is not None and status[1] == "ready":
                self.pid = status[0]
                break
            time.sleep(0.05)
        else:
            self._signal(signal.SIGQUIT)
            raise PgUnavailable(f"postgres did not become ready in {timeout}s:\n{self.log()[-3000:]}")
        if fresh:
            self.sql(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def _pidfile(self) -> tuple[int, str] | None:
        """(postmaster pid, status) from postmaster.pid once the server wrote it."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or not lines[0].strip().isdigit():
            return None
        return int(lines[0]), lines[7].strip()

    def _signal(self, sig: int) -> None:
        pid = self.pid or (self._pidfile() or (None,))[0]
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server by its pid: "fast" (SIGINT: connections end, clean shutdown) or "immediate" (SIGQUIT)."""
        if self.proc is None:
            return
        self._signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        self.pid = None

    def restart(self) -> "PgServer":
        self.stop()
        return self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The postmaster and every process it started (for CPU accounting)."""
        if self.pid is None:
            return []
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True,
                                  text=True).stdout.split()
        return [self.pid, *map(int, children)]

    # ------------------------------------------------------------ databases

    def sql(self, statement: str, db: str = "postgres") -> str:
        """Run `statement` as the superuser over the socket; psql's unaligned output."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.root),
                         "-p", str(self.port), "-U", "postgres", "-d", db, "-c", statement)

    def major(self) -> int:
        return int((self.data / "PG_VERSION").read_text().strip().split(".")[0])

    def url(self, db: str, password: str | None = None, scheme: str = "postgresql") -> str:
        return f"{scheme}://{USER}:{self.password if password is None else password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, prefix: str = "t") -> str:
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        # FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every block: faster here.
        strategy = " STRATEGY FILE_COPY" if self.major() >= 15 else ""
        self.sql(f"CREATE DATABASE {name} OWNER {USER}{strategy}")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def terminate(self, db: str, application_name: str) -> int:
        """pg_terminate_backend every connection of `application_name` to `db`; how many there were."""
        out = self.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       f"WHERE datname = '{db}' AND application_name = '{application_name}'")
        return int(out.strip() or 0)

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()
