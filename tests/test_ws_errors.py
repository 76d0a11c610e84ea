"""Bad input over the WebSocket: one test per error code and close code.

Each test checks the refusal (frame and/or close code), that the other client
is still served (its next push is acknowledged), and that the stored document
is exactly what the accepted updates made.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from collab.app import ROOMS, create_app
from collab.errors import ProtocolError
from collab.protocol import Push
from collab.rebase import Update
from collab.changes import ChangeSet, utf16_len
from collab.settings import Settings
from wsutil import closed, connect, join, push, recv, recv_type, send


@pytest.fixture
def settings(tmp_path):
    return Settings(db=str(tmp_path / "t.db"), max_frame=64 * 1024, max_doc=1000, max_updates=5,
                    hello_timeout=1.0, unload_after=60)


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))


async def setup_pair(client, doc="d"):
    """Two clients on one document holding 'abc' at version 1."""
    a, _ = await join(client, doc, "A")
    b, _ = await join(client, doc, "B")
    await push(a, 0, "A", [[0, "abc"]])
    assert (await recv_type(a, "updates"))["from"] == 0
    assert (await recv_type(b, "updates"))["from"] == 0
    return a, b


async def stored(client, doc="d"):
    resp = await client.get(f"/api/docs/{doc}")
    assert resp.status == 200
    return await resp.json()


async def still_served(client, ws, client_id, version, doc="d"):
    """`ws` can still push and gets its ack; the stored text grows by exactly that."""
    before = await stored(client, doc)
    assert before["version"] == version
    await push(ws, version, client_id, [utf16_len(before["doc"]), [0, "!"]])
    ack = await recv_type(ws, "updates")
    while ack["from"] < version:  # others' earlier updates this socket had not read yet
        ack = await recv_type(ws, "updates")
    assert ack["from"] == version and ack["updates"][0]["clientID"] == client_id
    after = await stored(client, doc)
    assert after == {"name": doc, "version": version + 1, "doc": before["doc"] + "!"}


async def expect_error(ws, code):
    frame = await recv_type(ws, "error")
    assert frame["code"] == code, frame
    assert frame["message"]
    return frame


async def test_bad_json(client):
    a, b = await setup_pair(client)
    await send(a, "{not json")
    await expect_error(a, "bad-json")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)  # the connection stays open
    await still_served(client, b, "B", 2)


@pytest.mark.parametrize("frame", [
    [1, 2, 3],
    {"no": "type"},
    {"type": "launch"},
    {"type": "push", "version": "1", "updates": []},
    {"type": "push", "version": 1, "updates": {}},
    {"type": "push", "version": 1, "updates": [{"changes": [3]}]},
    {"type": "push", "version": 1, "updates": [{"clientID": "A"}]},
    {"type": "push", "version": 1, "updates": [{"clientID": "B", "changes": [3, [0, "x"]]}]},
    {"type": "presence", "version": 1, "ranges": [{"anchor": -1, "head": 0}]},
    {"type": "presence", "version": 1, "ranges": "all"},
    {"type": "hello", "clientID": "A", "version": None},
    {"type": "presence", "version": [[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]], "ranges": []},
    '{"type": "push", "version": ' + "[" * 1000 + "]" * 1000 + ', "updates": []}',  # found by the fuzzer
    {"type": "push", "version": "v" * 50_000, "updates": []},
])
async def test_bad_message(client, frame):
    a, b = await setup_pair(client)
    await send(a, frame if isinstance(frame, str) else orjson.dumps(frame).decode())
    error = await expect_error(a, "bad-message")
    assert len(error["message"]) < 300  # never echoes what was sent at length
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)
    await still_served(client, b, "B", 2)


@pytest.mark.parametrize("changes", [
    [4, [0, "x"]],             # longer than the document
    [2],                       # shorter than the document
    [3, [0, "a\nb"]],          # LF inside a line
    [3, [0, "a\rb"]],          # CR inside a line
    [-1, 4],                   # negative length
    [1.5, [0, "x"], 1.5],      # float lengths
    [True, [0, "x"], 2],       # bool is not a length
    "abc",                     # not a list
    [3, [0, 7]],               # inserted line not a string
    [3, []],                   # empty replacement
])
async def test_bad_changes(client, changes):
    a, b = await setup_pair(client)
    await push(a, 1, "A", changes)
    await expect_error(a, "bad-changes")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)
    await still_served(client, b, "B", 2)


async def test_bad_changes_cut_surrogate_pair(client):
    a, b = await setup_pair(client)
    await push(a, 1, "A", [3, [0, "😀"]])
    await recv_type(a, "updates")
    await recv_type(b, "updates")
    await push(a, 2, "A", [4, [0, "x"], 1])  # between the two halves of the emoji
    await expect_error(a, "bad-changes")
    assert await stored(client) == {"name": "d", "version": 2, "doc": "abc😀"}
    await still_served(client, b, "B", 2)


async def test_push_is_all_or_nothing(client):
    a, b = await setup_pair(client)
    # The first update is fine, the second cuts the pair the first inserted.
    await push(a, 1, "A", [3, [0, "😀"]], [4, [0, "x"], 1])
    await expect_error(a, "bad-changes")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, b, "B", 1)


async def test_bad_version(client):
    a, b = await setup_pair(client)
    await push(a, 7, "A", [3, [0, "x"]])
    await expect_error(a, "bad-version")
    await send(a, {"type": "presence", "version": 9, "ranges": [{"anchor": 0, "head": 0}]})
    await expect_error(a, "bad-version")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)
    await still_served(client, b, "B", 2)


async def test_read_only_session_cannot_push(client):
    """No access control is configured here, so a view session is made directly on the room."""
    a, b = await setup_pair(client)
    room = client.server.app[ROOMS].rooms["d"]
    viewer = next(m for m in room.members.values() if m.conn.client_id == "A")
    viewer.conn.role = "view"
    await push(a, 1, "A", [3, [0, "x"]])
    await expect_error(a, "read-only")
    with pytest.raises(ProtocolError) as err:
        await room.push(viewer, Push(1, [Update("A", ChangeSet.from_json([3, [0, "x"]]))]))
    assert err.value.code == "read-only"
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, b, "B", 1)


async def test_too_large_document(client):
    a, b = await setup_pair(client)
    await push(a, 1, "A", [3, [0, "x" * 998]])  # 1001 > max_doc 1000
    await expect_error(a, "too-large")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)
    await still_served(client, b, "B", 2)


async def test_too_many_updates_in_one_push(client):
    a, b = await setup_pair(client)
    await push(a, 1, "A", *([[3 + k, [0, "x"]] for k in range(6)]))  # max_updates is 5
    await expect_error(a, "too-large")
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, a, "A", 1)


async def test_frame_too_large_closes_1009(client):
    a, b = await setup_pair(client)
    await push(a, 1, "A", [3, [0, "x" * 70_000]])  # frame over max_frame (64 KiB)
    code, _ = await closed(a)
    assert code == 1009
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, b, "B", 1)


async def test_binary_frame_refused(client):
    a, b = await setup_pair(client)
    await a.send_bytes(b'{"type":"push"}')
    await expect_error(a, "bad-message")
    await still_served(client, a, "A", 1)


async def test_no_hello_first_closes_4000(client):
    a, b = await setup_pair(client)
    c = await connect(client, "d")
    await push(c, 1, "C", [3, [0, "x"]])
    frame = await recv(c)
    assert frame["type"] == "error" and frame["code"] == "bad-message"
    code, _ = await closed(c)
    assert code == 4000
    assert await stored(client) == {"name": "d", "version": 1, "doc": "abc"}
    await still_served(client, b, "B", 1)


async def test_silent_connection_closes_4000(client):
    c = await connect(client, "d")
    code, _ = await closed(c, timeout=5)
    assert code == 4000


async def test_bad_hello_closes_4000(client):
    a, b = await setup_pair(client)
    c = await connect(client, "d")
    await send(c, {"type": "hello", "clientID": "", "version": None})
    assert (await recv(c))["code"] == "bad-message"
    assert (await closed(c))[0] == 4000
    c = await connect(client, "d")
    await send(c, {"type": "hello", "clientID": "C", "version": None,
                   "user": {"name": "x", "color": "red;background:url(evil)"}})
    assert (await recv(c))["code"] == "bad-message"
    assert (await closed(c))[0] == 4000
    await still_served(client, b, "B", 1)


async def test_same_client_id_replaces_older_connection_4001(client):
    a, b = await setup_pair(client)
    a2, welcome = await join(client, "d", "A", version=1)
    assert welcome["version"] == 1 and welcome["from"] == 1 and welcome["updates"] == []
    code, _ = await closed(a)
    assert code == 4001
    assert (await recv_type(b, "leave"))["session"]
    await still_served(client, a2, "A", 1)
    await still_served(client, b, "B", 2)


async def test_bad_document_name_is_refused_before_upgrade(client):
    resp = await client.get("/ws/bad%20name")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad-request"
    resp = await client.get("/api/docs/" + "x" * 101)
    assert resp.status == 400


async def test_shutdown_closes_1001_after_flushing(aiohttp_client, settings):
    app = create_app(settings)
    client = await aiohttp_client(app)
    a, b = await setup_pair(client)
    await push(a, 1, "A", [3, [0, "x"]])
    room = app[ROOMS].rooms["d"]
    for _ in range(500):  # until the server has read the push (accepted, maybe not yet durable)
        if room.seq.version == 2:
            break
        await asyncio.sleep(0.001)
    assert room.seq.version == 2
    await app[ROOMS].shutdown()
    # The push is durable and acknowledged before the close.
    assert (await recv_type(a, "updates"))["from"] == 1
    assert (await closed(a))[0] == 1001
    assert (await closed(b))[0] == 1001
    assert await stored(client) == {"name": "d", "version": 2, "doc": "abcx"}


async def test_refusals_of_a_websocket_address_before_the_upgrade_keep_the_one_error_shape(aiohttp_client, tmp_path):
    """The error middleware hands a WebSocket's handler on without awaiting it (its coroutine would live
    as long as the connection), so the handler answers its own refusals: they must keep the JSON shape,
    as must an address under /ws/ that no route takes."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "a.db"))))
    for path, status, code in (("/ws/a/b", 404, "not-found"), ("/ws/bad%20name", 400, "bad-request"),
                               ("/ws/doc", 400, "bad-request")):  # the last: not a WebSocket request
        resp = await client.get(path)
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code), (path, body)
    resp = await client.get("/ws/doc", headers={"Origin": "https://elsewhere.example", "Connection": "Upgrade",
                                                "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (resp.status, (await resp.json())["error"]["code"]) == (403, "forbidden")
