"""Load benchmarks through a real server subprocess, driven by headless Node clients.

Usage (from the repository root):

    .venv/bin/python bench/load.py typing       # a) 10 typists, edit-to-peer latency
    .venv/bin/python bench/load.py throughput   # b) 4 clients pushing flat out: durable updates/s
    .venv/bin/python bench/load.py idle         # c) 2,000 idle connections: RSS per connection
    .venv/bin/python bench/load.py trace        # d) an editing trace through the server
                                                #    (automerge-paper, or --trace PATH)
    .venv/bin/python bench/load.py all          # all four, one after the other

Each benchmark starts its own `python -m collab serve` on 127.0.0.1 with a
temporary database, runs tests/js/loadgen.mjs against it, prints a report with
the target, stops the server and removes the database. Server CPU comes from
/proc/<pid>/stat and memory from /proc/<pid>/status, read by the load
generator at the exact edges of the measurement window. Nothing here is a
pass/fail test: the exit status is 0 unless a run broke (errors, divergence).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from serverproc import ServerProcess  # noqa: E402
from trace_replay import WHERE_TO_GET, add_trace_argument  # noqa: E402

LOADGEN = ROOT / "tests" / "js" / "loadgen.mjs"

# Server options per benchmark. The per-connection token bucket (default 100
# frames/s) and the per-address connection cap (default 100) protect a public
# server from one client; a benchmark that *is* one busy client or 2,000
# connections from 127.0.0.1 lifts them, and says so in the report.
BENCHES = {
    "typing": {"server": [], "target": "edit-to-peer p99 < 10 ms"},
    "throughput": {"server": ["--rate", "1000000", "--burst", "1000000"],
                   "target": ">= 3,500 durable updates/s"},
    "idle": {"server": ["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000"],
             "target": "< 30 KB RSS per connection"},
    "trace": {"server": ["--rate", "1000000", "--burst", "1000000"],
              "target": "final text == endContent"},
}


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run_bench(name: str, node: str, extra: list[str], timeout: float, trace: Path) -> dict:
    spec = BENCHES[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"collab-bench-{name}-"))
    server = ServerProcess(tmp / "bench.db", extra_args=spec["server"])
    try:
        server.start()
        pid = server.proc.pid
        args = [node, str(LOADGEN), name, "--url", server.ws_url, "--server-pid", str(pid),
                "--clk-tck", str(os.sysconf("SC_CLK_TCK")), *extra]
        if name == "trace":
            args += ["--file", str(trace)]
        proc = subprocess.run(args, cwd=LOADGEN.parent, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen {name} failed:\n{proc.stderr[-3000:]}\nserver log:\n{server.log()[-3000:]}")
        result = json.loads(proc.stdout)
        result["serverArgs"] = spec["server"]
        result["target"] = spec["target"]
        return result
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def fmt(x, unit="", nd=1):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}{unit}"


def mb(kb):
    return fmt(kb / 1024 if kb is not None else None, " MB")


def report(r: dict) -> tuple[str, bool]:
    """Human-readable report and whether the run itself was sound (no errors, texts agree)."""
    mode = r["mode"]
    lines = [f"== {mode}  (target: {r['target']}; server options: {' '.join(r['serverArgs']) or 'defaults'})"]
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
    if problems:
        lines.append(f"PROBLEMS ({len(problems)}): " + "; ".join(problems[:5]))
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", choices=[*BENCHES, "all"])
    p.add_argument("--duration", type=float, help="seconds of measurement (typing default 20, throughput 10)")
    p.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    add_trace_argument(p)
    a = p.parse_args(argv)
    if a.bench in ("trace", "all") and not a.trace.is_file():
        print(f"no trace at {a.trace}: {WHERE_TO_GET}", file=sys.stderr)
        return 2
    node = shutil.which("node")
    if not node:
        print("node is not installed", file=sys.stderr)
        return 2
    if not (LOADGEN.parent / "node_modules" / "@codemirror" / "collab").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN.parent, check=True)
    raise_nofile()
    names = list(BENCHES) if a.bench == "all" else [a.bench]
    all_ok = True
    results = []
    for name in names:
        extra = []
        if a.duration and name in ("typing", "throughput"):
            extra += ["--duration", str(int(a.duration * 1000))]
        r = run_bench(name, node, extra, timeout=900, trace=a.trace.resolve())
        text, ok = report(r)
        print(text, flush=True)
        print(flush=True)
        all_ok &= ok
        results.append(r)
    if a.json:
        print(json.dumps(results, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
