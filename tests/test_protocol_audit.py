"""Audit of docs/protocol.md against a live `collab serve` (a real subprocess, no mocks).

Two parts:

* conformance: edge cases the contract names (limits exactly at and one past
  their boundary, wrong JSON types in every hello/push/presence field, frames
  before and after hello, binary frames, lone surrogates, the HTTP API's bad
  parameters), each checked for the code and close code the document gives,
  and that the server and the document go on working afterwards;
* at the end, what the audit found the server or the document getting
  wrong (maxFrame at its boundary and on inflated messages; two answers the
  document gave the wrong shape for), kept since.

Every test uses its own document names, so the module shares one server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import uuid
import zlib

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from serverproc import ServerProcess

MAX_FRAME = 65536
MAX_DOC = 1000
MAX_UPDATES = 5


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One `collab serve` with small limits for the whole module (each test uses its own documents)."""
    tmp = tmp_path_factory.mktemp("audit")
    proc = ServerProcess(tmp / "audit.db", log_path=tmp / "server.log", extra_args=[
        "--max-frame", str(MAX_FRAME), "--max-doc", str(MAX_DOC), "--max-updates", str(MAX_UPDATES),
        "--hello-timeout", "2", "--write-rate", "0", "--min-free-disk", "0"])
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
async def http(live):
    async with aiohttp.ClientSession(base_url=live.url) as session:
        yield session


def doc_name(prefix: str = "audit") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ helpers

async def recv(ws, timeout: float = 5.0):
    """The next message: a dict for a text frame, else (type, data, extra)."""
    msg = await asyncio.wait_for(ws.receive(), timeout)
    if msg.type == WSMsgType.TEXT:
        return orjson.loads(msg.data)
    return (msg.type, msg.data, msg.extra)


async def quiet(ws, timeout: float = 0.4):
    """The next message within `timeout`, or None."""
    try:
        return await recv(ws, timeout)
    except asyncio.TimeoutError:
        return None


async def connect(http, doc: str, **kw):
    return await http.ws_connect(f"/ws/{doc}", protocols=["collab.v1"], **kw)


async def hello(http, doc: str, client_id: str, version=None, **extra):
    ws = await connect(http, doc)
    await ws.send_str(json.dumps({"type": "hello", "clientID": client_id, "version": version, **extra}))
    return ws, await recv(ws)


def push_frame(version: int, client_id: str, *changes) -> str:
    return json.dumps({"type": "push", "version": version,
                       "updates": [{"clientID": client_id, "changes": c} for c in changes]})


async def expect_error(ws, code: str, close: int | None = None) -> dict:
    """An `error` frame with `code` (presences skipped), then, if `close`, the close with that code."""
    while True:
        frame = await recv(ws)
        if isinstance(frame, dict) and frame["type"] in ("presences", "leave"):
            continue
        break
    assert isinstance(frame, dict) and frame["type"] == "error" and frame["code"] == code, frame
    assert frame["message"]
    if close is not None:
        closing = await recv(ws)
        assert closing[0] == WSMsgType.CLOSE and closing[1] == close, closing
    return frame


async def made_doc(http, text: str = "abc"):
    """A new document holding `text` at version 1, with client A connected (its welcome read)."""
    name = doc_name()
    a, welcome = await hello(http, name, "A")
    assert welcome["type"] == "welcome"
    await a.send_str(push_frame(0, "A", [[0, text]]))
    ack = await recv(a)
    assert ack["type"] == "updates" and ack["from"] == 0
    return name, a


async def stored(http, name: str):
    resp = await http.get(f"/api/docs/{name}")
    return resp.status, (await resp.json())


