"""Review 48: races and bounds in the server's heart (room.py, ws.py, peer.py, sequencer.py, storage.py).

Each test failed on the code before the commit that brought it, for the reason its docstring gives.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import orjson
import pytest
from test_compression import Raw, upgrade_head
from test_detach_audit import _peer_of
from wsutil import join, push, recv_type, until

from collab.app import ROOMS, create_app
from collab.peer import FRAGMENT
from collab.settings import Settings

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------- helpers

async def _raw_that_reads_slowly(port: int, doc: str) -> Raw:
    """A WebSocket client on a bare socket with a small receive buffer: once it stops reading, what the
    server sends it waits in the server's transport after a few hundred kilobytes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(upgrade_head(port, doc))
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    assert head.startswith("HTTP/1.1 101"), head
    return Raw(reader, writer, head)


async def _messages_until_close(raw: Raw, timeout: float = 10.0) -> tuple[list[dict], int]:
    """Every text message the server sends until its close frame, and the close code."""
    messages, parts = [], []
    while True:
        fin, _, opcode, payload = await raw.frame(timeout)
        if opcode == 0x8:
            return messages, struct.unpack("!H", payload[:2])[0]
        if opcode in (0x9, 0xA):
            continue
        parts.append(payload)
        if fin:
            messages.append(orjson.loads(b"".join(parts)))
            parts = []


# ------------------------------------------- 1. a closing connection skipped a large frame, not what followed

@pytest.mark.parametrize("ending", ["takeover", "over the rate"])
async def test_a_closing_connection_sends_no_updates_frame_after_one_it_dropped(aiohttp_client, tmp_path, ending):
    """Was: Peer.finish (the closing handshake after a takeover, a revoked link, a shutdown...) wrote the
    small frames still queued and dropped the large ones (over FRAGMENT), wherever they stood in the
    queue. A client behind on reading with a paste (a large `updates` frame) queued and a keystroke
    behind it got the keystroke's frame right after the ones before the paste: a gap in the versions,
    which docs/protocol.md promises never happens ("Updates come in version order, without gaps"). A
    stock @codemirror/collab client applies such a frame to the wrong text (it fails on the lengths, or,
    when the dropped frame kept the length, goes on silently with another text and a version count one
    short, and takes that keystroke a second time when it resumes). The error frame of a refusal that
    ends the connection still comes before the close, as the protocol says, large frame or not."""
    app = create_app(Settings(db=str(tmp_path / "gap.db"), rate=100, burst=200))
    client = await aiohttp_client(app)
    port = client.server.port
    b, _ = await join(client, "gap", "b")

    a = await _raw_that_reads_slowly(port, "gap")
    a.hello("a")
    welcome, _, _ = await a.typed("welcome")
    assert welcome["version"] == 0
    peer = _peer_of(app, "gap", "a")
    # the server's side of A: a small send buffer, as on a slow network
    peer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    version, length = 0, 0
    while not peer.queue:  # 40 KB pastes, until A's transport is full and they wait in its queue
        assert version < 100, "precondition: A's transport never filled"
        await push(b, version, "b", [*([length] if length else []), [0, "x" * 40_000]])
        await recv_type(b, "updates", timeout=10)  # acknowledged
        version, length = version + 1, length + 40_000
    # a paste (a frame over FRAGMENT: it waits for room, queued), then a keystroke behind it
    await push(b, version, "b", [length, [0, "p" * 100_000]])
    await recv_type(b, "updates", timeout=10)  # acknowledged
    await push(b, version + 1, "b", [length + 100_000, [0, "k"]])
    await recv_type(b, "updates", timeout=10)  # acknowledged
    assert [len(f) > FRAGMENT for f in list(peer.queue)[-2:]] == [True, False], \
        "precondition: the paste and the keystroke are queued for A"

    a2 = None
    if ending == "takeover":  # A's client comes back on a new connection (same address: proof enough)
        a2 = await Raw.open(port, "gap", extensions=None)
        a2.hello("a")
        await a2.typed("welcome")
    else:  # A (still not reading) sends frames too fast, for a whole burst: closed 4429, saying why
        for _ in range(1000):
            a.send_json({"type": "bogus"})
        await until(lambda: peer.closed, what="A closed for its rate")
    messages, code = await _messages_until_close(a)
    assert code == (4001 if ending == "takeover" else 4429)
    frames = [m for m in messages if m["type"] == "updates"]
    seen = 0
    for frame in frames:
        assert frame["from"] == seen, (f"an updates frame from version {frame['from']} after the frames up to "
                                       f"{seen}: a gap", [(f["from"], len(f["updates"])) for f in frames])
        seen += len(frame["updates"])
    assert seen <= version + 2
    if ending != "takeover":
        assert messages[-1]["type"] == "error" and messages[-1]["code"] == "rate-limited", messages[-1]
    a.close()
    if a2 is not None:
        a2.close()
    await b.close()


