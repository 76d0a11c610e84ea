"""The benchmarks under bench/ start servers and load generators and run for minutes: ended with
SIGTERM (a `kill PID`, a harness giving up), they must stop what they started, not leave it running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serverproc import ROOT


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state, ppid, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _descendants(pid: int) -> dict[int, str]:
    """The processes below `pid`, each with its start time (so that a pid used again is not taken for it)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            if child not in found:
                found[child] = start
                todo.append(child)
    return found


def _running(pid: int, start: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == start and fields[0] != "Z"


def test_a_benchmark_ended_with_sigterm_stops_the_servers_and_load_it_started(tmp_path):
    with open(tmp_path / "bench.log", "wb") as log:
        bench = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), "compare-reference", "--only",
                                  "typing10", "--rounds", "1", "--duration", "60"], cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
    started: dict[int, str] = {}
    try:
        # Round 1 runs collab first: its server, then the load generator (Node) once it is healthy.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and bench.poll() is None:
            started |= _descendants(bench.pid)
            if sum(_running(*p) for p in started.items()) >= 2:
                break
            time.sleep(0.1)
        assert bench.poll() is None, (tmp_path / "bench.log").read_text()
        assert len(started) >= 2, f"the benchmark started no server and load generator in 60 s: {started}"
        time.sleep(1)
        started |= _descendants(bench.pid)
        bench.send_signal(signal.SIGTERM)
        ended = bench.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(*p) for p in started.items()):
            time.sleep(0.1)
        left = {p[0]: Path(f"/proc/{p[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                for p in started.items() if _running(*p)}
        assert not left, f"still running after the benchmark ended: {left}"
        assert ended == 128 + signal.SIGTERM, (tmp_path / "bench.log").read_text()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        for pid, start in started.items():  # what a failing run left behind, stopped by its pid
            if _running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