async def another_client_edits(http, name: str) -> None:
    """The document still takes an edit from a fresh client, and stores exactly that edit."""
    status, before = await stored(http, name)
    assert status == 200, before
    client_id = f"check-{uuid.uuid4().hex[:6]}"
    ws, welcome = await hello(http, name, client_id)
    assert welcome["type"] == "welcome" and welcome["version"] == before["version"], welcome
    length = len(before["doc"].encode("utf-16-le")) // 2
    await ws.send_str(push_frame(before["version"], client_id, [length, [0, "!"]]))
    ack = await recv(ws)
    while ack["type"] != "updates":
        ack = await recv(ws)
    assert ack["from"] == before["version"], ack
    assert await stored(http, name) == (200, {"name": name, "version": before["version"] + 1,
                                              "doc": before["doc"] + "!"})
    await ws.close()


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame, as RFC 6455 lays it out (for fragments and hand-made compression)."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def padded_hello(size: int, client_id: str = "c") -> bytes:
    """A valid hello of exactly `size` bytes (white space after the object is JSON too)."""
    text = json.dumps({"type": "hello", "clientID": client_id, "version": None}).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """Send `request` as is; the answer's head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


# =========================================================== conformance

HELLO = {"type": "hello", "clientID": "c1", "version": None}


@pytest.mark.parametrize("fields", [
    {"clientID": "x" * 129}, {"clientID": ""}, {"clientID": 5}, {"clientID": None}, {"clientID": "a\u0000b"},
    {"version": 1.0}, {"version": True}, {"version": -1}, {"version": "0"}, {"version": {}},
    {"user": []}, {"user": {"name": "n" * 101}}, {"user": {"name": 5}},
    {"user": {"color": "#12"}}, {"user": {"color": "red"}}, {"user": {"color": "#abcdef\n"}},
    {"person": "p" * 65}, {"person": ""}, {"person": 1}, {"person": "a b"},
    {"resumeKey": "k" * 129}, {"resumeKey": ""}, {"resumeKey": 7},
    {"docId": "d" * 65}, {"docId": ""}, {"docId": 12}, {"docId": {"a": 1}}, {"docId": True}, {"docId": ["x"]},
    {"opened": 2 ** 53}, {"opened": 1.5}, {"opened": -1}, {"opened": True}, {"opened": "1"},
])
async def test_bad_hello_field_is_bad_message_and_4000(http, fields):
    name, a = await made_doc(http)
    ws = await connect(http, name)
    await ws.send_str(json.dumps({**HELLO, **fields}))
    await expect_error(ws, "bad-message", 4000)
    await another_client_edits(http, name)


@pytest.mark.parametrize("fields", [
    {"clientID": "x" * 128}, {"user": {"name": "n" * 100}}, {"user": {"color": "#abcd"}}, {"user": {}},
    {"person": "p" * 64}, {"resumeKey": "k" * 128}, {"docId": "d" * 64}, {"opened": 2 ** 53 - 1},
    {"opened": 0}, {"version": 2 ** 64 - 1}, {"unknownField": 1},
    {"user": None}, {"person": None}, {"resumeKey": None}, {"docId": None}, {"opened": None},
])
async def test_hello_fields_at_their_limits_are_welcomed(http, fields):
    name, a = await made_doc(http)
    ws = await connect(http, name)
    await ws.send_str(json.dumps({**HELLO, **fields}))
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    if "version" in fields:  # ahead of the server: the full text, never a resume
        assert welcome["doc"] == "abc" and "from" not in welcome
    await another_client_edits(http, name)


@pytest.mark.parametrize("first, code", [
    ("{nope", "bad-json"),
    ('{"type":"hello","clientID":"c","version":null,"user":{"name":"\\ud800"}}', "bad-json"),
    ("[1]", "bad-message"),
    ('{"clientID":"c"}', "bad-message"),
    ('{"type":"nope"}', "bad-message"),
    ('{"type":"push","version":0,"updates":[]}', "bad-message"),
    ('{"type":"presence","version":0,"ranges":[]}', "bad-message"),
    (json.dumps({"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": [1]}] * 6}), "too-large"),
])
async def test_first_frame_not_hello_gets_its_code_and_4000(http, first, code):
    name, a = await made_doc(http)
    ws = await connect(http, name)
    await ws.send_str(first)
    await expect_error(ws, code, 4000)
    await another_client_edits(http, name)


async def test_binary_and_non_utf8_first_frames(http):
    name, a = await made_doc(http)
    ws = await connect(http, name)
    await ws.send_bytes(json.dumps(HELLO).encode())
    await expect_error(ws, "bad-message", 4000)
    ws = await connect(http, name)
    await ws._writer.send_frame(b'{"type":"\xff"}', WSMsgType.TEXT)
    await expect_error(ws, "bad-json", 4000)
    await another_client_edits(http, name)


async def test_no_hello_in_time_is_bad_message_4000(http):
    name, a = await made_doc(http)
    ws = await connect(http, name)
    await expect_error(ws, "bad-message", 4000)  # --hello-timeout 2


@pytest.mark.parametrize("frame, code", [
    ('{"type":"push","version":1,"updates":[{"clientID":"A","changes":[3,[0,"\\ud800"]]}]}', "bad-json"),
    (push_frame(2, "A", [3, [0, "x"]]), "bad-version"),
    (push_frame(2, "A"), "bad-version"),
    (push_frame(2 ** 64 - 1, "A", [3, [0, "x"]]), "bad-version"),
    (push_frame(1, "B", [3, [0, "x"]]), "bad-message"),
    (push_frame(1, "B", [3]), "bad-message"),
    (json.dumps({"type": "push", "version": 1.0, "updates": []}), "bad-message"),
    (json.dumps({"type": "push", "version": True, "updates": []}), "bad-message"),
    (json.dumps({"type": "push", "version": None, "updates": []}), "bad-message"),
    (json.dumps({"type": "push", "version": -1, "updates": []}), "bad-message"),
    (json.dumps({"type": "push", "version": 1, "updates": None}), "bad-message"),
    (json.dumps({"type": "push", "version": 1, "updates": {}}), "bad-message"),
    (json.dumps({"type": "push", "version": 1, "updates": [1]}), "bad-message"),
    (json.dumps({"type": "push", "version": 1, "updates": [{"clientID": "A"}]}), "bad-message"),
    (json.dumps({"type": "push", "version": 1, "updates": [{"clientID": None, "changes": [3]}]}), "bad-message"),
    (push_frame(1, "A", None), "bad-changes"),
    (push_frame(1, "A", [4, [0, "x"]]), "bad-changes"),
    (push_frame(1, "A", [True, [0, "x"], 2]), "bad-changes"),
    (push_frame(1, "A", [3.0, [0, "x"]]), "bad-changes"),
    (push_frame(1, "A", [-1, [0, "x"], 4]), "bad-changes"),
    (push_frame(1, "A", [2 ** 63, [0, "x"]]), "bad-changes"),
    (push_frame(1, "A", [3, {"a": 1}]), "bad-changes"),
    (push_frame(1, "A", [3, []]), "bad-changes"),
    (push_frame(1, "A", [3, [0, 5]]), "bad-changes"),
    (push_frame(1, "A", [3, [0, "a\nb"]]), "bad-changes"),
    (push_frame(1, "A", [3, [0, "a\rb"]]), "bad-changes"),
    (push_frame(1, "A", [3, [0, "a\u0000b"]]), "bad-changes"),
    (push_frame(1, "A", *[[3]] * (MAX_UPDATES + 1)), "too-large"),
    (push_frame(1, "A", [3, [0, "x" * (MAX_DOC - 2)]]), "too-large"),
    (json.dumps({"type": "presence", "version": 2, "ranges": []}), "bad-version"),
    (json.dumps({"type": "presence", "version": 1, "ranges": [{"anchor": -1, "head": 0}]}), "bad-message"),
    (json.dumps({"type": "presence", "version": 1, "ranges": [{"anchor": 1.0, "head": 0}]}), "bad-message"),
    (json.dumps({"type": "presence", "version": 1, "ranges": [{"anchor": 1}]}), "bad-message"),
    (json.dumps({"type": "presence", "version": 1, "ranges": [{"anchor": 0, "head": 0}] * 101}), "too-large"),
    (json.dumps({"type": "presence", "version": 1, "ranges": None}), "bad-message"),
    (json.dumps({"type": "presence", "version": None, "ranges": []}), "bad-message"),
    (json.dumps({"type": "hello", "clientID": "A", "version": None}), "bad-message"),
    (json.dumps({"type": "nope"}), "bad-message"),
    (json.dumps({"type": 1}), "bad-message"),
    ("[]", "bad-message"),
    ("{nope", "bad-json"),
])
async def test_bad_frame_after_hello_keeps_connection_and_document(http, frame, code):
    name, a = await made_doc(http)
    await a.send_str(frame)
    await expect_error(a, code)
    assert await stored(http, name) == (200, {"name": name, "version": 1, "doc": "abc"})
    # the connection stays open: it can still push
    await a.send_str(push_frame(1, "A", [3, [0, "d"]]))
    ack = await recv(a)
    while ack["type"] != "updates":
        ack = await recv(a)
    assert ack["from"] == 1
    await another_client_edits(http, name)


async def test_binary_and_non_utf8_frames_after_hello(http):
    name, a = await made_doc(http)
    await a.send_bytes(b'{"type":"presence","version":1,"ranges":[]}')
    await expect_error(a, "bad-message")
    await a._writer.send_frame(b'{"type":"\xc3\x28"}', WSMsgType.TEXT)
    await expect_error(a, "bad-json")
    await another_client_edits(http, name)


async def test_empty_push_gets_no_answer_and_limits_at_boundary_pass(http):
    name, a = await made_doc(http)
    await a.send_str(push_frame(1, "A"))
    assert await quiet(a) is None
    await a.send_str(push_frame(1, "A", *[[3]] * MAX_UPDATES))  # exactly maxUpdates: keep-only updates
    ack = await recv(a)
    assert ack["type"] == "updates" and ack["from"] == 1 and len(ack["updates"]) == MAX_UPDATES
    # exactly maxDoc UTF-16 units, the last two an emoji
    await a.send_str(push_frame(6, "A", [3, [0, "x" * (MAX_DOC - 5) + "\U0001F600"]]))
    ack = await recv(a)
    assert ack["type"] == "updates", ack
    await a.send_str(push_frame(7, "A", [MAX_DOC, [0, "y"]]))
    await expect_error(a, "too-large")
    await a.send_str(json.dumps({"type": "presence", "version": 7, "ranges": [{"anchor": 0, "head": 0}] * 100}))
    assert (await recv(a))["type"] == "presences"


async def test_split_surrogate_pair_is_bad_changes(http):
    name, a = await made_doc(http, "a\U0001F600b")
    for changes in ([2, [1], 1], [2, [0, "x"], 2]):
        await a.send_str(push_frame(1, "A", changes))
        await expect_error(a, "bad-changes")
    assert (await stored(http, name))[1]["doc"] == "a\U0001F600b"
    await another_client_edits(http, name)


async def test_presence_positions_are_clamped(http):
    name, a = await made_doc(http)
    await a.send_str(json.dumps({"type": "presence", "version": 1,
                                 "ranges": [{"anchor": 99, "head": 2 ** 63}, {"anchor": 1, "head": 0}]}))
    frame = await recv(a)
    assert frame["type"] == "presences"
    assert frame["peers"][0]["ranges"] == [{"anchor": 3, "head": 3}, {"anchor": 1, "head": 0}]


async def test_new_document_is_made_only_by_an_accepted_first_edit(http):
    name = doc_name("unborn")
    a, welcome = await hello(http, name, "A")
    assert welcome["type"] == "welcome" and welcome["doc"] == "" and "docId" not in welcome
    await a.send_str(push_frame(0, "A"))
    await a.send_str(push_frame(0, "A", [[0, "x" * (MAX_DOC + 1)]]))
    await expect_error(a, "too-large")
    await a.send_str(push_frame(0, "A", [[0, "\u0000"]]))
    await expect_error(a, "bad-changes")
    assert (await stored(http, name))[0] == 404
    listing = await (await http.get("/api/docs")).json()
    assert name not in [d["name"] for d in listing["docs"]]
    await a.send_str(push_frame(0, "A", [[0, "hi"]]))
    ack = await recv(a)
    assert ack["type"] == "updates" and ack["from"] == 0 and ack["docId"]


async def test_resume_comes_in_the_broadcast_frames(http):
    name, a = await made_doc(http)
    for v in (1, 2):
        await a.send_str(push_frame(v, "A", [2 + v, [0, str(v)]]))
        assert (await recv(a))["from"] == v
    await a.send_str(json.dumps({"type": "presence", "version": 3, "ranges": [{"anchor": 1, "head": 1}]}))
    assert (await recv(a))["type"] == "presences"
    b, welcome = await hello(http, name, "B", version=0)
    assert welcome["from"] == 0 and welcome["version"] == 1 and welcome["peers"] == [] and welcome["docId"]
    assert [(await recv(b))["from"] for _ in range(2)] == [1, 2]
    assert (await recv(b))["type"] == "presences"
    c, welcome2 = await hello(http, name, "C", version=1, docId="0" * 16)  # another document's docId
    assert welcome2["doc"] == "abc12" and "from" not in welcome2
    d, welcome3 = await hello(http, name, "D", version=3, docId=welcome["docId"])
    assert welcome3["from"] == 3 and welcome3["updates"] == [] and welcome3["version"] == 3


async def test_takeover_with_resume_key_and_leave(http):
    name, a = await made_doc(http)
    c, welcome = await hello(http, name, "C")
    c2, welcome2 = await hello(http, name, "C", resumeKey=welcome["resumeKey"])
    assert welcome2["type"] == "welcome" and welcome2["resumeKey"] == welcome["resumeKey"]
    closing = await recv(c)
    assert closing[0] == WSMsgType.CLOSE and closing[1] == 4001  # no error frame before it
    assert (await recv(a)) == {"type": "leave", "session": welcome["session"]}
    await c2.close()
    assert (await recv(a)) == {"type": "leave", "session": welcome2["session"]}


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/api/docs/bad!name", None, 400, "bad-request"),
    ("GET", "/api/docs/" + "x" * 101, None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}-missing", None, 404, "not-found"),
    ("GET", "/nothing-here", None, 404, "not-found"),
    ("GET", "/static/no-such-bundle-AAAA1111.js", None, 404, "not-found"),  # was: 404 with an empty body
    ("GET", "/static/no-such-folder/", None, 404, "not-found"),
    ("PUT", "/api/docs/{doc}", {}, 405, "bad-request"),
    ("DELETE", "/api/docs/{doc}/history", None, 405, "bad-request"),
    ("GET", "/api/docs/{doc}/history?limit=0", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/history?limit=1001", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/history?limit=-1", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/history?before=abc", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/history?before=", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/versions/2", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/versions/-1", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/versions/1.0", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/versions/99999999999999999999999", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/authors?version=2", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/export?format=pdf", None, 400, "bad-request"),
    ("GET", "/api/docs/{doc}/export?version=9", None, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": "1"}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 1.0}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": True}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": None}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 2}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": -1}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 0, "author": 5}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 0, "author": "x" * 101}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 0, "person": "a b"}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", {"version": 0, "color": "red"}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/restore", [0], 400, "bad-request"),
    ("POST", "/api/docs/{doc}/checkpoints", {"version": 1, "name": "x" * 101}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/checkpoints", {"version": 1, "name": "\u200b "}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/checkpoints", {"version": 9, "name": "x"}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/fork", {"name": "bad name"}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/fork", {"name": 5}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/fork", {"name": "{doc}"}, 409, "conflict"),
    ("POST", "/api/docs", {"name": "{doc}"}, 409, "conflict"),
    ("POST", "/api/docs", {"name": ""}, 400, "bad-request"),
    ("POST", "/api/docs/{doc}/rename", {"name": 5}, 400, "bad-request"),
])
async def test_http_bad_parameters(http, method, path, body, status, code):
    name, a = await made_doc(http)
    path = path.replace("{doc}", name)
    if isinstance(body, dict):
        body = {k: v.replace("{doc}", name) if isinstance(v, str) else v for k, v in body.items()}
    resp = await http.request(method, path, json=body) if body is not None else await http.request(method, path)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"]["code"] == code
    assert await stored(http, name) == (200, {"name": name, "version": 1, "doc": "abc"})
    await another_client_edits(http, name)


async def test_http_body_limit_and_not_json(http):
    name = doc_name()
    for size, status in ((MAX_FRAME, 201), (MAX_FRAME + 1, 413)):
        text = json.dumps({"name": name})
        body = (text[:-1] + " " * (size - len(text)) + "}").encode()
        resp = await http.post("/api/docs", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == status, await resp.text()
        if status == 201:
            assert (await http.delete(f"/api/docs/{name}")).status == 200
        else:
            assert (await resp.json())["error"]["code"] == "too-large"
    resp = await http.post("/api/docs", data=b"{nope", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad-json"
    # Was: "str is not valid UTF-8: surrogates not allowed" (orjson's words, naming a str nobody sent).
    resp = await http.post("/api/docs", data=b'\xff\xfe{"name": "x"}', headers={"Content-Type": "application/json"})
    error = (await resp.json())["error"]
    assert (resp.status, error["code"], error["message"]) == (400, "bad-json", "the request body is not UTF-8 (byte 0)")


async def test_http_numbers_past_every_version_are_said_to_be_so(http):
    """Was: a number of more than 18 digits was 'must be a non-negative integer' (it is one), and a
    history page `before` it was refused where a smaller number past the head reads from the head; a
    length of more than 64 bits in a push's changes was 'got float' (orjson reads it as one)."""
    name, a = await made_doc(http)
    huge = "9" * 24
    resp = await http.get(f"/api/docs/{name}/versions/{huge}")
    assert (resp.status, (await resp.json())["error"]["message"]) == (
        400, f"version '{huge[:40]}' is beyond the latest version 1")
    pages = [await (await http.get(f"/api/docs/{name}/history?before={before}")).json() for before in (huge, "99")]
    assert pages[0] == pages[1] and [e["version"] for e in pages[0]["entries"]] == [1], pages
    # Leading zeros are no digits of the number (int() alone refuses more than 4,300 digits: a 500).
    resp = await http.get(f"/api/docs/{name}/versions/{'0' * 4400}1")
    assert resp.status == 200 and (await resp.json())["doc"] == "abc", await resp.text()
    resp = await http.get(f"/api/docs/{name}/history?before={'0' * 5000}2")
    assert [e["version"] for e in (await resp.json())["entries"]] == [1]
    await a.send_str('{"type": "push", "version": 1, "updates": [{"clientID": "A", "changes": [3, [%s]]}]}' % huge)
    error = await recv(a)
    assert error["type"] == "error" and "a number too large (over 64 bits)" in error["message"], error
    assert await stored(http, name) == (200, {"name": name, "version": 1, "doc": "abc"})


