"""No dead ends (issue 14, item 4): the logo, a revoked link, error pages.

With an edit or view link the "collab" logo is plain text (the document list
is the admin's); the admin's is a link. When the admin resets the links (from
the Share dialog), the people cut off read that their link was revoked and
that they need a new one, with no "Retry now"; their editor turns read-only.
Reloading the revoked link gets the server's error page in the app's style,
with the next step. An unknown address answers a browser an HTML page and
the API JSON.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .browser_helpers import api_json, doc_text, team_server, wait_status, wait_synced, watch_page


def open_link(ctx, url):
    page = watch_page(ctx.new_page())
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def test_logo_revoked_link_and_error_pages(tmp_path, contexts):
    srv, admin = team_server(tmp_path)
    try:
        api_json(srv.url, "/api/docs", admin, "POST", {"name": "memo"})
        _, links = api_json(srv.url, "/api/docs/memo/links", admin)
        edit_url, view_url = (srv.url + links["links"][k] for k in ("edit", "view"))

        boss = open_link(contexts(), f"{srv.url}/d/memo?token={admin}")
        writer = open_link(contexts(), edit_url)
        reader = open_link(contexts(), view_url)
        for p in (boss, writer, reader):
            wait_status(p, "connected")
        assert boss.eval_on_selector("#home", "e => e.tagName + ' ' + e.getAttribute('href')") == "A /"
        for p in (writer, reader):  # the list would refuse them: plain text, no link
            assert p.eval_on_selector("#home", "e => e.tagName") == "SPAN"
        writer.click(".cm-content")
        writer.keyboard.type("draft")
        wait_synced([boss, writer, reader], srv.url, f"memo?token={admin}")

        # The admin resets the links from the Share dialog (with a confirmation).
        boss.click("#share")
        boss.wait_for_selector("#share-links .share-row[data-link=edit]")
        boss.click("#share-reset")
        assert boss.is_visible("#share-reset-ask")
        boss.click("#share-reset-confirm")
        boss.wait_for_function("() => document.querySelector('#share-note').textContent.startsWith('New links')")
        new_edit = boss.eval_on_selector("#share-url-edit", "e => e.value")
        assert new_edit != edit_url and "/d/memo?token=e" in new_edit
        boss.click("#share-close")

        for p in (writer, reader):
            notice = p.wait_for_selector(".notice-access")
            text = notice.inner_text()
            assert "This link no longer works" in text and "links were reset" in text and "new link" in text
            assert p.is_hidden("#reconnect")  # no "Retry now": only a new link helps
            assert "Not syncing" in p.inner_text("#status")
            # The text stays readable, and typing into it goes nowhere.
            p.click(".cm-content")
            p.keyboard.type("lost?")
            assert doc_text(p) == "draft"
        wait_status(boss, "connected")  # the admin's own session stays
        assert boss.query_selector(".notice-access") is None

        # The new edit link works at once; the old one, reloaded, gets a styled page with the next step.
        fresh = open_link(contexts(), new_edit)
        wait_status(fresh, "connected")
        writer.goto(edit_url)
        assert writer.inner_text("h1") == "This link does not give access here"
        assert "Ask the person who shared it for a new link" in writer.inner_text("main")
        assert writer.evaluate("() => getComputedStyle(document.querySelector('.bar')).display") == "flex"  # styled

        # /nonexistent: an HTML page for a browser, JSON for the API.
        lost = watch_page(contexts().new_page())
        response = lost.goto(f"{srv.url}/nonexistent")
        assert response.status == 404 and response.headers["content-type"].startswith("text/html")
        assert lost.inner_text("h1") == "Nothing here"
        assert lost.evaluate("() => getComputedStyle(document.querySelector('.bar')).display") == "flex"  # styled
        req = urllib.request.Request(f"{srv.url}/nonexistent", headers={"Accept": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404 and json.loads(e.read())["error"]["code"] == "not-found"
        for p in (boss, writer, reader, fresh, lost):
            assert p.collab_errors == [] and p.csp_violations == [], (p.collab_errors, p.csp_violations)
    finally:
        srv.kill()
