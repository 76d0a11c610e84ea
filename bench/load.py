"""Load benchmarks through a real server subprocess, driven by headless Node clients.

Usage (from the repository root):

    .venv/bin/python bench/load.py typing       # a) 10 typists, edit-to-peer latency
    .venv/bin/python bench/load.py throughput   # b) 4 clients pushing flat out: durable updates/s
    .venv/bin/python bench/load.py idle         # c) 2,000 idle connections: RSS per connection
    .venv/bin/python bench/load.py trace        # d) an editing trace through the server
                                                #    (automerge-paper, or --trace PATH)
    .venv/bin/python bench/load.py docs         # e) 200 documents x 2 clients pushing flat out
    .venv/bin/python bench/load.py all          # a) to e), one after the other
    .venv/bin/python bench/load.py compare --db sqlite,postgres
                                                # the backends side by side: e) with 1 x 4 and
                                                # 200 x 2 clients, commit latency, typing p99
    .venv/bin/python bench/load.py compare-reference [--rounds 3] [--loops uvloop,asyncio]
                                                # collab against CodeMirror's own authority
                                                # (bench/reference.mjs), alternately, every
                                                # figure as collab / reference; with
                                                # --without-commit also collab with its durable
                                                # commit left out (bench/no_commit.py)

Every mode takes `--db`: a comma-separated list of databases to run it on,
each `sqlite` (a temporary file; `sqlite:full` with --sync full), `postgres`
(a temporary PostgreSQL server started here from Debian's binaries, fsync
on; `postgres:async` with synchronous_commit off), a SQLite file path or a
`postgresql://` URL (then PostgreSQL's own CPU is not measured). Default:
`sqlite`.

Each benchmark starts its own `python -m collab serve` on 127.0.0.1 with a
fresh database, runs tests/js/loadgen.mjs (or bench/pushers.mjs) against it,
prints a report with the target, stops the server and removes the database.
Server CPU comes from /proc/<pid>/stat and memory from /proc/<pid>/status,
read by the load generator at the exact edges of the measurement window;
PostgreSQL's CPU is its postmaster's (with its reaped children) plus every
live child's, read at the same edges. Nothing here is a pass/fail test: the
exit status is 0 unless a run broke (errors, divergence).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from serverproc import ServerProcess, end_on_sigterm, free_port, under_load, wait_healthy  # noqa: E402
from trace_replay import WHERE_TO_GET, add_trace_argument  # noqa: E402

LOADGEN = ROOT / "tests" / "js" / "loadgen.mjs"
PUSHERS = ROOT / "bench" / "pushers.mjs"
REFERENCE = ROOT / "bench" / "reference.mjs"
# A benchmark that *is* one busy client per connection lifts every per-connection and
# per-document rate limit (they protect a public server from one client), and says so.
UNLIMITED = ["--rate", "1000000", "--burst", "1000000", "--update-rate", "1000000", "--update-burst", "1000000",
             "--doc-update-rate", "1000000", "--doc-update-burst", "1000000"]

# Server options per benchmark. The per-connection token bucket (default 100
# frames/s) and the per-address connection cap (default 100) protect a public
# server from one client; a benchmark that *is* one busy client or 2,000
# connections from 127.0.0.1 lifts them, and says so in the report.
BENCHES = {
    "typing": {"server": [], "target": "edit-to-peer p99 < 10 ms"},
    "throughput": {"server": UNLIMITED, "target": ">= 3,500 durable updates/s"},
    "idle": {"server": ["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000"],
             "target": "< 30 KB RSS per connection"},
    "trace": {"server": UNLIMITED, "target": "final text == endContent"},
    "docs": {"server": UNLIMITED + ["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000"],
             "target": "PostgreSQL within 1.5x of SQLite's server CPU per update"},
}


class Database:
    """One --db entry: where a benchmark's server stores its documents, made fresh for each run."""

    def __init__(self, spec: str, stack: ExitStack):
        self.spec, self.pg, self.url, self.path, self.server_args = spec, None, None, None, []
        kind, _, option = spec.partition(":")
        if kind == "sqlite":
            self.label = "SQLite" + (" (--sync full)" if option == "full" else "")
            if option == "full":
                self.server_args = ["--sync", "full"]
        elif kind == "postgres" and "://" not in spec:
            from pgserver import PgServer
            settings = {"synchronous_commit": "off"} if option == "async" else {}
            self.pg = stack.enter_context(PgServer(fsync=True, settings=settings))
            self.label = "PostgreSQL" + (" (synchronous_commit off)" if option == "async" else "")
        elif "://" in spec:
            from collab.storage import describe
            self.url, self.label = spec, describe(spec)
        else:
            self.path, self.label = Path(spec), spec

    def fresh(self, tmp: Path) -> str:
        """A database for one run (a temporary file, or a new database on the temporary server)."""
        if self.pg is not None:
            return self.pg.url(self.pg.create_database("bench"))
        if self.url is not None:
            return self.url
        return str(self.path) if self.path is not None else str(tmp / "bench.db")