@pytest.mark.parametrize("offer, answer", [
    (None, None),
    ("permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits=10",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=9",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
    ("permessage-deflate; server_max_window_bits=8", None),
])
async def test_compression_negotiation(http, offer, answer):
    import base64
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
               "Sec-WebSocket-Protocol": "collab.v1"}
    if offer:
        headers["Sec-WebSocket-Extensions"] = offer
    resp = await http.get(f"/ws/{doc_name()}", headers=headers)
    assert resp.status == 101
    assert resp.headers.get("Sec-WebSocket-Protocol") == "collab.v1"
    assert resp.headers.get("Sec-WebSocket-Extensions") == answer
    resp.close()


# ============================================ found by this audit, now kept

@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
async def test_a_message_of_exactly_max_frame_bytes_is_welcomed_and_one_byte_more_is_1009(http, fragmented):
    """protocol.md: maxFrame is the bytes of one message ("a fragmented message counts whole"); only
    over it is close 1009. Was: aiohttp refuses a payload of its limit or more, so a message of exactly
    maxFrame bytes was closed with 1009, while an HTTP body of exactly maxFrame was taken."""
    name, a = await made_doc(http)
    for size, welcomed in ((MAX_FRAME, True), (MAX_FRAME + 1, False)):
        ws = await connect(http, name)
        message = padded_hello(size, f"exact-{size}")
        if fragmented:
            transport = ws._writer.transport
            transport.write(ws_frame(message[:20], 1, fin=False))
            transport.write(ws_frame(b"ping", 9))  # a control frame between fragments, as RFC 6455 allows
            transport.write(ws_frame(message[20:], 0, fin=True))
        else:
            await ws.send_str(message.decode())
        if welcomed:
            answer = await recv(ws)
            assert isinstance(answer, dict) and answer["type"] == "welcome", (size, answer)
        else:
            await expect_1009(ws)
        await ws.close()
    await another_client_edits(http, name)


