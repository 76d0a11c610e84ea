"""Several collab processes as one deployment, for the cluster tests and the cluster benchmark.

What it runs, each a real process on 127.0.0.1 and stopped by its pid:
  * `RedisServer`: Debian's `redis-server` on a free port (never 6379), with
    `--save '' --appendonly no` (Redis holds nothing of ours). It can be
    paused (SIGSTOP) and resumed (SIGCONT), killed (SIGKILL) and started
    again on the same port, for the outage tests;
  * `Cluster`: N `collab serve` processes (tests/serverproc.ServerProcess)
    on one PostgreSQL database, with `--redis` when a Redis is given. They
    are started together (several processes coming up at the same moment on
    an empty database is part of what is tested), each with its own log;
  * `ClusterNginx`: nginx in the foreground running
    docs/nginx-collab-cluster.conf itself, with only ports, certificate
    paths, the upstream's servers and the log folder substituted (each
    substituted line must be found exactly as written, so a changed file
    breaks the run instead of silently testing something else).
Every wait is bounded; nothing is ever stopped by name.

Also here: which PostgreSQL backends belong to one collab process
(`backend_ports`), so a test can kill one process's writer connection while
the others keep theirs, and /metrics reading.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from nginxproc import NginxProcess
from serverproc import ROOT, ServerProcess, free_port

DOCS = ROOT / "docs"
REDIS = "/usr/bin/redis-server"
CLUSTER_SITE = DOCS / "nginx-collab-cluster.conf"
SITE_LOG = "/var/log/nginx/collab.access.log"
HASH_LINE = "hash $collab_doc consistent;"


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout}s")
        time.sleep(interval)


# ---------------------------------------------------------------------- Redis


class RedisServer:
    """One `redis-server` in the foreground on a free port of 127.0.0.1, no persistence."""

    def __init__(self, port: int | None = None, workdir: Path | None = None):
        if not os.path.exists(REDIS):
            raise RuntimeError(f"{REDIS} is missing: the cluster tests run a real Redis "
                               "(Debian: apt-get install redis-server; ./run.sh test installs it as root)")
        self.port = port or free_port()
        if self.port == 6379:
            raise ValueError("never the default Redis port: a real Redis may live there")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="collab-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self, timeout: float = 15.0) -> "RedisServer":
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--protected-mode", "yes", "--dir", str(self.dir), "--logfile", "",
                 "--databases", "1"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        finally:
            log.close()
        self.paused = False

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            return self.ping()

        _wait(ready, timeout, f"redis-server answering PING on {self.port}")
        return self

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str, timeout: float = 5.0) -> bytes:
        """One command in Redis' inline form; the raw reply (enough for PUBSUB/CLIENT queries in tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            time.sleep(0.05)
            return s.recv(1 << 16)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (the nastiest outage)."""
        assert self.proc and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL (resumed first if paused, so the kernel reaps it at once); every subscription is gone."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.wait(10)
        self.paused = False

    def restart(self) -> "RedisServer":
        """Killed and started again on the same port, empty."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------ collab processes


