"""Access control and abuse resistance: tokens, share links, origins, headers, limits, back-pressure.

Each test checks the refusal and that nothing stored changed.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import WSMsgType

from collab.access import Access
from collab.errors import ProtocolError
from collab.app import ADMISSION, ROOMS, create_app
from collab import room as room_module
from collab import ws as ws_module
from collab.settings import Settings
from wsutil import USER, closed, recv_type, send

SECRET = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path):
    return Settings(db=str(tmp_path / "a.db"), secret=SECRET, rate=20, burst=10, max_conns_per_doc=3,
                    max_conns_per_addr=5, unload_after=60)


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


ADMIN = Access(SECRET.encode()).admin_token()


async def make_doc(client, name="doc", text="hello"):
    """Create a document as the admin, type `text` into it; return its share links' tokens."""
    resp = await client.post("/api/docs", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 201, await resp.text()
    links = (await resp.json())["links"]
    tokens = {role: url.split("token=")[1] for role, url in links.items()}
    ws, _ = await hello(client, name, tokens["edit"], "setup")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "setup", "changes": [[0, text]]}]})
    await recv_type(ws, "updates")
    await ws.close()
    return tokens


async def hello(client, doc, token, client_id, headers=None):
    url = f"/ws/{doc}" + (f"?token={token}" if token is not None else "")
    ws = await client.ws_connect(url, protocols=["collab.v1"], headers=headers or {})
    await send(ws, {"type": "hello", "clientID": client_id, "version": None, "user": USER})
    msg = await asyncio.wait_for(ws.receive(), 5)
    if msg.type != WSMsgType.TEXT:
        return ws, None
    return ws, orjson.loads(msg.data)


async def stored(client, doc="doc"):
    resp = await client.get(f"/api/docs/{doc}", headers={"Authorization": f"Bearer {ADMIN}"})
    return (await resp.json())["doc"]