async def expect_1009(ws) -> None:
    """Closed with 1009; the `error` frame before it may not come (protocol.md: the WebSocket library
    fails the connection itself)."""
    frame = await recv(ws)
    if isinstance(frame, dict):
        assert frame["type"] == "error" and frame["code"] == "too-large", frame
        frame = await recv(ws)
    assert frame[0] == WSMsgType.CLOSE and frame[1] == 1009, frame


def _deflated(message: bytes, level: int) -> bytes:
    """`message` as one permessage-deflate payload (level 0: stored blocks, a few bytes over the text)."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, -9)
    return (deflater.compress(message) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def test_max_frame_is_on_the_inflated_message_whether_or_not_it_came_compressed(http):
    """protocol.md: "maxFrame applies to the message once inflated: one that inflates past it is closed
    with 1009". Was: aiohttp held the compressed bytes to it too, so a message that inflates to less
    than maxFrame but takes maxFrame bytes or more on the wire (what deflate makes of text it cannot
    shrink) was closed with 1009. On a connection that agreed compression, a message may still come
    uncompressed: held to maxFrame too."""
    name, a = await made_doc(http)
    stored_blocks = padded_hello(MAX_FRAME - 16, "stored")
    assert len(_deflated(stored_blocks, 0)) >= MAX_FRAME
    cases = [  # (payload, RSV1, welcomed)
        (_deflated(stored_blocks, 0), 0x40, True),
        (_deflated(padded_hello(MAX_FRAME, "inflates-exactly"), 9), 0x40, True),
        (_deflated(padded_hello(MAX_FRAME + 1, "inflates-over"), 9), 0x40, False),
        (padded_hello(MAX_FRAME, "plain-exactly"), 0, True),
        (padded_hello(MAX_FRAME + 1, "plain-over"), 0, False),
    ]
    for payload, rsv, welcomed in cases:
        ws = await connect(http, name, compress=9)  # agrees permessage-deflate
        ws._writer.transport.write(ws_frame(payload, 1, rsv=rsv))
        if welcomed:
            answer = await recv(ws)
            assert isinstance(answer, dict) and answer["type"] == "welcome", (len(payload), rsv, answer)
        else:
            await expect_1009(ws)
        await ws.close()
    await another_client_edits(http, name)


@pytest.mark.parametrize("headers", [b"", b"Host: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}\r\n"],
                         ids=["no-host", "two-hosts"])
def test_an_http_1_1_request_without_one_host_is_a_400_from_the_parser(live, headers):
    """protocol.md (Host): an HTTP/1.1 request with no Host, or two, is refused by aiohttp's HTTP parser
    before any route runs (the audit found the document promising what the routes answer). It was
    answered in plain text; since audit 48 `collab serve` answers it in the JSON error shape too."""
    head, body = raw_http(live.port, b"GET /healthz HTTP/1.1\r\n" +
                          headers.replace(b"{port}", str(live.port).encode()) + b"Connection: close\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", head
    assert b"content-type: application/json" in head.lower(), (head, body)
    assert orjson.loads(body)["error"]["code"] == "bad-request", body


async def test_a_browser_opening_a_ws_path_as_a_page_gets_the_json_shape(http):
    """protocol.md: a refusal before the upgrade is in the HTTP API's error shape, also for a browser
    (the document's page-errors sentence now leaves /ws/ out, as the server does)."""
    resp = await http.get(f"/ws/{doc_name()}", headers={"Accept": "text/html,application/xhtml+xml"})
    assert resp.status == 400 and resp.content_type == "application/json", resp.content_type
    assert (await resp.json())["error"]["code"] == "bad-request"