class Cluster:
    """N `collab serve` processes on one PostgreSQL database (`db_url`), with `--redis` if `redis_url`."""

    def __init__(self, db_url: str, n: int = 3, redis_url: str | None = None, logs: Path | None = None,
                 extra_args: list[str] | None = None):
        self.db_url = db_url
        self.redis_url = redis_url
        self.logs = Path(logs or tempfile.mkdtemp(prefix="collab-cluster-"))
        self.logs.mkdir(parents=True, exist_ok=True)
        args = list(extra_args or [])
        if redis_url:
            args += ["--redis", redis_url]
        self.procs = [ServerProcess(db_url, port=free_port(), extra_args=args, log_path=self.logs / f"collab{i}.log")
                      for i in range(n)]

    def __len__(self) -> int:
        return len(self.procs)

    def __getitem__(self, i: int) -> ServerProcess:
        return self.procs[i]

    @property
    def ws_urls(self) -> list[str]:
        return [p.ws_url for p in self.procs]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.procs]

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.procs if p.proc and p.proc.poll() is None]

    def start(self, timeout: float = 40.0) -> "Cluster":
        """All processes at the same moment (migrations race on an empty database), then wait for each."""
        for p in self.procs:
            p.launch()
        try:
            for p in self.procs:
                p.wait_ready(timeout)
            for p in self.procs:  # each answered on its own port, and none lost a race for it since
                if p.proc.poll() is not None or f"listening on http://127.0.0.1:{p.port}" not in p.log():
                    raise RuntimeError(f"collab on {p.port} is not the one listening there:\n{p.log()[-3000:]}")
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def stop(self) -> None:
        """SIGTERM to all at once (graceful), then wait for each; SIGKILL whatever is left."""
        for p in self.procs:
            if p.proc and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.stop()
            except subprocess.TimeoutExpired:
                pass
            p.kill()

    def logs_text(self) -> str:
        return "\n".join(f"--- collab{i} (port {p.port}) ---\n{p.log()[-6000:]}" for i, p in enumerate(self.procs))

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def metrics(url: str, timeout: float = 10.0) -> dict[str, float]:
    """One process's /metrics as {sample name (labels in braces): value}, for counters and gauges."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("" if not s.labels else
                            "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}")
            out[key] = s.value
    return out


# ------------------------------------------------------ PostgreSQL connections


def backend_ports(pid: int, pg_port: int) -> set[int]:
    """Local TCP ports of `pid`'s connections to 127.0.0.1:`pg_port` (pg_stat_activity.client_port).

    Read from /proc: the socket inodes among the process's file descriptors,
    matched against /proc/net/tcp (the whole machine's table)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, inode = f[1], f[2], f[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == pg_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class WriterKiller:
    """Ends collab process `pid`'s connection named `application_name` in the middle of a commit,
    through `conn`, an asyncpg connection as collab's own role (a role may end its own sessions).

    A commit is one short statement, so catching it running is luck; instead `kill_mid_commit`
    holds the row locks of some documents for a moment (SELECT ... FOR UPDATE in a transaction of
    its own), waits until the process's writer is blocked on them, its commit statement sent and
    not answered, ends that connection, and lets go of the locks. Which process a backend serves
    is found from its client port (/proc, `backend_ports`), read again only for ports not seen
    before: /proc/net/tcp lists the whole machine's sockets and can be long."""

    def __init__(self, conn, dbname: str, pid: int, pg_port: int, application_name: str):
        self.conn, self.dbname, self.pid, self.pg_port, self.name = conn, dbname, pid, pg_port, application_name
        self.ours: set[int] = set()
        self.theirs: set[int] = set()

    async def _backends(self) -> list:
        rows = await self.conn.fetch("SELECT pid, client_port, state, wait_event_type FROM pg_stat_activity "
                                     "WHERE datname = $1 AND application_name = $2", self.dbname, self.name)
        if any(r["client_port"] not in self.ours | self.theirs for r in rows):
            mine = backend_ports(self.pid, self.pg_port)
            for r in rows:
                (self.ours if r["client_port"] in mine else self.theirs).add(r["client_port"])
        return [r for r in rows if r["client_port"] in self.ours]

    async def kill_mid_commit(self, names: list[str], wait: float = 2.0) -> int:
        """1 if the process's writer was caught waiting on `names`' rows and ended, else 0."""
        import asyncio
        async with self.conn.transaction():
            locked = await self.conn.fetch("SELECT id FROM documents WHERE name = ANY($1::text[]) FOR UPDATE", names)
            if not locked:
                return 0
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                blocked = [r["pid"] for r in await self._backends() if r["wait_event_type"] == "Lock"]
                if blocked:
                    return await self.conn.fetchval("SELECT count(pg_terminate_backend(p)) FROM unnest($1::int[]) p",
                                                    blocked)
                await asyncio.sleep(0.005)
        return 0


def terminate_backends(pg, dbname: str, pid: int, application_name: str) -> int:
    """pg_terminate_backend the connections of collab process `pid` named `application_name`; how many."""
    ports = backend_ports(pid, pg.port)
    if not ports:
        return 0
    listed = ",".join(str(p) for p in sorted(ports))
    out = pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 f"WHERE datname = '{dbname}' AND application_name = '{application_name}' "
                 f"AND client_port IN ({listed})")
    return int(out.strip() or 0)


