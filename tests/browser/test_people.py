"""People with stable identities (issue 14, item 3).

Each browser has a random person id (localStorage) that every hello carries.
Alice has two tabs open, Bob and another Bob (two people, one name) one
each, and Dora's client predates person ids (a raw socket whose hello has
none). Everyone sees Alice listed once. Alice renames herself (and picks
another colour) in one tab; her other tab follows. History then shows four
people, each in the colour they chose: Alice under her new name for what she
wrote before and after the rename, the two Bobs apart, Dora by name with the
colour picked from her name, as before person ids.
"""

from __future__ import annotations

import json
import urllib.request

from .browser_helpers import open_editor, server_doc, set_user, wait_synced
from .test_history import scrub, wait_shown

PALETTE = ["#e5484d", "#f76b15", "#d6a100", "#30a46c", "#12a594",
           "#0090ff", "#3e63dd", "#8e4ec6", "#d6409f", "#7c6f64"]

# A client of before person ids: hello without `person`, one push, then it leaves.
LEGACY_PUSH = """async ([url, text]) => {
  const ws = new WebSocket(url, 'collab.v1');
  const next = (type) => new Promise((resolve) => ws.addEventListener('message', function on(e) {
    const m = JSON.parse(e.data);
    if (m.type === type) { ws.removeEventListener('message', on); resolve(m); }
  }));
  await new Promise((r) => ws.addEventListener('open', r));
  const welcome = next('welcome');
  ws.send(JSON.stringify({type: 'hello', clientID: 'legacy-dora', version: null,
                          user: {name: 'Dora', color: '#12a594'}}));
  const w = await welcome;
  const echo = next('updates');
  ws.send(JSON.stringify({type: 'push', version: w.version,
                          updates: [{clientID: 'legacy-dora', changes: [[0, text]]}]}));
  await echo;
  ws.close();
}"""


def name_slot(name: str) -> int:
    """timeline.js nameSlot: FNV-1a over UTF-16 code units, modulo the palette."""
    units = name.encode("utf-16-le")
    h = 0x811C9DC5
    for i in range(0, len(units), 2):
        h ^= int.from_bytes(units[i:i + 2], "little")
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h % len(PALETTE)


def server_history(base_url: str, doc: str) -> list[dict]:
    with urllib.request.urlopen(f"{base_url}/api/docs/{doc}/history?limit=1000", timeout=10) as r:
        return json.loads(r.read())["entries"]


def rgb(hex_color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)))


def others(page):
    """The people another page lists besides itself: [[name, sessions]]."""
    return page.evaluate("""() => [...document.querySelectorAll('#people .person:not(.person-you)')]
        .map(li => [li.querySelector('.person-name').textContent, li.dataset.sessions.split(' ').length])""")


