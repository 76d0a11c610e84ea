"""Helpers for the browser tests (pages, typing, waiting for convergence)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def set_user(ctx, name: str, color: str) -> None:
    """Give a context a fixed identity before its pages load."""
    ctx.add_init_script(
        "try { if (!localStorage.getItem('collab:user')) localStorage.setItem('collab:user', "
        + json.dumps(json.dumps({"name": name, "color": color})) + ") } catch (e) {}")


def open_editor(ctx, base_url: str, doc: str, connected: bool = True):
    page = ctx.new_page()
    dialogs = []

    def on_dialog(d):  # the "unsaved edits" beforeunload prompt: note it, then leave
        dialogs.append(d.type)
        d.accept()

    page.on("dialog", on_dialog)
    page.collab_dialogs = dialogs
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.collab_errors = errors
    csp = []  # the server's Content-Security-Policy must not block anything the page does
    page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
    page.csp_violations = csp
    page.goto(f"{base_url}/d/{doc}")
    page.wait_for_selector("body[data-ready=true]")
    if connected:
        wait_status(page, "connected")
    return page


def wait_status(page, state: str, timeout: float = 20000) -> None:
    page.wait_for_function("s => window.__collab && window.__collab.status.state === s", arg=state,
                           timeout=timeout)


def doc_text(page) -> str:
    return page.evaluate("() => window.__collab.view.state.doc.toString()")


def focus_end(page) -> None:
    """Click into the editor and put the caret at the very end."""
    page.click(".cm-content")
    page.keyboard.press("Control+End")


def set_cursor(page, pos: int) -> None:
    page.click(".cm-content")
    page.evaluate("p => { const v = window.__collab.view; v.dispatch({selection: {anchor: p}}); v.focus(); }", pos)


def server_doc(base_url: str, doc: str) -> dict:
    """The server's text and version; a document that does not exist yet (it comes to be at its first edit) is empty at 0."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/docs/{doc}", timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        return {"name": doc.split("?")[0], "version": 0, "doc": "", "exists": False}


def wait_synced(pages, base_url: str, doc: str, timeout: float = 20.0) -> str:
    """Wait until every page has nothing unconfirmed and shows the server's text; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        server = server_doc(base_url, doc)
        states = [p.evaluate("() => ({text: window.__collab.view.state.doc.toString(),"
                             " pending: window.__collab.pending, version: window.__collab.version})")
                  for p in pages]
        last = (server, states)
        if all(s["pending"] == 0 and s["version"] == server["version"] and s["text"] == server["doc"]
               for s in states):
            return server["doc"]
        time.sleep(0.1)
    raise AssertionError(f"pages did not converge with the server: {last!r}")


def line_end(page, line: int) -> int:
    """Position of the end of 1-based `line` in the page's editor."""
    return page.evaluate("n => window.__collab.view.state.doc.line(n).to", line)


def status_log(page) -> list[str]:
    """The connection states the page went through, in order (consecutive repeats collapsed)."""
    return page.evaluate("() => window.__collab.statusLog")


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


SECRET = "browser-team-secret-0123456789abcdef"


def team_server(tmp_path, name: str = "team"):
    """A server with access control on (a secret): returns (ServerProcess, admin token); kill() it when done."""
    from collab.access import Access
    from serverproc import ServerProcess

    srv = ServerProcess(tmp_path / f"{name}.db", extra_args=["--secret", SECRET])
    srv.start()
    return srv, Access(SECRET.encode()).admin_token()


def watch_page(page):
    """Collect a page's script errors and Content-Security-Policy violations (as open_editor does)."""
    page.collab_errors = []
    page.on("pageerror", lambda e: page.collab_errors.append(str(e)))
    page.csp_violations = []
    page.on("console", lambda m: page.csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
    return page


def api_json(base_url: str, path: str, token: str | None = None, method: str = "GET", body: dict | None = None):
    """A call of the HTTP API with the token in a header; returns (status, parsed JSON body)."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def refusable_websockets(target) -> dict:
    """Route the WebSockets of `target` (a page, or a whole context) through the test: while the returned
    `cut["on"]` is true, each is refused (closed 1011) instead of reaching the server."""
    cut = {"on": False}

    def route(ws):
        if cut["on"]:
            ws.close(code=1011, reason="cut off by the test")
        else:
            ws.connect_to_server()

    target.route_web_socket("**/ws/**", route)
    return cut
