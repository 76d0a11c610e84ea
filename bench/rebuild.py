"""How long rebuilding old versions of a long document holds everyone else up.

    .venv/bin/python bench/rebuild.py [--updates 220000] [--text-kb 1700] [--db PATH] [--only store,server]

Builds (once, kept at --db if given) a SQLite database of one document
"big": an imported text of --text-kb KB, then --updates typing updates
(runs of keystrokes at one place, one in ten a backspace) committed in
frames of FRAME updates, with a snapshot wherever a room would write one
(the updates since the last add as many bytes of ChangeSetJSON as the text
has characters, and 64 KB). The version rebuilt is the one just before the
last snapshot: the most updates a rebuild replays (about as many as the text
has characters over the size of one update's JSON). Then:

  * store: in this process, a task that sleeps 1 ms in a loop records the
    event loop's longest pause while `Store.text_at` rebuilds that version,
    then while `Store.load` loads the head (the replay after the latest
    snapshot), each REPEAT times; and the time each took;
  * server: `python -m collab serve` on the database; /healthz is timed
    every PROBE_EVERY s and an edit round trip (push -> its ack) on a small
    document of its own every PROBE_EVERY s, idle first and then while
    REQUESTS requests for the text of old versions (GET
    /api/docs/big/versions/N, near that version, each by a `curl` of its
    own, so that reading their answers holds no probe up) are answered,
    two at a time as the server's rebuild gate lets them.

127.0.0.1 only; every step ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from collab.changes import ChangeSet  # noqa: E402
from collab.rebase import Update  # noqa: E402
from collab.sequencer import Accepted  # noqa: E402
from collab.storage import Commit  # noqa: E402
from collab.store import Store  # noqa: E402
from collab.text import Text  # noqa: E402
from serverproc import ServerProcess, end_on_sigterm  # noqa: E402
from stall import probe  # noqa: E402 - /healthz round trips
from storeutil import OneCommit  # noqa: E402

FRAME = 500           # updates per commit while building
PROBE_EVERY = 0.005   # seconds between two probes
REPEAT = 3            # rebuilds (and loads) timed in the store case
REQUESTS = 6          # version requests in the server case
TIMEOUT = 120.0


def typing(text_len: int, n: int, seed: int):
    """n keystroke ChangeSetJSONs: runs of 5-200 keystrokes at one place, one in ten a backspace."""
    rnd = random.Random(seed)
    length, at, left = text_len, 0, 0
    for _ in range(n):
        if left == 0:
            at, left = rnd.randint(1, length - 1), rnd.randint(5, 200)
        left -= 1
        if rnd.random() < 0.1 and at > 1:
            at -= 1
            length -= 1
            yield [at, [1], length - at]
        else:
            yield [at, [0, rnd.choice("abcdefgh ")], length - at]
            at += 1
            length += 1


async def build(db: Path, updates: int, text_kb: int, seed: int = 1) -> tuple[int, int, int]:
    """The database of document "big"; returns (head version, the last snapshot's version, text length)."""
    rnd = random.Random(seed)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "\n"]
    start = " ".join(rnd.choice(words) for _ in range(text_kb * 1024 // 6))[:text_kb * 1024]
    store = await Store(db, synchronous="OFF").open()
    try:
        doc = await store.create_document("big", start, author="importer")
        text, version = Text(start), 1
        since, snapshots = len(orjson.dumps([[0, *start.split("\n")]])), []
        frame: list[Accepted] = []
        for k, parts in enumerate(typing(len(start), updates, seed), 1):
            changes = ChangeSet.from_json(parts)
            text.apply(changes)
            version += 1
            frame.append(Accepted(version, Update(f"typist{k % 7}", changes), f"typist{k % 7}", 1000.0 + k))
            if len(frame) == FRAME or k == updates:
                size = sum(len(e.changes_json) for e in frame)
                snapshot = None
                if since + size >= max(text.length, 64 << 10):
                    snapshot, since = (version, str(text)), 0
                    snapshots.append(version)
                else:
                    since += size
                source = OneCommit(Commit(doc, frame[0].version - 1, frame, text.length, snapshot))
                store.schedule(source)
                await source.done
                frame = []
        return version, snapshots[-1] if snapshots else 0, text.length
    finally:
        await store.close()


async def longest_pause(work, tick: float = 0.001) -> tuple[float, float]:
    """(seconds `work()` took, the event loop's longest pause meanwhile: a 1 ms sleep's overshoot)."""
    done, pauses = False, [0.0]

    async def watch():
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(tick)
            pauses.append(time.perf_counter() - before - tick)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await work()
    took = time.perf_counter() - started
    done = True
    await watcher
    return took, max(pauses)


async def store_case(db: Path, version: int) -> None:
    store = await Store(db).open()
    try:
        info = await store.document("big")
        idle = await longest_pause(lambda: asyncio.sleep(1.0))
        print(f"idle 1 s: longest pause {idle[1] * 1e3:.1f} ms")
        for what, work in (("text_at", lambda: store.text_at(info["id"], version)),
                           ("load", lambda: store.load("big"))):
            for _ in range(REPEAT):
                took, pause = await longest_pause(work)
                print(f"{what:8} took {took * 1e3:7.0f} ms, longest loop pause {pause * 1e3:6.1f} ms", flush=True)
    finally:
        await store.close()
        from collab import compute
        compute.pool().close()


async def edits(session, url: str, stop: asyncio.Event) -> list[float]:
    """Round trips of one-character pushes to a small document of their own (push -> acknowledged)."""
    ws = await session.ws_connect(f"{url}/ws/small", protocols=("collab.v1",))
    await ws.send_str(orjson.dumps({"type": "hello", "clientID": "prober", "version": None}).decode())
    welcome = orjson.loads((await ws.receive()).data)
    version, length, trips = welcome["version"], len(welcome["doc"]), []
    while not stop.is_set():
        started = time.perf_counter()
        await ws.send_str(orjson.dumps({"type": "push", "version": version, "updates": [
            {"clientID": "prober", "changes": ([length] if length else []) + [[0, "x"]]}]}).decode())
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] == "error":
                raise RuntimeError(frame)
            if frame["type"] == "updates":
                version, length = frame["from"] + len(frame["updates"]), length + 1
                break
        trips.append(time.perf_counter() - started)
        await asyncio.sleep(PROBE_EVERY)
    await ws.close()
    return trips


async def probed(url: str, work) -> tuple[float, list[float], list[float]]:
    async with aiohttp.ClientSession() as session:
        stop = asyncio.Event()
        probes = asyncio.gather(probe(session, url, None, stop, every=PROBE_EVERY), edits(session, url, stop))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        async with asyncio.timeout(TIMEOUT):
            await work(session)
        took = time.perf_counter() - started
        stop.set()
        health, pushes = await probes
    return took, health, pushes


async def server_case(url: str, version: int) -> None:
    async def idle(session):
        await asyncio.sleep(2.0)

    async def rebuilds(session):
        async def one(v):  # from another process (curl): reading 2 MB answers here would hold the probes up
            curl = await asyncio.create_subprocess_exec(
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/api/docs/big/versions/{v}",
                stdout=asyncio.subprocess.PIPE)
            status, _ = await curl.communicate()
            assert status == b"200", status

        await asyncio.gather(*(one(version - k) for k in range(REQUESTS)))

    print(f"{'case':10} {'took s':>7} {'healthz max':>12} {'median':>7} {'edit max':>9} {'median':>7}")
    for name, work in (("idle", idle), ("rebuilds", rebuilds), ("idle", idle), ("rebuilds", rebuilds)):
        took, health, pushes = await probed(url, work)
        print(f"{name:10} {took:7.2f} {max(health) * 1e3:12.1f} {statistics.median(health) * 1e3:7.1f} "
              f"{max(pushes) * 1e3:9.1f} {statistics.median(pushes) * 1e3:7.1f}", flush=True)


def main() -> None:
    end_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=220_000)
    parser.add_argument("--text-kb", type=int, default=1700)
    parser.add_argument("--db", type=Path, help="the database (built if missing, kept)")
    parser.add_argument("--only", default="store,server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="collab-rebuild-") as tmp:
        db = args.db or Path(tmp) / "big.db"
        if not db.exists():
            started = time.perf_counter()
            head, snap, length = asyncio.run(build(db, args.updates, args.text_kb))
            print(f"built {db}: {head:,} versions, last snapshot at {snap:,}, {length:,} characters "
                  f"({time.perf_counter() - started:.0f} s)")
        import sqlite3
        with sqlite3.connect(db) as conn:
            head = conn.execute("SELECT version FROM documents WHERE name = 'big'").fetchone()[0]
            snaps = [v for (v,) in conn.execute("SELECT version FROM snapshots ORDER BY version")]
        version = snaps[-1] - 1 if snaps else head
        below = max([0] + [v for v in snaps if v <= version])
        print(f"rebuilding version {version:,}: {version - below:,} updates after the snapshot at {below:,}; "
              f"the head {head:,} loads {head - snaps[-1] if snaps else head:,} after the last")
        if "store" in args.only:
            asyncio.run(store_case(db, version))
        if "server" in args.only:
            server = ServerProcess(db, log_path=Path(tmp) / "server.log")
            with server:
                asyncio.run(server_case(server.url, version))


if __name__ == "__main__":
    main()