# ----------------------------------------------------------------------- nginx


def cluster_site(backend_ports_: list[int], http_port: int, https_port: int, cert: Path, key: Path, logs: Path,
                 tls: bool = True, balance: str | None = None) -> str:
    """docs/nginx-collab-cluster.conf for our processes, ports, certificate and log folder.

    `tls=False` serves plain HTTP on `https_port` (the benchmark's option, to
    leave the cores to collab); `balance` replaces the hash line (e.g.
    "random;" for a run without affinity)."""
    text = CLUSTER_SITE.read_text()
    assert text.count(f"access_log {SITE_LOG} ") == 2, f"both server blocks should log to {SITE_LOG}"
    text = text.replace(SITE_LOG, str(logs / "collab.access.log"))
    listen = f"listen 127.0.0.1:{https_port} ssl;" if tls else f"listen 127.0.0.1:{https_port};"
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl;", listen),
        ("listen [::]:443 ssl;", ""),
        ("ssl_certificate     /etc/letsencrypt/live/collab.example.com/fullchain.pem;", f"ssl_certificate {cert};"),
        ("ssl_certificate_key /etc/letsencrypt/live/collab.example.com/privkey.pem;", f"ssl_certificate_key {key};"),
        (HASH_LINE, balance if balance is not None else HASH_LINE),
    ]:
        lines = [line for line in text.splitlines() if line.strip() == old]
        assert len(lines) == 1, f"docs/nginx-collab-cluster.conf should have the line {old!r} exactly once"
        text = text.replace(lines[0], lines[0].replace(old, new))
    servers = re.findall(r"^( *)server 127\.0\.0\.1:80\d\d( max_fails=0;)$", text, re.M)
    assert len(servers) >= 2, "the upstream should list several `server 127.0.0.1:80NN max_fails=0;` lines"
    indent, options = servers[0]
    block = "\n".join(f"{indent}server 127.0.0.1:{p}{options}" for p in backend_ports_)
    text = re.sub(r"(?:^ *server 127\.0\.0\.1:80\d\d max_fails=0;\n)+", block + "\n", text,
                  count=1, flags=re.M)
    return text


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with openssl (clients trust it explicitly; TLS stays verified)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("openssl is not installed (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class ClusterNginx(NginxProcess):
    """A foreground nginx (master + `workers` workers) with the cluster site and everything under `prefix`."""

    def __init__(self, prefix: Path, backend_ports_: list[int], cert: Path, key: Path, tls: bool = True,
                 balance: str | None = None, workers: int = 1, port: int | None = None):
        self.http_port, self.port = free_port(), port or free_port()
        self.tls = tls
        site = cluster_site(backend_ports_, self.http_port, self.port, cert, key, Path(prefix) / "logs", tls=tls,
                            balance=balance)
        super().__init__(prefix, site, workers=workers, connections=4096)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "ClusterNginx":
        return super().start(self.port, timeout)

    def pids(self) -> list[int]:
        """The master and its workers (for CPU accounting)."""
        if not self.proc or self.proc.poll() is not None:
            return []
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        return [self.proc.pid, *map(int, children)]

    def access_log(self) -> str:
        try:
            return (self.prefix / "logs" / "collab.access.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "ClusterNginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
