"""Share tells the truth (issue 14, item 6): what each link gives and who can reach it, per mode and role.

A personal instance (no access control) offers the page's address and says
that it gives everything to anyone who reaches it, and that a 127.0.0.1
address reaches only this computer. With access tokens, the admin and an
editor see the edit and view links, each with what it gives; only the
admin gets "Reset links". A viewer sees their own link as read-only, never
the sentences meant for the edit link.
"""

from __future__ import annotations

from .browser_helpers import api_json, open_editor, team_server, wait_status, watch_page

EDIT_GIVES = "Anyone with this link can read and change the text"
VIEW_GIVES = "cannot change anything"
LOCAL = "reaches only this computer"


def share_rows(page):
    page.click("#share")
    page.wait_for_selector("#share-links .share-row")
    rows = page.eval_on_selector_all("#share-links .share-row", """rows => rows.map(r => ({
        link: r.dataset.link, label: r.querySelector('label').textContent,
        url: r.querySelector('input').value, gives: r.querySelector('.share-gives').textContent}))""")
    return rows, page.inner_text("#share-links"), page.is_visible("#share-reset")


def test_personal_instance_share(server, contexts):
    page = open_editor(contexts(), server.url, "mine")
    rows, text, reset = share_rows(page)
    assert [r["link"] for r in rows] == ["open"]
    assert rows[0]["url"] == f"{server.url}/d/mine"
    assert "no access control" in rows[0]["gives"] and "read and change" in rows[0]["gives"]
    assert server.url.startswith("http://127.0.0.1:") and LOCAL in text
    assert "Anyone with this link can open the document" not in text  # the old, untrue sentence
    assert not reset


def test_team_share_per_role(tmp_path, contexts):
    srv, admin = team_server(tmp_path)
    try:
        api_json(srv.url, "/api/docs", admin, "POST", {"name": "brief"})
        _, links = api_json(srv.url, "/api/docs/brief/links", admin)
        edit_url, view_url = (srv.url + links["links"][k] for k in ("edit", "view"))

        pages = {}
        for who, url in (("admin", f"{srv.url}/d/brief?token={admin}"), ("editor", edit_url), ("viewer", view_url)):
            page = watch_page(contexts().new_page())
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            wait_status(page, "connected")
            pages[who] = page

        for who in ("admin", "editor"):
            rows, text, reset = share_rows(pages[who])
            assert [(r["link"], r["label"], r["url"]) for r in rows] == [
                ("edit", "Can edit", edit_url), ("view", "Can only read", view_url)], who
            assert rows[0]["gives"].startswith(EDIT_GIVES) and VIEW_GIVES in rows[1]["gives"]
            assert LOCAL in text  # the test server is on 127.0.0.1
            assert admin not in text
            assert reset == (who == "admin"), who  # resetting the links is the admin's

        rows, text, reset = share_rows(pages["viewer"])
        assert [(r["link"], r["label"], r["url"]) for r in rows] == [("view", "Your link: read only", view_url)]
        assert EDIT_GIVES not in text and "read this document, not change it" in rows[0]["gives"]
        assert not reset
        for p in pages.values():
            assert p.collab_errors == [] and p.csp_violations == []
    finally:
        srv.kill()
