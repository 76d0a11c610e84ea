"""Chromium with permessage-deflate (it offers it and compresses what it sends): the server agrees,
a large document reaches the editor through a compressed welcome, and typing still syncs."""

import random
import string

from .browser_helpers import doc_text, focus_end, open_editor, wait_synced

# Chromium's own WebSocket, from a page of the server's origin: what it agreed, and the welcome it read.
SOCKET = """([url, text]) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'collab.v1');
    ws.onopen = () => ws.send(JSON.stringify({type: 'hello', clientID: 'maker', version: null,
                                              user: {name: 'maker', color: '#336699'}}));
    ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'welcome') {
            if (!text) { resolve({ext: ws.extensions, length: m.doc.length}); ws.close(); return; }
            ws.send(JSON.stringify({type: 'push', version: m.version,
                                    updates: [{clientID: 'maker',
                                               changes: m.doc.length ? [m.doc.length, [0, text]] : [[0, text]]}]}));
        } else if (m.type === 'updates') { resolve({ext: ws.extensions, acked: m.updates.length}); ws.close(); }
        else if (m.type === 'error') { resolve({error: m.code}); ws.close(); }
    };
    ws.onerror = () => resolve({error: 'socket'});
})"""


def test_chromium_agrees_compression_and_reads_a_large_compressed_welcome(server, contexts):
    rng = random.Random(13)
    text = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9)))
                    for _ in range(40_000))[:200_000]
    page = contexts().new_page()
    page.goto(server.url + "/healthz")
    made = page.evaluate(SOCKET, [server.ws_url + "/ws/deflated", text])  # Chromium compresses this push
    assert made.get("acked") == 1, made
    assert made["ext"].startswith("permessage-deflate") and "client_no_context_takeover" in made["ext"]
    read = page.evaluate(SOCKET, [server.ws_url + "/ws/deflated", ""])
    assert read == {"ext": made["ext"], "length": len(text)}
    a = open_editor(contexts(), server.url, "deflated")  # the editor's own client, through the same
    b = open_editor(contexts(), server.url, "deflated")
    assert doc_text(a) == text
    focus_end(a)
    a.keyboard.type("!?")
    assert wait_synced([a, b], server.url, "deflated") == text + "!?"
