"""What one resume from far back costs the server: its memory while it goes out, and how long it takes.

    .venv/bin/python bench/resume.py [--updates 50000] [--checkout DIR]

Starts `python -m collab serve` on a fresh SQLite database (rate limits
lifted), pushes `--updates` one-keystroke updates (60 characters each, each
acknowledged before the next, so each is its own frame: a long day of
typing, or a laptop that was offline while others typed), waits half a
second, then a second client says hello from version 1 and reads the
resume as fast as it can. Meanwhile the server's resident memory is sampled
every 5 ms from /proc. Printed: the frames the resume came in (one per
update: a resume is cut where the updates were broadcast), the seconds it
took, the server's RSS before it and its peak during it. Then a keystroke
is pushed at version 1 (rebased over all of it, as a laptop's back online),
measured the same way until its acknowledgement.

With `--checkout DIR` (another commit's tree, e.g. from `git archive REV |
tar -x -C DIR`), the same runs against that tree's collab too, in the same
invocation, for a figure before and after a change on the same machine.
127.0.0.1 only; each run ends by itself (TIMEOUT).
"""

from __future__ import annotations

import argparse
import asyncio
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

TYPED = "x" * 60     # what each update inserts
SAMPLE_EVERY = 0.005
TIMEOUT = 600.0      # seconds a run may take before it is given up


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def hello(session: aiohttp.ClientSession, url: str, client_id: str, version: int | None):
    ws = await session.ws_connect(f"{url}/ws/resume", protocols=("collab.v1",), max_msg_size=0)
    await ws.send_str(orjson.dumps({"type": "hello", "clientID": client_id, "version": version}).decode())
    return ws


async def type_history(session: aiohttp.ClientSession, url: str, updates: int) -> None:
    """`updates` pushes of one update each, each after the acknowledgement of the one before."""
    ws = await hello(session, url, "writer", None)
    assert orjson.loads((await ws.receive()).data)["type"] == "welcome"
    for v in range(updates):
        changes = [v * len(TYPED), [0, TYPED]] if v else [[0, TYPED]]
        await ws.send_str(orjson.dumps({"type": "push", "version": v, "updates": [
            {"clientID": "writer", "changes": changes}]}).decode())
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] == "updates":
                break
            if frame["type"] == "error":
                raise RuntimeError(f"push refused: {frame}")
    await ws.close()


class Peak:
    """The server's largest RSS while a `with` block runs (sampled every SAMPLE_EVERY seconds)."""

    def __init__(self, pid: int):
        self.pid, self.before, self.peak = pid, rss_kb(pid), 0

    async def __aenter__(self) -> "Peak":
        self.peak, self.started = self.before, time.perf_counter()
        self.sampler = asyncio.ensure_future(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kb(self.pid))
            await asyncio.sleep(SAMPLE_EVERY)

    async def __aexit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.sampler.cancel()
        self.peak = max(self.peak, rss_kb(self.pid))

    def row(self, **more) -> dict:
        return {**more, "seconds": self.seconds, "rss_before_mb": self.before / 1024, "rss_peak_mb": self.peak / 1024}


async def read_until(ws, version: int, updates: int, mine: str | None = None) -> tuple[int, int]:
    """Read frames until the document reaches `updates` (and, with `mine`, until an update of that clientID
    came back: its push was acknowledged); returns (frames of updates read, version)."""
    frames, acked = 0, mine is None
    while version < updates or not acked:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the connection ended at version {version} of {updates}: {msg.type} {msg.data}")
        frame = orjson.loads(msg.data)
        if frame["type"] == "error":
            raise RuntimeError(f"refused: {frame}")
        if "updates" in frame:
            frames += 1
            version = frame["from"] + len(frame["updates"])
            acked = acked or any(u["clientID"] == mine for u in frame["updates"])
    return frames, version


async def resume(url: str, pid: int, updates: int) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        await type_history(session, url, updates)
        await asyncio.sleep(0.5)
        async with Peak(pid) as resumed:
            ws = await hello(session, url, "reader", 1)
            frames, _ = await read_until(ws, 1, updates)
        await ws.close()
        await asyncio.sleep(0.5)
        # A keystroke pushed at version 1: rebased over everything since (as a laptop's, back online). Its
        # session says hello for the whole text, so this measures the push alone, not a resume too.
        ws = await hello(session, url, "late", None)
        head = orjson.loads((await ws.receive()).data)["version"]
        async with Peak(pid) as pushed:
            await ws.send_str(orjson.dumps({"type": "push", "version": 1, "updates": [
                {"clientID": "late", "changes": [[0, "!"], len(TYPED)]}]}).decode())
            await read_until(ws, head, updates + 1, mine="late")
        await ws.close()
    return [resumed.row(case="resume from version 1", frames=frames),
            pushed.row(case="push at version 1", frames=1)]


def run(checkout: Path, updates: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="collab-resume-") as tmp:
        server = ServerProcess(Path(tmp) / "resume.db", extra_args=UNLIMITED, log_path=Path(tmp) / "server.log",
                               checkout=checkout)
        with server:
            return asyncio.run(asyncio.wait_for(resume(server.url, server.proc.pid, updates), TIMEOUT))


def main() -> None:
    end_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=50_000, help="updates typed before the resume (default 50,000)")
    parser.add_argument("--checkout", type=Path, help="another tree whose collab runs the same, for comparison")
    args = parser.parse_args()
    trees = [("this checkout", ROOT)] + ([(str(args.checkout), args.checkout)] if args.checkout else [])
    print(f"{args.updates - 1:,} updates behind, each its own frame; the resume read as fast as the client can")
    print(f"{'collab':24} {'case':22} {'frames':>7} {'seconds':>8} {'RSS before MB':>14} {'peak MB':>8} "
          f"{'growth MB':>10}")
    for label, tree in trees:
        for r in run(tree, args.updates):
            print(f"{label:24} {r['case']:22} {r['frames']:7d} {r['seconds']:8.2f} {r['rss_before_mb']:14.1f} "
                  f"{r['rss_peak_mb']:8.1f} {r['rss_peak_mb'] - r['rss_before_mb']:10.1f}", flush=True)


if __name__ == "__main__":
    main()