def loadgen_node() -> str | None:
    """node's path, with the load generator's packages installed (`npm ci` from its lockfile); None
    without node."""
    node = shutil.which("node")
    if node and not (LOADGEN.parent / "node_modules" / "@codemirror" / "collab").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN.parent, check=True)
    return node


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run_bench(name: str, node: str, extra: list[str], timeout: float, trace: Path, db: Database) -> dict:
    spec = BENCHES[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"collab-bench-{name}-"))
    server = ServerProcess(db.fresh(tmp), extra_args=spec["server"] + db.server_args, log_path=tmp / "server.log")
    try:
        server.start(timeout=60)
        pid = server.proc.pid
        common = ["--url", server.ws_url, "--server-pid", str(pid), "--clk-tck", str(os.sysconf("SC_CLK_TCK"))]
        if name == "docs":
            args = [node, str(PUSHERS), *common, *extra]
            if db.pg is not None:
                args += ["--pg-pid", str(db.pg.pid)]
        else:
            args = [node, str(LOADGEN), name, *common, *extra]
        if name == "trace":
            args += ["--file", str(trace)]
        proc = subprocess.run(args, cwd=LOADGEN.parent, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}\nserver log:\n{server.log()[-3000:]}")
        result = json.loads(proc.stdout)
        result["serverArgs"] = spec["server"] + db.server_args
        result["target"] = spec["target"]
        result["db"] = db.label
        return result
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a Prometheus histogram in /metrics text."""
    out = {}
    for le, count in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', text, re.M):
        out[float("inf") if le == "+Inf" else float(le)] = float(count)
    return out


def quantile(before: dict, after: dict, q: float) -> float | None:
    """The q-quantile of what was observed between two readings (linear within a bucket, like PromQL)."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1] if counts else 0
    if not total:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for edge, cum in zip(edges, counts):
        if cum >= rank:
            if edge == float("inf"):
                return low
            return low + (edge - low) * ((rank - below) / (cum - below) if cum > below else 1.0)
        low, below = edge, cum
    return low


def fmt(x, unit="", nd=1):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}{unit}"


def mb(kb):
    return fmt(kb / 1024 if kb is not None else None, " MB")