async def test_pages_and_api_need_a_token(client):
    tokens = await make_doc(client)
    for path in ("/api/docs", "/api/docs/doc", "/api/docs/doc/history", "/metrics"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert (await resp.json())["error"]["code"] == "unauthorized"
        resp = await client.get(path + ("&" if "?" in path else "?") + "token=e" + "x" * 32)
        assert resp.status == 403, path
        assert (await resp.json())["error"]["code"] == "forbidden"
    for path in ("/", "/d/doc"):  # a page is a shell: served without a token (its API calls and socket need one)
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html", path
        assert '<meta name="collab-access" content="tokens">' in await resp.text()
        resp = await client.get(path + "?token=<script>")  # a token in the address is still checked
        assert resp.status == 403 and resp.content_type == "text/html" and "<script>" not in await resp.text(), path
    assert (await client.get(f"/d/doc?token={tokens['view']}")).status == 200
    assert (await client.get(f"/api/docs/doc?token={tokens['view']}")).status == 200
    assert (await client.get(f"/?token={ADMIN}")).status == 200
    assert (await client.get("/healthz")).status == 200  # health checks need no token


async def test_websocket_without_or_with_a_wrong_token_closes_1008(client):
    tokens = await make_doc(client)
    await make_doc(client, "other", "secret plans")
    other = (await (await client.get(f"/api/docs/other/links?token={ADMIN}")).json())["links"]
    other_edit = other["edit"].split("token=")[1]
    cases = [None, "nonsense", "e" + "A" * 32, other_edit]  # none, garbage, forged, another document's
    for token in cases:
        ws, frame = await hello(client, "doc", token, "intruder")
        assert frame is None or frame["type"] == "error"
        code, _ = await closed(ws)
        assert code == 1008, token
    assert await stored(client) == "hello"
    # A token for one document gives nothing on another, over HTTP too.
    resp = await client.get(f"/api/docs/doc/versions/1?token={other_edit}")
    assert resp.status == 403
    ws, welcome = await hello(client, "doc", tokens["edit"], "friend")
    assert welcome["type"] == "welcome" and welcome["role"] == "edit" and welcome["doc"] == "hello"


async def test_view_token_reads_but_cannot_push(client):
    tokens = await make_doc(client)
    viewer, welcome = await hello(client, "doc", tokens["view"], "viewer")
    assert welcome["role"] == "view" and welcome["doc"] == "hello"
    editor, _ = await hello(client, "doc", tokens["edit"], "editor")
    await send(viewer, {"type": "push", "version": 1, "updates": [{"clientID": "viewer", "changes": [5, [0, "!"]]}]})
    assert (await recv_type(viewer, "error"))["code"] == "read-only"
    # Its presence is still shown to the others.
    await send(viewer, {"type": "presence", "version": 1, "ranges": [{"anchor": 2, "head": 2}]})
    assert (await recv_type(editor, "presences"))["peers"][0]["ranges"] == [{"anchor": 2, "head": 2}]
    # View holders see no share links and cannot restore, name a version or fork: what needs an edit
    # token is read-only for them (the code their push gets), what needs the admin's is forbidden.
    for method, path, code in (("get", "/api/docs/doc/links", "read-only"),
                               ("post", "/api/docs/doc/links/reset", "forbidden"),
                               ("post", "/api/docs/doc/restore", "read-only"),
                               ("post", "/api/docs/doc/checkpoints", "read-only"),
                               ("post", "/api/docs/doc/fork", "forbidden")):
        resp = await getattr(client, method)(f"{path}?token={tokens['view']}", json={"version": 0, "name": "n"})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == code, path
    assert await stored(client) == "hello"


async def test_reset_links_invalidates_old_tokens_and_sessions(client):
    tokens = await make_doc(client)
    old_session, _ = await hello(client, "doc", tokens["edit"], "old")
    admin_session, _ = await hello(client, "doc", ADMIN, "admin")
    resp = await client.post(f"/api/docs/doc/links/reset?token={tokens['edit']}", json={})
    assert resp.status == 403  # an edit link cannot cut everyone else off (issue 10, finding 9)
    resp = await client.post(f"/api/docs/doc/links/reset?token={ADMIN}", json={})
    assert resp.status == 200
    new = {r: u.split("token=")[1] for r, u in (await resp.json())["links"].items()}
    assert new["edit"] != tokens["edit"] and new["view"] != tokens["view"]
    assert (await closed(old_session))[0] == 1008
    for token in tokens.values():
        assert (await client.get(f"/api/docs/doc?token={token}")).status == 403
        ws, _ = await hello(client, "doc", token, "late")
        assert (await closed(ws))[0] == 1008
    ws, welcome = await hello(client, "doc", new["edit"], "fresh")
    assert welcome["doc"] == "hello"
    await send(admin_session, {"type": "presence", "version": 1, "ranges": []})  # the admin stays connected
    assert not admin_session.closed


async def test_a_restore_under_way_when_the_links_are_reset_is_refused(client, monkeypatch):
    """Was: the edit token was checked when the restore began, not when its diff was ready: a restore
    running while the admin reset the links still changed the document with the revoked link."""
    from collab import compute
    tokens = await make_doc(client, text="hello")
    ws, _ = await hello(client, "doc", tokens["edit"], "typist")
    await send(ws, {"type": "push", "version": 1, "updates": [{"clientID": "typist", "changes": [5, [0, " world"]]}]})
    await recv_type(ws, "updates")
    await ws.close()
    diffed, go_on, diff = asyncio.Event(), asyncio.Event(), compute.restore_changes

    async def slow_diff(current, target):
        diffed.set()
        await go_on.wait()
        return await diff(current, target)

    monkeypatch.setattr(compute, "restore_changes", slow_diff)
    restore = asyncio.ensure_future(client.post("/api/docs/doc/restore", json={"version": 1},
                                                headers={"Authorization": f"Bearer {tokens['edit']}"}))
    await asyncio.wait_for(diffed.wait(), 5)
    resp = await client.post("/api/docs/doc/links/reset", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200
    go_on.set()
    resp = await restore
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    assert await stored(client) == "hello world"


async def test_admin_lists_creates_and_deletes(client):
    await make_doc(client, "one")
    await make_doc(client, "two")
    docs = (await (await client.get(f"/api/docs?token={ADMIN}")).json())["docs"]
    assert sorted(d["name"] for d in docs) == ["one", "two"]
    tokens = await make_doc(client, "three")
    ws, _ = await hello(client, "three", tokens["edit"], "x")
    resp = await client.delete(f"/api/docs/three?token={tokens['edit']}")
    assert resp.status == 403  # only the admin deletes
    resp = await client.delete(f"/api/docs/three?token={ADMIN}")
    assert resp.status == 200
    assert (await closed(ws))[0] == 1008
    assert (await client.get(f"/api/docs/three?token={ADMIN}")).status == 404
    # Only the admin can make a document by opening it.
    ws, _ = await hello(client, "brand-new", tokens["edit"], "y")
    assert (await closed(ws))[0] == 1008
    assert (await client.get(f"/api/docs/brand-new?token={ADMIN}")).status == 404


async def test_foreign_origin_is_refused(client):
    tokens = await make_doc(client)
    with pytest.raises(Exception) as refused:
        await client.ws_connect(f"/ws/doc?token={tokens['edit']}", protocols=["collab.v1"],
                                headers={"Origin": "https://evil.example"})
    assert "403" in str(refused.value)
    own = f"http://{client.server.host}:{client.server.port}"
    ws, welcome = await hello(client, "doc", tokens["edit"], "same-site", headers={"Origin": own})
    assert welcome["type"] == "welcome"
    assert await stored(client) == "hello"


async def test_allowed_extra_origin(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "o.db"),
                                                      allow_origin="https://editor.example.org")))
    ws, welcome = await hello(client, "d", None, "c", headers={"Origin": "https://editor.example.org"})
    assert welcome["type"] == "welcome"
    with pytest.raises(Exception):
        await client.ws_connect("/ws/d", protocols=["collab.v1"], headers={"Origin": "https://other.example"})


