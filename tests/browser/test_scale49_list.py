"""Scale audit 49, finding 3: the document list with thousands of documents.

With 6,000 documents, every keystroke in the list's search made every
matching row anew (and a date formatter for each: Date.toLocaleString), so
the page froze 0.3 to 1.2 s a keystroke, and 0.9 s on load. Now each row is
made once per load of the list and a search only takes rows out or puts them
back: narrowing a search moves nothing, clearing it brings back the very same
rows, and no row formats its date with a formatter of its own.
"""

from __future__ import annotations

from .browser_helpers import api_json

COUNT_DATE_FORMATS = """(() => {
  window.__toLocaleString = 0;
  const real = Date.prototype.toLocaleString;
  Date.prototype.toLocaleString = function (...args) { window.__toLocaleString++; return real.apply(this, args); };
})()"""


def test_search_reuses_the_rows_it_made(server, contexts):
    for k in range(300):
        assert api_json(server.url, "/api/docs", method="POST", body={"name": f"doc-{k:03d}"})[0] == 201
    ctx = contexts()
    ctx.add_init_script(COUNT_DATE_FORMATS)
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#docs tbody tr").count() == 300
    page.evaluate("() => { window.__rows = new Map([...document.querySelectorAll('#docs tbody tr')]"
                  ".map((tr) => [tr.dataset.name, tr])); }")
    same = "() => [...document.querySelectorAll('#docs tbody tr')].every((tr) => window.__rows.get(tr.dataset.name) === tr)"

    page.fill("#doc-search", "doc-1")
    assert page.locator("#docs tbody tr").count() == 100
    assert page.evaluate(same), "a search shows the rows made at load, not new ones"
    page.fill("#doc-search", "doc-12")
    assert page.locator("#docs tbody tr").count() == 10 and page.evaluate(same)
    page.fill("#doc-search", "")
    assert page.locator("#docs tbody tr").count() == 300 and page.evaluate(same)
    assert page.eval_on_selector_all("#docs tbody tr", "rows => rows.map((r) => r.dataset.name)") == \
        page.evaluate("() => [...window.__rows.keys()]"), "in the list's order again"
    assert page.evaluate("() => window.__toLocaleString") == 0, "dates are formatted by one shared formatter"
    assert page.get_attribute("tr[data-name=doc-007] time", "title")  # still there
