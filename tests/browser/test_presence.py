"""Other people's carets: drawn where they really are, in their colour, with their name.

The check is geometric: the caret element that B's page draws for A must
sit at the screen coordinates that B's own editor gives (coordsAtPos) for
A's actual caret position, after A moves and after B types in front of it.
"""

from .browser_helpers import open_editor, set_cursor, set_user, wait_synced, line_end

DOC = "carets"

CARET_GEOMETRY = """
(pos) => {
  const v = window.__collab.view;
  const carets = document.querySelectorAll('.cm-remote-caret');
  if (carets.length !== 1) return {count: carets.length};
  const r = carets[0].getBoundingClientRect();
  const c = v.coordsAtPos(pos, 1) || v.coordsAtPos(pos, -1);
  const back = v.posAtCoords({x: r.left + 1, y: (r.top + r.bottom) / 2});
  return {count: 1, left: r.left + r.width / 2, top: r.top, bottom: r.bottom,
          want: c && {left: c.left, top: c.top, bottom: c.bottom}, back,
          label: carets[0].textContent,
          color: getComputedStyle(carets[0]).borderLeftColor};
}
"""


def caret_pos(page):
    return page.evaluate("() => window.__collab.view.state.selection.main.head")


def wait_caret_at(b, pos, timeout=10000):
    """Wait until B draws exactly one remote caret at `pos` (B's coordinates); return the geometry."""
    b.wait_for_function(
        f"pos => {{ const g = ({CARET_GEOMETRY})(pos); return g.count === 1 && g.want"
        " && Math.abs(g.left - g.want.left) <= 2 && Math.abs(g.top - g.want.top) <= 3"
        " && Math.abs(g.bottom - g.want.bottom) <= 3; }",
        arg=pos, timeout=timeout)
    return b.evaluate(CARET_GEOMETRY, pos)


def test_remote_caret_follows(server, contexts):
    ca = contexts()
    set_user(ca, "Alice", "#e5484d")
    a = open_editor(ca, server.url, DOC)
    b = open_editor(contexts(), server.url, DOC)
    a.click(".cm-content")
    a.keyboard.type("The quick brown fox")
    a.keyboard.press("Enter")
    a.keyboard.type("jumps over the lazy dog")
    wait_synced([a, b], server.url, DOC)

    # A's caret is at the end of line 2: B draws it there, labelled and coloured.
    pos = caret_pos(a)
    g = wait_caret_at(b, pos)
    assert g["label"] == "Alice"
    assert g["color"] == "rgb(229, 72, 77)"
    assert g["back"] == pos  # posAtCoords of the drawn caret is A's position

    # A moves with the keyboard: up a line and some words left.
    a.keyboard.press("ArrowUp")
    a.keyboard.press("Control+ArrowLeft")
    a.keyboard.press("Control+ArrowLeft")
    pos = caret_pos(a)
    assert 0 < pos < line_end(a, 1)
    g = wait_caret_at(b, pos)
    assert g["back"] == pos

    # B types in front of A's caret on the same line: the caret moves right with the text.
    set_cursor(b, 4)
    b.keyboard.type("very ")
    g = wait_caret_at(b, pos + 5)
    wait_synced([a, b], server.url, DOC)
    assert caret_pos(a) == pos + 5  # A's own caret was mapped the same way
    wait_caret_at(b, pos + 5)

    # B adds a line above: A's caret moves down a line in B's view.
    set_cursor(b, 0)
    b.keyboard.press("Enter")
    wait_synced([a, b], server.url, DOC)
    g = wait_caret_at(b, pos + 6)

    # A selects a word: B shows the selection in A's colour.
    a.keyboard.press("Control+Shift+ArrowRight")
    head = caret_pos(a)
    wait_caret_at(b, head)
    b.wait_for_function("() => document.querySelectorAll('.cm-remote-selection').length >= 1")

    # The people list in B's header names A.
    b.wait_for_function("() => [...document.querySelectorAll('#people .person')]"
                        ".some(li => li.textContent.includes('Alice'))")

    # The name label fades after a few idle seconds and comes back on hover.
    label_opacity = "() => Number(getComputedStyle(document.querySelector('.cm-remote-label')).opacity)"
    b.wait_for_function(f"() => ({label_opacity})() < 0.05", timeout=8000)
    box = b.query_selector(".cm-remote-caret").bounding_box()
    b.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    b.wait_for_function(f"() => ({label_opacity})() === 1")
    b.mouse.move(1, 1)
    # ... and shows again by itself when A moves.
    a.keyboard.press("ArrowRight")
    b.wait_for_function(f"() => ({label_opacity})() > 0.9")

    # A leaves: B drops the caret.
    a.close()
    b.wait_for_function("() => document.querySelectorAll('.cm-remote-caret').length === 0")
    assert b.csp_violations == []
