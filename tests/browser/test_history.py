"""The History panel: sessions, scrubbing, restore while someone types, fork, download, authorship.

The restore test is the important one: A restores an old version from the
panel while B keeps typing.  B's outgoing pushes are held back in the page
(WebSocket.send is wrapped) for the moment of the restore, so B certainly
has unconfirmed edits when the restore arrives: they must be rebased over it,
survive, and reach the server afterwards.  A second restore is then made
with nothing held back, B typing all along.
"""

import json
import subprocess
import sys
import time
import urllib.request

from .browser_helpers import open_editor, set_user, set_cursor, wait_synced, line_end, server_doc
from serverproc import ROOT

# Holds the page's "push" frames while window.__hold.on; release() sends them in order.
HOLD_PUSHES = """
(() => {
  const send = WebSocket.prototype.send;
  const held = [];
  window.__hold = {
    on: false, held,
    release() {
      this.on = false;
      for (const [ws, data] of held.splice(0)) if (ws.readyState === 1) send.call(ws, data);
    },
  };
  WebSocket.prototype.send = function (data) {
    if (window.__hold.on && typeof data === "string" && data.includes('"type":"push"')) {
      held.push([this, data]);
      return;
    }
    return send.call(this, data);
  };
})();
"""


def api(base_url, path):
    with urllib.request.urlopen(f"{base_url}{path}", timeout=10) as r:
        return json.loads(r.read())


def type_text(page, text):
    for i, line in enumerate(text.split("\n")):
        if i:
            page.keyboard.press("Enter")
        if line:
            page.keyboard.type(line)


def info(page):
    return page.evaluate("() => window.__collab.history.info")


def wait_shown(page, version, mode="changes"):
    page.wait_for_function(
        "([v, m]) => { const h = document.querySelector('#history');"
        " return h.dataset.state === 'ready' && h.dataset.shown === String(v) && h.dataset.mode === m; }",
        arg=[version, mode])


def scrub(page, versions):
    """Move the slider through `versions` as fast as the page takes input events (one step per edit)."""
    page.evaluate("""vs => { const fine = document.querySelector('#history-fine');
        if (!fine.checked) fine.click();
        const s = document.querySelector('#history-slider');
        for (const v of vs) { s.value = String(v); s.dispatchEvent(new Event('input', {bubbles: true})); } }""",
                  versions)