def report(r: dict) -> tuple[str, bool]:
    """Human-readable report and whether the run itself was sound (no errors, texts agree)."""
    mode = r["mode"]
    lines = [f"== {mode} on {r['db']}  (target: {r['target']}; server options: "
             f"{' '.join(r['serverArgs']) or 'defaults'})"]
    problems = r.get("problems") or []
    ok = not problems
    mem = r.get("serverMem") or {}
    if mode == "typing":
        lat = r["latencyMs"]
        lines += [
            f"clients {r['clients']} x {r['ratePerClient']} edits/s, window {fmt(r['windowS'], ' s')}",
            f"accepted updates   {r['acceptedInWindow']:,} ({fmt(r['acceptedPerS'], '/s')})",
            f"edit-to-peer ms    p50 {fmt(lat['p50'], '', 2)}  p95 {fmt(lat['p95'], '', 2)}  "
            f"p99 {fmt(lat['p99'], '', 2)}  max {fmt(lat['max'], '', 2)}  (n={lat['count']:,})",
            f"server CPU         {fmt(r['serverCpuPct'], '%')} of one core; client CPU {fmt(r['clientCpuPct'], '%')}",
            f"server RSS         {mb(mem.get('rssKB'))} (peak {mb(mem.get('hwmKB'))})",
            f"converged          {r['converged']} at version {r['finalVersion']}",
            f"verdict            p99 {'<' if lat['p99'] is not None and lat['p99'] < 10 else '>='} 10 ms",
        ]
        ok = ok and r["converged"]
    elif mode == "throughput":
        lat = r["ackLatencyMs"]
        lines += [
            f"clients {r['clients']}, window {fmt(r['windowS'], ' s')}",
            f"durable updates/s  {fmt(r['acceptedPerS'], '', 0)}  ({r['acceptedInWindow']:,} accepted in the window)",
            f"server CPU         {fmt(r['serverCpuMsPer1000'], ' ms')} per 1,000 updates; "
            f"{fmt(r['serverCpuPct'], '%')} of one core; client CPU {fmt(r['clientCpuPct'], '%')}",
            f"push->ack ms       p50 {fmt(lat['p50'], '', 2)}  p99 {fmt(lat['p99'], '', 2)}  (client 0)",
            f"server RSS         {mb(mem.get('rssKB'))} (peak {mb(mem.get('hwmKB'))})",
            f"lengths agree      {r['lengthsAgree']} at version {r['finalVersion']:,}",
            f"verdict            {'>=' if r['acceptedPerS'] >= 3500 else '<'} 3,500 updates/s",
        ]
        ok = ok and r["lengthsAgree"]
    elif mode == "idle":
        m = r["memKB"]
        lines += [
            f"connections        {r['connections']:,} over {r['docs']} documents (opened in {r['openMs']:,} ms)",
            f"server RSS         baseline {mb(m['baseline']['rssKB'])}, one per document "
            f"{mb(m['oneConnPerDoc']['rssKB'])}, all {mb(m['all']['rssKB'])} (peak {mb(m['all']['hwmKB'])})",
            f"per connection     {fmt(r['perConnKB'], ' KB')} (RSS delta / connections, documents included); "
            f"marginal {fmt(r['marginalPerConnKB'], ' KB')} (connections beyond the first per document)",
            f"verdict            {'<' if r['perConnKB'] < 30 else '>='} 30 KB per connection",
        ]
        ok = ok and r["connections"] == int(r.get("expected", r["connections"]))
    elif mode == "trace":
        lines += [
            f"edits              {r['edits']:,} ({Path(r['file']).name})",
            f"total time         {fmt(r['totalMs'] / 1000, ' s', 2)} "
            f"(client applying edits: {fmt(r['clientApplyMs'] / 1000, ' s', 2)})",
            f"pushes             {r['pushes']:,}, {fmt(r['updatesPerPush'])} updates per push on average",
            f"accepted/s         {fmt(r['acceptedPerS'], '', 0)} (version {r['finalVersion']:,})",
            f"server CPU         {fmt(r['serverCpuMs'] / 1000, ' s', 2)}; "
            f"client CPU {fmt(r['clientCpuMs'] / 1000, ' s', 2)}",
            f"server RSS peak    {mb(mem.get('hwmKB'))}",
            f"text == endContent client {r['clientTextMatches']}, server {r['serverTextMatches']}",
        ]
        ok = ok and r["clientTextMatches"] and r["serverTextMatches"]
    elif mode == "docs":
        add_docs_figures(r)
        lines += [
            f"documents {r['docs']} x {r['perDoc']} clients, window {fmt(r['windowS'], ' s')}",
            f"durable updates/s  {fmt(r['acceptedPerS'], '', 0)}  ({r['accepted']:,} accepted in the window)",
            f"server CPU         {fmt(r['serverCpuMsPer1000'], ' ms')} per 1,000 updates "
            f"({fmt(r['serverCpuPct'], '%')} of one core); client CPU {fmt(r['clientCpuPct'], '%')}",
            f"PostgreSQL CPU     {fmt(r['pgCpuMsPer1000'], ' ms')} per 1,000 updates "
            f"({fmt(r['pgCpuPct'], '%')} of one core)",
            f"commit ms          p50 {fmt(r['commitP50'], '', 2)}  p99 {fmt(r['commitP99'], '', 2)}  "
            f"(server's collab_commit_seconds, {r['commits']:,} commits of a document)",
        ]
    if problems:
        lines.append(f"PROBLEMS ({len(problems)}): " + "; ".join(problems[:5]))
    return "\n".join(lines), ok


