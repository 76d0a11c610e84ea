"""A client that stops reading cannot make the server's memory grow: it is cut off and resumes later.

A real server subprocess; one client says hello and then never reads again
(its socket's receive side is paused), another replaces a ~500 KB document
100 times, so ~50 MB of `updates` frames are due to the sleeper. With a
1 MiB send buffer the sleeper is closed, the writer goes on, and the
server's peak RSS (VmHWM) stays under the stated bound.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from serverproc import ServerProcess

RSS_BOUND_MB = 150
CHUNK = 500_000


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def read_until_closed(sleeper) -> int | None:
    """What the sleeper finds when it reads again: some frames, then its close code (None: no close frame)."""
    while True:
        msg = await sleeper.receive(timeout=20)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return msg.data
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None


async def flood(url: str, closing_said) -> tuple[int, int | None]:
    """The sleeper reads again once the server says it is closing it (`closing_said()`, its log), else after
    the flood: the server cuts a client that takes nothing for CLOSE_TIMEOUT (5 s) after its close frame,
    which a loaded machine's flood outlasted (the sleeper then found no close frame at all)."""
    async with aiohttp.ClientSession() as session:
        sleeper = await session.ws_connect(f"{url}/ws/flood", protocols=["collab.v1"], max_msg_size=0)
        await sleeper.send_str(orjson.dumps({"type": "hello", "clientID": "sleeper", "version": None}).decode())
        await sleeper.receive(timeout=5)                      # its welcome, then it never reads again
        sleeper._response.connection.transport.pause_reading()
        writer = await session.ws_connect(f"{url}/ws/flood", protocols=["collab.v1"], max_msg_size=0)
        await writer.send_str(orjson.dumps({"type": "hello", "clientID": "writer", "version": None}).decode())
        await writer.receive(timeout=5)
        version, length = 0, 0
        reading = None
        for k in range(100):
            if reading is None and closing_said():
                sleeper._response.connection.transport.resume_reading()
                reading = asyncio.ensure_future(read_until_closed(sleeper))
            text = chr(ord("a") + k % 26) * CHUNK
            changes = [[length, text]]
            await writer.send_str(orjson.dumps({"type": "push", "version": version,
                                                "updates": [{"clientID": "writer", "changes": changes}]}).decode())
            while True:
                frame = orjson.loads((await writer.receive(timeout=20)).data)
                if frame["type"] == "updates" and frame["updates"][-1]["clientID"] == "writer":
                    break
                assert frame["type"] in ("presences", "leave"), frame
            version, length = frame["from"] + len(frame["updates"]), CHUNK
        if reading is None:
            sleeper._response.connection.transport.resume_reading()
            reading = asyncio.ensure_future(read_until_closed(sleeper))
        return version, await reading


def test_non_reading_client_is_cut_off_and_memory_stays_bounded(tmp_path):
    with ServerProcess(tmp_path / "bp.db", extra_args=["--send-buffer", str(1 << 20),
                                                      "--rate", "1000", "--burst", "1000"]) as server:
        version, closed_with = asyncio.run(flood(server.url, lambda: "bytes unsent, over the limit" in server.log()))
        peak = peak_rss_mb(server.proc.pid)
        assert version == 100                      # the writer was never held up
        assert closed_with == 1013                 # the sleeper was told to come back later
        assert peak < RSS_BOUND_MB, f"server peak RSS {peak:.0f} MB"
        assert "Traceback" not in server.log()
