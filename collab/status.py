"""/metrics (Prometheus text) and /status: the same figures live over a WebSocket.

/status is a page shell served without a token (a token in its address is checked);
its script moves the admin token from the address to the tab's sessionStorage, as
the other pages do, and styles come from /static/style.css (the Content-Security-Policy
allows no inline style). /metrics and /status/ws take the guard (the admin, with access
control on); /status/ws refuses pages of other sites (`origin_ok`, 403) and holds at most
`max_sockets` connections at once (429 beyond).
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
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css">
</head>
<body class="status-page"><main><h1>collab status</h1>
<p id="state" class="status-state" role="status">connecting…</p>
<table id="figures" aria-label="Figures, updated every second"></table></main>
<script src="/status.js"></script></body></html>
"""

# The page's script. Like the other pages (static/src/auth.js), it takes an
# admin token out of the address at once (history.replaceState) and keeps
# it in this tab's sessionStorage under collab:admin-token; the WebSocket,
# which cannot carry a header, sends it as ?token=.  Refused (no token, or a
# wrong one): it says how to get in and stops retrying.
STATUS_SCRIPT = """
const KEY = "collab:admin-token";
const table = document.getElementById("figures"), state = document.getElementById("state");
function takeToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    try { sessionStorage.setItem(KEY, given); } catch (e) { /* this page's memory only */ }
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    return given;
  }
  try { return sessionStorage.getItem(KEY); } catch (e) { return null; }
}
const token = takeToken();
function say(text, kind) { state.textContent = text; state.dataset.state = kind; }
function show(figures) {
  table.replaceChildren(...Object.entries(figures).sort().map(([k, v]) => {
    const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
    a.textContent = k; b.textContent = Number.isInteger(v) ? v : v.toFixed(4); b.className = "v";
    tr.append(a, b); return tr;
  }));
}
async function refused() {
  try {
    const r = await fetch("/metrics", { headers: token ? { Authorization: "Bearer " + token } : {} });
    return r.status === 401 || r.status === 403;
  } catch (e) { return false; }
}
function connect() {
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/status/ws" + query);
  let opened = false;
  ws.onopen = () => { opened = true; say("live", "live"); };
  ws.onmessage = (e) => show(JSON.parse(e.data));
  ws.onclose = async () => {
    if (!opened && await refused()) {
      say(token ? "The admin token this tab holds is not accepted. Open the admin link again."
                : "This page is the admin's: open it once with the admin link (/status?token=…); the token then stays in this tab only.",
          "refused");
      return;
    }
    say("reconnecting…", "reconnecting");
    setTimeout(connect, 2000);
  };
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
        # A shell, like the other pages: the figures come over /status/ws, which checks the token.
        # A token given in the address is checked, so a wrong link says so at once.
        if request.query.get("token"):
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
            web.get("/status.js", status_script), web.get("/status/ws", status_ws, allow_head=False)]
