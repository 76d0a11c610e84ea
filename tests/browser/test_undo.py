"""Undo is personal: Ctrl-Z takes back this person's own last change only."""

from .browser_helpers import open_editor, set_cursor, wait_synced, doc_text, line_end


def test_undo_only_own_changes(server, contexts):
    doc = "undo-doc"
    a = open_editor(contexts(), server.url, doc)
    b = open_editor(contexts(), server.url, doc)
    a.click(".cm-content")
    a.keyboard.type("line one")
    a.keyboard.press("Enter")
    a.keyboard.type("line two")
    wait_synced([a, b], server.url, doc)

    # A types on line 1; then B types on line 1 too (after A) and on line 2.
    a.wait_for_timeout(600)  # let CodeMirror's history start a new undo group
    set_cursor(a, line_end(a, 1))
    a.keyboard.type(" [A's words]")
    wait_synced([a, b], server.url, doc)
    set_cursor(b, line_end(b, 1))
    b.keyboard.type(" [B's words]")
    set_cursor(b, line_end(b, 2))
    b.keyboard.type(" [B again]")
    wait_synced([a, b], server.url, doc)
    assert doc_text(a) == "line one [A's words] [B's words]\nline two [B again]"

    # A undoes: only A's last change goes; B's text, typed later, stays.
    a.keyboard.press("Control+z")
    text = wait_synced([a, b], server.url, doc)
    assert text == "line one [B's words]\nline two [B again]"

    # Undoing everything takes back all of A's typing and none of B's.
    for _ in range(5):
        a.keyboard.press("Control+z")
    text = wait_synced([a, b], server.url, doc)
    assert text == " [B's words] [B again]"

    # Redo brings A's changes back in the right places.
    for _ in range(5):
        a.keyboard.press("Control+Shift+KeyZ")
    text = wait_synced([a, b], server.url, doc)
    assert text == "line one [A's words] [B's words]\nline two [B again]"

    # B's own undo, in turn, leaves A's text alone.
    b.keyboard.press("Control+z")
    text = wait_synced([a, b], server.url, doc)
    assert text == "line one [A's words] [B's words]\nline two"
