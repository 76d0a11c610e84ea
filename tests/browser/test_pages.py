"""The landing page, identity, and server errors shown in words."""

import re
import urllib.request

from .browser_helpers import open_editor, set_user, wait_synced, server_doc, wait_status


def test_landing_lists_documents_and_creates_new(server, contexts):
    ctx = contexts()
    # Two documents exist, one with text.
    a = open_editor(ctx, server.url, "notes")
    a.click(".cm-content")
    a.keyboard.type("twelve chars")
    wait_synced([a], server.url, "notes")
    create = urllib.request.Request(f"{server.url}/api/docs", data=b'{"name": "empty-one"}', method="POST",
                                    headers={"Content-Type": "application/json"})
    urllib.request.urlopen(create, timeout=10).close()  # an explicit create: listed before any edit

    page = ctx.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#docs tbody tr")
    rows = page.eval_on_selector_all(
        "#docs tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")
    by_name = {r[0]: r for r in rows}
    assert set(by_name) >= {"notes", "empty-one"}
    assert by_name["notes"][1] == "just now"
    assert by_name["notes"][2] == "12 characters"
    assert by_name["empty-one"][2] == "0 characters"

    # A typed name opens that document.
    page.fill("#new-name", "my-plan_2")
    page.click("#new-doc")
    page.wait_for_url(server.url + "/d/my-plan_2")
    page.wait_for_selector("body[data-ready=true]")
    wait_status(page, "connected")

    # An invalid name is refused in words.
    page.goto(server.url + "/")
    page.fill("#new-name", "no spaces please")
    page.click("#new-doc")
    assert "letters, digits" in page.inner_text("#new-error")
    assert page.url == server.url + "/"

    # No name: a random readable one.
    page.fill("#new-name", "")
    page.click("#new-doc")
    page.wait_for_url(re.compile(r"/d/[a-z]+-[a-z]+-\d\d$"))
    page.wait_for_selector("body[data-ready=true]")
    wait_status(page, "connected")
    name = page.url.rsplit("/", 1)[1]
    assert server_doc(server.url, name).get("exists") is False  # nothing is made until the first edit


def test_identity_is_remembered_and_shown_to_others(server, contexts):
    ca = contexts()
    a = open_editor(ca, server.url, "who")
    default = a.inner_text("#me-name")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", default)  # e.g. "Curious Otter"

    b = open_editor(contexts(), server.url, "who")
    b.wait_for_function("n => [...document.querySelectorAll('#people .person')]"
                        ".some(li => li.title === n)", arg=default)

    # A picks a name and a colour.
    a.click("#me")
    a.fill("#identity-name", "Marie")
    a.click("#identity-colors input[value='#30a46c']")
    a.click("#identity button[type=submit]")
    assert a.inner_text("#me-name") == "Marie"
    b.wait_for_function("() => [...document.querySelectorAll('#people .person')]"
                        ".some(li => li.title === 'Marie')")
    a.click(".cm-content")
    a.keyboard.type("hi")
    b.wait_for_function("() => [...document.querySelectorAll('.cm-remote-caret')]"
                        ".some(c => c.textContent === 'Marie'"
                        " && getComputedStyle(c).borderLeftColor === 'rgb(48, 164, 108)')")

    # Remembered: a new tab of the same browser is Marie again.
    a2 = open_editor(ca, server.url, "who")
    assert a2.inner_text("#me-name") == "Marie"


def test_server_error_is_shown(server, contexts):
    a = open_editor(contexts(), server.url, "errors")
    # A push whose change does not fit the document: the server refuses it.
    a.evaluate("() => window.__collab.session.send({type: 'push', version: 0,"
               " updates: [{clientID: window.__collab.clientID, changes: [5, [0, 'x']]}]})")
    msg = a.wait_for_selector(".message")
    assert "refused an edit as invalid" in msg.inner_text()
    assert "bad-changes" in msg.inner_text()
    # The page keeps working.
    a.click(".cm-content")
    a.keyboard.type("still fine")
    assert wait_synced([a], server.url, "errors") == "still fine"


def test_view_stays_usable_with_unknown_peer_data(server, contexts):
    """Peers' names and colours are data, never markup or CSS."""
    ca, cb = contexts(), contexts()
    set_user(ca, "<b>bold</b>", "red;background:url(x)")
    a = open_editor(ca, server.url, "hostile")
    b = open_editor(cb, server.url, "hostile")
    a.click(".cm-content")
    a.keyboard.type("x")
    label = b.wait_for_selector(".cm-remote-caret")
    b.wait_for_function("() => document.querySelector('.cm-remote-caret').textContent.length > 0")
    assert label.text_content() == "<b>bold</b>"
    assert b.query_selector(".cm-remote-caret b") is None
