"""Named versions reach the connections that asked (hello.checkpoints) as they are made.

Was: a version named, renamed or unnamed by one person showed in another
person's open History panel only when that panel next looked (at the next
edit it followed), since nothing told it. Now the connections whose hello
asked get a `checkpoints` frame once the name is committed (docs/protocol.md,
`checkpoints`); with several processes the news goes over Redis
(test_bus.py's test of it).
"""

from __future__ import annotations

import orjson
import pytest

from collab.app import create_app
from collab.errors import CLOSE_PROTOCOL
from collab.settings import Settings
from test_hardening import ADMIN, SECRET, links
from wsutil import USER, closed, push, recv, recv_type, send

BARRIER = {"type": "nonsense"}  # answered by an error: what came before it has come


async def hello(client, doc: str, client_id: str, token: str = "", **fields):
    ws = await client.ws_connect(f"/ws/{doc}?token={token}", protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": client_id, "version": None, "user": USER} | fields)
    return ws, await recv_type(ws, "welcome")


async def before_barrier(ws) -> list[dict]:
    """The frames (but cursor chatter) the server sent before its answer to a barrier sent now."""
    await send(ws, BARRIER)
    got = []
    while True:
        frame = await recv(ws)
        if frame["type"] == "error" and frame["code"] == "bad-message":
            return got
        if frame["type"] not in ("presences", "leave"):
            got.append(frame)


@pytest.fixture
async def team(aiohttp_client, tmp_path):
    """Access control on (so there are view sessions), one document of three versions."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "c.db"), secret=SECRET, write_rate=0)))
    resp = await client.post("/api/docs", json={"name": "doc"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 201, await resp.text()
    ws, _ = await hello(client, "doc", "seed", ADMIN)
    await push(ws, 0, "seed", [[0, "a"]], [1, [0, "b"]], [2, [0, "c"]])
    await recv_type(ws, "updates")
    await ws.close()
    return client


async def test_naming_renaming_and_unnaming_a_version_is_told_to_each_connection_that_asked(team):
    client = team
    tokens = await links(client)
    editor, _ = await hello(client, "doc", "ed", tokens["edit"], checkpoints=True)
    viewer, welcome = await hello(client, "doc", "vw", tokens["view"], checkpoints=True)
    assert welcome["role"] == "view"
    stock, _ = await hello(client, "doc", "st", tokens["edit"])  # a stock client: no such field
    declined, _ = await hello(client, "doc", "no", tokens["edit"], checkpoints=False)

    async def name(version, label, status=200):
        resp = await client.post(f"/api/docs/doc/checkpoints?token={tokens['edit']}",
                                 json={"version": version, "name": label})
        assert resp.status == status, await resp.text()

    await name(2, "draft")
    await name(2, "draft two")
    await name(1, "first")
    await name(2, None)
    await name(7, "no such version", status=400)  # refused: nothing to tell
    await name(1, "   ", status=400)
    expected = [{"type": "checkpoints", "version": v} for v in (2, 2, 1, 2)]
    assert await before_barrier(editor) == expected
    assert await before_barrier(viewer) == expected
    assert await before_barrier(stock) == []
    assert await before_barrier(declined) == []
    listed = await (await client.get(f"/api/docs/doc/checkpoints?token={tokens['view']}")).json()
    assert [(c["version"], c["name"]) for c in listed["checkpoints"]] == [(1, "first")]
    for ws in (editor, viewer, stock, declined):
        await ws.close()


async def test_a_name_given_where_nobody_has_the_document_open_is_not_an_error(team):
    client = team
    resp = await client.post("/api/docs/doc/checkpoints", json={"version": 1, "name": "quiet"},
                             headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    ws, _ = await hello(client, "doc", "late", ADMIN, checkpoints=True)
    assert await before_barrier(ws) == []  # old news is not sent on joining: the list is read then
    await ws.close()


@pytest.mark.parametrize("value", ["yes", 1, 0, [], {}])
async def test_a_hello_checkpoints_that_is_not_a_boolean_is_refused(aiohttp_client, tmp_path, value):
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "c.db"))))
    ws = await client.ws_connect("/ws/doc", protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": "c", "version": None, "user": USER, "checkpoints": value})
    frame = await recv(ws)
    assert (frame["type"], frame["code"]) == ("error", "bad-message"), frame
    assert "hello.checkpoints" in frame["message"]
    assert (await closed(ws))[0] == CLOSE_PROTOCOL


async def test_a_hello_checkpoints_of_null_is_absent(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "c.db"))))
    ws, welcome = await hello(client, "doc", "c", checkpoints=None)
    assert welcome["type"] == "welcome"
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": [[0, "x"]]}]})
    await recv_type(ws, "updates")
    resp = await client.post("/api/docs/doc/checkpoints", json={"version": 1, "name": "one"})
    assert resp.status == 200, await resp.text()
    assert await before_barrier(ws) == []
    await ws.close()


def test_the_frame_is_what_the_protocol_says():
    from collab.protocol import checkpoints_frame
    assert orjson.loads(checkpoints_frame(12)) == {"type": "checkpoints", "version": 12}
