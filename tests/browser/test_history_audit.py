"""The History panel when things go wrong or are pointless: loads that fail while offline (tried again
with a growing wait, and at once when the page is connected again, never in a loop), a version that
could not be loaded (never shown under another's label), restoring the current text (not offered),
and the naming form's messages and focus."""

import re

from .browser_helpers import api_json, open_editor, set_user, wait_synced, wait_status, server_doc

# Every API request the page makes, with when (ms), as window.__calls.
COUNT_CALLS = """
(() => {
  const fetch0 = window.fetch;
  window.__calls = [];
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : input.url;
    if (url.includes("/api/")) window.__calls.push({ url, t: performance.now() });
    return fetch0.call(this, input, init);
  };
})();
"""


def info(page):
    return page.evaluate("() => window.__collab.history.info")


def wait_shown(page, version):
    page.wait_for_function(
        "v => { const h = document.querySelector('#history');"
        " return h.dataset.state === 'ready' && h.dataset.shown === String(v); }", arg=version)


def select(page, version):
    page.evaluate("v => window.__collab.history.select(v)", version)


def calls(page, part):
    return page.evaluate("p => window.__calls.filter(c => c.url.includes(p)).map(c => c.t)", part)


def edited_doc(ctx, server, doc, text="one two three"):
    page = open_editor(ctx, server.url, doc)
    page.click(".cm-content")
    page.keyboard.type(text)
    wait_synced([page], server.url, doc)
    return page, server_doc(server.url, doc)["version"]


def history_opened(contexts, server, doc, text="one two three"):
    """Alice's page on `doc`, which she has typed `text` into, with History open at the head:
    (its context, the page, the head version)."""
    ctx = contexts()
    set_user(ctx, "Alice", "#e5484d")
    page, head = edited_doc(ctx, server, doc, text)
    page.click("#history-toggle")
    wait_shown(page, head)
    return ctx, page, head


def held_requests(page, pattern, hold):
    """Route `page`'s requests matching `pattern` through the test: each that `hold(request, held)`
    picks is kept unanswered in the returned list (the test answers it); the others go on."""
    held = []

    def route(r):
        if hold(r.request, held):
            held.append(r)
        else:
            r.continue_()

    page.route(pattern, route)
    return held


def wait_held(page, held):
    """Until a request is held (routes are answered only while the page is waited on)."""
    for _ in range(100):
        if held:
            return
        page.wait_for_timeout(50)
    raise AssertionError("no request was held within 5 s")


def test_offline_loads_are_retried_with_a_growing_wait_then_at_reconnect(server, contexts):
    doc = "hist-offline-retry"
    ctx = contexts()
    set_user(ctx, "Alice", "#e5484d")
    ctx.add_init_script(COUNT_CALLS)
    a, head = edited_doc(ctx, server, doc)
    ctx.set_offline(True)
    wait_status(a, "offline")
    a.click("#history-toggle")
    a.wait_for_selector("#history-error:not([hidden])")
    # Everything it loads failed for one reason: one line names them all (was: a line each).
    a.wait_for_function("() => document.querySelector('#history-error').textContent.includes('named versions')")
    said = a.text_content("#history-error")
    # (and the version chosen, when its text was not in the page yet)
    assert re.fullmatch(r"Could not load the history(,| and) the named versions(, and version \d+)?: [^\n]+", said), said
    # The first try and two more: 1 s after it, then 2 s after that (before: hundreds a second).
    a.wait_for_function("() => window.__calls.filter(c => c.url.includes('/history')).length >= 3",
                        timeout=10000)
    t = calls(a, "/history")[:3]
    assert t[1] - t[0] >= 900 and t[2] - t[1] >= 1800, t
    assert len(calls(a, "/checkpoints")) <= 3
    ctx.set_offline(False)  # at once when the page is connected again, not after the next wait
    wait_status(a, "connected")
    a.wait_for_selector("#history-error", state="hidden", timeout=5000)
    a.wait_for_selector(f"#history-sessions .history-session[data-to='{head}']")


def test_a_version_that_could_not_load_is_not_shown_as_another(server, contexts):
    doc = "hist-offline-version"
    ctx, a, head = history_opened(contexts, server, doc)
    ctx.set_offline(True)
    wait_status(a, "offline")
    select(a, 3)  # never loaded: not in the page's cache
    a.wait_for_selector("#history[data-state=error]")
    assert a.text_content("#history-label").startswith(f"Version 3 of {head}")
    assert info(a)["text"] == "" and a.text_content("#history-legend") == ""
    assert a.get_attribute("#history", "data-shown") is None
    assert "Version 3 cannot be shown" in a.text_content("#history-error")
    ctx.set_offline(False)  # connected again: the chosen version is loaded without touching the slider
    wait_status(a, "connected")
    wait_shown(a, 3)
    assert info(a)["text"] == "one"
    assert a.is_hidden("#history-error")


