"""Accessibility and small screens (issue 14, item 9).

axe-core (npm `axe-core` in static/'s devDependencies, injected into the
pages by the test) finds no serious or critical violation on the landing
page, the editor, History and Share, in light and dark. The run is checked
to be able to fail: a planted low-contrast text is reported. The keyboard
help opens with Ctrl-/ in the editor and ? outside it and says how to leave
the editor; Escape then Tab does leave it. Escape closes History and the
preview, and only them. At 390 px the History legend does
not overlap the preview and long names do not push the list off the screen.
A remote name label is small and gone within two seconds.
"""

from __future__ import annotations

import time

from serverproc import ROOT

from .browser_helpers import api_json, open_editor, set_user, team_server, wait_status, wait_synced, watch_page

AXE = ROOT / "static" / "node_modules" / "axe-core" / "axe.min.js"

# Other people's name labels fade out (an animation): axe would judge a label in mid-fade, half
# transparent, at whatever moment it runs. Labels are held fully shown ("shown": their contrast is
# checked as people read them) or at rest, faded ("faded").
RUN_AXE = """async (labels) => {
    for (const a of document.getAnimations()) {
      // An endless one (the status dot's pulse while reconnecting) has no end to finish at: held at its start.
      const endless = a.effect && a.effect.getComputedTiming().endTime === Infinity;
      if (labels === 'shown' || endless) { a.pause(); a.currentTime = 0; } else a.finish();
    }
    const r = await axe.run(document, {resultTypes: ['violations']});
    return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
}"""


def axe_context(contexts, scheme, **kw):
    assert AXE.is_file(), f"{AXE} is missing: run npm ci in static/"
    ctx = contexts(color_scheme=scheme, **kw)
    # An init script is not subject to the page's Content-Security-Policy (an injected <script> would be).
    ctx.add_init_script(script=AXE.read_text(encoding="utf-8"))
    return ctx


def test_axe_finds_nothing_serious_in_light_and_dark(tmp_path, contexts):
    srv, admin = team_server(tmp_path)
    try:
        for scheme in ("light", "dark"):
            doc = f"axe-{scheme}"
            ctx = axe_context(contexts, scheme, viewport={"width": 1100, "height": 700})
            set_user(ctx, "Ada", "#d6a100")  # the lightest colour: its name label needs dark ink
            page = watch_page(ctx.new_page())
            page.goto(f"{srv.url}/d/{doc}?token={admin}")
            page.wait_for_selector("body[data-ready=true]")
            wait_status(page, "connected")
            page.click(".cm-content")
            page.keyboard.type("# Notes\n\nSome **bold** text, `code` and a [link](https://example.org).\n\n> quoted")
            other = contexts(color_scheme=scheme)
            set_user(other, "Grace", "#12a594")
            guest = watch_page(other.new_page())
            guest.goto(f"{srv.url}/d/{doc}?token={admin}")
            guest.wait_for_selector("body[data-ready=true]")
            wait_status(guest, "connected")
            guest.click(".cm-content")
            guest.keyboard.type("hello ")
            wait_synced([page, guest], srv.url, f"{doc}?token={admin}")
            page.wait_for_selector(".cm-remote-caret")

            assert page.evaluate("() => getComputedStyle(document.querySelector('.cm-remote-label')).animationName")\
                == "label-fade"
            seen = {"editor": page.evaluate(RUN_AXE, "shown")}
            assert page.evaluate("() => getComputedStyle(document.querySelector('.cm-remote-label')).opacity") == "1"
            page.click("#history-toggle")
            page.wait_for_selector("#history[data-state=ready]")
            page.wait_for_selector("#history-sessions .history-session")
            page.click("#history-name")  # the form that names a version
            seen["history"] = page.evaluate(RUN_AXE, "faded")
            page.click("#history-name-cancel")
            page.click("input[value=authors]")
            page.wait_for_selector("#history[data-state=ready][data-mode=authors]")
            seen["history, authors"] = page.evaluate(RUN_AXE, "faded")
            page.click("#history-close")
            page.click("#preview-toggle")
            page.wait_for_selector("#preview-body h1")
            seen["preview"] = page.evaluate(RUN_AXE, "faded")
            page.click("#preview-close")
            page.click("#export")
            seen["export"] = page.evaluate(RUN_AXE, "faded")
            page.click("#export-close")
            page.click("#share")
            page.wait_for_selector("#share-links .share-row[data-link=view]")
            seen["share"] = page.evaluate(RUN_AXE, "faded")
            page.click("#share-close")
            page.goto(f"{srv.url}/")
            page.wait_for_selector("#docs tbody tr")
            seen["landing"] = page.evaluate(RUN_AXE, "faded")
            assert {view: found for view, found in seen.items() if found} == {}, scheme

            # The run can fail: planted grey-on-white text is a serious violation.
            page.evaluate("""() => { const p = document.createElement('p'); p.id = 'planted';
                p.textContent = 'barely readable'; p.style.color = '#bbbbbb'; p.style.background = '#ffffff';
                document.querySelector('main').append(p); }""")
            assert "color-contrast" in [v["id"] for v in page.evaluate(RUN_AXE, "faded")]
            for p in (page, guest):
                assert p.collab_errors == [] and p.csp_violations == []
    finally:
        srv.kill()