def add_docs_figures(r: dict) -> None:
    """Per-1,000-update CPU and commit latency percentiles of a `docs` run (in place)."""
    ms = r["windowS"] * 1000
    n = r["accepted"] or 1
    for key, cpu in (("server", r["serverCpuMs"]), ("pg", r["pgCpuMs"])):
        r[f"{key}CpuMsPer1000"] = cpu / n * 1000 if cpu is not None else None
        r[f"{key}CpuPct"] = cpu / ms * 100 if cpu is not None else None
    r["clientCpuPct"] = r["clientCpuMs"] / ms * 100
    before = histogram(r.pop("metricsBefore"), "collab_commit_seconds")
    after = histogram(r.pop("metricsAfter"), "collab_commit_seconds")
    r["commits"] = int(after.get(float("inf"), 0) - before.get(float("inf"), 0))
    for q in (50, 99):
        value = quantile(before, after, q / 100)
        r[f"commitP{q}"] = value * 1000 if value is not None else None


def compare_table(rows: list[tuple[str, dict]]) -> str:
    """The backends side by side: one column per database."""
    labels = list(dict.fromkeys(label for label, _ in rows))
    by = {(label, key): r for label, r in rows for key in [r["key"]]}
    lines = [f"{'':34}" + "".join(f"{label[:26]:>28}" for label in labels)]

    def line(title: str, key: str, pick) -> None:
        cells = []
        for label in labels:
            r = by.get((label, key))
            cells.append(pick(r) if r is not None else "n/a")
        lines.append(f"{title:34}" + "".join(f"{c:>28}" for c in cells))

    for key, what in (("1x4", "1 document x 4 clients"), ("200x2", "200 documents x 2 clients")):
        lines.append(what)
        line("  durable updates/s", key, lambda r: fmt(r["acceptedPerS"], "", 0))
        line("  server CPU ms / 1,000 updates", key, lambda r: fmt(r["serverCpuMsPer1000"]))
        line("  PostgreSQL CPU ms / 1,000", key, lambda r: fmt(r["pgCpuMsPer1000"]))
        line("  commit ms p50 / p99", key, lambda r: f"{fmt(r['commitP50'], '', 2)} / {fmt(r['commitP99'], '', 2)}")
    lines.append("typing (10 typists, one document)")
    line("  edit-to-peer ms p50 / p99", "typing",
         lambda r: f"{fmt(r['latencyMs']['p50'], '', 2)} / {fmt(r['latencyMs']['p99'], '', 2)}")
    line("  server CPU % of one core", "typing", lambda r: fmt(r["serverCpuPct"], "%"))
    sqlite = next((label for label in labels if label.startswith("SQLite")), None)
    for label in labels:
        if label.startswith("PostgreSQL") and sqlite:
            for key in ("1x4", "200x2"):
                a, b = by.get((sqlite, key)), by.get((label, key))
                if a and b and a["serverCpuMsPer1000"] and b["serverCpuMsPer1000"]:
                    lines.append(f"{label} / {sqlite}, server CPU per update ({key}): "
                                 f"{b['serverCpuMsPer1000'] / a['serverCpuMsPer1000']:.2f}x (target <= 1.5x)")
    return "\n".join(lines)


# ---------------------------------------------------------------- compare-reference
#
# collab and CodeMirror's own authority (bench/reference.mjs: @codemirror/collab's
# rebaseUpdates in one Node process, in memory, nothing durable) under the same load
# generator, one after the other in every round (the order flips each round), so
# that a noisy machine slows both alike. Each figure is reported as the median over
# the rounds with its range, and as the ratio collab / reference taken within each
# round (paired), then its median and range.

