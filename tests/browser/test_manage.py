"""Documents can be managed from the list (issue 14, item 5): search, rename, delete with confirmation.

With access tokens, as a team runs it: the admin searches the list, renames
a document (a person who has it open through an edit link is taken to the
new name, and the old link still leads there), and deletes one after a
confirmation (cancelling keeps it; deleting cuts off whoever had it open and
removes it from the server).
"""

from __future__ import annotations

from .browser_helpers import api_json, team_server, wait_status, wait_synced, watch_page


def names(page):
    return page.eval_on_selector_all("#docs tbody tr", "rows => rows.map(r => r.dataset.name)")


def test_search_rename_delete(tmp_path, contexts):
    srv, admin = team_server(tmp_path)
    try:
        for name in ("alpha-notes", "beta-notes", "gamma-plan", "very-long-" + "x" * 80):
            assert api_json(srv.url, "/api/docs", admin, "POST", {"name": name})[0] == 201
        _, links = api_json(srv.url, "/api/docs/alpha-notes/links", admin)
        writer = watch_page(contexts().new_page())
        writer.goto(srv.url + links["links"]["edit"])
        writer.wait_for_selector("body[data-ready=true]")
        wait_status(writer, "connected")
        writer.click(".cm-content")
        writer.keyboard.type("kept across the rename")
        wait_synced([writer], srv.url, f"alpha-notes?token={admin}")

        page = watch_page(contexts().new_page())
        page.goto(f"{srv.url}/?token={admin}")
        page.wait_for_selector("#docs tbody tr")
        assert len(names(page)) == 4

        # Search: a part of the name, any case.
        page.fill("#doc-search", "NOTES")
        assert sorted(names(page)) == ["alpha-notes", "beta-notes"]
        page.fill("#doc-search", "nothing-like-this")
        assert names(page) == [] and "No document name contains" in page.inner_text("#docs-note")
        page.fill("#doc-search", "")
        assert len(names(page)) == 4

        # Rename: a taken name is refused in words; a free one renames, and the open page follows.
        page.click("tr[data-name=alpha-notes] [data-action=rename]")
        page.fill("#rename-name", "beta-notes")
        page.click("#rename-save")
        page.wait_for_function("() => document.querySelector('#rename-error').textContent.includes('already exists')")
        page.fill("#rename-name", "no spaces")
        page.click("#rename-save")
        assert "letters, digits" in page.inner_text("#rename-error")
        page.fill("#rename-name", "alpha-final")
        page.click("#rename-save")
        page.wait_for_selector("#docs tbody tr[data-name=alpha-final]")
        assert "alpha-notes" not in names(page)
        assert "Renamed “alpha-notes” to “alpha-final”" in page.inner_text("#list-note")
        assert api_json(srv.url, "/api/docs/alpha-final", admin)[1]["doc"] == "kept across the rename"
        writer.wait_for_url(f"{srv.url}/d/alpha-final?token=*")
        writer.wait_for_selector("body[data-ready=true]")
        wait_status(writer, "connected")
        assert writer.evaluate("() => window.__collab.view.state.doc.toString()") == "kept across the rename"
        # The old edit link still leads to the document, under its new name.
        old = watch_page(contexts().new_page())
        old.goto(srv.url + links["links"]["edit"])
        old.wait_for_selector("body[data-ready=true]")
        assert old.url.startswith(f"{srv.url}/d/alpha-final?token=e")

        # Delete: cancelling keeps it; confirming removes it for everyone.
        page.click("tr[data-name=gamma-plan] [data-action=delete]")
        assert "cannot be undone" in page.inner_text("#delete-dialog")
        page.click("#delete-cancel")
        assert "gamma-plan" in names(page)
        assert api_json(srv.url, "/api/docs/gamma-plan", admin)[0] == 200
        page.click("tr[data-name=alpha-final] [data-action=delete]")
        page.click("#delete-confirm")
        page.wait_for_function("() => !document.querySelector('#docs tbody tr[data-name=alpha-final]')")
        assert "Deleted “alpha-final”" in page.inner_text("#list-note")
        assert api_json(srv.url, "/api/docs/alpha-final", admin)[0] == 404
        notice = writer.wait_for_selector(".notice-access")  # cut off, and told so: deleted, not a dead link
        assert "This document was deleted." in notice.inner_text() and "link" not in notice.inner_text(), \
            notice.inner_text()
        assert sorted(names(page)) == sorted(["beta-notes", "gamma-plan", "very-long-" + "x" * 80])
        for p in (writer, page, old):
            assert p.collab_errors == [] and p.csp_violations == []
    finally:
        srv.kill()
