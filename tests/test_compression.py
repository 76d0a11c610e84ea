"""permessage-deflate (collab/deflate.py, ws.Socket, Peer's compressed frames) against a real server.

Raw sockets read the frame bits themselves (RSV1 on the first frame of a
compressed message only, never on a keystroke-sized frame); aiohttp's client
with compress=15 checks that a stock client gets along with what we agree.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import string
import struct
import zlib

import aiohttp
import orjson
import pytest
from serverproc import ServerProcess

from collab import deflate

OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium offers
TAIL = b"\x00\x00\xff\xff"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("compress") / "c.db", extra_args=["--max-frame", "400000"]) as s:
        yield s


def upgrade_head(port: int, doc: str, extensions: str | None = None) -> bytes:
    """A WebSocket upgrade request's head for /ws/`doc` (subprotocol collab.v1, and `extensions` offered)."""
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    return (f"GET /ws/{doc} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: collab.v1\r\n"
            f"{ext}\r\n").encode()


def masked_frame(payload: bytes, opcode: int = 1, rsv1: bool = False, fin: bool = True) -> bytes:
    """One client (masked) WebSocket frame."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + mask + masked


class Raw:
    """A WebSocket client on a bare socket: sends masked frames it builds, reads frames bit by bit."""

    def __init__(self, reader, writer, response: str):
        self.reader, self.writer, self.response = reader, writer, response

    @classmethod
    async def open(cls, port: int, doc: str, extensions: str | None = OFFER) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_head(port, doc, extensions))
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        assert head.startswith("HTTP/1.1 101"), head
        return cls(reader, writer, head)

    @property
    def extension(self) -> str | None:
        for line in self.response.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                return value.strip()
        return None

    def send(self, payload: bytes, opcode: int = 1, rsv1: bool = False, fin: bool = True) -> None:
        self.writer.write(masked_frame(payload, opcode, rsv1, fin))

    def send_json(self, value, compress: bool = False) -> None:
        data = orjson.dumps(value)
        if compress:
            c = zlib.compressobj(6, zlib.DEFLATED, -12)
            self.send((c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True)
        else:
            self.send(data)

    async def frame(self, timeout: float = 10.0) -> tuple[bool, bool, int, bytes]:
        """(fin, rsv1, opcode, payload) of the next frame."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        assert not b1 & 0x80, "server frames are never masked"
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def message(self, timeout: float = 10.0) -> tuple[dict, bool, list[bool]]:
        """The next text message: (its JSON, whether it came compressed, RSV1 of each of its frames). A ping
        read meanwhile is answered, as a browser does: unanswered, the server's heartbeat closes the
        connection half a period later, which a slow commit on a loaded machine made a flake in CI (a
        client that must not answer reads with `frame`)."""
        fin, rsv1, opcode, payload = await self._data_frame(timeout)
        assert opcode == 0x1, (opcode, payload[:100])
        rsvs, parts = [rsv1], [payload]
        while not fin:
            fin, rsv, opcode, payload = await self._data_frame(timeout)
            assert opcode == 0x0
            rsvs.append(rsv)
            parts.append(payload)
        data = b"".join(parts)
        if rsv1:
            data = zlib.decompressobj(-15).decompress(data + TAIL)
        return orjson.loads(data), rsv1, rsvs

    async def _data_frame(self, timeout: float) -> tuple[bool, bool, int, bytes]:
        """The next frame that is not a ping or a pong (control frames may come between a message's
        fragments too), answering pings."""
        while True:
            frame = await self.frame(timeout)
            if frame[2] == 0x9:
                self.send(frame[3], opcode=0xA)
            elif frame[2] != 0xA:
                return frame

    async def typed(self, kind: str, timeout: float = 10.0) -> tuple[dict, bool, list[bool]]:
        while True:
            m = await self.message(timeout)
            if m[0]["type"] == kind:
                return m
            assert m[0]["type"] in ("presences", "leave"), m[0]

    async def closed(self, timeout: float = 10.0) -> int:
        """The close code the server sent (frames before it are skipped)."""
        while True:
            _, _, opcode, payload = await self.frame(timeout)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def hello(self, client_id: str, compress: bool = False, version=None) -> None:
        self.send_json({"type": "hello", "clientID": client_id, "version": version,
                        "user": {"name": client_id, "color": "#336699"}}, compress)

    def close(self) -> None:
        self.writer.close()


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n:
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


