"""With access control on: a view link shows the live text but cannot change it."""

import json
import re
import urllib.request

from collab.access import Access
from serverproc import ServerProcess

from .browser_helpers import doc_text, open_editor, refusable_websockets, wait_status

SECRET = "browser-test-secret-0123456789abcdef"


def test_view_link_is_read_only(tmp_path, contexts):
    srv = ServerProcess(tmp_path / "acl.db", extra_args=["--secret", SECRET])
    srv.start()
    try:
        admin = Access(SECRET.encode()).admin_token()
        editor = open_editor(contexts(), srv.url, f"plan?token={admin}")
        editor.click(".cm-content")
        editor.keyboard.type("only editors write here")
        with urllib.request.urlopen(f"{srv.url}/api/docs/plan/links?token={admin}", timeout=10) as r:
            links = json.loads(r.read())["links"]

        # The Share dialog offers exactly these two links.
        editor.click("#share")
        editor.wait_for_selector("#share-links .share-row:nth-child(2)")
        shown = editor.eval_on_selector_all("#share-links input", "els => els.map(e => e.value)")
        assert shown == [srv.url + links["edit"], srv.url + links["view"]]
        editor.click("#share-close")
        # Closing gives the focus back to the editor, caret where it was.
        editor.wait_for_function("() => window.__collab.view.hasFocus")
        assert editor.evaluate("() => window.__collab.view.state.selection.main.head") == len("only editors write here")

        viewer_ctx = contexts()
        cut = refusable_websockets(viewer_ctx)
        viewer = open_editor(viewer_ctx, srv.url, links["view"].removeprefix("/d/"))
        assert "view only" in viewer.inner_text("#status")
        assert "saved" not in viewer.inner_text("#status"), "nothing of a viewer's is saved (was: all changes saved)"
        viewer.wait_for_function("() => window.__collab.view.state.doc.toString() === 'only editors write here'")
        viewer.click(".cm-content")
        viewer.keyboard.type("sneaky")
        viewer.keyboard.press("Backspace")
        assert doc_text(viewer) == "only editors write here"
        assert viewer.evaluate("() => window.__collab.pending") == 0

        # Live: the editor's next words reach the viewer.
        editor.keyboard.type(", live")
        viewer.wait_for_function("() => window.__collab.view.state.doc.toString().endsWith(', live')")

        # Cut off, the viewer's status says its state, then when it tries again, then "view only" (it said
        # "Reconnecting · view only in 9s").
        cut["on"] = True
        viewer_ctx.set_offline(True)
        wait_status(viewer, "offline")
        viewer_ctx.set_offline(False)
        wait_status(viewer, "reconnecting")
        viewer.wait_for_function("() => / in \\d+s$/.test(document.querySelector('#status-when').textContent)")
        said = viewer.inner_text("#status-text")
        assert re.fullmatch(r"Reconnecting in \d+s · view only", said), said
        cut["on"] = False
        viewer.evaluate("() => window.__collab.session.reconnectNow()")
        wait_status(viewer, "connected")

        # "Reset links" makes the view token invalid: the page says so in words and stops retrying.
        req = urllib.request.Request(f"{srv.url}/api/docs/plan/links/reset?token={admin}", method="POST",
                                     data=b"{}", headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()
        viewer_ctx.set_offline(True)  # in case the server keeps the open connection: reconnect
        viewer_ctx.set_offline(False)
        viewer.wait_for_function("() => window.__collab.status.state === 'stopped'")
        notice = viewer.wait_for_selector(".notice-access")
        assert "links were reset" in notice.inner_text() and "new link" in notice.inner_text()
        assert "Not syncing" in viewer.inner_text("#status")
        assert viewer.is_hidden("#reconnect")  # retrying a revoked link can never work
    finally:
        srv.kill()