REFERENCE_WORKLOADS = {
    # key: (title, loadgen mode, loadgen arguments, collab server arguments)
    "push4": ("4 clients pushing as fast as acknowledged, one document", "throughput", ["--clients", "4"],
              UNLIMITED),
    "docs20x5": ("20 documents x 5 typists x 2 edits/s", "typing",
                 ["--docs", "20", "--clients", "100", "--rate", "2"], ["--max-conns-per-addr", "100000"]),
    "typing10": ("10 typists x 5 edits/s on one document", "typing", [], []),
    "idle10k": ("10,000 idle connections over 1,000 documents", "idle",
                ["--conns", "10000", "--docs", "1000", "--check", "--settle", "3000"],
                ["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000", "--max-connections", "100000"]),
}
# Every workload also runs bench/aiohttp_floor.py: the least a Python authority on aiohttp does, serving
# connections the way collab does (its request pipeline, a WebSocketResponse with collab's heartbeat,
# uvloop, orjson, collab's change engine to rebase and apply, nothing stored or checked). Per idle
# connection, the part of collab's memory that is not collab's own; per edit, the part of its CPU.
FLOOR = ROOT / "bench" / "aiohttp_floor.py"
FLOOR_NAME = "aiohttp floor"
FLOOR_WORKLOADS = set(REFERENCE_WORKLOADS)
# --without-commit: collab with its durable commit left out (bench/no_commit.py, SQLite only), one more
# column for the typing workloads, so that what the commit costs per edit is measured in the same run.
NO_COMMIT = ROOT / "bench" / "no_commit.py"
NO_COMMIT_NAME = "collab, no commit"
NO_COMMIT_WORKLOADS = {"push4", "docs20x5", "typing10"}