# ------------------------------- 2. a push that waited for a catch-up was taken after its session was revoked

async def test_a_push_waiting_for_a_catch_up_is_dropped_when_its_session_is_revoked_meanwhile(aiohttp_client, tmp_path,
                                                                                            monkeypatch):
    """Was: Room._sequence drops a push whose connection closed while it waited (history read, a heavy
    rebase taking turns, a commit), as its docstring says, except after its last wait: for a catch-up
    (another process's commit, which a heavy rebase gives time to arrive). A session revoked meanwhile
    (its links reset: closed 1008) still had its edit taken and stored, as a restore under way once
    did (test_access.test_a_restore_under_way_when_the_links_are_reset_is_refused)."""
    from collab import room as room_module
    from collab.access import Access
    from collab.room import Room

    secret = "correct horse battery staple"
    admin = {"Authorization": f"Bearer {Access(secret.encode()).admin_token()}"}
    app = create_app(Settings(db=str(tmp_path / "rv.db"), secret=secret, unload_after=60))
    client = await aiohttp_client(app)
    resp = await client.post("/api/docs", json={"name": "doc"}, headers=admin)
    assert resp.status == 201
    edit = (await resp.json())["links"]["edit"].split("token=")[1]

    admin_ws, _ = await join(client, f"doc?token={Access(secret.encode()).admin_token()}", "admin")
    await push(admin_ws, 0, "admin", [[0, "hello"]])
    await recv_type(admin_ws, "updates", timeout=10)
    typist, welcome = await join(client, f"doc?token={edit}", "typist")
    assert welcome["version"] == 1
    await push(admin_ws, 1, "admin", [5, [0, "!"]])
    await recv_type(admin_ws, "updates", timeout=10)
    room = app[ROOMS].rooms["doc"]

    # The typist's next edit, based on version 1, is rebased a step at a time (every rebase counts as
    # heavy here); meanwhile news of another writer's commit starts a catch-up, which the push waits for.
    monkeypatch.setattr(room_module, "HEAVY_REBASE", 0)
    real_turns, real_news = room_module._rebase_taking_turns, Room._news_after
    reading, go_on = asyncio.Event(), asyncio.Event()

    async def turns_then_news(*args):
        result = await real_turns(*args)
        room.catch_up()  # what a commit of another process does here
        return result

    async def news_after(self, head):
        reading.set()
        await go_on.wait()
        return await real_news(self, head)

    monkeypatch.setattr(room_module, "_rebase_taking_turns", turns_then_news)
    monkeypatch.setattr(Room, "_news_after", news_after)
    await push(typist, 1, "typist", [[0, "X"], 5])
    try:
        await asyncio.wait_for(reading.wait(), 10)
        # while the push waits for the catch-up, the admin resets the links: the typist's session ends
        resp = await client.post("/api/docs/doc/links/reset", json={}, headers=admin)
        assert resp.status == 200
        assert all(m.conn.client_id != "typist" for m in room.members.values())
    finally:
        go_on.set()
    await until(lambda: room._catching is None and room._ready.is_set(), timeout=10)
    await room.settled()
    resp = await client.get("/api/docs/doc", headers=admin)
    body = await resp.json()
    assert body["doc"] == "hello!", "an edit of a session revoked before it was sequenced was stored"
    await admin_ws.close()
