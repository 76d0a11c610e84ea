"""The admin token never stays in the address bar, and no hint hands it out (issue 14, item 1).

The admin opens the admin link (`/?token=<admin>`), as collab prints it. After
every page load the address bar holds no token: the landing page, a document
opened from the list, a reload, a document opened with the admin token
typed into its address. The page's own requests carry the token in an
Authorization header, never in their URL (only the WebSocket, whose URL no
address bar shows, has it as ?token=). Nothing on any page (text, links,
inputs) contains the admin token, and the hints point to the Share dialog's
edit and view links. An edit link keeps its token in the address: that link
is the capability meant to be shared. The /status page keeps no token in its
address either, and its styles obey the server's Content-Security-Policy.
"""

from __future__ import annotations

from .browser_helpers import api_json, team_server, wait_status, watch_page


def leaks(page, token: str) -> list[str]:
    """Where on the page the token shows: the address, text, attributes, form values."""
    found = page.evaluate("""t => {
        const out = [];
        if (location.href.includes(t)) out.push('address: ' + location.href);
        if (document.documentElement.outerHTML.includes(t)) out.push('markup');
        for (const el of document.querySelectorAll('input, textarea'))
            if ((el.value || '').includes(t)) out.push('value of #' + el.id);
        return out;
    }""", token)
    return found


def test_admin_token_leaves_the_address_bar(tmp_path, contexts):
    srv, admin = team_server(tmp_path)
    try:
        ctx = contexts()
        requests = []
        ctx.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
        page = watch_page(ctx.new_page())
        page.goto(f"{srv.url}/?token={admin}")
        page.wait_for_selector("body[data-ready=true]")
        assert page.url == f"{srv.url}/"
        assert leaks(page, admin) == []
        assert page.evaluate("() => sessionStorage.getItem('collab:admin-token')") == admin
        hint = page.inner_text("main")
        assert "page’s link" not in hint and "page's link" not in hint  # the old hint handed out the admin URL
        assert "Share" in hint and "edit link" in hint and "view link" in hint
        # The list came with the token in a header, not in the URL.
        listed = [(u, auth) for u, auth in requests if u.endswith("/api/docs")]
        assert listed and all(auth == f"Bearer {admin}" for _, auth in listed), listed

        # A new document from the landing page: its address has no token, it connects, it saves.
        page.fill("#new-name", "plans")
        page.click("#new-doc")
        page.wait_for_url(f"{srv.url}/d/plans")
        page.wait_for_selector("body[data-ready=true]")
        wait_status(page, "connected")
        page.click(".cm-content")
        page.keyboard.type("admin writes")
        page.wait_for_function("() => window.__collab.pending === 0 && window.__collab.version > 0")
        assert leaks(page, admin) == []
        # The hint for the admin points to Share, and Share offers the edit and view links only.
        assert "edit or view link from Share" in page.inner_text(".notice-hint")
        page.click("#share")
        page.wait_for_selector("#share-links .share-row[data-link=view]")
        shown = page.eval_on_selector_all("#share-links input", "els => els.map(e => e.value)")
        _, links = api_json(srv.url, "/api/docs/plans/links", admin)
        assert shown == [srv.url + links["links"]["edit"], srv.url + links["links"]["view"]]
        assert leaks(page, admin) == []
        page.click("#share-close")
        # History and its download use the header too.
        page.click("#history-toggle")
        page.wait_for_selector("#history[data-state=ready]")
        with page.expect_download() as dl:
            page.click("#history-download")
        with open(dl.value.path(), encoding="utf-8") as f:
            assert f.read() == "admin writes"

        # A reload keeps working from this tab's session, token-free.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        wait_status(page, "connected")
        assert page.url == f"{srv.url}/d/plans" and leaks(page, admin) == []
        # The admin token typed into a document's address leaves it too.
        page.goto(f"{srv.url}/d/plans?token={admin}#top")
        page.wait_for_selector("body[data-ready=true]")
        wait_status(page, "connected")
        assert page.url == f"{srv.url}/d/plans#top"
        # Back on the list (the logo is a link for the admin): still no token anywhere.
        page.click("a#home")
        page.wait_for_selector("#docs tbody tr[data-name=plans]")
        assert page.url == f"{srv.url}/" and leaks(page, admin) == []

        # No HTTP request after the first load put the token in its URL; the WebSocket may.
        first = f"{srv.url}/?token={admin}"
        in_url = [u for u, _ in requests if admin in u and u not in (first, f"{srv.url}/d/plans?token={admin}#top",
                                                                      f"{srv.url}/d/plans?token={admin}")]
        assert all(u.startswith("ws://") for u in in_url), in_url
        assert page.collab_errors == [] and page.csp_violations == []

        # An edit link keeps its token: that address is meant to be shared.
        editor = watch_page(contexts().new_page())
        editor.goto(srv.url + links["links"]["edit"])
        editor.wait_for_selector("body[data-ready=true]")
        wait_status(editor, "connected")
        assert editor.url == srv.url + links["links"]["edit"]
        assert editor.evaluate("() => sessionStorage.getItem('collab:admin-token')") is None
        assert leaks(editor, admin) == []

        # A person with no token at all reads how to get in, not a bare error.
        stranger = watch_page(contexts().new_page())
        stranger.goto(f"{srv.url}/")
        stranger.wait_for_selector("body[data-ready=true]")
        assert "admin link" in stranger.inner_text("#docs-note")
        assert stranger.is_hidden("#new-form")
        assert stranger.collab_errors == [] and stranger.csp_violations == []

        # /status too: opened with the admin link, the token leaves the address for this tab's
        # session, the figures stream in over the WebSocket, and its styles obey the policy.
        status = watch_page(contexts().new_page())
        response = status.goto(f"{srv.url}/status?token={admin}")
        assert response.status == 200
        status.wait_for_function("() => document.querySelector('#state').textContent === 'live'"
                                 " && document.querySelectorAll('#figures tr').length > 5")
        assert status.url == f"{srv.url}/status" and leaks(status, admin) == []
        assert status.evaluate("() => sessionStorage.getItem('collab:admin-token')") == admin
        assert status.evaluate("() => getComputedStyle(document.querySelector('td.v')).textAlign") == "right"
        status.reload()  # from this tab's session, token-free
        status.wait_for_function("() => document.querySelector('#state').textContent === 'live'")
        assert status.url == f"{srv.url}/status" and leaks(status, admin) == []
        assert status.collab_errors == [] and status.csp_violations == []
        # The admin's tab that opened the documents reaches it without a token in the address.
        page.goto(f"{srv.url}/status")
        page.wait_for_function("() => document.querySelector('#state').textContent === 'live'")
        assert page.url == f"{srv.url}/status" and leaks(page, admin) == []
        # Without the token the page says how to get in and shows no figures; a wrong token is refused.
        stranger.goto(f"{srv.url}/status")
        stranger.wait_for_function("() => document.querySelector('#state').dataset.state === 'refused'")
        assert "admin link" in stranger.inner_text("#state")
        assert stranger.query_selector("#figures tr") is None
        assert stranger.goto(f"{srv.url}/status?token=a-wrong-token").status == 403
        assert stranger.collab_errors == [] and stranger.csp_violations == []
    finally:
        srv.kill()
