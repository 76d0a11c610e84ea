"""Thread CPU spent inside a few of the server's own steps, for `bench/profile.py --cpu`.

Imported into the server process (by a `sitecustomize` that profile.py puts on
its PYTHONPATH) when COLLAB_CPU_HOOKS names a file: each function of STEPS is
wrapped so that the CPU time of the thread calling it (time.thread_time: user
and system, so a socket write's kernel work counts, and time the thread spends
preempted does not) is added to that step's total, inclusive of what it calls.
On SIGUSR1 the totals so far, with the process's own CPU time, are appended to
the file as one JSON line; profile.py takes two such lines and subtracts.

Only plain functions are wrapped (a coroutine's time would stop at its first
await). Steps nest (a broadcast is inside a commit's completion), so shares do
not add up. What is not in any step (the handler's coroutine from the frame to
the room, the room's bookkeeping, the writer's turns, the event loop itself)
is the rest of the process's CPU. Each wrapper costs a little CPU of its own
(two clock reads). The cyclic garbage collector's pauses (gc.callbacks:
collections, their total and the longest, per generation) are dumped too.
"""

from __future__ import annotations

import functools
import gc
import os
import resource
import signal
import time

import orjson

from collab import httpguard, peer, protocol, room, sequencer, store, ws

# (owner, attribute, label): what each step is.
STEPS = [
    (peer.Peer, "_write", "socket write of one frame (Peer._write)"),
    (store.Store, "_commit_inline", "SQLite commit on the event loop (Store._commit_inline)"),
    (room.Room, "_commit_done", "a commit's completion, broadcast included (Room._commit_done)"),
    (room.Room, "_broadcast", "one frame to every member (Room._broadcast)"),
    (protocol, "parse", "parsing and checking a frame (protocol.parse)"),
    (sequencer.Sequencer, "push", "sequencing a push (Sequencer.push)"),
    (store, "_checkpoint", "WAL checkpoint, in the writer thread (store._checkpoint)"),
    (httpguard._Connection, "data_received", "bytes read (collab serve's connection wrapper: data_received)"),
    (ws.Connection, "data_received", "... of them after a welcome, by aiohttp's frame reader (Connection.data_received)"),
]


def install(path: str) -> None:
    totals: dict[str, list] = {}

    def wrap(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)
        entry = totals.setdefault(label, [0.0, 0])

        @functools.wraps(inner)
        def step(*args, **kwargs):
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                entry[0] += time.thread_time() - start
                entry[1] += 1

        setattr(owner, name, step)

    for owner, name, label in STEPS:
        wrap(owner, name, label)

    # Pauses of the cyclic garbage collector, per generation: [collections, total s, longest s].
    collections = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
    began = [0.0]

    def collected(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        pause, entry = time.perf_counter() - began[0], collections[info["generation"]]
        entry[0] += 1
        entry[1] += pause
        entry[2] = max(entry[2], pause)

    gc.callbacks.append(collected)

    def dump(*_) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = {"process_cpu_s": usage.ru_utime + usage.ru_stime,
                "steps": {label: {"cpu_s": t, "calls": n} for label, (t, n) in totals.items()},
                "gc": {str(g): {"count": c, "total_s": t, "max_s": m} for g, (c, t, m) in collections.items()}}
        with open(path, "ab") as out:
            out.write(orjson.dumps(line) + b"\n")

    signal.signal(signal.SIGUSR1, dump)


if os.environ.get("COLLAB_CPU_HOOKS"):
    install(os.environ["COLLAB_CPU_HOOKS"])