def test_restore_while_another_person_types(server, contexts):
    doc = "hist-restore"
    ca, cb = contexts(), contexts()
    set_user(ca, "Alice", "#e5484d")
    set_user(cb, "Bob", "#0090ff")
    cb.add_init_script(HOLD_PUSHES)
    a = open_editor(ca, server.url, doc)
    b = open_editor(cb, server.url, doc)

    a.click(".cm-content")
    type_text(a, "Alpha one\nAlpha two\nAlpha three")
    old_text = wait_synced([a, b], server.url, doc)
    old_version = server_doc(server.url, doc)["version"]

    set_cursor(b, line_end(b, 2))
    b.keyboard.type(" and Bob's change")
    b.keyboard.press("Enter")
    b.keyboard.type("Bob line")
    for _ in range(3):
        b.keyboard.press("Backspace")
    wait_synced([a, b], server.url, doc)

    # A opens the panel and picks the version after its own first lines.
    a.click("#history-toggle")
    scrub(a, [old_version])
    wait_shown(a, old_version)
    assert info(a)["text"] == old_text == api(server.url, f"/api/docs/{doc}/versions/{old_version}")["doc"]

    # B types at the end of line 1, its pushes held: everything it types is unconfirmed.
    set_cursor(b, line_end(b, 1))
    b.evaluate("window.__hold.on = true")
    typed = "[B1"
    b.keyboard.type(typed)
    assert b.evaluate("window.__collab.unconfirmed") > 0
    a.click("#history-restore")
    stream = iter("abcdefghijklmnopqrstuvwxyz" * 20)
    deadline = time.monotonic() + 15
    restored = None
    while True:  # keep typing until the restore has reached B
        ch = next(stream)
        b.keyboard.type(ch)
        typed += ch
        restored = restored or info(a)["lastRestore"]
        if restored and b.evaluate("window.__collab.version") >= restored["version"]:
            break
        assert time.monotonic() < deadline, "the restore did not reach B"
    assert restored["from"] == old_version
    assert b.evaluate("window.__collab.unconfirmed") > 0  # B's edits were rebased over the restore
    b.keyboard.type("-after")
    typed += "-after"
    b.evaluate("window.__hold.release()")
    b.keyboard.type("]")
    typed += "]"
    text = wait_synced([a, b], server.url, doc)
    assert text == old_text.replace("Alpha one", "Alpha one" + typed, 1)
    assert "Bob's change" not in text
    # A's open panel follows the live document: the restore is a session of its own.
    a.wait_for_selector(f"#history-sessions .history-session[data-to='{restored['version']}'] "
                        f">> text=restored version {old_version}")

    # Undo the restore (restore the version just before it) while B types, nothing held.
    before_restore = restored["version"] - 1
    before_text = api(server.url, f"/api/docs/{doc}/versions/{before_restore}")["doc"]
    assert "Bob's change" in before_text
    scrub(a, [before_restore])
    wait_shown(a, before_restore)
    set_cursor(b, line_end(b, 3))  # the end of "Alpha three", a line both versions have
    typed2 = "<"
    b.keyboard.type(typed2)
    a.click("#history-restore")
    stream = iter("0123456789" * 50)
    deadline = time.monotonic() + 15
    while True:
        ch = next(stream)
        b.keyboard.type(ch)
        typed2 += ch
        second = info(a)["lastRestore"]
        if second and second["from"] == before_restore and b.evaluate("window.__collab.version") >= second["version"]:
            break
        assert time.monotonic() < deadline, "the second restore did not reach B"
    tail = "".join(next(stream) for _ in range(5)) + ">"
    b.keyboard.type(tail)
    typed2 += tail
    text = wait_synced([a, b], server.url, doc)
    assert text == server_doc(server.url, doc)["doc"]
    # The text before the first restore is back, plus what B typed that the
    # restore had not yet seen: a tail of B's typing, ending with all it typed afterwards.
    p = before_text.index("Alpha three") + len("Alpha three")
    kept = text[p:len(text) - (len(before_text) - p)]
    assert text[:p] == before_text[:p] and text[p + len(kept):] == before_text[p:], (text, before_text)
    assert typed2.endswith(kept) and kept.endswith(tail), (kept, typed2)
    assert a.collab_errors == [] and b.collab_errors == []
    assert a.csp_violations == [] and b.csp_violations == []


