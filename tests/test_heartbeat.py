"""The heartbeat (aiohttp's, through ws.Socket) against a real server: a silent connection is pinged; one
that answers nothing is cut off, one that answers (or talks) stays and is still served."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from serverproc import ServerProcess
from test_compression import Raw

HEARTBEAT = 0.6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("hb") / "h.db", extra_args=["--heartbeat", str(HEARTBEAT)]) as s:
        yield s


async def test_a_connection_that_answers_no_ping_is_cut_off_and_others_stay(server):
    doc = "hb"
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{server.ws_url}/ws/{doc}", protocols=["collab.v1"], autoping=True) as alive:
        await alive.send_str(orjson.dumps({"type": "hello", "clientID": "alive", "version": None,
                                           "user": {"name": "a", "color": "#336699"}}).decode())
        welcome = orjson.loads((await alive.receive(timeout=5)).data)
        assert welcome["type"] == "welcome"
        inbox: asyncio.Queue = asyncio.Queue()

        async def read():  # always in receive(), which answers pings
            while True:
                msg = await alive.receive()
                await inbox.put(msg)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return

        reader = asyncio.ensure_future(read())
        mute = await Raw.open(server.port, doc, extensions=None)
        mute.hello("mute")
        await mute.typed("welcome")
        started = time.monotonic()
        pinged = False
        while True:  # read what comes, never answer: a ping, then the end of the connection
            try:
                _, _, opcode, _ = await mute.frame(timeout=5 * HEARTBEAT)
            except asyncio.IncompleteReadError:
                break
            pinged |= opcode == 0x9
        waited = time.monotonic() - started
        assert pinged and HEARTBEAT <= waited <= 4 * HEARTBEAT, (pinged, waited)
        # the connection that answers its pings (aiohttp's autoping, inside receive) is still served,
        # well past the time a mute one lasts (it has waited since before the mute one came)
        await asyncio.sleep(2 * HEARTBEAT)
        assert not reader.done() and not alive.closed
        await alive.send_str(orjson.dumps({"type": "push", "version": welcome["version"], "updates": [
            {"clientID": "alive", "changes": [[0, "x"]]}]}).decode())
        frame = orjson.loads((await asyncio.wait_for(inbox.get(), 5)).data)
        while frame["type"] != "updates":
            frame = orjson.loads((await asyncio.wait_for(inbox.get(), 5)).data)
        assert frame["from"] == welcome["version"]
        reader.cancel()
    assert "No PONG received" in server.log()
