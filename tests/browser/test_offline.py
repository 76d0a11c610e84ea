"""Connection life: offline typing, server restarts, reloads, closed tabs, lost server state.

Ways to lose the server, each as a person meets it:
  - the browser goes offline (Playwright's set_offline: navigator.onLine
    turns false, the 'offline' event fires, new connections fail);
  - the server is stopped (SIGTERM, clients get close code 1001) and started
    again on the same database;
  - the page is served but its WebSocket cannot get through
    (route_web_socket refuses it), and the person reloads the page;
  - the server is down and the person closes the tab: while it is down the
    page cannot be loaded again (nothing caches it), so they open it again
    once the server is back.
In the last two the reloaded/reopened page finds the unconfirmed edits in
localStorage, with the version they are based on and the client ID they were
made under, shows them at once and pushes them.
"""

import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest

from .browser_helpers import (open_editor, set_cursor, wait_synced, doc_text, wait_status,
                             line_end, refusable_websockets, status_log, wait_until)
from serverproc import ServerProcess

DOC = "offline-doc"


def test_offline_typing_arrives(server, contexts):
    ca = contexts()
    a = open_editor(ca, server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("shared first line")
    a.keyboard.press("Enter")
    a.keyboard.type("shared second line")
    wait_synced([a, b], server.url, DOC)

    ca.set_offline(True)
    wait_status(a, "offline")
    set_cursor(a, line_end(a, 1))
    a.keyboard.type(" + typed offline by A")
    a.keyboard.press("Enter")
    a.keyboard.type("a whole new line while offline")
    a.keyboard.press("Backspace")
    a.keyboard.press("Backspace")
    # Meanwhile B edits the same lines online.
    set_cursor(b, line_end(b, 2))
    b.keyboard.type(" + B was online")
    set_cursor(b, 0)
    b.keyboard.type(">> ")
    b.wait_for_function("() => window.__collab.pending === 0")

    # A still shows its text, counts its unsent edits, and says it is offline.
    assert "a whole new line while offli" in doc_text(a)
    assert "B was online" not in doc_text(a)
    assert a.evaluate("() => window.__collab.pending") > 0
    assert a.get_attribute("#status", "data-state") == "offline"
    assert "not yet saved" in a.inner_text("#status")

    ca.set_offline(False)
    text = wait_synced([a, b], server.url, DOC)
    assert text == (">> shared first line + typed offline by A\n"
                    "a whole new line while offli\n"
                    "shared second line + B was online")
    wait_status(a, "connected")
    log = status_log(a)
    assert log[-1] == "connected" and "offline" in log
    assert log.index("offline") > log.index("connected")


def test_server_restart_while_typing(server, contexts):
    a = open_editor(contexts(), server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("before the restart")
    wait_synced([a, b], server.url, DOC)

    server.stop()  # graceful: clients get 1001 and start reconnecting
    wait_status(a, "reconnecting")
    wait_status(b, "reconnecting")
    a.keyboard.type(" / A while down")
    set_cursor(b, 0)
    b.keyboard.type("B while down / ")
    assert a.evaluate("() => window.__collab.pending") > 0
    assert "not yet saved" in a.inner_text("#status")

    server.start()
    text = wait_synced([a, b], server.url, DOC)
    assert text == "B while down / before the restart / A while down"
    assert status_log(a)[-3:] == ["connected", "reconnecting", "connected"]


def test_closed_tab_edits_arrive_on_next_open(server, contexts):
    ca = contexts()
    a = open_editor(ca, server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("saved part.")
    wait_synced([a, b], server.url, DOC)
    client_id = a.evaluate("() => window.__collab.clientID")

    server.stop()
    wait_status(a, "reconnecting")
    a.keyboard.type(" Typed while the server was down,")
    a.keyboard.press("Enter")
    a.keyboard.type("then the tab was closed.")
    assert a.evaluate("() => window.__collab.pending") > 0

    # Closing the tab asks "leave site?" because edits are unconfirmed.
    with a.expect_event("close"):
        a.close(run_before_unload=True)
    assert a.collab_dialogs == ["beforeunload"]

    # The edits wait in this browser's storage, under the same client ID.
    assert f"collab:pending:{DOC}:{client_id}" in stored_keys(ca)

    server.start()
    wait_status(b, "connected")
    a2 = open_editor(ca, server.url, DOC)
    text = wait_synced([a2, b], server.url, DOC)
    assert text == "saved part. Typed while the server was down,\nthen the tab was closed."
    assert a2.evaluate("() => window.__collab.clientID") == client_id
    # Once confirmed, the stored copy is removed (after a short linger).
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ca)),
               what="the stored edits to be removed")


