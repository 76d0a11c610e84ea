"""Edits the server could never take are refused as they are made, in words; the rest always fits.

The editor page carries the server's --max-frame and --max-doc. Without that,
a paste bigger than a frame would be pushed, answered with 1009, pushed again
on every reconnect, and hold back everything typed after it; and a backlog of
offline edits counted in characters rather than UTF-8 bytes could overflow a
frame the same way. These servers run with a 64 KB frame limit.
"""

import pytest

from .browser_helpers import (open_editor, focus_end, wait_synced, doc_text, wait_status, status_log,
                              wait_until, server_doc)
from serverproc import ServerProcess

DOC = "limits"


@pytest.fixture
def small_server(request, tmp_path):
    args = ["--max-frame", "65536", *getattr(request, "param", [])]
    proc = ServerProcess(tmp_path / "collab.db", extra_args=args)
    proc.start()
    yield proc
    proc.kill()


def paste(page, text: str) -> None:
    page.evaluate("t => navigator.clipboard.writeText(t)", text)
    page.keyboard.press("Control+V")


def messages(page) -> list[str]:
    return page.eval_on_selector_all("#messages .message", "els => els.map(e => e.firstChild.textContent)")


def clipboard_context(contexts):
    return contexts(permissions=["clipboard-read", "clipboard-write"])


def two_editors(server, contexts, start: str):
    """A (who may paste) and B on DOC, once A's `start` reached both."""
    a = open_editor(clipboard_context(contexts), server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    focus_end(a)
    a.keyboard.type(start)
    wait_synced([a, b], server.url, DOC)
    return a, b


def test_an_edit_bigger_than_a_frame_is_refused_in_words(small_server, contexts):
    a, b = two_editors(small_server, contexts, "start ")

    paste(a, "x" * 100_000)  # 100 KB
    wait_until(lambda: len(messages(a)) == 1, what="the refusal")
    [first] = messages(a)
    assert "at most 63 KB in one edit" in first and "it is 98 KB" in first, first
    paste(a, "\U0001F600" * 25_000)  # 50,000 UTF-16 units, 100 KB of UTF-8 too: the same refusal, counted
    wait_until(lambda: messages(a) == [f"{first} (2 times)"], what="the second refusal")
    assert doc_text(a) == "start "

    paste(a, "y" * 20_000)  # fits
    a.keyboard.type(" end")
    text = wait_synced([a, b], small_server.url, DOC)
    assert text == "start " + "y" * 20_000 + " end"
    assert "reconnecting" not in status_log(a)


def test_an_offline_backlog_is_pushed_in_frames_that_fit(small_server, contexts):
    """Three pastes of 50 KB of UTF-8 each (25,000 characters): 150 KB in all, more than a frame."""
    ca = clipboard_context(contexts)
    a = open_editor(ca, small_server.url, DOC)
    b = open_editor(contexts(), small_server.url, DOC)
    focus_end(a)
    ca.set_offline(True)
    wait_status(a, "offline")
    for letter in "éèê":
        paste(a, letter * 25_000)
    assert a.evaluate("() => window.__collab.pending") == 3
    ca.set_offline(False)
    text = wait_synced([a, b], small_server.url, DOC, timeout=30)
    assert text == "é" * 25_000 + "è" * 25_000 + "ê" * 25_000
    assert not messages(a), messages(a)


@pytest.mark.parametrize("small_server", [["--max-doc", "30000"]], indirect=True)
def test_an_edit_that_would_grow_the_document_too_far_is_refused(small_server, contexts):
    a = open_editor(clipboard_context(contexts), small_server.url, DOC)
    b = open_editor(contexts(), small_server.url, DOC)
    focus_end(a)
    paste(a, "a" * 20_000)
    wait_synced([a, b], small_server.url, DOC)
    paste(a, "b" * 15_000)
    wait_until(lambda: messages(a), what="the refusal")
    assert "at most 30,000" in messages(a)[0], messages(a)
    first = messages(a)[0]
    paste(a, "b" * 15_000)  # the same refusal again counts on the same message
    wait_until(lambda: messages(a) == [f"{first} (2 times)"], what="the second refusal, counted")
    a.keyboard.press("Control+Home")
    paste(a, "c" * 5_000)  # still fits
    text = wait_synced([a, b], small_server.url, DOC)
    assert text == "c" * 5_000 + "a" * 20_000


@pytest.mark.parametrize("small_server", [["--max-doc", "100"]], indirect=True)
def test_edits_a_full_document_cannot_take_are_rescued_not_pushed_for_ever(small_server, contexts):
    """A typed while offline, within the limit as A saw it; B filled the document meanwhile. Was: the
    server refused A's push (too-large) again and again, A kept its characters (the pages differed for
    good, "1 edit not yet saved" did not clear, the toast counted up, a reload pushed them again). Now
    A's edits go to the rescue dialog, saying why, and A shows the server's text."""
    ca = contexts()
    a = open_editor(ca, small_server.url, DOC)
    b = open_editor(contexts(), small_server.url, DOC)
    focus_end(a)
    a.keyboard.type("x" * 80)
    wait_synced([a, b], small_server.url, DOC)
    ca.set_offline(True)
    wait_status(a, "offline")
    focus_end(a)
    a.keyboard.type("a" * 10)  # 90: fits, as far as A knows
    focus_end(b)
    b.keyboard.type("b" * 15)  # 95
    wait_until(lambda: len(server_doc(small_server.url, DOC)["doc"]) == 95, what="B's edits on the server")
    ca.set_offline(False)
    a.wait_for_selector("#rescue[open]")
    assert a.input_value("#rescue-text") == "x" * 80 + "b" * 15 + "a" * 10  # as A had it, B's edits come in
    assert "largest size the server allows" in a.inner_text("#rescue-intro")
    a.click("#rescue-close")
    assert wait_synced([a, b], small_server.url, DOC) == "x" * 80 + "b" * 15
    assert a.evaluate("() => window.__collab.pending") == 0
    assert not messages(a), messages(a)


def test_a_pasted_nul_is_saved_as_a_replacement_character_and_holds_nothing_back(small_server, contexts):
    """The server refuses U+0000 for good (bad-changes): a pasted one must not stall every later edit."""
    a, b = two_editors(small_server, contexts, "ok.")
    paste(a, " pasted\x00thing")
    a.keyboard.insert_text(" typed\x00in")  # text input (an IME, a drop) as well as a paste
    a.keyboard.type(" and afterwards")
    want = "ok. pasted\ufffdthing typed\ufffdin and afterwards"
    assert wait_synced([a, b], small_server.url, DOC) == want
    assert a.evaluate("() => window.__collab.pending") == 0
    assert messages(a) == []
