"""Where a collab server's time goes under the 4-pusher workload, thread by thread (py-spy).

    .venv/bin/python bench/profile.py [--duration 10] [--rate 250] [--top 20] [--loop uvloop|asyncio]
                                      [--db sqlite] [--raw FILE] [--workload push4|docs20x5]

Starts `python -m collab serve` (its `--loop` if given) on a fresh
database with the rate limits lifted, drives it with
tests/js/loadgen.mjs `throughput` (4 clients, each pushing the next edit as
soon as its own comes back), and after the warm-up attaches py-spy to the
server's own pid (the Popen child, never py-spy's nor the launcher's):
`py-spy record --pid PID --threads --idle -f raw`. Each raw line is one
stack, its first frame the thread (`thread (TID): NAME`), so samples are
grouped by thread: the event loop (MainThread) and the SQLite writer
(collab-sqlite-writer_0) apart, readers and others after them.

With --idle every thread is sampled whether it runs or waits. A sample whose
innermost frame is a known wait (the event loop's selector, a thread pool
worker waiting for work, a SQLite thread of store.py waiting in its job
queue's native `get`, `Runner.run` under uvloop, whose loop is native) is
counted as waiting; the tables rank the other, busy, samples:

  * self: the innermost frame (function and file, line numbers merged);
  * inclusive: every function on the stack, once per sample;
  * by file: self samples summed per source file.

Shares are of that thread's busy samples. Each thread's CPU time over the
same window, from /proc/PID/task/TID/stat, is printed beside it (py-spy
pauses the process to read each stack, which slows it: the throughput
figures printed here are under the profiler; push4, whose writer lets the
event loop turn before each commit, runs at a fifth to a quarter of its speed so.
`--nonblocking` reads the stacks without pausing: the load runs at full
speed, and a sample may now and then mix two moments).

Needs py-spy in the venv (`.venv/bin/pip install py-spy`) and the right to
ptrace the server (root, or kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from load import LOADGEN, UNLIMITED, Database  # noqa: E402
from serverproc import ServerProcess, end_on_sigterm  # noqa: E402

# Innermost frames that mean "waiting, not working" (names as py-spy prints them).
WAITS = {"EpollSelector.select", "PollSelector.select", "SelectSelector.select", "_worker", "Runner.run",
         "Condition.wait", "Event.wait", "Thread.join", "_wait_for_tstate_lock", "Queue.get",
         "_Connections._serve"}  # store.py's SQLite threads: a job runs in frames below it, so its own are waits
THREAD = re.compile(r"^thread \((\d+)\): ?(.*)$")
FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def parse_raw(text: str) -> dict[str, dict]:
    """py-spy raw output -> {thread label: {"tid", "samples", "wait": Counter, "self", "incl", "files"}}."""
    threads: dict[str, dict] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        m = THREAD.match(frames[0])
        if not m:
            continue
        tid, name = m.group(1), m.group(2) or "?"
        t = threads.setdefault(f"{name} ({tid})", {"tid": int(tid), "name": name, "samples": 0, "wait": Counter(),
                                                    "self": Counter(), "incl": Counter(), "files": Counter()})
        n = int(count)
        t["samples"] += n
        calls = [FRAME.match(f) for f in frames[1:]]
        funcs = [(c.group(1), c.group(2)) if c else (f, "?") for c, f in zip(calls, frames[1:])]
        if not funcs:
            continue
        leaf = funcs[-1]
        if leaf[0] in WAITS:
            t["wait"][f"{leaf[0]} ({leaf[1]})"] += n
            continue
        t["self"][f"{leaf[0]} ({leaf[1]})"] += n
        t["files"][leaf[1]] += n
        for f in set(funcs):
            t["incl"][f"{f[0]} ({f[1]})"] += n
    return threads


def thread_cpu_ms(pid: int) -> dict[int, float]:
    """utime + stime (ms) of every thread of `pid`, from /proc."""
    clk = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) * 1000 / clk
    return out


def report(threads: dict[str, dict], cpu: dict[int, float], window_s: float, top: int) -> str:
    order = sorted(threads.values(), key=lambda t: (t["name"] != "MainThread", "writer" not in t["name"],
                                                    -(t["samples"] - sum(t["wait"].values()))))
    total_busy = sum(t["samples"] - sum(t["wait"].values()) for t in threads.values()) or 1
    lines = []
    quiet = []
    for t in order:
        busy = t["samples"] - sum(t["wait"].values())
        label = "event loop" if t["name"] == "MainThread" else t["name"]
        cpu_ms = cpu.get(t["tid"])
        head = (f"== {label} (tid {t['tid']}): {t['samples']:,} samples, busy {busy:,} "
                f"({busy / (t['samples'] or 1):.0%} of its samples, {busy / total_busy:.0%} of all busy samples); "
                f"CPU {cpu_ms:,.0f} ms in {window_s:.1f} s ({cpu_ms / window_s / 10:.0f}% of a core)"
                if cpu_ms is not None else f"== {label} (tid {t['tid']}): {t['samples']:,} samples, busy {busy:,}")
        if busy < max(5, 0.01 * total_busy):
            quiet.append(f"{label}: {busy} busy of {t['samples']:,}")
            continue
        lines.append(head)
        waits = ", ".join(f"{k} {v / t['samples']:.0%}" for k, v in t["wait"].most_common(3))
        lines.append(f"   waiting: {waits or 'never'}")
        # The frames on every busy stack (the thread's trunk: runpy, run_forever...) say nothing.
        incl = Counter({k: v for k, v in t["incl"].items() if v < busy})
        for title, counter in (("self", t["self"]), ("inclusive, frames on every stack left out", incl),
                               ("self, by file", t["files"])):
            lines.append(f"   -- {title} (share of this thread's busy samples)")
            for name, n in counter.most_common(top):
                lines.append(f"   {n / busy:6.1%}  {n:6,}  {name}")
        lines.append("")
    if quiet:
        lines.append("== mostly waiting: " + "; ".join(quiet))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    end_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10, help="seconds sampled (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of load before sampling (default 2)")
    p.add_argument("--rate", type=int, default=250, help="samples per second per thread (default 250)")
    p.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], help="the server's --loop (default: its default)")
    p.add_argument("--db", default="sqlite", help="one database spec as in bench/load.py (default sqlite)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workload", choices=["push4", "docs20x5", "idle"], default="push4",
                   help="push4: --clients pushing as fast as acknowledged (default); docs20x5: 20 documents x 5 "
                        "typists x 2 edits/s (bench/load.py compare-reference's docs20x5); idle (with --cpu only): "
                        "--conns connections over --conns/10 documents open, sit, get a ping and an edit each "
                        "(compare-reference's idle10k), the window being the whole run")
    p.add_argument("--conns", type=int, default=10000, help="connections of --workload idle (default 10000)")
    p.add_argument("--raw", type=Path, help="also keep py-spy's raw output here")
    p.add_argument("--nonblocking", action="store_true",
                   help="py-spy reads the stacks without pausing the server (full speed, samples a little less exact)")
    p.add_argument("--cpu", action="store_true",
                   help="no py-spy: the thread CPU time spent inside a few steps of the server (bench/cpu_hooks.py), "
                        "per edit; at full speed, and a step's time spent preempted is not counted")
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    node = shutil.which("node")
    if a.cpu and node:
        return cpu_split(a, node)
    if a.workload == "idle":
        print("--workload idle is for --cpu", file=sys.stderr)
        return 2
    if not pyspy or not node:
        print("needs py-spy (.venv/bin/pip install py-spy) and node", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        db = Database(a.db, stack)
        tmp = Path(tempfile.mkdtemp(prefix="collab-profile-"))
        stack.callback(shutil.rmtree, tmp, True)
        pid, gen, load_ms = _loaded_server(a, node, db, tmp, stack)
        raw = tmp / "raw.txt"
        cpu0, t0 = thread_cpu_ms(pid), time.monotonic()
        spy = subprocess.run([pyspy, "record", "--pid", str(pid), "--threads", "--idle", "-f", "raw",
                              "-r", str(a.rate), "-d", str(int(a.duration)), "-o", str(raw),
                              *(["--nonblocking"] if a.nonblocking else [])],
                             capture_output=True, text=True)
        cpu1, window = thread_cpu_ms(pid), time.monotonic() - t0
        if spy.returncode != 0 or not raw.exists():
            print(f"py-spy failed ({spy.returncode}):\n{spy.stdout}\n{spy.stderr}", file=sys.stderr)
            return 1
        out, err = gen.communicate(timeout=load_ms / 1000 + 60)
        if gen.returncode != 0:
            print(f"load generator failed:\n{err[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(out)
        text = raw.read_text()
        if a.raw:
            a.raw.write_text(text)
        threads = parse_raw(text)
        cpu = {tid: cpu1[tid] - cpu0.get(tid, 0.0) for tid in cpu1}
        who = f"{a.clients} pushers" if a.workload == "push4" else "20 documents x 5 typists x 2 edits/s"
        print(f"collab on {db.label}, {a.loop or 'default'} loop, server pid {pid}; {who}; py-spy at {a.rate} Hz "
              f"for {a.duration:.0f} s")
        per_1000 = r.get("serverCpuMsPer1000") or (r["serverCpuMs"] or 0) / max(1, r["acceptedInWindow"]) * 1000
        print(f"under the profiler: {r['acceptedPerS']:,.0f} durable edits/s, server CPU "
              f"{per_1000:,.0f} ms per 1,000 edits, {r['serverCpuPct']:.0f}% of a core, "
              f"problems: {r['problems'] or 'none'}")
        print(f"threads' CPU in the sampled window: {sum(cpu.values()):,.0f} ms "
              f"({', '.join(f'{tid}: {ms:,.0f}' for tid, ms in sorted(cpu.items(), key=lambda x: -x[1]) if ms)})")
        print()
        print(report(threads, cpu, window, a.top))
    return 0


def _server(a: argparse.Namespace, db: Database, tmp: Path, stack: ExitStack) -> ServerProcess:
    """A fresh server for the workload, started (killed when `stack` closes)."""
    loop_args = ["--loop", a.loop] if a.loop else []
    limits = (["--max-conns-per-addr", "100000", "--max-conns-per-doc", "100000", "--max-connections", "100000"]
              if a.workload == "idle" else [])
    server = ServerProcess(db.fresh(tmp), extra_args=UNLIMITED + db.server_args + loop_args + limits,
                           log_path=tmp / "server.log")
    server.start(timeout=60)
    stack.callback(server.kill)
    return server


def _load(a: argparse.Namespace, node: str, server: ServerProcess, stack: ExitStack) -> tuple[subprocess.Popen, int]:
    """The workload's load generator against `server`: (the process, the most ms it should run)."""
    load_ms = int((a.warmup + a.duration + 2) * 1000)
    if a.workload == "idle":
        load, load_ms = ["idle", "--conns", str(a.conns), "--docs", str(max(1, a.conns // 10)), "--check",
                         "--settle", "2000"], 600_000
    else:
        load = (["throughput", "--clients", str(a.clients)] if a.workload == "push4" else
                ["typing", "--docs", "20", "--clients", "100", "--rate", "2"])
        load += ["--warmup", "1000", "--duration", str(load_ms)]
    gen = subprocess.Popen([node, str(LOADGEN), *load, "--url", server.ws_url, "--server-pid", str(server.proc.pid),
                            "--clk-tck", str(os.sysconf("SC_CLK_TCK"))],
                           cwd=LOADGEN.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.callback(lambda: gen.poll() is None and gen.kill())
    return gen, load_ms


def _loaded_server(a: argparse.Namespace, node: str, db: Database, tmp: Path,
                   stack: ExitStack) -> tuple[int, subprocess.Popen, int]:
    """A fresh server under the workload, after the warm-up: (its pid, the load generator, the load's ms).
    The pid is the interpreter running the server itself (py-spy gets this pid, not its own)."""
    server = _server(a, db, tmp, stack)
    gen, load_ms = _load(a, node, server, stack)
    time.sleep(1 + a.warmup)
    return server.proc.pid, gen, load_ms


def cpu_split(a: argparse.Namespace, node: str) -> int:
    """--cpu: the load against a server whose steps are timed in thread CPU (bench/cpu_hooks.py)."""
    with ExitStack() as stack:
        db = Database(a.db, stack)
        tmp = Path(tempfile.mkdtemp(prefix="collab-cpu-"))
        stack.callback(shutil.rmtree, tmp, True)
        (tmp / "hooks").mkdir()
        (tmp / "hooks" / "sitecustomize.py").write_text("import cpu_hooks  # noqa: F401\n")
        dumps = tmp / "cpu.jsonl"
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "COLLAB_CPU_HOOKS")}
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp / "hooks"), str(ROOT / "bench"),
                                                                saved["PYTHONPATH"]) if p)
        os.environ["COLLAB_CPU_HOOKS"] = str(dumps)
        try:
            if a.workload == "idle":  # the window is the whole run: connecting, sitting, the checks
                server = _server(a, db, tmp, stack)
                pid = server.proc.pid
                os.kill(pid, signal.SIGUSR1)
                gen, load_ms = _load(a, node, server, stack)
            else:
                pid, gen, load_ms = _loaded_server(a, node, db, tmp, stack)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if a.workload != "idle":
            os.kill(pid, signal.SIGUSR1)
            time.sleep(a.duration)
            os.kill(pid, signal.SIGUSR1)
        out, err = gen.communicate(timeout=load_ms / 1000 + 60)
        if a.workload == "idle":
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.5)
        if gen.returncode != 0:
            print(f"load generator failed:\n{err[-2000:]}", file=sys.stderr)
            return 1
        lines = [json.loads(line) for line in dumps.read_text().splitlines()]
        if len(lines) != 2:
            print(f"expected two CPU dumps from the server, got {len(lines)} (see {tmp / 'server.log'})",
                  file=sys.stderr)
            return 1
        before, after = lines
        edits = after["steps"]["sequencing a push (Sequencer.push)"]["calls"] - \
            before["steps"]["sequencing a push (Sequencer.push)"]["calls"]
        total = after["process_cpu_s"] - before["process_cpu_s"]
        r = json.loads(out)
        who = {"push4": f"{a.clients} pushers", "docs20x5": "20 documents x 5 typists x 2 edits/s",
               "idle": f"{a.conns:,} idle connections over {max(1, a.conns // 10):,} documents"}[a.workload]
        window = "the whole run" if a.workload == "idle" else f"{a.duration:.0f} s window"
        print(f"collab on {db.label}, {a.loop or 'default'} loop; {who}; {window}, "
              f"{edits:,} pushes sequenced, load generator: {r['problems'] or 'no problems'}"
              + (f"; served: {r['served']}" if "served" in r else ""))
        print(f"server CPU in the window: {total * 1000:,.0f} ms, {total / max(edits, 1) * 1e6:,.0f} us per push")
        print(f"{'step (inclusive; steps nest)':64s} {'calls/push':>10s} {'us/push':>8s} {'share':>6s}")
        for label, now in after["steps"].items():
            cpu = now["cpu_s"] - before["steps"][label]["cpu_s"]
            calls = now["calls"] - before["steps"][label]["calls"]
            print(f"{label:64s} {calls / max(edits, 1):10.2f} {cpu / max(edits, 1) * 1e6:8.1f} "
                  f"{cpu / total if total else 0:6.1%}")
        print("cyclic GC pauses (the process runs nothing else meanwhile):")
        for g, now in after["gc"].items():
            count = now["count"] - before["gc"][g]["count"]
            spent = now["total_s"] - before["gc"][g]["total_s"]
            print(f"  generation {g}: {count:,} collections, {spent * 1000:,.0f} ms in all, the longest since the "
                  f"server started {now['max_s'] * 1000:,.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