@pytest.mark.parametrize("unsent, backup, intro", [
    # The server went back to a backup taken before the last edits: it cannot resume from A's version.
    (" and my unsent sentence", True, "could no longer merge"),
    # Nothing unsent, but the server went back: the text the page showed as saved is offered back, not
    # silently replaced.
    ("", True, "older than the one this page had"),
    # A new, empty database: the document is not there at all, and the rescue says so.
    (" and my unsent sentence", False, "The server no longer has this document"),
])
def test_lost_server_state_rescues_the_text(server, contexts, tmp_path, unsent, backup, intro):
    a = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("text the server ")
    wait_synced([a], server.url, DOC)
    older = Path(tmp_path) / "older.db"
    if backup:
        src, dst = sqlite3.connect(server.db), sqlite3.connect(older)
        src.backup(dst)
        src.close(), dst.close()
    a.keyboard.type("will forget")
    wait_synced([a], server.url, DOC)
    server.stop()
    wait_status(a, "reconnecting")
    if unsent:
        a.keyboard.type(unsent)

    fresh = ServerProcess(older, port=server.port)  # on the same address
    fresh.start()
    try:
        wait_status(a, "connected")
        a.wait_for_selector("#rescue[open]")
        rescued = a.input_value("#rescue-text")
        assert rescued == "text the server will forget" + unsent
        assert intro in a.inner_text("#rescue-intro")
        # The editor now shows the server's text, and nothing is pending.
        assert a.evaluate("() => window.__collab.pending") == 0
        assert doc_text(a) == ("text the server " if backup else "")
        a.click("#rescue-close")
        a.wait_for_selector("#rescue:not([open])", state="attached")
    finally:
        fresh.kill()


def test_a_second_rescue_keeps_the_first_one_closed_with_escape(server, contexts, tmp_path):
    """Was: closing the rescue dialog with Escape (not "dismiss") kept its text for later, but the next
    rescue on the page replaced it with its own: the first rescued text was gone."""
    a = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("first")
    wait_synced([a], server.url, DOC)
    server.stop()
    wait_status(a, "reconnecting")
    for k, unsent in enumerate([" one", " two"]):
        a.keyboard.type(unsent)
        fresh = ServerProcess(Path(tmp_path) / f"fresh{k}.db", port=server.port)  # it knows nothing of A's
        fresh.start()
        try:
            wait_status(a, "connected")
            a.wait_for_selector("#rescue[open]")
            if k == 0:
                a.keyboard.press("Escape")
                a.wait_for_selector("#rescue:not([open])", state="attached")
                a.keyboard.type("second")
                wait_synced([a], fresh.url, DOC)
        finally:
            fresh.kill()
        if k == 0:
            wait_status(a, "reconnecting")
    rescued = a.input_value("#rescue-text")
    assert rescued.startswith("first one") and rescued.endswith("second two"), rescued
    kept = a.evaluate("d => JSON.parse(localStorage.getItem('collab:rescue:' + d)).text", DOC)
    assert kept == rescued


FILL_STORAGE = """() => {
  for (const size of [256 * 1024, 1024, 1]) {
    const chunk = 'x'.repeat(size);
    try { for (let i = 0; ; i++) localStorage.setItem(`filler-${size}-${i}`, chunk); } catch (e) { /* full */ }
  }
}"""