async def test_security_headers(client):
    resp = await client.get(f"/d/doc?token={ADMIN}")
    h = resp.headers
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert "script-src 'self'" in h["Content-Security-Policy"]
    assert "style-src 'self'" in h["Content-Security-Policy"]
    assert (await client.get("/api/docs")).headers["Referrer-Policy"] == "no-referrer"  # errors too
    assert (await client.get("/no/such/route")).headers["X-Frame-Options"] == "DENY"  # the router's 404


async def test_editor_page_carries_the_servers_limits(aiohttp_client, tmp_path):
    """The editor refuses edits the server could never take, so the page says what the limits are."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "p.db"), max_frame=65536, max_doc=30000)))
    resp = await client.get("/d/doc")
    html = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert '<meta name="collab-max-frame" content="65536">' in html
    assert '<meta name="collab-max-doc" content="30000">' in html
    assert "<!--collab:limits-->" not in html
    assert resp.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("frames", ["presence", "binary"])
async def test_rate_limit_then_4429(client, frames):
    """Every data frame counts (was: binary ones, each answered bad-message, were never limited)."""
    tokens = await make_doc(client)
    ws, _ = await hello(client, "doc", tokens["edit"], "flood")
    other, _ = await hello(client, "doc", tokens["edit"], "calm")
    for _ in range(40):  # burst 10, rate 20/s: most of these are refused
        if frames == "binary":
            await ws.send_bytes(b"x")
        else:
            await send(ws, {"type": "presence", "version": 1, "ranges": [{"anchor": 0, "head": 0}]})
    codes, retry_after = [], []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type != WSMsgType.TEXT:
            break
        frame = orjson.loads(msg.data)
        if frame["type"] == "error":
            codes.append(frame["code"])
            if frame["code"] == "rate-limited" and "retryAfter" in frame:
                retry_after.append(frame["retryAfter"])
    assert "rate-limited" in codes and set(codes) <= {"rate-limited", "bad-message" if frames == "binary" else ""}
    assert retry_after and all(0 < r <= 0.05 for r in retry_after), retry_after  # 20 frames/s: a turn in 1/20 s
    assert msg.type == WSMsgType.CLOSE and msg.data == 4429
    # The calm client is unaffected and nothing was stored.
    await send(other, {"type": "push", "version": 1, "updates": [{"clientID": "calm", "changes": [5, [0, "!"]]}]})
    assert (await recv_type(other, "updates"))["from"] == 1
    assert await stored(client) == "hello!"


async def test_connection_limits(client):
    tokens = await make_doc(client)
    sockets = []
    for k in range(3):  # max_conns_per_doc = 3
        ws, welcome = await hello(client, "doc", tokens["edit"], f"c{k}")
        assert welcome["type"] == "welcome"
        sockets.append(ws)
    resp = await client.get(f"/ws/doc?token={tokens['edit']}", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate-limited"
    # Per address: 5 in all from 127.0.0.1 (3 on doc, 2 more elsewhere, then refused).
    await make_doc(client, "elsewhere")
    ws4, _ = await hello(client, "elsewhere", ADMIN, "e1")
    ws5, _ = await hello(client, "elsewhere", ADMIN, "e2")
    with pytest.raises(Exception) as refused:
        await client.ws_connect(f"/ws/elsewhere?token={ADMIN}", protocols=["collab.v1"])
    assert "429" in str(refused.value)
    await sockets[0].close()
    await asyncio.sleep(0.1)
    ws6, welcome = await hello(client, "elsewhere", ADMIN, "e3")  # a slot came free
    assert welcome["type"] == "welcome"


async def flood_a_sleeper(aiohttp_client, tmp_path):
    """A client that stops reading while another pushes 20 KB updates until the server cuts it off."""
    settings = Settings(db=str(tmp_path / "b.db"), send_buffer=256 * 1024, rate=1e6, burst=10**6,
                        max_frame=1 << 20)
    app = create_app(settings)
    client = await aiohttp_client(app)
    sleeper = await client.ws_connect("/ws/flood", protocols=["collab.v1"])
    await send(sleeper, {"type": "hello", "clientID": "sleeper", "version": None, "user": USER})
    await recv_type(sleeper, "welcome")  # a member before anyone writes (its hello is handled in its own task)
    writer, _ = await hello(client, "flood", None, "writer")
    # Stop reading on the sleeper's socket: pause its transport so the server's writes back up.
    sleeper._response.connection.transport.pause_reading()
    room = app[ROOMS].rooms["flood"]
    sleeper_peer = next(m.conn for m in room.members.values() if m.conn.client_id == "sleeper")
    version, chunk = 0, "x" * 20000
    for k in range(400):  # 8 MB of updates in all
        await send(writer, {"type": "push", "version": version,
                            "updates": [{"clientID": "writer", "changes": ([version * 20000] if version else [])
                                         + [[0, chunk]]}]})
        ack = await recv_type(writer, "updates")
        version = ack["from"] + 1
        if sleeper_peer.closed:
            break
    assert sleeper_peer.closed, "the non-reading peer was never cut off"
    assert sleeper_peer.queued <= settings.send_buffer + 64 * 1024
    assert not writer.closed  # the writer is unaffected
    return app, room, sleeper


async def test_a_client_that_does_not_read_is_cut_off(aiohttp_client, tmp_path):
    """Back-pressure: a peer that never reads is closed once its unsent bytes pass the bound."""
    app, room, sleeper = await flood_a_sleeper(aiohttp_client, tmp_path)
    # Once the sleeper reads again it finds the frames that were already on their way, then 1013.
    sleeper._response.connection.transport.resume_reading()
    while (msg := await asyncio.wait_for(sleeper.receive(), 10)).type == WSMsgType.TEXT:
        assert orjson.loads(msg.data)["type"] in ("welcome", "updates", "presences")
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1013)


async def test_a_client_that_never_reads_again_is_dropped(aiohttp_client, tmp_path, monkeypatch):
    """If the cut-off client never reads again, the closing handshake cannot finish: after
    CLOSE_TIMEOUT the server drops the socket and forgets the connection, holding nothing for it."""
    monkeypatch.setattr(ws_module, "CLOSE_TIMEOUT", 0.5)
    app, room, sleeper = await flood_a_sleeper(aiohttp_client, tmp_path)
    for _ in range(50):
        if [m.conn.client_id for m in room.members.values()] == ["writer"] and app[ADMISSION].per_address == {"127.0.0.1": 1}:
            break
        await asyncio.sleep(0.1)
    assert [m.conn.client_id for m in room.members.values()] == ["writer"]
    assert app[ADMISSION].per_address == {"127.0.0.1": 1}
    sleeper._response.connection.transport.resume_reading()  # it finds the connection reset
    while (await asyncio.wait_for(sleeper.receive(), 10)).type == WSMsgType.TEXT:
        pass


async def _load_held(client, monkeypatch):
    """Make the next store.load of a document read it, then wait for `go_on` (a big document's replay)."""
    store = client.server.app[ROOMS].store
    real_load, read, go_on = store.load, asyncio.Event(), asyncio.Event()

    async def held_load(name):
        loaded = await real_load(name)  # the row (its salt, or the document at all) is read here
        read.set()
        await go_on.wait()
        return loaded

    monkeypatch.setattr(store, "load", held_load)
    return read, go_on


async def _unloaded(client, name="doc"):
    rooms = client.server.app[ROOMS]
    room = rooms.rooms[name]
    for _ in range(500):  # the server lets the closed connection go a turn or two after its close frame
        if not room.members:
            break
        await asyncio.sleep(0.01)
    await rooms.unload(room)
    assert name not in rooms.rooms


@pytest.mark.parametrize("change", ["reset", "rename", "delete"])
async def test_a_document_loading_while_its_links_are_reset_or_it_is_renamed_or_deleted_reads_it_again(
        client, monkeypatch, change):
    """Was: a join that loaded the document while the admin reset its links, renamed or deleted it
    published a room made from what it had read before: the old links went on working (WebSocket and
    HTTP), the old name stayed open and writable, the deleted document came back."""
    tokens = await make_doc(client, text="hello")
    await _unloaded(client)
    read, go_on = await _load_held(client, monkeypatch)
    joining = asyncio.ensure_future(hello(client, "doc", tokens["edit"], "early"))
    await asyncio.wait_for(read.wait(), 5)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    if change == "reset":
        resp = await client.post("/api/docs/doc/links/reset", json={}, headers=auth)
    elif change == "rename":
        resp = await client.post("/api/docs/doc/rename", json={"name": "doc2"}, headers=auth)
    else:
        resp = await client.delete("/api/docs/doc", headers=auth)
    assert resp.status in (200, 204), await resp.text()
    new_links = (await resp.json())["links"] if change == "reset" else None
    go_on.set()
    ws, first = await joining
    assert first is None or first.get("code") == "forbidden", first
    assert (await closed(ws))[0] == 1008
    monkeypatch.undo()
    late, frame = await hello(client, "doc", tokens["edit"], "late")
    # An old name tells where the document went (the page follows it there); otherwise the link is dead.
    expected = "not-found" if change == "rename" else "forbidden"
    assert frame is not None and frame.get("code") == expected, frame
    assert (await closed(late))[0] == 1008
    resp = await client.get(f"/api/docs/doc?token={tokens['view']}")
    assert resp.status in (403, 404), await resp.text()
    rooms = client.server.app[ROOMS]
    if change == "reset":  # the room that loaded has the new salt: the new links work
        ws, frame = await hello(client, "doc", new_links["edit"].split("token=")[1], "new")
        assert frame["type"] == "welcome" and frame["doc"] == "hello", frame
        await ws.close()
    else:
        assert "doc" not in rooms.rooms or rooms.rooms["doc"].doc_id is None
    if change == "rename":
        assert (await client.get("/api/docs/doc2", headers=auth)).status == 200


@pytest.mark.parametrize("how", ["made", "renamed"])
async def test_the_links_of_a_document_made_while_its_name_is_open_work_at_once(client, how):
    """Was: the admin's editor open on a new name held a room with no salt; the document then made
    through the API handed out links that hello refused (forbidden, 1008: do not come back) until
    someone typed. A document renamed onto that name was worse: the room stayed unborn, so its links
    were refused and the admin's editor showed it empty."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    admin, frame = await hello(client, "plan", ADMIN, "admin")
    assert frame["type"] == "welcome"
    if how == "made":
        resp = await client.post("/api/docs", json={"name": "plan"}, headers=auth)
        assert resp.status == 201, await resp.text()
        text = ""
    else:
        await make_doc(client, "old", "typed before")
        resp = await client.post("/api/docs/old/rename", json={"name": "plan"}, headers=auth)
        assert resp.status == 200, await resp.text()
        text = "typed before"
    tokens = {role: url.split("token=")[1] for role, url in (await resp.json())["links"].items()}
    for role in ("edit", "view"):
        ws, frame = await hello(client, "plan", tokens[role], role)
        assert frame["type"] == "welcome" and frame["role"] == role and frame["doc"] == text, frame
        await ws.close()
    theirs = await recv_type(admin, "updates") if text else None  # the admin's editor catches up with the text
    assert theirs is None or theirs["from"] == 0, theirs
    version = 1 if text else 0
    await send(admin, {"type": "push", "version": version,
                       "updates": [{"clientID": "admin", "changes": [len(text), [0, " made"]]}]})
    await recv_type(admin, "updates")
    ws, frame = await hello(client, "plan", tokens["edit"], "after")
    assert frame["type"] == "welcome" and frame["doc"] == text + " made", frame


async def test_a_token_header_that_is_not_utf8_is_refused_not_a_server_error(client):
    """aiohttp hands undecodable header bytes on as lone surrogates; such a token is simply not a token."""
    await make_doc(client)
    for token in (b"a\xff\xfe", b"e" + b"\xc3" * 40, "\u00e9t\u00e9".encode()):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"GET /api/docs/doc HTTP/1.1\r\nHost: " + f"{client.server.host}:{client.server.port}".encode()
                     + b"\r\nAuthorization: Bearer " + token + b"\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403"), (token, head)
        assert orjson.loads(body)["error"]["code"] == "forbidden", body
    with pytest.raises(ProtocolError) as refused:
        Access(SECRET.encode()).role("a\udcff\udcfe", "doc", "salt")
    assert refused.value.code == "forbidden"


async def test_a_connected_clients_id_is_never_forgotten_so_no_one_else_can_take_it(client, monkeypatch):
    """Was: past MAX_OWNERS other clientIDs the least recently seen owner was forgotten even while
    connected, so another token could then take its clientID (4001 for the owner) and lock it out."""
    monkeypatch.setattr(room_module, "MAX_OWNERS", 4)
    tokens = await make_doc(client)
    victim, frame = await hello(client, "doc", ADMIN, "victim")
    assert frame["type"] == "welcome"
    for k in range(12):  # other clientIDs, each connected and gone
        ws, frame = await hello(client, "doc", tokens["edit"], f"x{k}")
        assert frame["type"] == "welcome", frame
        await ws.close()
    thief, frame = await hello(client, "doc", tokens["edit"], "victim")
    assert (frame["type"], frame["code"]) == ("error", "conflict"), frame
    assert len(client.app[ROOMS].rooms["doc"].owners) == 4  # the rest were forgotten
    await victim.close()
    again, frame = await hello(client, "doc", ADMIN, "victim")  # its owner, back
    assert frame["type"] == "welcome"
    await again.close()


async def test_a_hello_on_a_renamed_documents_old_name_is_told_its_new_name(client):
    """Was: a page that was offline while its document was renamed reconnected to the old name: the admin
    (or anyone, on a personal instance) was welcomed to a new empty document there, which its next
    keystroke made (the document split in two, the unsent edits sent to the rescue dialog); an edit link
    was refused as if revoked. Now the hello gets what the live sessions got: 1008 naming the new name."""
    tokens = await make_doc(client, "old", "hello")
    other = await make_doc(client, "other", "x")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert (await client.post("/api/docs/old/rename", json={"name": "new"}, headers=auth)).status == 200
    for token in (ADMIN, tokens["edit"], tokens["view"]):  # as GET /d/old?token= sends them on
        ws, frame = await hello(client, "old", token, "back")
        assert (frame["type"], frame["code"]) == ("error", "not-found"), frame
        assert await closed(ws) == (1008, "this document was renamed to new")
    # Was: the same to anyone, no token or a bad one, so the new name (and that the old one existed) was
    # told to whoever asked. Now they get what a name no document ever had gets.
    for token, code in ((None, "unauthorized"), ("e" + "x" * 40, "forbidden"), (other["edit"], "forbidden")):
        for name in ("old", "never-was"):
            ws, frame = await hello(client, name, token, "back")
            assert (frame["type"], frame["code"]) == ("error", code), (token, name, frame)
            assert "new" not in frame["message"], frame
            await ws.close()
    docs = (await (await client.get("/api/docs", headers=auth)).json())["docs"]
    assert sorted(d["name"] for d in docs) == ["new", "other"]


async def test_the_page_of_a_renamed_documents_old_name_tells_its_new_name_only_to_a_token_good_for_it(client):
    """Was: `GET /d/old` with no token at all was redirected to `/d/new` on a team instance (a bad token was
    refused): anyone could learn a document's new name, and that the old one existed."""
    tokens = await make_doc(client, "old", "hello")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert (await client.post("/api/docs/old/rename", json={"name": "new"}, headers=auth)).status == 200
    plain = await client.get("/d/old", allow_redirects=False)
    never = await client.get("/d/never-was", allow_redirects=False)
    assert (plain.status, never.status) == (200, 200)  # the page, as for any name: it shows how to get in
    assert "new" not in plain.headers.get("Location", "")
    for junk in ("junk", "e" + "x" * 40, tokens["view"]):  # a page's token is its address's: a header is not
        for page in ("/d/old", "/d/never-was"):          # read, so it tells nothing of a former name either
            resp = await client.get(page, headers={"Authorization": f"Bearer {junk}"}, allow_redirects=False)
            assert resp.status == 200, (junk, page, resp.status)
    assert (await client.get("/d/old?token=e" + "x" * 40, allow_redirects=False)).status == 403
    resp = await client.get(f"/d/old?token={tokens['edit']}", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/d/new?token="), dict(resp.headers)
    resp = await client.get(f"/d/old?token={ADMIN}", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/d/new")
