"""Three people type real keystrokes into one document at the same time.

Every keystroke goes through Chromium's input pipeline (Playwright's
keyboard), including Enter, Backspace, an emoji (inserted as text, as an
IME or emoji picker would) and a paste of a long block through the
clipboard.  The three pages do not wait for each other, so their pushes
cross on the wire and the server has to rebase them.  At the end all three
editors and GET /api/docs/{doc} hold the same text, and nobody's typing was
lost or doubled.  (Typing at the very same spot at the same moment may
interleave the two people's characters: that is CodeMirror's rebase rule for
ties, so there the test checks order and count, not contiguity.)
"""

from .browser_helpers import open_editor, set_cursor, wait_synced, doc_text, line_end

DOC = "three-way"

PASTE = "\n".join(f"pasted line {i:02d}: the quick brown fox jumps over the lazy dog" for i in range(40))


def interleave(pages_and_texts, chunk=3):
    """Type each page's text a few characters at a time, round-robin, without waiting."""
    pos = [0] * len(pages_and_texts)
    while any(p < len(t) for p, (_, t) in zip(pos, pages_and_texts)):
        for i, (page, text) in enumerate(pages_and_texts):
            piece = text[pos[i]:pos[i] + chunk]
            pos[i] += len(piece)
            for key in split_keys(piece):
                if key in ("Enter", "Backspace"):
                    page.keyboard.press(key)
                else:
                    page.keyboard.type(key)


def split_keys(piece):
    out = []
    for ch in piece:
        if ch == "\n":
            out.append("Enter")
        elif ch == "\b":
            out.append("Backspace")
        else:
            out.append(ch)
    return out


def test_three_people_converge(server, contexts):
    ctxs = [contexts(permissions=["clipboard-read", "clipboard-write"]) for _ in range(3)]
    a, b, c = (open_editor(ctx, server.url, DOC) for ctx in ctxs)
    # A writes three lines; everybody sees them.
    a.click(".cm-content")
    a.keyboard.type("first line")
    a.keyboard.press("Enter")
    a.keyboard.type("second line")
    a.keyboard.press("Enter")
    a.keyboard.type("third line")
    wait_synced([a, b, c], server.url, DOC)

    # Different lines at once: each person at the end of their own line.
    set_cursor(a, line_end(a, 1))
    set_cursor(b, line_end(b, 2))
    set_cursor(c, line_end(c, 3))
    interleave([
        (a, " [alpha typing here]"),
        (b, " [bravo xx\b\btypes too]"),
        (c, " [charlie 🎉 with emoji]\nnew line from charlie"),
    ])

    # The same line, the same spot: everyone at the end of line 2.
    wait_synced([a, b, c], server.url, DOC)
    for p in (a, b, c):
        set_cursor(p, line_end(p, 2))
    interleave([
        (a, " <A1 A2 A3>"),
        (b, " <B1 B2\bX B3>"),
        (c, " <C1 😀 C3>"),
    ], chunk=2)

    # B pastes a long block through the clipboard while A and C keep typing on lines 1 and 3.
    wait_synced([a, b, c], server.url, DOC)
    set_cursor(a, line_end(a, 1))
    set_cursor(c, line_end(c, 3))
    b.evaluate("t => navigator.clipboard.writeText(t)", PASTE)
    set_cursor(b, doc_length(b))
    b.keyboard.press("Enter")
    b.keyboard.press("Control+V")
    interleave([(a, " and more from A"), (c, " and more from C")], chunk=4)

    text = wait_synced([a, b, c], server.url, DOC)
    assert doc_text(a) == doc_text(b) == doc_text(c) == text

    # Everyone's words arrived whole, with Backspace applied, emoji intact.
    for piece in ("[alpha typing here]", "[bravo types too]", "[charlie 🎉 with emoji]",
                  "new line from charlie", " and more from A", " and more from C", "\n" + PASTE):
        assert text.count(piece) == 1, (piece, text)
    lines = text.split("\n")
    assert lines[0] == "first line [alpha typing here] and more from A"
    assert lines[2] == "third line [charlie 🎉 with emoji] and more from C"
    assert lines[3] == "new line from charlie"
    # Same spot: each person's characters in their order, nothing lost or doubled.
    same = lines[1][len("second line [bravo types too]"):]
    for typed in (" <A1 A2 A3>", " <B1 BX B3>", " <C1 😀 C3>"):
        assert is_subsequence(typed, same), (typed, same)
    assert sorted(same) == sorted(" <A1 A2 A3>" + " <B1 BX B3>" + " <C1 😀 C3>")
    assert lines[1].startswith("second line [bravo types too]")
    assert len(lines) == 4 + PASTE.count("\n") + 1
    for p in (a, b, c):
        assert p.collab_errors == []
        assert p.csp_violations == []


def doc_length(page):
    return page.evaluate("() => window.__collab.view.state.doc.length")


def is_subsequence(small, big):
    it = iter(big)
    return all(ch in it for ch in small)