def test_a_full_browser_storage_is_said_not_hidden(server, contexts):
    """Unsent edits that localStorage cannot keep: the page says so (a closed tab would lose them)."""
    a = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("saved.")
    wait_synced([a], server.url, DOC)
    a.evaluate(FILL_STORAGE)
    server.stop()
    wait_status(a, "reconnecting")
    a.keyboard.type(" typed while the server was down")
    wait_until(lambda: any("storage is full" in m for m in a.locator("#messages .message").all_inner_texts()),
               what="the warning")
    wait_until(lambda: "storage is full" in (a.get_attribute("#status", "title") or ""), what="the status tooltip")
    assert len([m for m in a.locator("#messages .message").all_inner_texts() if "storage is full" in m]) == 1
    a.evaluate("() => { for (const k of Object.keys(localStorage)) if (k.startsWith('filler-')) localStorage.removeItem(k); }")
    a.keyboard.type(".")  # the next save keeps them again
    wait_until(lambda: "kept in this browser" in (a.get_attribute("#status", "title") or ""), what="the tooltip back")
    server.start()
    assert wait_synced([a], server.url, DOC) == "saved. typed while the server was down."


def test_two_closed_tabs_both_arrive(server, contexts):
    """Two tabs of one browser (two client IDs) both closed with unsent edits: one open sends both."""
    ca = contexts()
    a1 = open_editor(ca, server.url, DOC)
    a2 = open_editor(ca, server.url, DOC)
    assert a1.evaluate("() => window.__collab.clientID") != a2.evaluate("() => window.__collab.clientID")
    a1.click(".cm-content")
    a1.keyboard.type("top")
    a1.keyboard.press("Enter")
    a1.keyboard.type("bottom")
    wait_synced([a1, a2], server.url, DOC)

    server.stop()
    wait_status(a1, "reconnecting")
    wait_status(a2, "reconnecting")
    set_cursor(a1, line_end(a1, 1))
    a1.keyboard.type(" (tab one)")
    set_cursor(a2, line_end(a2, 2))
    a2.keyboard.type(" (tab two)")
    for page in (a1, a2):
        with page.expect_event("close"):
            page.close(run_before_unload=True)

    server.start()
    a3 = open_editor(ca, server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    # The second tab's edits come over their own short connection, then reach both editors.
    b.wait_for_function("() => window.__collab.view.state.doc.toString().includes('(tab two)')")
    text = wait_synced([a3, b], server.url, DOC)
    assert text == "top (tab one)\nbottom (tab two)"
    # Once confirmed, the stored copy is removed (after a short linger).
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ca)),
               what="the stored edits to be removed")


