"""Small protocol-speaking helpers for in-process WebSocket tests (aiohttp test client)."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSMsgType

USER = {"name": "Tester", "color": "#3366ff"}


async def connect(client, doc: str):
    return await client.ws_connect(f"/ws/{doc}", protocols=["collab.v1"], autoping=True)


async def recv(ws, timeout: float = 5.0) -> dict:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    if msg.type != WSMsgType.TEXT:
        raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r} {msg.extra!r}")
    return orjson.loads(msg.data)


async def recv_type(ws, kind: str, timeout: float = 5.0) -> dict:
    """Next frame of `kind`, skipping presence/leave chatter."""
    while True:
        frame = await recv(ws, timeout)
        if frame["type"] == kind:
            return frame
        if frame["type"] not in ("presences", "leave"):
            raise AssertionError(f"expected {kind}, got {frame}")


async def send(ws, frame) -> None:
    await ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())


async def join(client, doc: str, client_id: str, version=None, user=None):
    ws = await connect(client, doc)
    await send(ws, {"type": "hello", "clientID": client_id, "version": version, "user": user or USER})
    welcome = await recv_type(ws, "welcome")
    return ws, welcome


async def push(ws, version: int, client_id: str, *changes) -> None:
    await send(ws, {"type": "push", "version": version,
                    "updates": [{"clientID": client_id, "changes": c} for c in changes]})


async def closed(ws, timeout: float = 5.0):
    """Wait for the server's close; return (code, reason)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == WSMsgType.CLOSE:
            return msg.data, msg.extra
        if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            return ws.close_code, msg.extra


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (polling every 10 ms) until `predicate()` is true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
