"""CSRF and DNS rebinding against a personal instance, in real Chromium (issue 10, finding 6).

A page on another origin (a second aiohttp server run by the test, on another port and
another host name) tries what any web page can do to http://127.0.0.1:PORT without a
CORS preflight: HTML form posts (text/plain, urlencoded), no-cors fetches, sendBeacon, a
fetch that needs a preflight, a WebSocket. Then a page on a rebinding domain (Chromium
resolves evil.example to 127.0.0.1, and Playwright serves the attacker's first page
itself, as a rebinding DNS server would) tries the same from "its own" origin; that
browser has Chromium's Local Network Access check off (a public page reaching loopback
asks the person first), since what is tested is the server, which must not rely on a
browser feature, a person's click or an older browser. Every attempt must reach the
server and be refused, and the document must stay as it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request

from aiohttp import web

from .browser_helpers import open_editor, wait_synced
from .conftest import CHROMIUM, LAUNCH_ARGS

ATTACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cute cats</title></head><body>
<h1>cute cats</h1>
<script>
const target = %(target)s;
window.results = {};
function form(name, path, enctype, fields) {
  const frame = document.createElement("iframe");
  frame.name = "sink-" + name;
  document.body.append(frame);
  const f = document.createElement("form");
  f.method = "POST"; f.action = target + path; f.enctype = enctype; f.target = frame.name;
  for (const [k, v] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.name = k; input.value = v; f.append(input);
  }
  document.body.append(f);
  f.submit();
  window.results[name] = "submitted";
}
async function attempt(name, run) {
  try { window.results[name] = await run(); } catch (e) { window.results[name] = "threw: " + e.message; }
}
// text/plain forms send name=value: a JSON body in disguise.
form("form-restore", "/api/docs/victim/restore", "text/plain", {'{"version": 0, "x": "': '"}'});
form("form-fork", "/api/docs/victim/fork", "application/x-www-form-urlencoded", {version: "1"});
form("form-create", "/api/docs", "text/plain", {'{"name": "planted", "x": "': '"}'});
form("form-reset", "/api/docs/victim/links/reset", "text/plain", {'{"x": "': '"}'});
const body = JSON.stringify({version: 0, name: "forked-by-cats"});
attempt("nocors-restore", () => fetch(target + "/api/docs/victim/restore",
  {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}).then(r => r.type));
attempt("nocors-fork", () => fetch(target + "/api/docs/victim/fork",
  {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}).then(r => r.type));
attempt("beacon", () => navigator.sendBeacon(target + "/api/docs/victim/restore", body));
attempt("cors-json", () => fetch(target + "/api/docs/victim/restore",
  {method: "POST", headers: {"Content-Type": "application/json"}, body}).then(r => r.status));
attempt("ws", () => new Promise((resolve) => {
  const events = [];
  const ws = new WebSocket(target.replace("http", "ws") + "/ws/victim", "collab.v1");
  ws.onopen = () => { events.push("open"); ws.send(JSON.stringify({type: "hello", clientID: "cat",
    version: null, user: {name: "cat", color: "#000000"}})); };
  ws.onmessage = (e) => events.push(JSON.parse(e.data).type);
  ws.onerror = () => events.push("error");
  ws.onclose = () => { events.push("close"); resolve(events.join(",")); };
  setTimeout(() => resolve(events.join(",") + ",timeout"), 8000);
}));
</script></body></html>
"""

REBIND_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>totally not collab</title></head><body>
<script>
window.results = {};
async function attempt(name, run) {
  try { window.results[name] = await run(); } catch (e) { window.results[name] = "threw: " + e.message; }
}
const json = {"Content-Type": "application/json"};
attempt("read", () => fetch("/api/docs/victim").then(r => r.status));
attempt("list", () => fetch("/api/docs").then(r => r.status));
attempt("restore", () => fetch("/api/docs/victim/restore", {method: "POST", headers: json,
  body: JSON.stringify({version: 0})}).then(r => r.status));
attempt("fork", () => fetch("/api/docs/victim/fork", {method: "POST", headers: json,
  body: JSON.stringify({name: "rebound"})}).then(r => r.status));
