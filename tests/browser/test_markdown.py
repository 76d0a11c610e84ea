"""Reading Markdown (issue 14, item 8): a live, sanitised preview and exports.

Alice opens the preview; Bob types. Alice's preview follows as he types
(headings, emphasis, tables). Then Bob types everything a document could
use to attack a reader: a <script>, an <img onerror=>, a javascript: link,
an <iframe>, a <style>, a remote image. None of it runs, loads or becomes
markup: it is shown as text (or a plain link to the image), no request
leaves for the remote image, and the server's Content-Security-Policy
reports nothing (a violation fails the test). A data: image is shown.

Export gives the text as .txt and .md (the server's files) and as a web
page built in the browser, with the preview's styles inside and nothing
that runs.
"""

from __future__ import annotations

import re

from .browser_helpers import focus_end, open_editor, server_doc, set_user, wait_status, wait_synced

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")

HOSTILE = (
    "\n\n<script>window.__pwned = 'script'</script>\n\n"
    'Inline <img src=x onerror="window.__pwned = \'img\'"> and <b onmouseover="window.__pwned = 1">b</b>\n\n'
    "[click me](javascript:window.__pwned='link') and [ok](https://example.org/a)\n\n"
    '<iframe src="javascript:window.__pwned=\'frame\'"></iframe>\n\n'
    "<style>body { display: none }</style>\n\n"
    "![remote](http://127.0.0.1:9/remote.png) and ![pixel](" + PIXEL + ")\n"
)

PREVIEW_ELEMENTS = "() => [...document.querySelectorAll('#preview-body *')].map(e => e.tagName.toLowerCase())"


def test_preview_follows_typing_and_nothing_in_the_text_runs(server, contexts):
    doc = "markdown"
    ca, cb = contexts(), contexts()
    set_user(ca, "Alice", "#e5484d")
    set_user(cb, "Bob", "#0090ff")
    a = open_editor(ca, server.url, doc)
    b = open_editor(cb, server.url, doc)
    outside = []  # requests anywhere but the server
    for p in (a, b):
        p.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server.url, "data:", "blob:"))
             and not r.url.startswith(server.url.replace("http", "ws")) else None)

    a.click("#preview-toggle")
    a.wait_for_selector("#preview:not([hidden]) .preview-empty")

    # Live: Alice's preview follows Bob's typing, a few keystrokes at a time.
    b.click(".cm-content")
    b.keyboard.type("# Plans")
    a.wait_for_function("() => document.querySelector('#preview-body h1')?.textContent === 'Plans'")
    b.keyboard.press("Enter")
    b.keyboard.press("Enter")
    b.keyboard.type("Some **bold** words")
    a.wait_for_function("() => document.querySelector('#preview-body p strong')?.textContent === 'bold'")
    b.keyboard.press("Enter")
    b.keyboard.press("Enter")
    b.keyboard.type("| a | b |\n|--:|---|\n| 1 | 2 |")
    a.wait_for_function("() => document.querySelectorAll('#preview-body td').length === 2")
    assert a.get_attribute("#preview-body td", "class") == "align-right"  # alignment as a class, no style attribute
    renders = int(a.get_attribute("#preview", "data-renders"))
    assert renders >= 3

    # Everything hostile, pasted at once.
    b.keyboard.press("Control+End")
    b.evaluate("t => { const v = window.__collab.view; v.dispatch(v.state.replaceSelection(t)); }", HOSTILE)
    text = wait_synced([a, b], server.url, doc)
    a.wait_for_function("() => document.querySelector('#preview-body').textContent.includes('display: none')")
    a.wait_for_timeout(300)  # anything that would run has had its chance
    for p in (a, b):
        assert p.evaluate("() => window.__pwned") is None
    tags = set(a.evaluate(PREVIEW_ELEMENTS))
    assert tags <= {"h1", "p", "strong", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "img"}, tags
    shown = a.inner_text("#preview-body")
    assert "<script>window.__pwned = 'script'</script>" in shown
    assert "<img src=x onerror=" in shown and "<iframe" in shown and "<style>" in shown
    attributes = a.evaluate("""() => [...document.querySelectorAll('#preview-body *')]
        .flatMap(e => [...e.attributes].map(x => x.name))""")
    assert set(attributes) <= {"href", "target", "rel", "title", "class", "alt", "src"}, set(attributes)
    links = a.evaluate("() => [...document.querySelectorAll('#preview-body a')].map(x => x.getAttribute('href'))")
    assert "https://example.org/a" in links and not [h for h in links if h.lower().startswith("javascript")]
    a.wait_for_function("() => [...document.querySelectorAll('#preview-body img')].every(i => i.complete)")
    imgs = a.evaluate("() => [...document.querySelectorAll('#preview-body img')].map(i => [i.src, i.naturalWidth])")
    assert imgs == [[PIXEL, 1]]  # the data: image is shown; the remote one is only a link
    assert "remote (image)" in shown
    assert a.is_visible("#editor")  # the <style> in the text changed nothing
    assert outside == [], outside

    # Export: the server's .txt and .md, and a web page made here.
    a.click("#export")
    version = server_doc(server.url, doc)["version"]
    assert f"version {version}" in a.inner_text("#export-intro")
    files = {}
    for fmt in ("txt", "md", "html"):
        with a.expect_download() as dl:
            a.click(f"#export-dialog [data-format={fmt}]")
        assert dl.value.suggested_filename == f"{doc}-v{version}.{fmt}"
        with open(dl.value.path(), encoding="utf-8") as f:
            files[fmt] = f.read()
    assert files["txt"] == files["md"] == text
    page = files["html"]
    assert page.startswith("<!doctype html>") and "<style>" in page and ".markdown-body" in page
    assert "<h1>Plans</h1>" in page and "<strong>bold</strong>" in page
    assert "&lt;script&gt;" in page and not re.search(r"<script|<iframe|<img[^>]*onerror|href=\"javascript", page, re.I)
    # Opened on its own (no Content-Security-Policy there), it is styled and nothing in it runs.
    viewer = contexts().new_page()
    viewer.set_content(page)
    assert viewer.evaluate("() => window.__pwned") is None
    assert viewer.evaluate("() => getComputedStyle(document.querySelector('h1')).borderBottomStyle") == "solid"
    assert viewer.evaluate("() => document.querySelectorAll('script, iframe, [onerror], [onmouseover]').length") == 0
    a.click("#export-close")

    # Closing the preview gives the editor all the room; the choice is remembered.
    a.click("#preview-close")
    assert a.is_hidden("#preview")
    for p in (a, b):
        assert p.collab_errors == [] and p.csp_violations == []


def test_an_offline_page_exports_its_saved_text_as_txt_and_md(server, contexts):
    """Was: offline, .txt and .md said "Could not export: The server could not be reached" (they were asked
    of the server), though the page had the text; the web page worked."""
    ctx = contexts()
    a = open_editor(ctx, server.url, "offline-export")
    focus_end(a)
    a.keyboard.type("# Saved\nline two")
    text = wait_synced([a], server.url, "offline-export")
    version = server_doc(server.url, "offline-export")["version"]
    ctx.set_offline(True)
    wait_status(a, "offline")
    a.keyboard.type(" and unsent")
    a.click("#export")
    assert "not in it yet" in a.inner_text("#export-intro")
    for fmt in ("txt", "md"):
        with a.expect_download() as dl:
            a.click(f"#export-dialog [data-format={fmt}]")
        assert dl.value.suggested_filename == f"offline-export-v{version}.{fmt}"
        with open(dl.value.path(), encoding="utf-8") as f:
            assert f.read() == text
    a.click("#export-close")