class ReferenceServer:
    """bench/reference.mjs (or another `command` given `--port`) on a free port of 127.0.0.1; started when
    /healthz answers."""

    def __init__(self, node: str, log_path: Path, command: list[str] | None = None, what: str = "the reference"):
        self.command, self.what = command or [node, str(REFERENCE)], what
        self.log_path, self.port, self.proc = log_path, free_port(), None
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> "ReferenceServer":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.command, "--port", str(self.port)], cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        return wait_healthy(self, self.what, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_loadgen(server, mode: str, node: str, extra: list[str], timeout: float) -> dict:
    """tests/js/loadgen.mjs `mode` against a started server (collab or the reference)."""
    args = [node, str(LOADGEN), mode, "--url", server.ws_url, "--server-pid", str(server.proc.pid),
            "--clk-tck", str(os.sysconf("SC_CLK_TCK")), *extra]
    proc = subprocess.run(args, cwd=LOADGEN.parent, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}\nserver log:\n{server.log()[-3000:]}")
    return json.loads(proc.stdout)


def reference_figures(key: str, r: dict) -> tuple[dict, list[str]]:
    """The figures of one run ({name: value}, lower is better unless the name says /s) and what broke."""
    problems = list(r.get("problems") or [])
    if r["mode"] == "throughput":
        figures = {"edits/s": r["acceptedPerS"], "CPU-ms / 1,000 edits": r["serverCpuMsPer1000"],
                   "push->ack p99 ms": r["ackLatencyMs"]["p99"]}
        if not r["lengthsAgree"]:
            problems.append("lengths disagree")
    elif r["mode"] == "typing":
        n = r["acceptedInWindow"] or 1
        figures = {"CPU-ms / 1,000 edits": r["serverCpuMs"] / n * 1000, "edits/s": r["acceptedPerS"],
                   "edit-to-peer p50 ms": r["latencyMs"]["p50"], "edit-to-peer p99 ms": r["latencyMs"]["p99"]}
        if not r["converged"]:
            problems.append("did not converge")
    else:
        served = r.get("served") or {}
        figures = {"KB / connection": r["perConnKB"], "marginal KB / connection": r["marginalPerConnKB"],
                   "pongs": served.get("pongs"), "ping round ms": served.get("pingMs"),
                   "edit reached": served.get("editReached"), "edit to all ms": served.get("editMs")}
        if r["connections"] != r["expected"] or not served.get("all"):
            problems.append(f"not all served: {r['connections']:,} of {r['expected']:,} open, "
                            f"{served.get('pongs')} pongs, edit reached {served.get('editReached')}")
    return figures, problems


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    nd = 0 if abs(med) >= 100 else (1 if abs(med) >= 10 else 2)
    return f"{med:,.{nd}f} ({min(values):,.{nd}f}-{max(values):,.{nd}f})"


def compare_reference(a, node: str) -> tuple[list[dict], bool]:
    """Every workload of `--only` on collab (each --db x --loops) and on the reference, alternately, `--rounds` times."""
    keys = [k.strip() for k in a.only.split(",") if k.strip()]
    for k in keys:
        if k not in REFERENCE_WORKLOADS:
            raise SystemExit(f"--only: unknown workload {k} (one of {', '.join(REFERENCE_WORKLOADS)})")
    loops = [x.strip() for x in a.loops.split(",") if x.strip()] or [None]
    all_ok, rows = True, []
    with ExitStack() as stack:
        dbs = [Database(spec.strip(), stack) for spec in a.db.split(",") if spec.strip()]
        trees = [(None, ROOT)] + [(f" at {d}", Path(d).resolve()) for d in a.against]
        variants = [(f"collab {db.label}" + (f" {loop}" if loop else "") + (label or ""), db, (loop, tree))
                    for label, tree in trees for db in dbs for loop in loops]
        for key in keys:
            title, mode, extra, server_args = REFERENCE_WORKLOADS[key]
            extra = list(extra)
            if a.duration and mode in ("typing", "throughput"):
                extra += ["--duration", str(int(a.duration * 1000))]
            floor = [(FLOOR_NAME, None, None)] if key in FLOOR_WORKLOADS else []
            if a.without_commit and key in NO_COMMIT_WORKLOADS:
                floor.append((NO_COMMIT_NAME, None, None))
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in [*variants, *floor]}
            runs["reference"] = []
            for rnd in range(a.rounds):
                order = [*variants, *floor, ("reference", None, None)]
                if rnd % 2:
                    order.reverse()
                for name, db, how in order:  # how: collab's (event loop, tree); None for the others
                    tmp = Path(tempfile.mkdtemp(prefix=f"collab-vs-{key}-"))
                    try:
                        if name == FLOOR_NAME:
                            server = ReferenceServer(node, tmp / "floor.log", [sys.executable, str(FLOOR)],
                                                     "bench/aiohttp_floor.py").start()
                        elif name == NO_COMMIT_NAME:
                            command = [sys.executable, str(NO_COMMIT), "serve", "--host", "127.0.0.1",
                                       "--db", str(tmp / "no-commit.db"), *under_load(server_args)]
                            server = ReferenceServer(node, tmp / "server.log", command, "bench/no_commit.py").start()
                        elif db is None:
                            server = ReferenceServer(node, tmp / "reference.log").start()
                        else:
                            loop, tree = how
                            loop_args = ["--loop", loop] if loop else []
                            server = ServerProcess(db.fresh(tmp), extra_args=server_args + db.server_args + loop_args,
                                                   log_path=tmp / "server.log", checkout=tree)
                            server.start(timeout=60)
                        try:
                            r = run_loadgen(server, mode, node, extra, timeout=900)
                        finally:
                            server.kill()
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    figures, problems = reference_figures(key, r)
                    runs[name].append({"figures": figures, "problems": problems, "raw": r})
                    all_ok &= not problems
                    shown = "; ".join(f"{f} {fmt(v, '', 2)}" for f, v in figures.items())
                    print(f"  [{key} round {rnd + 1}/{a.rounds}] {name}: {shown}"
                          + (f"  PROBLEMS: {'; '.join(problems[:3])}" if problems else ""), flush=True)
            rows.append({"key": key, "title": title, "runs": runs})
            print(reference_table([rows[-1]], a.rounds), flush=True)
            print(flush=True)
    return rows, all_ok