def type_at_end(page, text):
    page.click(".cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def test_people_are_persons_not_names_or_tabs(server, contexts):
    doc = "people"
    ca, cb, cc = contexts(), contexts(), contexts()
    set_user(ca, "Alice", "#e5484d")
    set_user(cb, "Bob", "#0090ff")
    set_user(cc, "Bob", "#30a46c")
    a1, a2 = open_editor(ca, server.url, doc), open_editor(ca, server.url, doc)
    b, c = open_editor(cb, server.url, doc), open_editor(cc, server.url, doc)
    ids = {name: p.evaluate("() => window.__collab.person") for name, p in
           (("a1", a1), ("a2", a2), ("b", b), ("c", c))}
    assert ids["a1"] == ids["a2"]  # one browser, one person
    assert len({ids["a1"], ids["b"], ids["c"]}) == 3

    b.evaluate(LEGACY_PUSH, [server.url.replace("http", "ws") + f"/ws/{doc}", "Dora wrote first. "])

    # One person in two tabs is listed once; her own tabs list only the two Bobs.
    b.wait_for_function("() => document.querySelectorAll('#people .person:not(.person-you)').length === 2"
                        " && document.querySelector('#people-count').textContent === '3 here'")
    assert sorted(others(b)) == [["Alice", 2], ["Bob", 1]]
    a1.wait_for_function("() => document.querySelectorAll('#people .person:not(.person-you)').length === 2")
    assert others(a1) == [["Bob", 1], ["Bob", 1]]
    assert a1.inner_text("#people-count") == "3 here"

    type_at_end(a1, "Alice one. ")
    wait_synced([a1, a2, b, c], server.url, doc)
    type_at_end(b, "Bob blue. ")
    wait_synced([a1, a2, b, c], server.url, doc)
    type_at_end(c, "Bob green. ")
    wait_synced([a1, a2, b, c], server.url, doc)
    first_alice = min(e["version"] for e in server_history(server.url, doc) if e.get("person") == ids["a1"])

    # Alice becomes Alicia, in purple: her other tab follows, the others list her once under the new name.
    a1.click("#me")
    a1.fill("#identity-name", "Alicia")
    a1.click("#identity-colors input[value='#8e4ec6']")
    a1.click("#identity button[type=submit]")
    a2.wait_for_function("() => document.querySelector('#me-name').textContent === 'Alicia'")
    # A rename is a new hello (the tab reconnects): wait until both of her tabs are back under the new name.
    b.wait_for_function("() => JSON.stringify([...document.querySelectorAll('#people .person:not(.person-you)')]"
                        ".map(li => [li.querySelector('.person-name').textContent,"
                        " li.dataset.sessions.split(' ').length]).sort()) === '[[\"Alicia\",2],[\"Bob\",1]]'")
    assert sorted(others(b)) == [["Alicia", 2], ["Bob", 1]]
    type_at_end(a2, "Alicia two.")
    text = wait_synced([a1, a2, b, c], server.url, doc)
    assert text == "Dora wrote first. Alice one. Bob blue. Bob green. Alicia two."

    # History (Bob's): one session, four people in their own colours, Alice under her current name.
    b.click("#history-toggle")
    b.wait_for_function("() => document.querySelectorAll('#history-sessions .history-person').length === 4")
    people = b.evaluate("""() => [...document.querySelectorAll('#history-sessions .history-person')].map(p =>
        [p.dataset.author, p.dataset.person, getComputedStyle(p.querySelector('.author-dot')).backgroundColor])""")
    dora = PALETTE[name_slot("Dora")]
    assert people == [["Dora", "", rgb(dora)], ["Alicia", ids["a1"], rgb("#8e4ec6")],
                      ["Bob", ids["b"], rgb("#0090ff")], ["Bob", ids["c"], rgb("#30a46c")]]
    # The label of a version Alice made before the rename names her as she is now.
    scrub(b, [first_alice])
    wait_shown(b, first_alice)
    assert "by Alicia ·" in b.inner_text("#history-label")

    # Who wrote what: by person, in each person's colour; the legend lists four people.
    head = server_doc(server.url, doc)["version"]
    b.check("input[name=history-mode][value=authors]")
    scrub(b, [head])
    wait_shown(b, head, "authors")
    marks = b.evaluate("""() => {
        const out = {};
        for (const m of document.querySelectorAll('#history-preview .cm-author')) {
          const key = m.dataset.person || 'name:' + m.dataset.author;
          const colour = getComputedStyle(m).getPropertyValue('--author-color').trim();
          out[key] = out[key] || {text: '', colours: []};
          out[key].text += m.textContent;
          if (!out[key].colours.includes(colour)) out[key].colours.push(colour);
        }
        return out;
    }""")
    assert marks == {
        "name:Dora": {"text": "Dora wrote first. ", "colours": [dora]},
        ids["a1"]: {"text": "Alice one. Alicia two.", "colours": ["#8e4ec6"]},
        ids["b"]: {"text": "Bob blue. ", "colours": ["#0090ff"]},
        ids["c"]: {"text": "Bob green. ", "colours": ["#30a46c"]},
    }
    legend = b.evaluate("() => [...document.querySelectorAll('#history-legend .legend-item')].map(i => i.dataset.author)")
    assert legend == ["Dora", "Alicia", "Bob", "Bob"]
    for p in (a1, a2, b, c):
        assert p.collab_errors == [] and p.csp_violations == []

