"""Cluster benchmark: collab processes behind nginx, on one PostgreSQL and one Redis, all on this machine.

Usage (from the repository root):

    .venv/bin/python bench/cluster.py              # every run below, one after the other (~3 min)
    .venv/bin/python bench/cluster.py throughput   # a) 200 documents x 2 pushers, 1 and 2 processes
    .venv/bin/python bench/cluster.py scatter      # b) the same without affinity (2 processes)
    .venv/bin/python bench/cluster.py typing       # c) 10 typists on one document over 2 processes,
                                                   #    with Redis and with Redis stopped
Options: --duration S (measurement window, default 10 s; typing 15 s), --plain (nginx
without TLS), --repeat N (the throughput and scatter runs N times each, interleaved, then
their medians: on a machine shared with other work one run says little), --json (also
print the raw results).

Every run starts its own deployment on 127.0.0.1 (tests/clusterproc.py) on a
fresh database of one PostgreSQL server (Debian's binaries, fsync on, as
bench/load.py's `postgres`): `redis-server`, N `collab serve --redis`
processes and nginx running docs/nginx-collab-cluster.conf itself (TLS at
nginx unless --plain), and tests/js/loadgen.mjs as the load. Each piece is
stopped by its pid at the end of its run.

  a) throughput: 400 lightweight clients (200 documents x 2, each pushing one
     single-character insertion and the next one right after its own update
     comes back: acknowledged = durable) through nginx with the hash config,
     with 1 process and with 2.
  b) scatter: the same with 2 processes, but nginx balancing each connection
     to a random process (the hash line replaced by `random;`): the two
     pushers of a document are often on different processes, so their
     commits race; conflicts/s from collab_conflicts_total.
  c) typing: 10 full stock clients (the editor's core) typing 5 edits/s each
     into one document, 5 connected straight to each of 2 processes (nginx's
     hash would put them all on one); edit-to-peer latency, reported apart
     for sender and receiver on the same process and on different ones; then
     the same with Redis killed (the processes poll the database).

CPU per component is utime + stime from /proc over the measurement window,
read by the load generator at its exact edges: each collab process (with
its worker processes), PostgreSQL (the postmaster, its backends, and those
reaped during the window), redis-server, nginx (master and workers), and the
load generator itself. Nothing here is a pass/fail test: the exit status is
0 unless a run broke (error frames, divergent documents).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from clusterproc import Cluster, ClusterNginx, RedisServer, free_port, self_signed  # noqa: E402
from load import LOADGEN, UNLIMITED, fmt, loadgen_node, raise_nofile  # noqa: E402
from pgserver import PgServer  # noqa: E402
from serverproc import end_on_sigterm  # noqa: E402

# 400 connections from 127.0.0.1 (through nginx) and no per-connection rate limits: the load is
# the point. The per-document limits are lifted too (two pushers flat out pass 1,000 updates/s).
SERVER_ARGS = UNLIMITED + ["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000",
                           "--trusted-proxy", "127.0.0.1"]


class Deployment:
    """Redis, N collab processes on a fresh database of `pg`, nginx in front; everything stopped by pid."""

    def __init__(self, pg: PgServer, n: int, tmp: Path, tls: bool, balance: str | None = None):
        self.tmp = tmp
        self.redis = RedisServer(workdir=tmp / "redis")
        port = free_port()
        self.cluster = Cluster(pg.url(pg.create_database("cluster")), n, redis_url=self.redis.url, logs=tmp / "logs",
                               extra_args=SERVER_ARGS + ["--allow-host", f"127.0.0.1:{port}"])
        self.cert, key = self_signed(tmp / "tls")
        self.nginx = ClusterNginx(tmp / "nginx", [p.port for p in self.cluster.procs], self.cert, key, tls=tls,
                                  balance=balance, port=port)
        self.pg = pg

    def __enter__(self) -> "Deployment":
        try:
            self.redis.start()
            self.cluster.start(timeout=60)
            self.nginx.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.nginx.stop()
        self.cluster.kill()
        self.redis.stop()

    def cpu_groups(self) -> str:
        groups = [f"collab{i}:{p.proc.pid}+" for i, p in enumerate(self.cluster.procs)]
        groups.append(f"postgres:{self.pg.pid}+")
        if self.redis.pid:
            groups.append(f"redis:{self.redis.pid}")
        groups.append(f"nginx:{self.nginx.proc.pid}+")
        return ",".join(groups)

    def metrics_urls(self) -> str:
        return ",".join(f"{p.url}/metrics" for p in self.cluster.procs)

    def loadgen(self, node: str, mode: str, args: list[str], timeout: float) -> dict:
        cmd = [node, str(LOADGEN), mode, "--cpu", self.cpu_groups(), "--metrics", self.metrics_urls(),
               "--clk-tck", str(os.sysconf("SC_CLK_TCK")), *args]
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(self.cert))
        proc = subprocess.run(cmd, cwd=LOADGEN.parent, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen {mode} failed:\n{proc.stderr[-3000:]}\n{self.cluster.logs_text()[-4000:]}")
        return json.loads(proc.stdout)


def run(pg: PgServer, node: str, name: str, n: int, mode: str, args: list[str], tls: bool, duration: float,
        balance: str | None = None, redis_down: bool = False, direct: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"collab-bench-cluster-{name}-"))
    load_before = os.getloadavg()[0]
    try:
        with Deployment(pg, n, tmp, tls, balance) as d:
            if redis_down:
                d.redis.kill()
                time.sleep(2.0)  # every process notices and polls the database
            urls = ",".join(d.cluster.ws_urls) if direct else d.nginx.ws_url
            target = ["--urls", urls] if direct else ["--url", urls]
            r = d.loadgen(node, mode, [*target, "--duration", str(int(duration * 1000)), *args],
                          timeout=duration + 180)
            reloads = sum(p.log().count("in a row to other writers; reloading") for p in d.cluster.procs)
        r.update(name=name, processes=n, tls=tls, balance=balance or "hash $collab_doc consistent",
                 redisDown=redis_down, direct=direct, reloads=reloads,
                 machineLoad=[round(load_before, 1), round(os.getloadavg()[0], 1)])
        return r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_line(r: dict) -> str:
    cpu = r.get("cpu") or {}
    collab = sum(v["pct"] for k, v in cpu.items() if k.startswith("collab"))
    per = ", ".join(f"{k} {v['pct']:.0f}" for k, v in cpu.items() if k.startswith("collab"))
    others = ", ".join(f"{k} {v['pct']:.0f}" for k, v in cpu.items() if not k.startswith("collab"))
    total = sum(v["pct"] for v in cpu.values()) + r["clientCpuPct"]
    return (f"CPU % of one core  collab {collab:.0f} ({per}); {others}; load generator {r['clientCpuPct']:.0f}; "
            f"total {total:.0f} of 200")


def per_update_line(r: dict) -> str:
    cpu = r.get("cpu") or {}
    n = r["acceptedInWindow"]
    if not n:
        return "CPU ms / 1,000    n/a"
    collab = sum(v["ms"] for k, v in cpu.items() if k.startswith("collab"))
    parts = [f"collab {collab / n * 1000:.0f}"] + [f"{k} {v['ms'] / n * 1000:.0f}" for k, v in cpu.items()
                                                   if not k.startswith("collab")]
    return "CPU ms per 1,000  " + ", ".join(parts)


def counters_line(r: dict) -> str:
    c = r.get("counters") or {}
    pick = [("conflicts", "conflicts"), ("catchup_reads", "catch-up reads"), ("bus_gaps", "gaps"),
            ("bus_published", "published"), ("bus_received", "received")]
    line = "per second        " + ", ".join(f"{label} {c[k]['perS']:,.1f}" for k, label in pick if k in c) + \
        f"; reloads after lost rounds {r['reloads']}"
    commits = c.get("commit_seconds_count", {}).get("count")
    if commits:
        mean = c["commit_seconds_sum"]["count"] / commits * 1000
        batch = c["commit_batch_size_sum"]["count"] / c["commit_batch_size_count"]["count"]
        line += (f"\ncommits           {c['commit_seconds_count']['perS']:,.0f} document commits/s (a batch commits many "
                 f"documents at once), {batch:.1f} updates each; mean {mean:.1f} ms from taking a batch to its COMMIT")
    return line


def report(r: dict) -> tuple[str, bool]:
    head = (f"== {r['name']}: {r['processes']} process{'es' if r['processes'] > 1 else ''}, "
            f"{'straight to the processes' if r['direct'] else 'nginx ' + r['balance']}"
            f"{', Redis stopped' if r['redisDown'] else ''}"
            f"{'' if r['direct'] else ' (TLS at nginx)' if r['tls'] else ' (plain HTTP at nginx)'}")
    lines = [head]
    problems = r.get("problems") or []
    ok = not problems
    if r["mode"] == "throughput":
        lat = r.get("ackLatencyAllMs") or r["ackLatencyMs"]
        lines += [
            f"clients {r['clients']} over {r.get('docs', 1)} documents, window {fmt(r['windowS'], ' s')}",
            f"durable updates/s {fmt(r['acceptedPerS'], '', 0)}  ({r['acceptedInWindow']:,} acknowledged in the window)",
            f"push->ack ms      p50 {fmt(lat['p50'], '', 1)}  p99 {fmt(lat['p99'], '', 1)}  (every client)",
            cpu_line(r), per_update_line(r), counters_line(r),
            f"documents agree   {r['lengthsAgree']}",
        ]
        ok = ok and r["lengthsAgree"]
    else:
        same, cross = r.get("latencyMsSameServer"), r.get("latencyMsCrossServer")
        lines += [
            f"typists {r['clients']} x {r['ratePerClient']} edits/s on one document, window {fmt(r['windowS'], ' s')}",
            f"edit-to-peer ms   all p50 {fmt(r['latencyMs']['p50'], '', 1)} p99 {fmt(r['latencyMs']['p99'], '', 1)}",
            f"  same process    p50 {fmt(same['p50'], '', 1)} p99 {fmt(same['p99'], '', 1)} (n={same['count']:,})",
            f"  cross process   p50 {fmt(cross['p50'], '', 1)} p99 {fmt(cross['p99'], '', 1)} (n={cross['count']:,})",
            cpu_line(r), counters_line(r),
            f"converged         {r['converged']} at version {r['finalVersion']}",
        ]
        ok = ok and r["converged"]
    before, after = r["machineLoad"]
    lines.append(f"machine load      {before} before, {after} after (1-minute load average; this run's own "
                 f"processes included: anything else running skews the figures)")
    if problems:
        lines.append(f"PROBLEMS ({len(problems)}): " + "; ".join(problems[:5]))
    return "\n".join(lines), ok


def medians(results: list[dict]) -> str:
    """One line per repeated configuration: the median and the range of its durable updates/s."""
    from statistics import median
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["mode"] == "throughput":
            groups.setdefault(f"{r['name']}, {r['processes']} process(es), {r['balance']}", []).append(r)
    lines = ["== medians"]
    for label, rs in groups.items():
        ups = sorted(r["acceptedPerS"] for r in rs)
        conflicts = median((r.get("counters") or {}).get("conflicts", {}).get("perS", 0.0) for r in rs)
        lines.append(f"{label}: durable updates/s median {median(ups):,.0f} (runs {', '.join(f'{u:,.0f}' for u in ups)}), "
                     f"conflicts/s median {conflicts:,.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    end_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", nargs="?", default="all", choices=["all", "throughput", "scatter", "typing"])
    p.add_argument("--duration", type=float, help="seconds of measurement (default 10; typing 15)")
    p.add_argument("--plain", action="store_true", help="nginx without TLS")
    p.add_argument("--repeat", type=int, default=1, help="run throughput and scatter N times each, interleaved")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    a = p.parse_args(argv)
    node = loadgen_node()
    if not node:
        print("node is not installed", file=sys.stderr)
        return 2
    raise_nofile()
    tls = not a.plain
    push = ["--clients", "400", "--docs", "200", "--doc", "bench", "--warmup", "3000"]
    typing = ["--clients", "10", "--rate", "5", "--doc", "typing", "--warmup", "3000"]
    dur = a.duration or 10.0
    plan = []
    for _ in range(max(1, a.repeat)):
        if a.which in ("all", "throughput"):
            plan += [("throughput", 1, "throughput", push, dict()), ("throughput", 2, "throughput", push, dict())]
        if a.which in ("all", "scatter"):
            plan += [("scatter", 2, "throughput", push, dict(balance="random;"))]
    if a.which in ("all", "typing"):
        plan += [("typing", 2, "typing", typing, dict(direct=True)),
                 ("typing", 2, "typing", typing, dict(direct=True, redis_down=True))]
    results, all_ok = [], True
    with PgServer(fsync=True) as pg:
        for name, n, mode, args, extra in plan:
            r = run(pg, node, name, n, mode, args, tls, a.duration or (15.0 if mode == "typing" else dur), **extra)
            text, ok = report(r)
            print(text + "\n", flush=True)
            all_ok &= ok
            results.append(r)
    if a.repeat > 1:
        print(medians(results))
    if a.json:
        print(json.dumps(results, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
