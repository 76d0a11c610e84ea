"""Three people editing one document, photographed in light and dark mode.

The pictures go to test-artifacts/ (gitignored).  With
COLLAB_UPDATE_SCREENSHOT=1 the light one is also copied to
static/screenshot.png, the picture the README shows.
"""

import os
import shutil

from .browser_helpers import open_editor, set_user, wait_synced, set_cursor
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


def test_three_people_screenshots(server, contexts, artifacts):
    for scheme in ("light", "dark"):
        doc = f"shots-{scheme}"
        pages = []
        for name, color in PEOPLE:
            ctx = contexts(color_scheme=scheme, viewport={"width": 1100, "height": 560})
            set_user(ctx, name, color)
            pages.append(open_editor(ctx, server.url, doc))
        ada, grace, linus = pages
        ada.click(".cm-content")
        ada.evaluate("t => { const v = window.__collab.view; v.dispatch({changes: {from: 0, insert: t}}); }", TEXT)
        wait_synced(pages, server.url, doc)
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
        # Everyone's presence has reached Ada's page.
        ada.wait_for_function("() => window.__collab.peers().length === 2")
        ada.wait_for_function("() => document.querySelectorAll('.cm-remote-caret').length === 2")
        ada.mouse.move(5, 5)
        path = artifacts / f"three-people-{scheme}.png"
        ada.screenshot(path=str(path))
        assert path.stat().st_size > 10000
        if scheme == "light" and os.environ.get("COLLAB_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(path, ROOT / "static" / "screenshot.png")
