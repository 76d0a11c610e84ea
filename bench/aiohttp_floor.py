"""The floor of aiohttp's memory per WebSocket connection: bench/load.py's idle10k runs it beside collab.

Not a collaborative server. It is the least an aiohttp server must hold for
each idle connection the way collab serves one: aiohttp's request pipeline
(its web.Application, no middleware, one route), a WebSocketResponse with
collab's subprotocol and aiohttp's heartbeat at collab's default period,
uvloop, and one small dict per connection. It speaks just enough of
docs/protocol.md for the load generator's `idle --check`: `hello` ->
`welcome` (an empty document at the number of updates relayed so far), and
a `push` at the head relayed as one `updates` frame to every connection of
its document; anything else is dropped. Nothing is stored, checked or
rebased: collab's per-connection cost above this figure is ours, the rest is
aiohttp's.

    .venv/bin/python bench/aiohttp_floor.py --port PORT [--heartbeat 20] [--loop uvloop|asyncio]

GET /healthz answers once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import orjson
from aiohttp import WSMsgType, web

SUBPROTOCOL = "collab.v1"
_sessions = itertools.count(1)


class Doc:
    __slots__ = ("head", "conns")

    def __init__(self) -> None:
        self.head = 0
        self.conns: set[web.WebSocketResponse] = set()


def make_app(heartbeat: float | None) -> web.Application:
    docs: dict[str, Doc] = {}

    async def ws_route(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=heartbeat, decode_text=False)
        await ws.prepare(request)
        doc = docs.setdefault(request.match_info["doc"], Doc())
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    m = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    continue
                if m.get("type") == "hello" and ws not in doc.conns:
                    doc.conns.add(ws)
                    await ws.send_str(orjson.dumps({"type": "welcome", "session": f"s{next(_sessions)}", "role": "edit",
                                                    "version": doc.head, "peers": [], "doc": ""}).decode())
                elif m.get("type") == "push" and m.get("version") == doc.head and ws in doc.conns:
                    frame = orjson.dumps({"type": "updates", "from": doc.head, "updates": m.get("updates")}).decode()
                    doc.head += len(m.get("updates") or ())
                    for peer in list(doc.conns):
                        await peer.send_str(frame)
        finally:
            doc.conns.discard(ws)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ws/{doc}", ws_route)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--heartbeat", type=float, default=20.0, help="seconds between pings, 0 for none (collab's "
                   "default is 20)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = p.parse_args()
    loop_factory = None
    if a.loop == "uvloop":
        import uvloop
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(make_app(a.heartbeat or None), a.port))


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    main()