def test_reload_while_disconnected_keeps_edits(server, contexts):
    """A real reload: the page is served, but its WebSocket cannot get through.

    Playwright's route_web_socket refuses the page's connections while
    `blocked` is set (the HTTP page and assets still load), like a proxy that
    drops WebSockets or a server whose WebSocket side is down.  Edits typed
    then survive the reload: the reloaded page shows them at once, from
    localStorage, before any connection, and pushes them once it gets through.
    """
    ca = contexts()
    blocked = refusable_websockets(ca)
    a = open_editor(ca, server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("confirmed.")
    wait_synced([a, b], server.url, DOC)

    blocked["on"] = True
    ca.set_offline(True)  # drops the current connection; new ones are now refused
    wait_status(a, "offline")
    ca.set_offline(False)
    wait_status(a, "reconnecting")
    a.keyboard.type(" Typed, then reloaded.")
    assert a.evaluate("() => window.__collab.pending") > 0

    a.reload()
    a.wait_for_selector("body[data-ready=true]")
    assert a.collab_dialogs == ["beforeunload"]
    # Shown right away from the browser's storage, still unconfirmed.
    assert doc_text(a) == "confirmed. Typed, then reloaded."
    assert a.evaluate("() => window.__collab.pending") > 0
    assert a.get_attribute("#status", "data-state") in ("connecting", "reconnecting")
    assert doc_text(b) == "confirmed."

    blocked["on"] = False
    wait_status(a, "reconnecting")
    a.click("#reconnect")  # "Retry now" instead of waiting for the next backoff step
    text = wait_synced([a, b], server.url, DOC)
    assert text == "confirmed. Typed, then reloaded."


def stored_keys(ctx):
    return [item["name"] for origin in ctx.storage_state()["origins"] for item in origin["localStorage"]]


def test_a_tab_closed_with_unsent_edits_is_sent_by_a_tab_of_the_document_still_open(server, contexts):
    """Was: records were looked for only when a page opened, so a tab closed with unsent edits (the
    server down) while another tab of the document stayed open left them in storage, while the open
    tab said all changes were saved, until some later page of the document opened."""
    doc = "closed-beside-open"
    ca = contexts()
    a1 = open_editor(ca, server.url, doc)
    a2 = open_editor(ca, server.url, doc)
    a1.click(".cm-content")
    a1.keyboard.type("shared")
    wait_synced([a1, a2], server.url, doc)
    server.stop()
    wait_status(a1, "reconnecting")
    wait_status(a2, "reconnecting")
    set_cursor(a1, line_end(a1, 1))
    a1.keyboard.type(" (from the closed tab)")
    with a1.expect_event("close"):
        a1.close(run_before_unload=True)
    server.start()
    a2.wait_for_function("() => window.__collab.view.state.doc.toString().includes('(from the closed tab)')")
    assert wait_synced([a2], server.url, doc) == "shared (from the closed tab)"
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ca)),
               what="the stored edits to be removed")


def test_edits_kept_under_a_documents_old_name_reach_it_after_a_rename(server, contexts):
    """Was: a tab closed with unsent edits, then its document renamed: the records stayed under the old
    name, which no page reads again (/d/old goes to /d/new), and the new page said all was saved."""
    ca = contexts()
    a = open_editor(ca, server.url, "name-before")
    a.click(".cm-content")
    a.keyboard.type("saved.")
    wait_synced([a], server.url, "name-before")
    server.stop()
    wait_status(a, "reconnecting")
    a.keyboard.type(" Typed while it was down.")
    with a.expect_event("close"):
        a.close(run_before_unload=True)
    assert any(k.startswith("collab:pending:name-before:") for k in stored_keys(ca))
    server.start()
    request = urllib.request.Request(f"{server.url}/api/docs/name-before/rename", method="POST",
                                     data=json.dumps({"name": "name-after"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    again = open_editor(ca, server.url, "name-before")  # an old link: sent on to the new name
    assert again.url.endswith("/d/name-after")
    again.wait_for_function("() => window.__collab.view.state.doc.toString().includes('Typed while it was down.')")
    assert wait_synced([again], server.url, "name-after") == "saved. Typed while it was down."
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ca)),
               what="the stored edits to be removed")


def test_typing_goes_on_where_it_was_after_the_page_follows_a_rename(server, contexts):
    """Was: the page at the new name came up with the focus nowhere (on the body): whatever the person typed
    next went nowhere, unsaid (a browser audit: 27 of 40 words typed across a rename were lost so)."""
    a = open_editor(contexts(), server.url, "before-move")
    set_cursor(a, 0)
    a.keyboard.type("first line\nsecond line")
    a.keyboard.press("ArrowUp")  # the caret in the middle of the text, at the end of "first line"
    a.keyboard.press("End")
    wait_synced([a], server.url, "before-move")
    request = urllib.request.Request(f"{server.url}/api/docs/before-move/rename", method="POST",
                                     data=json.dumps({"name": "after-move"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    a.wait_for_url("**/d/after-move")
    a.wait_for_selector("body[data-ready=true]")
    wait_status(a, "connected")
    assert a.evaluate("() => window.__collab.view.hasFocus"), "the editor has the focus again"
    a.keyboard.type(" (typed after the move)")
    assert wait_synced([a], server.url, "after-move") == "first line (typed after the move)\nsecond line"
