"""A restore never erases a collaborator's words silently (issue 14, item 2).

Bob writes a sentence (confirmed by the server), then keeps typing. Alice
restores the version from before his sentence while he types. Bob's page
says who restored which version, shows the text the restore removed (his
sentence), and one click undoes the restore: his sentence is back in the
document (a second click confirms when edits came after the restore: the
undo brings back the version before it as a whole). Carol, who only
watches, is told too; Alice, who restored, gets no notice (her History
panel says it), until Bob's undo, which is a restore like any other.

A viewer (a view link, whose updates frames hide clientIDs) is told who
restored which version from the frame's `restore` object alone: its page
may not even read the history.
"""

from __future__ import annotations

import time

from .browser_helpers import (api_json, open_editor, server_doc, set_user, team_server, wait_status, wait_synced,
                              watch_page)
from .test_history import info, scrub, wait_shown


def restorer(base_url, doc, version):
    """Who the update that made `version` is stored as: (author, person, color)."""
    _, body = api_json(base_url, f"/api/docs/{doc}/history?before={version + 1}&limit=1")
    e = body["entries"][0]
    return e["author"], e.get("person"), e.get("color")


def person_of(page):
    return page.evaluate("() => window.__collab.person")


def test_restore_notice_and_undo(server, contexts, artifacts):
    doc = "restore-notice"
    people = {}
    for name, color in (("Alice", "#e5484d"), ("Bob", "#0090ff"), ("Carol", "#30a46c")):
        ctx = contexts()
        set_user(ctx, name, color)
        people[name] = open_editor(ctx, server.url, doc)
    alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]

    alice.click(".cm-content")
    alice.keyboard.type("Plan: ")
    wait_synced([alice, bob, carol], server.url, doc)
    before = server_doc(server.url, doc)["version"]

    bob.click(".cm-content")
    bob.keyboard.press("Control+End")
    sentence = "Bob's fresh words."
    bob.keyboard.type(sentence)
    wait_synced([alice, bob, carol], server.url, doc)

    # Alice restores the version before Bob's sentence while Bob goes on typing.
    alice.click("#history-toggle")
    scrub(alice, [before])
    wait_shown(alice, before)
    alice.click("#history-restore")
    typed = ""
    deadline = time.monotonic() + 15
    stream = iter(" more" * 200)
    while True:
        ch = next(stream)
        bob.keyboard.type(ch)
        typed += ch
        restored = info(alice)["lastRestore"]
        if restored and bob.evaluate("window.__collab.version") >= restored["version"]:
            break
        assert time.monotonic() < deadline, "the restore did not reach Bob"
    wait_synced([alice, bob, carol], server.url, doc)
    assert sentence not in server_doc(server.url, doc)["doc"]
    # Stored as the person Alice's hello names, in her colour (not as a second, unknown Alice).
    assert restorer(server.url, doc, restored["version"]) == ("Alice", person_of(alice), "#e5484d")

    # Bob is told who restored which version, and what it removed.
    notice = bob.wait_for_selector(f".notice-restore[data-key='restore-{restored['version']}']")
    bob.wait_for_function("() => document.querySelector('.notice-restore .notice-title').textContent.startsWith('Alice')")
    assert bob.inner_text(".notice-restore .notice-title").startswith(f"Alice restored version {before}")
    bob.click(".notice-restore summary")
    assert sentence in bob.inner_text(".notice-restore .notice-removed")
    bob.screenshot(path=str(artifacts / "restore-notice.png"))
    # Carol, who typed nothing, is told too; Alice, who restored, is not.
    carol.wait_for_selector(".notice-restore")
    assert f"Alice restored version {before}" in carol.inner_text(".notice-restore .notice-title")
    time.sleep(0.5)
    assert alice.query_selector(".notice-restore") is None

    # "See what changed" opens History on the version before the restore, compared with now.
    bob.click(".notice-restore [data-action=see]")
    wait_shown(bob, restored["version"] - 1)
    assert sentence in bob.inner_text("#history-preview .cm-hist-del") or sentence in info(bob)["text"]

    # One click (two when edits came after the restore) brings the sentence back.
    undo = notice.query_selector("[data-action=undo]")
    undo.click()
    if undo.is_visible() and undo.text_content() == "Undo anyway":
        undo.click()
    bob.wait_for_function("() => document.querySelector('.notice-restore .notice-outcome')"
                          " && document.querySelector('.notice-restore .notice-outcome').textContent.startsWith('Undone')")
    text = wait_synced([alice, bob, carol], server.url, doc)
    assert sentence in text
    assert restorer(server.url, doc, server_doc(server.url, doc)["version"]) == ("Bob", person_of(bob), "#0090ff")
    assert text.startswith("Plan: " + sentence)
    # Alice's page is told of Bob's undo, as of any restore.
    alice.wait_for_selector(".notice-restore")
    assert "Bob restored version" in alice.inner_text(".notice-restore .notice-title")
    for p in (alice, bob, carol):
        assert p.collab_errors == [] and p.csp_violations == []


def test_a_viewer_is_told_from_the_frame(tmp_path, contexts):
    srv, admin = team_server(tmp_path, "viewer-restore")
    try:
        doc = "viewed"
        ca = contexts()
        set_user(ca, "Alice", "#e5484d")
        alice = open_editor(ca, srv.url, f"{doc}?token={admin}")
        alice.click(".cm-content")
        alice.keyboard.type("Plan: ")
        wait_synced([alice], srv.url, f"{doc}?token={admin}")
        before = alice.evaluate("window.__collab.version")
        alice.keyboard.type("more words.")
        wait_synced([alice], srv.url, f"{doc}?token={admin}")
        _, links = api_json(srv.url, f"/api/docs/{doc}/links", admin)

        cv = contexts()
        set_user(cv, "Carol", "#30a46c")
        viewer = watch_page(cv.new_page())
        asked = []
        # The viewer's page may not read the history: what it says must come from the updates frame.
        viewer.route("**/history*", lambda route: (asked.append(route.request.url), route.abort()))
        viewer.goto(srv.url + links["links"]["view"])
        viewer.wait_for_selector("body[data-ready=true]")
        wait_status(viewer, "connected")
        assert viewer.evaluate("window.__collab.session.role") == "view"

        alice.click("#history-toggle")
        scrub(alice, [before])
        wait_shown(alice, before)
        alice.click("#history-restore")
        viewer.wait_for_selector(".notice-restore")
        viewer.wait_for_function("() => document.querySelector('.notice-restore .notice-title').textContent"
                                 f".startsWith('Alice restored version {before}')")
        assert viewer.query_selector(".notice-restore [data-action=undo]") is None  # a viewer cannot undo
        viewer.click(".notice-restore summary")
        assert "more words." in viewer.inner_text(".notice-restore .notice-removed")
        assert asked == []
        assert viewer.collab_errors == [] and viewer.csp_violations == []
    finally:
        srv.kill()