def test_keyboard_help_and_leaving_the_editor(server, contexts):
    page = open_editor(contexts(), server.url, "keys")
    page.click(".cm-content")
    page.keyboard.type("text")
    # Ctrl-/ in the editor opens the help (it does not toggle a comment).
    page.keyboard.press("Control+/")
    page.wait_for_selector("#shortcuts[open]")
    help_text = page.inner_text("#shortcuts")
    assert "Esc, then Tab" in help_text and "leave the editor" in help_text
    assert "find and replace" in help_text
    page.keyboard.press("Escape")
    page.wait_for_selector("#shortcuts", state="hidden")
    assert page.evaluate("() => window.__collab.view.state.doc.toString()") == "text"
    # The editor says so to a screen reader too.
    assert "press Escape, then Tab" in page.evaluate(
        "() => document.getElementById(document.querySelector('.cm-content').getAttribute('aria-describedby')).textContent")
    # Tab indents in the editor; Escape then Tab moves on.
    page.click(".cm-content")
    page.keyboard.press("Tab")
    assert page.evaluate("() => window.__collab.view.hasFocus")
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert not page.evaluate("() => window.__collab.view.hasFocus")
    # "?" outside the editor opens the help; in a text field it is just a character.
    page.keyboard.press("?")
    page.wait_for_selector("#shortcuts[open]")
    page.click("#shortcuts-close")
    page.click("#me")
    page.fill("#identity-name", "")
    page.keyboard.type("Who?")
    assert page.input_value("#identity-name") == "Who?" and not page.is_visible("#shortcuts")
    page.keyboard.press("Escape")
    page.wait_for_function("() => window.__collab.view.hasFocus")  # a closed dialog gives the editor the focus back
    # History opened from the keyboard takes the focus into its panel (was: left on the toggle, the
    # panel behind the editor in Tab order, reachable only by Escape then Tab from the editor).
    page.focus("#history-toggle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#history:not([hidden])")
    assert page.evaluate("() => document.activeElement.id") == "history-slider"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "history-fine"
    assert page.collab_errors == [] and page.csp_violations == []


