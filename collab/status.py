"""/metrics (Prometheus text) and /status: the same figures live over a WebSocket.

/status/ws takes the same guard as the pages (the admin, with access control on),
refuses pages of other sites (`origin_ok`, 403) and holds at most `max_sockets`
connections at once (429 beyond).
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSMsgType, web

from .errors import ProtocolError
from .metrics import Metrics

STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>collab status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 :root { color-scheme: light dark; font: 15px/1.4 system-ui, sans-serif; }
 body { max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
 table { border-collapse: collapse; width: 100%; }
 td { padding: .25rem .5rem; border-bottom: 1px solid #8884; }
 td.v { text-align: right; font-variant-numeric: tabular-nums; }
 #state { color: #888; }
</style></head>
<body><h1>collab status</h1><p id="state">connecting…</p><table id="figures"></table>
<script src="/status.js"></script></body></html>
"""

STATUS_SCRIPT = """
const table = document.getElementById("figures"), state = document.getElementById("state");
function show(figures) {
  table.replaceChildren(...Object.entries(figures).sort().map(([k, v]) => {
    const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
    a.textContent = k; b.textContent = Number.isInteger(v) ? v : v.toFixed(4); b.className = "v";
    tr.append(a, b); return tr;
  }));
}
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/status/ws"
                           + location.search);
  ws.onopen = () => { state.textContent = "live"; };
  ws.onmessage = (e) => show(JSON.parse(e.data));
  ws.onclose = () => { state.textContent = "reconnecting…"; setTimeout(connect, 2000); };
}
connect();
"""

_HEADERS = {"Cache-Control": "no-cache"}


def routes(metrics: Metrics, guard, interval: float = 1.0, heartbeat: float = 20.0,
           origin_ok=lambda request: True, max_sockets: int = 16) -> list[web.RouteDef]:
    """`guard(request)` raises unless the request may see the figures (the admin, with access control on);
    `origin_ok(request)` says whether a WebSocket's page (if any) is one of ours."""
    sockets = 0

    async def metrics_page(request: web.Request) -> web.Response:
        guard(request)
        return web.Response(body=metrics.render(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def status_page(request: web.Request) -> web.Response:
        guard(request)
        return web.Response(text=STATUS_PAGE, content_type="text/html", headers=_HEADERS)

    async def status_script(request: web.Request) -> web.Response:
        return web.Response(text=STATUS_SCRIPT, content_type="application/javascript", headers=_HEADERS)

    async def status_ws(request: web.Request) -> web.WebSocketResponse:
        nonlocal sockets
        guard(request)
        if not origin_ok(request):
            raise ProtocolError("forbidden", "WebSocket connections from another site's pages are refused")
        if sockets >= max_sockets:
            raise ProtocolError("rate-limited", f"{max_sockets} status connections are open, the most allowed")
        sockets += 1
        try:
            return await _stream(request)
        finally:
            sockets -= 1

    async def _stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=heartbeat or None)
        await ws.prepare(request)

        async def reader():  # only to notice the close
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break

        read = asyncio.get_running_loop().create_task(reader())
        try:
            while not ws.closed and not read.done():
                await ws.send_str(orjson.dumps(metrics.summary()).decode())
                await asyncio.wait([read], timeout=interval)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            read.cancel()
        return ws

    return [web.get("/metrics", metrics_page), web.get("/status", status_page),
            web.get("/status.js", status_script), web.get("/status/ws", status_ws)]
