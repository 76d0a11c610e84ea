"""An audit of the editor page's offline and reconnect behaviour: each test here failed on the code
before the fix it names.

Ways to cut one page off while another of the same browser stays connected: Playwright's
`page.route_web_socket` on that page alone refuses its WebSockets (set_offline would take the whole
context, every tab of the browser, off the network).
"""

from __future__ import annotations

from .browser_helpers import api_json, open_editor, refusable_websockets, wait_synced, wait_status, wait_until
from .test_offline import stored_keys


def cut_off_page(ctx, base_url: str, doc: str):
    """A page of `ctx` on `doc` whose WebSockets the test can refuse (`page.cut["on"] = True`)."""
    page = ctx.new_page()
    cut = refusable_websockets(page)
    page.on("dialog", lambda d: d.accept())  # the "unsaved edits" prompt when it closes
    page.goto(f"{base_url}/d/{doc}")
    page.wait_for_selector("body[data-ready=true]")
    wait_status(page, "connected")
    page.cut = cut
    return page


def test_a_tab_closed_offline_beside_an_idle_connected_tab_is_sent(server, contexts):
    """Was: tab A of a document lost its connection (offline alone, or its socket dropped and it was
    waiting to retry), its person typed and closed it; tab B of the same browser stayed connected and
    idle. B looked for closed tabs' records only when its own status changed, so A's edits waited in
    storage, seen by nobody, while B said "all changes saved" (and B, closed in turn, asked nothing).
    Now an open page looks every few seconds while another tab's record of its document is stored."""
    doc = "closed-beside-idle"
    ctx = contexts()
    b = open_editor(ctx, server.url, doc)
    a = cut_off_page(ctx, server.url, doc)
    a.click(".cm-content")
    a.keyboard.type("shared.")
    wait_synced([a, b], server.url, doc)

    a.cut["on"] = True
    a.evaluate("() => window.__collab.session.reconnectNow()")  # its connection drops; retries are refused
    wait_status(a, "reconnecting")
    a.keyboard.type(" Typed in A while it was cut off.")
    assert a.evaluate("() => window.__collab.pending") > 0
    with a.expect_event("close"):
        a.close(run_before_unload=True)
    assert any(k.startswith(f"collab:pending:{doc}:") for k in stored_keys(ctx))

    # B, connected and untouched meanwhile, sends them.
    b.wait_for_function("() => window.__collab.view.state.doc.toString().includes('cut off.')", timeout=10000)
    assert wait_synced([b], server.url, doc) == "shared. Typed in A while it was cut off."
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ctx)),
               what="the stored edits to be removed")


def test_edits_of_a_tab_closed_offline_after_a_rename_reach_the_renamed_document(server, contexts):
    """Was: a tab offline while its document was renamed never heard of the rename; its person typed on
    and closed it, so its record was saved under the old name after the rename. The next page (the old
    link sends it to the new name) moved only records saved before the rename, so these edits stayed
    under the old name for good, and the page said all was saved. Now a record says when its tab last
    heard from the server, and that is what is compared with the rename."""
    ctx = contexts()
    a = open_editor(ctx, server.url, "renamed-away")
    a.click(".cm-content")
    a.keyboard.type("saved.")
    wait_synced([a], server.url, "renamed-away")
    ctx.set_offline(True)
    wait_status(a, "offline")
    a.keyboard.type(" Typed offline,")
    status, _ = api_json(server.url, "/api/docs/renamed-away/rename", method="POST", body={"name": "renamed-here"})
    assert status == 200
    a.keyboard.type(" then the tab was closed.")
    with a.expect_event("close"):
        a.close(run_before_unload=True)
    assert any(k.startswith("collab:pending:renamed-away:") for k in stored_keys(ctx))
    ctx.set_offline(False)

    again = open_editor(ctx, server.url, "renamed-away")  # the old link: sent on to the new name
    assert again.url.endswith("/d/renamed-here")
    again.wait_for_function("() => window.__collab.view.state.doc.toString().includes('closed.')", timeout=10000)
    assert wait_synced([again], server.url, "renamed-here") == "saved. Typed offline, then the tab was closed."
    wait_until(lambda: not any(k.startswith("collab:pending:") for k in stored_keys(ctx)),
               what="the stored edits to be removed")


def test_edits_typed_offline_never_go_into_another_document_made_under_the_name(server, contexts):
    """Was: a tab offline while its document was deleted and another made under the same name came
    back with its version; once the new document had reached that version, the server resumed it as
    if nothing had happened: the tab's offline words went into the new document at positions of the
    old one, and the tab showed the old text under "all saved" while the server had another. Now the
    hello carries the welcome's docId and the server sends the new document's whole text instead: the
    words typed offline are offered back (the rescue), and nothing of them lands in the other
    document."""
    doc = "made-again"
    ctx = contexts()
    a = open_editor(ctx, server.url, doc)
    a.click(".cm-content")
    a.keyboard.insert_text("first document.")  # one update: version 1
    assert wait_synced([a], server.url, doc) == "first document."
    ctx.set_offline(True)
    wait_status(a, "offline")
    a.keyboard.insert_text(" Typed offline.")

    assert api_json(server.url, f"/api/docs/{doc}", method="DELETE")[0] == 200
    b = open_editor(contexts(), server.url, doc)  # someone else makes it again: version 1 too
    b.click(".cm-content")
    b.keyboard.insert_text("A new document.")  # as long as the first: positions fit, nothing fails
    assert wait_synced([b], server.url, doc) == "A new document."

    ctx.set_offline(False)
    a.wait_for_selector("#rescue[open]")
    assert a.input_value("#rescue-text") == "first document. Typed offline."
    # It says what happened (was: that the server "could no longer merge" them, as after a lost backup).
    assert "deleted while this page was away, and another one made under its name" in a.inner_text("#rescue-intro")
    assert wait_synced([a, b], server.url, doc) == "A new document."
    assert a.evaluate("() => window.__collab.pending") == 0