async def make_doc(server: ServerProcess, doc: str, text: str) -> int:
    """Create `doc` holding `text` (plain frames); returns its version."""
    c = await Raw.open(server.port, doc, extensions=None)
    c.hello("maker")
    welcome, _, _ = await c.typed("welcome")
    c.send_json({"type": "push", "version": welcome["version"],
                 "updates": [{"clientID": "maker", "changes": [len(welcome["doc"]), [0, text]]}]})
    ack, _, _ = await c.typed("updates")
    c.close()
    return ack["from"] + 1


# ------------------------------------------------------------------ negotiation (pure)

def test_negotiate_answers_no_context_takeover_and_a_small_client_window():
    a = deflate.negotiate(OFFER)
    assert a is not None
    assert a.response == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                          f"client_max_window_bits={deflate.CLIENT_WBITS}")
    assert (a.server_wbits, a.client_wbits) == (15, deflate.CLIENT_WBITS)
    # no client_max_window_bits offered: the answer must not carry it, and the client may use 15 bits
    a = deflate.negotiate("permessage-deflate")
    assert "client_max_window_bits" not in a.response and a.client_wbits == 15
    # the client's own smaller window, and a server window it asks for, are kept
    a = deflate.negotiate("permessage-deflate; client_max_window_bits=9; server_max_window_bits=10")
    assert (a.server_wbits, a.client_wbits) == (10, 9) and "server_max_window_bits=10" in a.response


@pytest.mark.parametrize("header", [None, "", "x-webkit-deflate-frame", "permessage-deflate; foo",
                                    "permessage-deflate; server_max_window_bits=8",
                                    "permessage-deflate; server_max_window_bits",
                                    "permessage-deflate; client_max_window_bits=16",
                                    "permessage-deflate; server_no_context_takeover=1",
                                    "permessage-deflate; client_max_window_bits; client_max_window_bits"])
def test_negotiate_declines_what_it_cannot_honour(header):
    assert deflate.negotiate(header) is None


def test_negotiate_takes_the_first_acceptable_offer():
    a = deflate.negotiate("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits")
    assert a is not None and a.server_wbits == 15 and a.client_wbits == deflate.CLIENT_WBITS


def test_chunks_compressed_apart_join_into_one_message():
    head, middle, tail = b'{"type":"welcome","doc":', orjson.dumps(words(200_000, 1)), b',"version":3}'
    payload = deflate.chunk(head, 15) + deflate.chunk(middle, 15) + deflate.last(tail, 15)
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == head + middle + tail
    assert zlib.decompressobj(-15).decompress(deflate.message((head, middle, tail), 10) + TAIL) == head + middle + tail


# ------------------------------------------------------------------ a real server

async def test_handshake_agrees_only_when_offered(server):
    offered = await Raw.open(server.port, "hs")
    assert offered.extension == deflate.negotiate(OFFER).response
    plain = await Raw.open(server.port, "hs", extensions=None)
    assert plain.extension is None
    declined = await Raw.open(server.port, "hs", extensions="permessage-deflate; bogus_param")
    assert declined.extension is None
    # two header lines are one list: the second line's offer is the first acceptable one
    two = await Raw.open(server.port, "hs", extensions=f"x-unknown\r\nSec-WebSocket-Extensions: {OFFER}")
    assert two.extension == deflate.negotiate(OFFER).response
    for c in (offered, plain, declined, two):
        c.close()


@pytest.mark.parametrize("size", [5_000, 40_000, 300_000])  # inline, in a worker thread, fragmented
async def test_a_large_welcome_arrives_compressed_and_keystrokes_do_not(server, size):
    doc = f"big{size}"
    text = words(size, size)
    version = await make_doc(server, doc, text)
    clients = [await Raw.open(server.port, doc) for _ in range(3)]  # several at once share one compression
    for i, c in enumerate(clients):
        c.hello(f"reader{i}")
    for c in clients:
        welcome, compressed, rsvs = await c.typed("welcome")
        assert compressed and welcome["doc"] == text and welcome["version"] == version
        assert rsvs[1:] == [False] * (len(rsvs) - 1)  # RSV1 on the first fragment only
        if size > 200_000:
            assert len(rsvs) > 1  # went out fragmented
    plain = await Raw.open(server.port, doc, extensions=None)
    plain.hello("plain")
    welcome, compressed, _ = await plain.typed("welcome")
    assert not compressed and welcome["doc"] == text
    # a keystroke: a small `updates` frame reaches everyone uncompressed
    plain.send_json({"type": "push", "version": version, "updates": [{"clientID": "plain", "changes": [size, [0, "!"]]}]})
    for c in [*clients, plain]:
        updates, compressed, _ = await c.typed("updates")
        assert updates["from"] == version and not compressed
        c.close()