def reference_table(rows: list[dict], rounds: int) -> str:
    """Per workload and figure: each side's median (range) over the rounds, and collab / reference per round."""
    lines = []
    for row in rows:
        ref = row["runs"]["reference"]
        lines.append(f"== {row['title']} ({rounds} rounds; median (min-max))")
        for name, runs in row["runs"].items():
            if name == "reference":
                continue
            lines.append(f"  {'':26}{name[:30]:>32}{'reference':>26}{'ratio to reference':>24}")
            for figure in runs[0]["figures"]:
                ours = [x["figures"][figure] for x in runs]
                theirs = [x["figures"][figure] for x in ref]
                ratios = [o / t for o, t in zip(ours, theirs) if o is not None and t]
                lines.append(f"  {figure:26}{spread(ours):>32}{spread(theirs):>26}"
                             f"{(spread(ratios) + 'x') if ratios else 'n/a':>24}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    end_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", choices=[*BENCHES, "all", "compare", "compare-reference"])
    p.add_argument("--duration", type=float, help="seconds of measurement (typing default 20, throughput and "
                   "docs 10)")
    p.add_argument("--db", default="sqlite", help="comma-separated databases: sqlite, sqlite:full, postgres, "
                   "postgres:async, a SQLite file or a postgresql:// URL (default sqlite)")
    p.add_argument("--docs", type=int, default=200, help="documents for `docs` (default 200)")
    p.add_argument("--per-doc", type=int, default=2, help="clients per document for `docs` (default 2)")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    p.add_argument("--rounds", type=int, default=3, help="compare-reference: rounds, each running collab and "
                   "the reference once per workload (default 3)")
    p.add_argument("--only", default=",".join(REFERENCE_WORKLOADS), help="compare-reference: comma-separated "
                   f"workloads (default all: {', '.join(REFERENCE_WORKLOADS)})")
    p.add_argument("--loops", default="", help="compare-reference: collab's event loops (its --loop), "
                   "comma-separated, each a column: uvloop, asyncio (default: the server's default only)")
    p.add_argument("--without-commit", action="store_true", help="compare-reference: also run collab with its "
                   "durable commit left out (bench/no_commit.py; push4, docs20x5, typing10), a column of its own")
    p.add_argument("--against", action="append", default=[], metavar="DIR", help="compare-reference: also run "
                   "the collab of another tree (another commit's: `git worktree add DIR REV`), a column of its own; "
                   "may be given more than once")
    add_trace_argument(p)
    a = p.parse_args(argv)
    if a.bench in ("trace", "all") and not a.trace.is_file():
        print(f"no trace at {a.trace}: {WHERE_TO_GET}", file=sys.stderr)
        return 2
    node = loadgen_node()
    if not node:
        print("node is not installed", file=sys.stderr)
        return 2
    raise_nofile()
    for tree in a.against:  # else the venv's own collab would run under that tree's name
        if not (Path(tree) / "collab" / "__init__.py").is_file():
            print(f"--against {tree}: no collab package there (give a checkout's top folder)", file=sys.stderr)
            return 2
    if a.bench == "compare-reference":
        rows, ok = compare_reference(a, node)
        print("== summary: collab / reference per round, median (min-max)")
        print(reference_table(rows, a.rounds), flush=True)
        if a.json:
            print(json.dumps(rows, indent=1))
        return 0 if ok else 1
    if a.bench == "compare":
        runs = [("docs", "1x4", ["--docs", "1", "--per-doc", "4"]), ("docs", "200x2", ["--docs", "200", "--per-doc", "2"]),
                ("typing", "typing", [])]
    elif a.bench == "all":
        runs = [(name, name, []) for name in BENCHES]
    else:
        runs = [(a.bench, a.bench, [])]
    all_ok = True
    results = []
    with ExitStack() as stack:
        databases = [Database(spec.strip(), stack) for spec in a.db.split(",") if spec.strip()]
        for db in databases:
            for name, key, extra in runs:
                extra = list(extra)
                if name == "docs" and a.bench != "compare":
                    extra += ["--docs", str(a.docs), "--per-doc", str(a.per_doc)]
                if a.duration and name in ("typing", "throughput", "docs"):
                    extra += ["--duration", str(int(a.duration * 1000))]
                r = run_bench(name, node, extra, timeout=900, trace=a.trace.resolve(), db=db)
                r["key"] = key
                text, ok = report(r)
                print(f"[{db.label}] " + text, flush=True)
                print(flush=True)
                all_ok &= ok
                results.append((db.label, r))
    if a.bench == "compare":
        print(compare_table(results), flush=True)
    if a.json:
        print(json.dumps([r for _, r in results], indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