def test_escape_closes_history_and_the_preview(server, contexts):
    """Was: Escape did nothing in History or the preview. It closes the panel now and gives the focus back
    to what opened it (so does the panel's Close button, which gave it to the editor), but stays what it
    was in the editor (Escape then Tab leaves the text), in History's naming form (it closes the form
    alone), on a select, and in a dialog (it closes the dialog alone)."""
    page = open_editor(contexts(), server.url, "escape")
    page.click(".cm-content")
    page.keyboard.type("# Title")
    wait_synced([page], server.url, "escape")
    focused = "() => document.activeElement && document.activeElement.id"
    shown = "s => !document.querySelector(s).hidden"

    page.click("#history-toggle")
    page.wait_for_selector("#history[data-state=ready]")
    assert page.evaluate(focused) == "history-slider"
    page.keyboard.press("Escape")
    page.wait_for_selector("#history", state="hidden")
    assert page.evaluate(focused) == "history-toggle"
    assert page.get_attribute("#history-toggle", "aria-expanded") == "false"

    page.keyboard.press("Enter")  # open again, from the keyboard
    page.wait_for_selector("#history[data-state=ready]")
    page.click("#history-name")
    page.wait_for_selector("#history-name-form:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector("#history-name-form", state="hidden")
    assert page.evaluate(shown, "#history") and page.evaluate(focused) == "history-name"
    page.focus("#history-format")
    page.keyboard.press("Escape")  # the select's
    page.wait_for_timeout(200)
    assert page.evaluate(shown, "#history")
    page.click("input[value=authors]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#history", state="hidden")
    assert page.evaluate(focused) == "history-toggle"

    # In the editor Escape stays CodeMirror's, a panel open or not: Escape then Tab leaves the text.
    page.click("#history-toggle")
    page.wait_for_selector("#history[data-state=ready]")
    page.click(".cm-content")
    page.keyboard.press("Escape")
    page.wait_for_timeout(200)
    assert page.evaluate(shown, "#history")
    page.keyboard.press("Tab")
    assert not page.evaluate("() => window.__collab.view.hasFocus")
    assert page.evaluate("() => window.__collab.view.state.doc.toString()") == "# Title"
    # A dialog's Escape closes the dialog alone.
    page.keyboard.press("Control+/")
    page.wait_for_selector("#shortcuts[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#shortcuts:not([open])", state="attached")
    page.wait_for_timeout(200)
    assert page.evaluate(shown, "#history")
    page.click("#history-close")

    # The preview: Escape closes it, the focus back on its button.
    page.click("#preview-toggle")
    page.wait_for_selector("#preview-body h1")
    page.keyboard.press("Escape")
    page.wait_for_selector("#preview", state="hidden")
    assert page.evaluate(focused) == "preview-toggle"
    assert page.get_attribute("#preview-toggle", "aria-pressed") == "false"
    # Both open: Escape in History closes History; the next, from History's button, the preview.
    page.click("#preview-toggle")
    page.wait_for_selector("#preview-body h1")
    page.click("#history-toggle")
    page.wait_for_selector("#history[data-state=ready]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#history", state="hidden")
    assert page.evaluate(shown, "#preview") and page.evaluate(focused) == "history-toggle"
    page.keyboard.press("Escape")
    page.wait_for_selector("#preview", state="hidden")
    assert page.evaluate(focused) == "preview-toggle"
    # A panel's Close button gives the focus back as Escape does (it went to the editor).
    for panel, ready in (("history", "#history[data-state=ready]"), ("preview", "#preview-body h1")):
        page.focus(f"#{panel}-toggle")
        page.keyboard.press("Enter")
        page.wait_for_selector(ready)
        page.click(f"#{panel}-close")
        page.wait_for_selector(f"#{panel}", state="hidden")
        assert page.evaluate(focused) == f"{panel}-toggle", panel
    # Nothing open: Escape on the page does nothing (and says nothing).
    page.keyboard.press("Escape")
    assert page.collab_errors == [] and page.csp_violations == []


def test_small_screens_and_name_labels(server, contexts):
    long_name = "a-very-long-document-name-" + "that-goes-on-" * 5 + "end"
    small = {"viewport": {"width": 390, "height": 800}}
    api_json(server.url, "/api/docs", body={"name": long_name}, method="POST")
    api_json(server.url, "/api/docs", body={"name": "short"}, method="POST")
    page = watch_page(contexts(**small).new_page())
    page.goto(server.url + "/")
    page.wait_for_selector("#docs tbody tr")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    box = page.eval_on_selector(f"tr[data-name='{long_name}'] [data-action=delete]",
                                "e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; }")
    assert 0 <= box[0] and box[1] <= 390, box

    ca, cb = contexts(**small), contexts()
    set_user(ca, "Ada", "#8e4ec6")
    set_user(cb, "Linus", "#30a46c")
    a = open_editor(ca, server.url, long_name)
    b = open_editor(cb, server.url, long_name)
    a.click(".cm-content")
    for i in range(6):  # several people in the legend (each a person of their own: another person id)
        a.evaluate("n => { window.__collab.session.core.person = 'writer-' + n;"
                   " window.__collab.session.setUser({name: 'Writer number ' + n, color: '#0090ff'}); }", i)
        wait_status(a, "connected")
        a.keyboard.type(f"line {i} by a writer with a long name\n")
    wait_synced([a, b], server.url, long_name)
    assert a.evaluate("() => document.documentElement.scrollWidth") <= 390
    a.click("#history-toggle")
    a.click("input[value=authors]")
    a.wait_for_selector("#history[data-state=ready][data-mode=authors]")
    assert a.evaluate("() => document.querySelectorAll('#history-legend .legend-item').length") == 6
    legend = a.eval_on_selector("#history-legend", "e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; }")
    preview = a.eval_on_selector("#history-preview", "e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; }")
    assert legend[1] <= preview[0], (legend, preview)  # the legend ends above the preview
    assert a.evaluate("() => document.documentElement.scrollWidth") <= 390

    # Linus moves: on Ada's page his name label is small and gone within two seconds.
    b.click(".cm-content")
    b.keyboard.press("Control+Home")
    b.keyboard.type("!")
    a.wait_for_selector(".cm-remote-caret .cm-remote-label >> text=Linus")
    style = "() => { const s = getComputedStyle(document.querySelector('.cm-remote-label'));" \
            " return [parseFloat(s.fontSize), s.animationName, parseFloat(s.animationDelay)" \
            " + parseFloat(s.animationDuration), s.opacity]; }"
    size, animation, fade_s, _ = a.evaluate(style)
    assert size <= 10 and animation == "label-fade" and fade_s <= 2, (size, animation, fade_s)
    time.sleep(2)
    assert a.evaluate(style)[3] == "0"
    for p in (page, a, b):
        assert p.collab_errors == [] and p.csp_violations == []