def test_panel_sessions_scrub_download_authors_fork(server, contexts):
    doc = "hist-tour"
    ca, cb = contexts(), contexts()
    set_user(ca, "Alice", "#e5484d")
    set_user(cb, "Bob", "#0090ff")
    a = open_editor(ca, server.url, doc)
    b = open_editor(cb, server.url, doc)
    a.click(".cm-content")
    type_text(a, "Hello from Alice\n")
    wait_synced([a, b], server.url, doc)
    set_cursor(b, line_end(b, 2))
    b.keyboard.type("Bob was here!!!")
    for _ in range(3):
        b.keyboard.press("Backspace")
    wait_synced([a, b], server.url, doc)
    bob_end = server_doc(server.url, doc)["version"]
    set_cursor(a, line_end(a, 2))
    type_text(a, "\nAlice again")
    wait_synced([a, b], server.url, doc)
    head = server_doc(server.url, doc)["version"]

    # Sessions end at a pause, not when the author changes: Alice, Bob and
    # Alice again within seconds are one session, naming both people (in
    # their own colours) and adding up what the API gives.
    entries = api(server.url, f"/api/docs/{doc}/history?limit=1000")["entries"]
    assert [e["author"] for e in sorted(entries, key=lambda e: e["version"])][0] == "Alice"
    inserted, deleted = sum(e["inserted"] for e in entries), sum(e["deleted"] for e in entries)
    assert deleted == 3  # Bob's backspaces
    a.click("#history-toggle")
    a.wait_for_function("() => document.querySelector('#history-sessions .history-session')"
                        " && !document.querySelector('#history-older:not([hidden])')")
    rows = a.evaluate("""() => [...document.querySelectorAll('#history-sessions .history-session')].map(li => [
        [...li.querySelectorAll('.history-person')].map(p => [p.dataset.author,
            getComputedStyle(p.querySelector('.author-dot')).backgroundColor]),
        li.querySelector('.count-ins').textContent, li.querySelector('.count-del').textContent])""")
    assert rows == [[[["Alice", "rgb(229, 72, 77)"], ["Bob", "rgb(0, 144, 255)"]], f"+{inserted}", f"−{deleted}"]]

    # Scrub fast through every version, ending at Bob's last one: only that is
    # fetched (debounced) and shown.
    wait_shown(a, head)  # what opening the panel shows, fetched first (under load, after the listener came)
    requested = []
    a.on("request", lambda r: requested.append(r.url) if "/versions/" in r.url else None)
    scrub(a, list(range(head, 0, -1)) + list(range(1, bob_end + 1)))
    wait_shown(a, bob_end)
    assert [u.split("/versions/")[1] for u in requested] == [str(bob_end)]
    bob_text = api(server.url, f"/api/docs/{doc}/versions/{bob_end}")["doc"]
    assert info(a)["text"] == bob_text == "Hello from Alice\nBob was here"
    a.wait_for_timeout(400)  # no late answer for another position replaces it
    assert info(a)["shown"] == bob_end and info(a)["text"] == bob_text
    # Differences from the current text: Alice's later line shows as added.
    added = a.evaluate("() => [...document.querySelectorAll('#history-preview .cm-hist-ins')].map(e => e.textContent).join('')")
    assert added == "\nAlice again"

    # Download: that version's text, as .txt and as .md.
    with a.expect_download() as dl:
        a.click("#history-download")
    with open(dl.value.path(), encoding="utf-8") as f:
        assert f.read() == bob_text
    a.select_option("#history-format", "md")
    with a.expect_download() as dl:
        a.click("#history-download")
    assert dl.value.suggested_filename == f"{doc}-v{bob_end}.md"
    with open(dl.value.path(), encoding="utf-8") as f:
        assert f.read() == bob_text

    # Authorship: each character coloured by who wrote it; two authors, two colours.
    a.check("input[name=history-mode][value=authors]")
    wait_shown(a, bob_end, "authors")
    colours = a.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#history-preview [data-author]')]
        .map(e => [e.dataset.author, getComputedStyle(e).backgroundColor]))""")
    assert set(colours) == {"Alice", "Bob"}
    assert colours["Alice"] != colours["Bob"]
    marked = a.evaluate("""() => [...document.querySelectorAll('#history-preview [data-author=Bob]')]
        .map(e => e.textContent).join('')""")
    assert marked == "Bob was here"

    # Fork: a new document with that version's text opens in a new tab.
    with ca.expect_page() as new_page:
        a.click("#history-fork")
    fork = new_page.value
    fork.wait_for_url("**/d/**")
    fork.wait_for_function("() => window.__collab && window.__collab.status.state === 'connected'")
    name = fork.url.split("/d/")[1].split("?")[0]
    assert name != doc
    assert fork.evaluate("() => window.__collab.view.state.doc.toString()") == bob_text
    assert server_doc(server.url, name)["doc"] == bob_text
    first = api(server.url, f"/api/docs/{name}/history")["entries"][-1]  # as the person Alice's hello names
    assert (first["author"], first["person"], first["color"]) == (
        "Alice", a.evaluate("() => window.__collab.person"), "#e5484d")

    # A compacted-away version: the panel says so in words (the server's 404 message).
    out = subprocess.run([sys.executable, "-m", "collab", "compact", "--db", str(server.db), "--keep-history", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    a.check("input[name=history-mode][value=changes]")
    scrub(a, [2])
    a.wait_for_function("() => document.querySelector('#history').dataset.state === 'error'")
    error = a.inner_text("#history-error")
    assert error.startswith("Version 2 cannot be shown: ") and "compacted" in error, error
    assert a.collab_errors == [] and a.csp_violations == []


def test_long_history_pages_in(server, contexts):
    """More entries than one page: the list asks for older ones as it is shown."""
    doc = "hist-long"
    ctx = contexts()
    set_user(ctx, "Alice", "#e5484d")
    a = open_editor(ctx, server.url, doc)
    a.click(".cm-content")
    text = ("the quick brown fox jumps over the lazy dog " * 6)[:250]
    a.keyboard.type(text)
    wait_synced([a], server.url, doc)
    head = server_doc(server.url, doc)["version"]
    assert head > 200  # one update a keystroke: more than a page (200)
    pages = []
    a.on("request", lambda r: pages.append(r.url) if "/history" in r.url else None)
    a.click("#history-toggle")
    a.wait_for_selector("#history-sessions .history-session[data-from='1']")
    rows = a.evaluate("""() => [...document.querySelectorAll('#history-sessions .history-session')].map(li =>
        [li.dataset.from, li.dataset.to, li.querySelector('.count-ins').textContent])""")
    assert rows == [["1", str(head), f"+{len(text)}"]]
    assert len(pages) >= 2 and "before=" in pages[-1]
    assert a.is_hidden("#history-older")


SECRET = "history-test-secret-0123456789abcdef"


def test_history_with_access_tokens(tmp_path, contexts):
    """With access control on, the panel sends the page's token; fork is the admin's and opens the new document's edit link."""
    from collab.access import Access
    from serverproc import ServerProcess

    srv = ServerProcess(tmp_path / "acl.db", extra_args=["--secret", SECRET])
    srv.start()
    try:
        admin = Access(SECRET.encode()).admin_token()
        first = open_editor(contexts(), srv.url, f"plans?token={admin}")
        first.click(".cm-content")
        first.keyboard.type("version one")
        wait_synced([first], srv.url, f"plans?token={admin}")
        with urllib.request.urlopen(f"{srv.url}/api/docs/plans/links?token={admin}", timeout=10) as r:
            links = json.loads(r.read())["links"]

        ctx = contexts()
        editor = open_editor(ctx, srv.url, links["edit"].removeprefix("/d/"))
        editor.click(".cm-content")
        editor.keyboard.press("Control+End")
        editor.keyboard.type(", then more")
        wait_synced([editor], srv.url, f"plans?token={admin}")
        editor.click("#history-toggle")
        v1 = len("version one")
        scrub(editor, [v1])
        wait_shown(editor, v1)
        assert info(editor)["text"] == "version one"
        with editor.expect_download() as dl:
            editor.click("#history-download")
        with open(dl.value.path(), encoding="utf-8") as f:
            assert f.read() == "version one"
        assert editor.is_hidden("#history-fork")  # creating a document is the admin's
        assert editor.is_visible("#history-restore")

        first.click("#history-toggle")
        scrub(first, [v1])
        wait_shown(first, v1)
        with first.context.expect_page() as new_page:
            first.click("#history-fork")
        fork = new_page.value
        fork.wait_for_function("() => window.__collab && window.__collab.status.state === 'connected'")
        assert "token=" in fork.url and "token=" + admin not in fork.url  # the new document's own edit link
        assert fork.evaluate("() => window.__collab.view.state.doc.toString()") == "version one"
        assert "view only" not in fork.inner_text("#status")

        # A view link can look through the history but not restore or fork.
        viewer = open_editor(contexts(), srv.url, links["view"].removeprefix("/d/"))
        viewer.click("#history-toggle")
        scrub(viewer, [v1])
        wait_shown(viewer, v1)
        assert info(viewer)["text"] == "version one"
        assert viewer.is_hidden("#history-restore") and viewer.is_hidden("#history-fork")
        assert viewer.is_hidden("#history-name")  # naming a version takes edit rights
        for p in (first, editor, viewer):
            assert p.collab_errors == [] and p.csp_violations == []
    finally:
        srv.kill()


