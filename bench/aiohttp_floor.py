"""The floor of aiohttp: what a Python server costs, serving WebSockets as collab does, before collab's own work.

bench/load.py's compare-reference runs it beside collab and the reference, for
every workload (column "aiohttp floor"). Not a collaborative server to use: the
least a Python authority on aiohttp does, the way collab serves a connection:
aiohttp's request pipeline (its web.Application, no middleware, one route), a
WebSocketResponse with collab's subprotocol and aiohttp's heartbeat at
collab's default period, uvloop, one small record per connection, orjson. It
speaks as much of docs/protocol.md as the load generator's clients need, in
memory, as bench/reference.mjs does: `hello` -> `welcome` (the document's
text), `push` -> the updates rebased over what the push missed (collab's
change engine: `rebase_updates`, CodeMirror's `rebaseUpdates`), applied to the
text and relayed as one `updates` frame to every connection of its document
(the sender's is its acknowledgement); `GET /api/docs/{doc}` and `/healthz`.
Anything else is dropped. Nothing is stored, checked, limited or
acknowledged durably: per idle connection, collab's memory above this figure
is ours and the rest aiohttp's; per edit, collab's CPU above it is collab's
own work (the commit, the checks, the bookkeeping), the rest is what Python
and aiohttp cost.

    .venv/bin/python bench/aiohttp_floor.py --port PORT [--heartbeat 20] [--loop uvloop|asyncio]

GET /healthz answers once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from pathlib import Path

import orjson
from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's collab

from collab.changes import ChangeSet  # noqa: E402
from collab.rebase import Update, rebase_updates  # noqa: E402

SUBPROTOCOL = "collab.v1"
_sessions = itertools.count(1)


class Doc:
    __slots__ = ("updates", "text", "conns")

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.text = ""
        self.conns: set[web.WebSocketResponse] = set()

    def push(self, version, raw) -> bytes | None:
        """The `updates` frame of a push (rebased over what it missed and applied), or None to drop it."""
        head = len(self.updates)
        if type(version) is not int or not 0 <= version <= head or type(raw) is not list:
            return None
        try:
            updates = [Update(u["clientID"], ChangeSet.from_json(u["changes"])) for u in raw]
            if version < head:
                updates = rebase_updates(updates, self.updates[version:])
            text = self.text
            for u in updates:
                text = u.changes.apply_to_str(text)
        except Exception:  # noqa: BLE001 - a malformed push is dropped (not collab's checks: the floor)
            return None
        if not updates:
            return None
        self.text = text
        self.updates.extend(updates)
        return orjson.dumps({"type": "updates", "from": head,
                             "updates": [{"clientID": u.client_id, "changes": u.changes.to_json()} for u in updates]})


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
                if type(m) is not dict:
                    continue
                if m.get("type") == "hello" and ws not in doc.conns:
                    doc.conns.add(ws)
                    await ws.send_str(orjson.dumps({"type": "welcome", "session": f"s{next(_sessions)}", "role": "edit",
                                                    "version": len(doc.updates), "peers": [],
                                                    "doc": doc.text}).decode())
                elif m.get("type") == "push" and ws in doc.conns:
                    frame = doc.push(m.get("version"), m.get("updates"))
                    if frame is not None:
                        text = frame.decode()
                        for peer in list(doc.conns):
                            try:
                                await peer.send_str(text)
                            except ConnectionError:  # that peer is closing: the others still get it
                                pass
        finally:
            doc.conns.discard(ws)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def info(request: web.Request) -> web.Response:
        doc = docs.get(request.match_info["doc"]) or Doc()
        return web.json_response({"name": request.match_info["doc"], "version": len(doc.updates), "doc": doc.text})

    app = web.Application()
    app.router.add_get("/ws/{doc}", ws_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/docs/{doc}", info)
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