async def test_a_long_resume_arrives_compressed(server):
    doc = "resume"
    version = await make_doc(server, doc, "x")
    c = await Raw.open(server.port, doc)
    c.hello("resumer")
    welcome, _, _ = await c.typed("welcome")
    key = welcome["resumeKey"]
    c.close()
    length = 1
    typist = await Raw.open(server.port, doc, extensions=None)
    typist.hello("typist")
    await typist.typed("welcome")
    for i in range(60):  # 60 pushes while the resumer is away: keystrokes, and every tenth a paste
        insert = words(1500, i) if i % 10 == 9 else "abcdefghij"[i % 10]
        typist.send_json({"type": "push", "version": version + i,
                          "updates": [{"clientID": "typist", "changes": [length, [0, insert]]}]})
        await typist.typed("updates")
        length += len(insert)
    back = await Raw.open(server.port, doc)
    back.send_json({"type": "hello", "clientID": "resumer", "version": version, "resumeKey": key,
                    "user": {"name": "r", "color": "#336699"}})
    frames = []
    got = version
    while got < version + 60:
        m, compressed, _ = await back.message()
        frames.append((m["type"], compressed, len(orjson.dumps(m))))
        if m["type"] == "welcome":
            got = m["version"]
        elif m["type"] in ("updates", "resumed"):
            got = m["from"] + len(m["updates"])
    assert got == version + 60
    for kind, compressed, size in frames:
        assert compressed == (size >= 1024), (kind, compressed, size)  # the threshold, both ways
    assert sum(compressed for _, compressed, _ in frames) >= 5 and not all(c for _, c, _ in frames)
    back.close()
    typist.close()