def test_restore_is_not_offered_for_the_current_text(server, contexts):
    doc = "hist-restore-current"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    assert a.is_disabled("#history-restore")
    assert "current text" in a.get_attribute("#history-restore", "title")
    select(a, 1)
    wait_shown(a, 1)
    assert a.is_enabled("#history-restore") and a.get_attribute("#history-restore", "title") is None


def test_naming_form_messages_and_focus(server, contexts):
    doc = "hist-name-form"
    ctx = contexts()
    set_user(ctx, "Alice", "#e5484d")
    a, head = edited_doc(ctx, server, doc, "abc")
    a.click("#history-toggle")
    select(a, 1)
    wait_shown(a, 1)
    focused = "() => document.activeElement && document.activeElement.id"
    a.click("#history-name")
    a.fill("#history-name-input", "\u200b")  # nothing visible: a plain sentence, not the API's wording
    a.press("#history-name-input", "Enter")
    a.wait_for_selector("#history-error:not([hidden])")
    assert a.text_content("#history-error") == "A name needs at least one letter, digit or other visible character."
    a.fill("#history-name-input", "Draft\u200b \t one")
    a.press("#history-name-input", "Enter")
    a.wait_for_selector("#history-name-form", state="hidden")
    assert a.text_content("#history-note") == "Version 1 is now named “Draft one”."  # as the server keeps it
    assert a.is_hidden("#history-error")  # the failure before it is no longer news
    assert a.evaluate(focused) == "history-name"  # back on the button, not on <body>
    a.click("#history-name")
    a.wait_for_selector("#history-name-form:not([hidden])")
    a.fill("#history-name-input", "\u200b")
    a.press("#history-name-input", "Enter")
    a.wait_for_selector("#history-error:not([hidden])")
    a.press("#history-name-input", "Escape")  # given up: what was wrong with it goes with the form
    a.wait_for_selector("#history-name-form", state="hidden")
    assert a.evaluate(focused) == "history-name"
    assert a.is_hidden("#history-error"), "was: the name's failure stayed after the form was closed"


# Counts date formatters made and locale formatting calls (each makes a formatter) while fn runs.
COUNT_FORMATTERS = """fn => {
  let n = 0;
  const DTF = Intl.DateTimeFormat, proto = Date.prototype;
  const saved = { t: proto.toLocaleTimeString, d: proto.toLocaleDateString, s: proto.toLocaleString };
  Intl.DateTimeFormat = function (...args) { n++; return new DTF(...args); };
  proto.toLocaleTimeString = function (...args) { n++; return saved.t.apply(this, args); };
  proto.toLocaleDateString = function (...args) { n++; return saved.d.apply(this, args); };
  proto.toLocaleString = function (...args) { n++; return saved.s.apply(this, args); };
  try { window.__collab.history[fn](); } finally {
    Intl.DateTimeFormat = DTF;
    Object.assign(proto, { toLocaleTimeString: saved.t, toLocaleDateString: saved.d, toLocaleString: saved.s });
  }
  return n;
}"""


def test_rebuilding_the_list_makes_no_date_formatter(server, contexts):
    """A long history's list rebuilds while others type: the times are formatted by formatters made once."""
    doc = "hist-formatters"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    a.evaluate("() => { window.__collab.history.gap = 0; }")  # one session an edit: a time each
    assert a.evaluate(COUNT_FORMATTERS, "renderSessions") == 0
    times = a.eval_on_selector_all("#history-sessions .history-time", "els => els.map(e => e.textContent)")
    assert len(times) == head and all(times)


def test_a_failure_that_would_only_repeat_is_not_retried(server, contexts):
    doc = "hist-no-retry"
    ctx = contexts()
    set_user(ctx, "Alice", "#e5484d")
    a, head = edited_doc(ctx, server, doc, "abc")
    asked = []

    def refuse(route):
        asked.append(route.request.url)
        route.fulfill(status=404, content_type="application/json",
                      body='{"error": {"code": "not-found", "message": "compacted"}}')
    a.route("**/versions/2", refuse)
    a.click("#history-toggle")
    wait_shown(a, head)
    select(a, 2)
    a.wait_for_selector("#history[data-state=error]")
    assert a.text_content("#history-error") == "Version 2 cannot be shown: compacted"
    assert a.evaluate("() => window.__collab.history.retryTimer") is None  # no retry scheduled
    # Nor when the connection comes back (it retries what may have passed), nor after the first wait.
    a.evaluate("() => window.__collab.history.reconnected()")
    a.wait_for_timeout(1500)
    assert len(asked) == 1, asked