def test_sessions_by_pause_slider_by_session_word_diff_and_named_versions(server, contexts):
    """Sessions end at a pause in the document, not at a change of author (the
    page's pause is shortened to three seconds for the test: the grouping itself,
    five minutes, is unit-tested in static/test/timeline.test.mjs); the slider
    stops at sessions, single edits on demand; a changed word shows as that
    word removed and the new one added; a version gets a name, shown between
    the sessions and to everyone, and loses it again: in a History panel
    already open elsewhere too, with no edit in between (the server's
    `checkpoints` frame; was: only at that panel's next edit)."""
    doc = "hist-sessions"
    ca, cb = contexts(), contexts()
    set_user(ca, "Alice", "#e5484d")
    set_user(cb, "Bob", "#0090ff")
    a = open_editor(ca, server.url, doc)
    b = open_editor(cb, server.url, doc)
    a.evaluate("window.__collab.history.gap = 3")

    # First session: Alice and Bob in turns.
    a.click(".cm-content")
    a.keyboard.type("one item here")
    wait_synced([a, b], server.url, doc)
    set_cursor(b, line_end(b, 1))
    b.keyboard.type(" and more")
    wait_synced([a, b], server.url, doc)
    first_end = server_doc(server.url, doc)["version"]
    time.sleep(3.2)
    # Second session, after the pause: Alice replaces one word.
    a.evaluate("() => { const v = window.__collab.view; v.dispatch({selection: {anchor: 4, head: 8}}); v.focus(); }")
    a.keyboard.type("entry")
    text = wait_synced([a, b], server.url, doc)
    assert text == "one entry here and more"
    head = server_doc(server.url, doc)["version"]

    a.click("#history-toggle")
    a.wait_for_function("() => document.querySelectorAll('#history-sessions .history-session').length === 2")
    sessions = [(s["from"], s["to"], len(s["people"])) for s in info(a)["sessions"]]
    assert sessions == [(first_end + 1, head, 1), (1, first_end, 2)]
    names = a.evaluate("""() => [...document.querySelectorAll('#history-sessions .history-session')]
        .map(li => [...li.querySelectorAll('.history-person')].map(p => p.dataset.author))""")
    assert names == [["Alice"], ["Alice", "Bob"]]

    # The slider moves by session: three stops (before both, between them, now).
    assert a.evaluate("() => [document.querySelector('#history-slider').max, document.querySelector('#history-slider').value]") == ["2", "2"]
    a.focus("#history-slider")
    a.keyboard.press("ArrowLeft")
    wait_shown(a, first_end)
    assert info(a)["selected"] == first_end
    # Word by word: "item" removed, "entry" added, nothing letter by letter.
    removed = a.evaluate("() => [...document.querySelectorAll('#history-preview .cm-hist-del')].map(e => e.textContent)")
    added = a.evaluate("() => [...document.querySelectorAll('#history-preview .cm-hist-ins')].map(e => e.textContent)")
    assert (removed, added) == (["item"], ["entry"])
    # Fine steps on demand: one per edit.
    a.check("#history-fine")
    assert a.evaluate("() => [document.querySelector('#history-slider').max, document.querySelector('#history-slider').value]") == [str(head), str(first_end)]

    # Bob's History is open, and nobody edits from here on.
    b.click("#history-toggle")
    b.wait_for_function("() => document.querySelectorAll('#history-sessions .history-session').length > 0")
    assert b.query_selector("#history-sessions .history-checkpoint") is None

    # Name the version between the sessions.
    a.click("#history-name")
    a.fill("#history-name-input", "First draft")
    a.keyboard.press("Enter")
    a.wait_for_selector(f"#history-sessions .history-checkpoint[data-version='{first_end}']")
    order = a.evaluate("() => [...document.querySelectorAll('#history-sessions > li')].map(li => li.className.split(' ')[0])")
    assert order == ["history-session", "history-checkpoint", "history-session"]
    assert a.inner_text(".history-checkpoint .checkpoint-name") == "First draft"
    assert "“First draft”" in a.inner_text("#history-label")
    saved = api(server.url, f"/api/docs/{doc}/checkpoints")["checkpoints"]
    assert [(c["version"], c["name"], c["author"]) for c in saved] == [(first_end, "First draft", "Alice")]
    # Bob's open History shows it too, though nothing was edited since.
    b.wait_for_selector(f"#history-sessions .history-checkpoint[data-version='{first_end}'] >> text=First draft")

    # And the name goes again.
    a.click(f".history-checkpoint[data-version='{first_end}'] button")
    a.click("#history-name")
    assert a.input_value("#history-name-input") == "First draft"
    a.click("#history-name-remove")
    a.wait_for_function("() => !document.querySelector('#history-sessions .history-checkpoint')")
    assert api(server.url, f"/api/docs/{doc}/checkpoints")["checkpoints"] == []
    b.wait_for_function("() => !document.querySelector('#history-sessions .history-checkpoint')")
    assert server_doc(server.url, doc)["version"] == head
    for p in (a, b):
        assert p.collab_errors == [] and p.csp_violations == []