async def test_compressed_pushes_are_accepted(server):
    doc = "cpush"
    c = await Raw.open(server.port, doc)
    c.hello("cp", compress=True)
    welcome, _, _ = await c.typed("welcome")
    text = words(20_000, 7)  # a paste: compressed by the client, inflated by the server
    c.send_json({"type": "push", "version": welcome["version"],
                 "updates": [{"clientID": "cp", "changes": [len(welcome["doc"]), [0, text]]}]}, compress=True)
    ack, _, _ = await c.typed("updates")
    assert ack["updates"][0]["clientID"] == "cp"
    # a compressed message in fragments (RSV1 on the first only), then a plain one: both read
    data = orjson.dumps({"type": "push", "version": welcome["version"] + 1,
                         "updates": [{"clientID": "cp", "changes": [len(text), [0, "!"]]}]})
    z = zlib.compressobj(6, zlib.DEFLATED, -12)
    payload = (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    c.send(payload[:10], rsv1=True, fin=False)
    c.send(payload[10:], opcode=0)
    ack, _, _ = await c.typed("updates")
    assert ack["from"] == welcome["version"] + 1
    c.send_json({"type": "push", "version": welcome["version"] + 2,
                 "updates": [{"clientID": "cp", "changes": [len(text) + 1, [0, "?"]]}]})
    ack, _, _ = await c.typed("updates")
    assert ack["from"] == welcome["version"] + 2
    c.close()
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{server.url}/api/docs/{doc}")
        assert (await r.json())["doc"] == text + "!?"


async def test_a_frame_inflating_past_max_frame_is_refused(server):
    doc = "bomb"
    bystander = await Raw.open(server.port, doc)
    bystander.hello("by")
    welcome, _, _ = await bystander.typed("welcome")
    c = await Raw.open(server.port, doc)
    c.hello("bomber", compress=True)
    await c.typed("welcome")
    bomb = orjson.dumps({"type": "presence", "ranges": [], "pad": "a" * 500_000})  # --max-frame is 400000
    z = zlib.compressobj(9, zlib.DEFLATED, -12)
    payload = (z.compress(bomb) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(payload) < 2000
    c.send(payload, rsv1=True)
    assert await c.closed() == 1009  # as for a plain frame over --max-frame
    await still_served(bystander, welcome["version"], "by", welcome["doc"])


async def test_a_corrupt_or_context_taking_stream_ends_that_connection_only(server):
    doc = "corrupt"
    bystander = await Raw.open(server.port, doc)
    bystander.hello("by")
    welcome, _, _ = await bystander.typed("welcome")
    bad = await Raw.open(server.port, doc)
    bad.hello("bad", compress=True)
    await bad.typed("welcome")
    bad.send(b"\xff\xff\xff\xff\x00", rsv1=True)  # not a deflate stream
    assert await bad.closed() == 1002  # as for any unreadable frame
    # a client that keeps its context although client_no_context_takeover was agreed
    taker = await Raw.open(server.port, doc)
    z = zlib.compressobj(6, zlib.DEFLATED, -12)
    hello = orjson.dumps({"type": "hello", "clientID": "taker", "version": None,
                          "user": {"name": "taker", "color": "#336699"}})
    taker.send((z.compress(hello) + z.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True)
    await taker.typed("welcome")
    presence = orjson.dumps({"type": "presence", "ranges": [], "user": {"name": "taker", "color": "#336699"}})
    taker.send((z.compress(presence) + z.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True)  # refers back to the hello
    assert await taker.closed() == 1002
    await still_served(bystander, welcome["version"], "by", welcome["doc"])


async def still_served(c: Raw, version: int, client_id: str, text: str) -> None:
    c.send_json({"type": "push", "version": version, "updates": [{"clientID": client_id, "changes": [len(text), [0, "."]]}]})
    ack, _, _ = await c.typed("updates")
    assert ack["from"] == version and ack["updates"][0]["clientID"] == client_id
    c.close()


async def test_aiohttp_client_with_compression(server):
    doc = "stock"
    text = words(100_000, 3)
    version = await make_doc(server, doc, text)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.ws_url}/ws/{doc}", protocols=["collab.v1"],
                                                          compress=15) as ws:
        assert ws.compress == deflate.CLIENT_WBITS  # it took the window we gave it
        await ws.send_str(orjson.dumps({"type": "hello", "clientID": "stock", "version": None,
                                        "user": {"name": "s", "color": "#336699"}}).decode())
        welcome = orjson.loads((await ws.receive(timeout=10)).data)
        while welcome["type"] != "welcome":
            welcome = orjson.loads((await ws.receive(timeout=10)).data)
        assert welcome["doc"] == text
        for i in range(3):
            await ws.send_str(orjson.dumps({"type": "push", "version": version + i, "updates": [
                {"clientID": "stock", "changes": [len(text), [0, "x" * (i + 1) * 700]]}]}).decode())
            ack = orjson.loads((await ws.receive(timeout=10)).data)
            while ack["type"] not in ("updates", "error"):
                ack = orjson.loads((await ws.receive(timeout=10)).data)
            assert ack["from"] == version + i
            text += "x" * (i + 1) * 700


async def test_compression_off_answers_no_extension(tmp_path):
    with ServerProcess(tmp_path / "off.db", extra_args=["--no-ws-compress"]) as s:
        version = await make_doc(s, "off", words(50_000, 5))
        c = await Raw.open(s.port, "off")
        assert c.extension is None
        c.hello("r")
        welcome, compressed, _ = await c.typed("welcome")
        assert not compressed and welcome["version"] == version
        c.close()


@pytest.mark.parametrize("size", [5_000, 150_000])  # compressed on the loop, in a worker thread
async def test_a_paste_broadcast_reaches_every_peer_compressed_once_and_right(server, size):
    doc = f"paste{size}"
    version = await make_doc(server, doc, "start")
    readers = [await Raw.open(server.port, doc) for _ in range(3)] + [await Raw.open(server.port, doc, None)]
    for i, r in enumerate(readers):
        r.hello(f"r{i}")
        await r.typed("welcome")
    paste = words(size, size + 1)
    readers[-1].send_json({"type": "push", "version": version,
                           "updates": [{"clientID": "r3", "changes": [5, [0, paste]]}]})
    for i, r in enumerate(readers):
        updates, compressed, _ = await r.typed("updates")
        assert compressed == (i < 3)
        assert updates["from"] == version and updates["updates"][0]["changes"] == [5, [0, paste]]
        r.close()