attempt("ws", () => new Promise((resolve) => {
  const events = [];
  const ws = new WebSocket("ws://" + location.host + "/ws/victim", "collab.v1");
  ws.onopen = () => { events.push("open"); ws.send(JSON.stringify({type: "hello", clientID: "rebinder",
    version: null, user: {name: "r", color: "#000000"}})); };
  ws.onmessage = (e) => events.push(JSON.parse(e.data).type);
  ws.onerror = () => events.push("error");
  ws.onclose = () => { events.push("close"); resolve(events.join(",")); };
  setTimeout(() => resolve(events.join(",") + ",timeout"), 8000);
}));
</script></body></html>
"""


class OtherSite:
    """A second web server (aiohttp, in a thread with its own loop) serving one page at /."""

    def __init__(self, html: str):
        self.html = html
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=self.html, content_type="text/html")

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/", page)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "localhost", 0)
            await site.start()
            self.port = site.port
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> "OtherSite":
        self.thread.start()
        assert self.ready.wait(10), "the other site did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def refusals(base_url: str, code: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(r'^collab_protocol_errors_total\{code="%s"\} (\S+)$' % re.escape(code), text, re.M)
    return float(match.group(1)) if match else 0.0


def stored(base_url: str) -> tuple[dict, list[str]]:
    with urllib.request.urlopen(f"{base_url}/api/docs/victim", timeout=10) as r:
        doc = json.loads(r.read())
    with urllib.request.urlopen(f"{base_url}/api/docs", timeout=10) as r:
        names = sorted(d["name"] for d in json.loads(r.read())["docs"])
    return doc, names


def wait_results(page, names: set[str], timeout: float = 20.0) -> dict:
    page.wait_for_function("names => names.every(n => n in window.results)", arg=sorted(names),
                           timeout=timeout * 1000)
    return page.evaluate("() => window.results")


def wait_count(base_url: str, code: str, at_least: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while (n := refusals(base_url, code)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def test_another_sites_page_cannot_change_or_reach_a_personal_instance(server, contexts):
    owner = open_editor(contexts(), server.url, "victim")
    owner.click(".cm-content")
    owner.keyboard.type("precious words")
    wait_synced([owner], server.url, "victim")
    owner.close()
    before, names = stored(server.url)
    assert before["doc"] == "precious words" and names == ["victim"]
    forbidden = refusals(server.url, "forbidden")

    target = json.dumps(server.url)
    with OtherSite(ATTACK_PAGE % {"target": target}) as site:
        page = contexts().new_page()
        page.goto(f"http://localhost:{site.port}/")
        results = wait_results(page, {"form-restore", "form-fork", "form-create", "form-reset", "nocors-restore",
                                      "nocors-fork", "beacon", "cors-json", "ws"})
        # Four forms, two no-cors fetches, a beacon and the WebSocket reach the server and are refused
        # as another site's; the JSON fetch is stopped by the browser (no CORS preflight is granted).
        after = wait_count(server.url, "forbidden", forbidden + 8)
    assert after - forbidden >= 8, (after - forbidden, results)
    assert "welcome" not in results["ws"] and "open" not in results["ws"], results["ws"]
    assert str(results["cors-json"]).startswith("threw"), results["cors-json"]
    doc, names = stored(server.url)
    assert (doc["doc"], doc["version"]) == (before["doc"], before["version"]), doc
    assert names == ["victim"], names


def test_a_rebinding_domain_is_not_served(server, browser):
    made = urllib.request.Request(f"{server.url}/api/docs", data=b'{"name": "victim"}', method="POST",
                                  headers={"Content-Type": "application/json"})
    urllib.request.urlopen(made, timeout=10).close()
    before, _ = stored(server.url)
    # A browser in which evil.example resolves to this machine, as DNS rebinding makes it.
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=LAUNCH_ARGS + ["--host-resolver-rules=MAP evil.example 127.0.0.1",
                            "--disable-features=HttpsUpgrades,LocalNetworkAccessChecks"])
    try:
        page = rebinding.new_context().new_page()
        origin = f"http://evil.example:{server.port}"
        # The attacker's first answer: its own page, on the name that now points here.
        page.route(f"{origin}/cats", lambda route: route.fulfill(body=REBIND_PAGE, content_type="text/html"))
        page.goto(f"{origin}/cats")
        results = wait_results(page, {"read", "list", "restore", "fork", "ws"})
        assert results["read"] == results["list"] == results["restore"] == results["fork"] == 400, results
        assert "open" not in results["ws"] and "welcome" not in results["ws"], results["ws"]
        # A person sent to that name sees a refusal too.
        answer = page.goto(f"{origin}/d/victim")
        assert answer.status == 400 and "host name" in page.inner_text("body")
    finally:
        rebinding.close()
    doc, names = stored(server.url)
    assert (doc["doc"], doc["version"]) == (before["doc"], before["version"]) and names == ["victim"], (doc, names)
