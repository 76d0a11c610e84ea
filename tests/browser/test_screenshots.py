"""Three people editing one document, photographed at 1280 px and 390 px, light and dark; History
(with a named version) and the Markdown preview at 1280 px.

The pictures go to test-artifacts/ (gitignored). With
COLLAB_UPDATE_SCREENSHOT=1 they are also copied to docs/screenshots/, the
pictures the README shows:

    COLLAB_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/browser/test_screenshots.py
"""

import os
import shutil
import struct

from .browser_helpers import api_json, open_editor, set_user, wait_synced, set_cursor
from serverproc import ROOT

TEXT = """# Release notes

Collaborative editing for **everyone**: type together and see each
other's *cursors* live.

## What's new

- Remote carets with names
- Offline edits are kept and sent later
- Undo only undoes your own changes

```
cd static && npm ci && node build.mjs
```

> Nothing typed is lost, even across a reload.
"""

PEOPLE = [("Ada", "#8e4ec6"), ("Grace", "#e5484d"), ("Linus", "#30a46c")]
WIDE = {"width": 1280, "height": 720}
NARROW = {"width": 390, "height": 844}
SHOTS = ROOT / "docs" / "screenshots"


def shoot(page, artifacts, name, size):
    path = artifacts / f"{name}.png"
    page.mouse.move(1, 1)
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (size["width"], size["height"])
    assert len(data) > 15000  # a real picture, not a blank page
    if os.environ.get("COLLAB_UPDATE_SCREENSHOT") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS / f"{name}.png")


def test_screenshots_wide_and_narrow(server, contexts, artifacts):
    doc = "release-notes"
    pages = []
    for name, color in PEOPLE:
        ctx = contexts(color_scheme="light", viewport=WIDE)
        set_user(ctx, name, color)
        pages.append(open_editor(ctx, server.url, doc))
    ada, grace, linus = pages
    ada.click(".cm-content")
    ada.evaluate("t => { const v = window.__collab.view; v.dispatch({changes: {from: 0, insert: t}}); }", TEXT)
    wait_synced(pages, server.url, doc)
    api_json(server.url, f"/api/docs/{doc}/checkpoints", method="POST",
             body={"version": 1, "name": "First draft", "author": "Ada"})
    # Grace selects a word, Linus sits in a list item, Ada types at the end of a line.
    start = TEXT.index("everyone")
    grace.click(".cm-content")
    grace.evaluate("([a, h]) => { const v = window.__collab.view; v.dispatch({selection: {anchor: a, head: h}}); v.focus(); }",
                   [start, start + len("everyone")])
    set_cursor(linus, TEXT.index("Offline") + len("Offline"))
    linus.keyboard.type(" and reloaded")
    set_cursor(ada, TEXT.index("live.") + len("live."))
    ada.keyboard.type(" Even emoji 🎉")
    wait_synced(pages, server.url, doc)
    ada.wait_for_function("() => document.querySelectorAll('.cm-remote-caret').length === 2")
    shoot(ada, artifacts, "editor-1280", WIDE)
    ada.click("#history-toggle")
    ada.click("input[value=authors]")
    ada.wait_for_selector("#history[data-state=ready][data-mode=authors]")
    ada.wait_for_selector("#history-sessions .history-checkpoint")
    shoot(ada, artifacts, "history-1280", WIDE)
    ada.click("#history-close")
    ada.click("#preview-toggle")
    ada.wait_for_selector("#preview-body h2")
    shoot(ada, artifacts, "preview-1280", WIDE)
    ada.click("#preview-close")

    for scheme, size, name in (("dark", WIDE, "editor-1280-dark"), ("light", NARROW, "editor-390"),
                               ("dark", NARROW, "editor-390-dark")):
        ctx = contexts(color_scheme=scheme, viewport=size)
        set_user(ctx, "Ada", "#8e4ec6")
        page = open_editor(ctx, server.url, doc)
        page.wait_for_function("() => document.querySelectorAll('.cm-remote-caret').length >= 2")
        set_cursor(page, TEXT.index("## What"))
        shoot(page, artifacts, name, size)
        if size is NARROW and scheme == "light":
            page.click("#history-toggle")
            page.wait_for_selector("#history[data-state=ready]")
            shoot(page, artifacts, "history-390", size)
            page.goto(server.url + "/")
            page.wait_for_selector("#docs tbody tr")
            shoot(page, artifacts, "documents-390", size)
    for p in pages:
        assert p.collab_errors == [] and p.csp_violations == []
