"""How long one heavy push holds everyone else up: other requests' round trips while it is handled.

    .venv/bin/python bench/stall.py [--repeat 2] [--only rebase-wide,rebase-frame,replace-all]

Starts `python -m collab serve` on a fresh SQLite database (rate limits
lifted: the cases are single pushes a limit would let through anyway, set
up quickly) and, per case, on a document of its own:

  * rebase-wide: 100 keystrokes pushed at a version behind one update of
    100,000 sections (an insertion after every character of a 50,000
    character text), which a review once measured holding the server 7.3 s;
  * rebase-frame: one keystroke behind one frame of 1,000 keystrokes (a
    push of the most `maxUpdates` allows; composing them is quadratic);
  * replace-all: one push replacing every other character of a 200,000
    character text (100,000 places, a 1 MB frame), parsed, checked, applied
    and stored like any push.

Meanwhile a prober times GET /healthz round trips every 10 ms, and the
figures are the longest of those and their median, against the same taken
while the server is idle just before (the reference, in the same run: the
machine is shared). What the heavy push costs itself is printed too: the
time from its send to its acknowledgement. 127.0.0.1 only; every case ends
by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from load import UNLIMITED  # noqa: E402
from serverproc import ServerProcess, end_on_sigterm  # noqa: E402

PROBE_EVERY = 0.01
IDLE_PROBE = 1.0     # seconds of round trips taken while idle, before each case
TIMEOUT = 120.0      # seconds a case may take before it is given up


class Client:
    """One WebSocket session of one document."""

    def __init__(self, ws, client_id: str, version: int):
        self.ws, self.client_id, self.version = ws, client_id, version

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, doc: str, client_id: str) -> "Client":
        ws = await session.ws_connect(f"{url}/ws/{doc}", protocols=("collab.v1",), max_msg_size=0)
        await ws.send_str(orjson.dumps({"type": "hello", "clientID": client_id, "version": None}).decode())
        welcome = orjson.loads((await ws.receive()).data)
        assert welcome["type"] == "welcome", welcome
        return cls(ws, client_id, welcome["version"])

    async def push(self, version: int, changes: list[list]) -> None:
        await self.ws.send_str(orjson.dumps({"type": "push", "version": version, "updates": [
            {"clientID": self.client_id, "changes": c} for c in changes]}).decode())

    async def until(self, version: int) -> None:
        """Read frames until the document reaches `version` (raises on an error frame)."""
        while self.version < version:
            frame = orjson.loads((await self.ws.receive()).data)
            if frame["type"] == "error":
                raise RuntimeError(f"{self.client_id}: {frame['code']}: {frame['message']}")
            if frame["type"] == "updates":
                self.version = frame["from"] + len(frame["updates"])


def keystroke(at: int, length: int, char: str = "m") -> list:
    return ([at] if at else []) + [[0, char]] + ([length - at] if length - at else [])


async def editors(session, url: str, doc: str, text: str, *client_ids: str) -> list[Client]:
    """Sessions of `doc`, the first of which has typed `text`; every one has read it (version 1)."""
    clients = [await Client.open(session, url, doc, c) for c in client_ids]
    await clients[0].push(0, [[[0, text]]])
    for c in clients:
        await c.until(1)
    return clients


async def rebase_wide(session, url, doc):
    """Set up: the wide update is durable, b is behind it. Returns the heavy push and the wait for its ack."""
    n = 50_000
    a, b = await editors(session, url, doc, "x" * n, "a", "b")
    await a.push(1, [[x for _ in range(n) for x in (1, [0, "a"])]])
    await a.until(2)
    keys = [keystroke(n - k, n + k) for k in range(100)]
    return lambda: b.push(1, keys), lambda: b.until(2 + 100)


async def rebase_frame(session, url, doc):
    n = 10_000
    a, b = await editors(session, url, doc, "x" * n, "a", "b")
    await a.push(1, [keystroke((k * 7919) % (n + k), n + k, "o") for k in range(1000)])
    await a.until(1001)
    return lambda: b.push(1, [keystroke(n // 2, n)]), lambda: b.until(1002)


async def replace_all(session, url, doc):
    n = 100_000
    a, = await editors(session, url, doc, "ab" * n, "a")
    return lambda: a.push(1, [[x for _ in range(n) for x in (1, [1, "c"])]]), lambda: a.until(2)


CASES = {"rebase-wide": rebase_wide, "rebase-frame": rebase_frame, "replace-all": replace_all}


async def probe(session, url: str, seconds: float | None, stop: asyncio.Event | None = None,
                every: float = PROBE_EVERY) -> list[float]:
    """/healthz round trips, every `every` seconds, for `seconds` (TIMEOUT if None) or until `stop` is set."""
    trips, end = [], time.perf_counter() + (seconds or TIMEOUT)
    while time.perf_counter() < end and not (stop and stop.is_set()):
        started = time.perf_counter()
        async with session.get(f"{url}/healthz") as r:
            await r.read()
        trips.append(time.perf_counter() - started)
        await asyncio.sleep(every)
    return trips


async def run_case(url: str, name: str, doc: str) -> dict:
    async with aiohttp.ClientSession() as session:
        send, acked = await CASES[name](session, url, doc)
        idle = await probe(session, url, IDLE_PROBE)
        stop = asyncio.Event()
        prober = asyncio.ensure_future(probe(session, url, None, stop))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        await send()
        async with asyncio.timeout(TIMEOUT):
            await acked()
        took = time.perf_counter() - started
        stop.set()
        busy = await prober
    return {"case": name, "ack_s": took, "busy_trips": len(busy),
            "busy_max_ms": 1e3 * max(busy), "busy_median_ms": 1e3 * statistics.median(busy),
            "idle_max_ms": 1e3 * max(idle), "idle_median_ms": 1e3 * statistics.median(idle)}


def main() -> None:
    end_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case (default 2)")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases (default all)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))} (known: {', '.join(CASES)})")
    with tempfile.TemporaryDirectory(prefix="collab-stall-") as tmp:
        server = ServerProcess(Path(tmp) / "stall.db", extra_args=UNLIMITED, log_path=Path(tmp) / "server.log")
        with server:
            print(f"collab on SQLite at {server.url}; /healthz probed every {PROBE_EVERY * 1e3:.0f} ms")
            print(f"{'case':14} {'ack s':>7} {'busy max ms':>12} {'median':>7} {'trips':>6} "
                  f"{'idle max ms':>12} {'median':>7}")
            for k in range(args.repeat):
                for name in names:
                    r = asyncio.run(run_case(server.url, name, f"{name}-{k}"))
                    print(f"{name:14} {r['ack_s']:7.2f} {r['busy_max_ms']:12.1f} {r['busy_median_ms']:7.1f} "
                          f"{r['busy_trips']:6d} {r['idle_max_ms']:12.1f} {r['idle_median_ms']:7.1f}", flush=True)


if __name__ == "__main__":
    main()