def test_new_edits_leave_the_older_rows_of_the_list_alone(server, contexts):
    """While others type the list follows, rebuilding only the rows that changed (not thousands)."""
    doc = "hist-rows-kept"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    a.evaluate("""() => { const h = window.__collab.history; h.gap = 0; h.renderSessions();  // a row an edit
        for (const li of document.querySelectorAll('#history-sessions li')) li.__old = true; }""")
    a.click(".cm-content")
    a.keyboard.press("End")
    a.keyboard.type("d")
    a.wait_for_selector(f"#history-sessions .history-session[data-to='{head + 1}']")
    kept = a.eval_on_selector_all("#history-sessions li", "els => els.map(li => [li.dataset.to, !!li.__old])")
    assert kept == [[str(v), v <= head] for v in range(head + 1, 0, -1)]


def test_an_older_load_of_the_named_versions_failing_after_a_newer_one_shows_no_error(server, contexts):
    """Of two loads of the named versions under way (news that a version was named came twice, say),
    only the later one's answer counts: its list is shown, and the older one failing afterwards shows no
    error over it (was: "Could not load the named versions" until the next retry, up to 30 s)."""
    doc = "hist-stale-names"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    status, _ = api_json(server.url, f"/api/docs/{doc}/checkpoints", method="POST",
                         body={"version": head, "name": "Done"})
    assert status == 200
    held = held_requests(a, "**/checkpoints", lambda request, held: not held)  # the first: answered below
    a.evaluate("() => window.__collab.history.checkpointsChanged()")
    wait_held(a, held)
    a.evaluate("() => window.__collab.history.checkpointsChanged()")
    a.wait_for_selector(f"#history-sessions .history-checkpoint[data-version='{head}'] >> text=Done")
    held[0].abort()
    a.wait_for_timeout(500)  # the aborted load's failure has come back by now
    assert a.is_hidden("#history-error"), a.text_content("#history-error")
    assert a.query_selector(f"#history-sessions .history-checkpoint[data-version='{head}']") is not None
    assert a.collab_errors == [] and a.csp_violations == []


def test_a_version_named_while_the_page_was_cut_off_shows_once_it_is_connected_again(server, contexts):
    """A name given while the page was offline comes as no frame (the server tells only the connections
    open then), and with no edit meanwhile nothing else reads the names: the open panel reads them again
    when the page is connected again (was: not until the next edit; found by a review)."""
    doc = "hist-named-offline"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    ctx.set_offline(True)
    wait_status(a, "offline")
    status, _ = api_json(server.url, f"/api/docs/{doc}/checkpoints", method="POST",
                         body={"version": head, "name": "While away"})
    assert status == 200
    ctx.set_offline(False)
    wait_status(a, "connected")
    a.wait_for_selector(f"#history-sessions .history-checkpoint[data-version='{head}'] >> text=While away",
                        timeout=5000)
    assert server_doc(server.url, doc)["version"] == head  # no edit brought it
    assert a.collab_errors == [] and a.csp_violations == []


def test_a_load_of_the_names_that_began_before_a_naming_does_not_undo_it(server, contexts):
    """A load of the named versions under way when the person names one answers, late, with the list
    from before: the list the naming's own answer gave stays (was: the name the person had just given
    disappeared until the next edit, when no `checkpoints` frame came to read them again, as at another
    process without Redis; found by a review)."""
    doc = "hist-name-vs-load"
    ctx, a, head = history_opened(contexts, server, doc, "abc")
    a.evaluate("() => { window.__collab.history.checkpointsChanged = () => {}; }")  # no news comes
    held = held_requests(a, "**/checkpoints", lambda request, held: request.method == "GET")  # not the POST
    a.evaluate("() => { window.__collab.history.loadCheckpoints(); }")
    wait_held(a, held)
    a.click("#history-name")
    a.fill("#history-name-input", "Mine")
    a.keyboard.press("Enter")
    a.wait_for_selector(f"#history-sessions .history-checkpoint[data-version='{head}'] >> text=Mine")
    held[0].fulfill(status=200, content_type="application/json", body='{"checkpoints": []}')  # from before
    a.wait_for_timeout(500)
    assert a.query_selector(f"#history-sessions .history-checkpoint[data-version='{head}']") is not None
    assert len(held) == 1 and a.collab_errors == [] and a.csp_violations == []
