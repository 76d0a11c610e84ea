"""A restore never erases a collaborator's words silently (issue 14, item 2).

Bob writes a sentence (confirmed by the server), then keeps typing. Alice
restores the version from before his sentence while he types. Bob's page
says who restored which version, shows the text the restore removed (his
sentence), and one click undoes the restore: his sentence is back in the
document (a second click confirms when edits came after the restore: the
undo brings back the version before it as a whole). Carol, who only
watches, is told too; Alice, who restored, gets no notice (her History
panel says it), until Bob's undo, which is a restore like any other.
"""

from __future__ import annotations

import time

from .browser_helpers import open_editor, server_doc, set_user, wait_synced
from .test_history import info, scrub, wait_shown


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
    assert text.startswith("Plan: " + sentence)
    # Alice's page is told of Bob's undo, as of any restore.
    alice.wait_for_selector(".notice-restore")
    assert "Bob restored version" in alice.inner_text(".notice-restore .notice-title")
    for p in (alice, bob, carol):
        assert p.collab_errors == [] and p.csp_violations == []
