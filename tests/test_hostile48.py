"""Hostile and malformed HTTP requests answered wrongly (audit 48): each test failed before its fix.

Real servers only: the app in-process (aiohttp's test client) where the route's answer is what matters,
a `collab serve` subprocess (raw sockets) where what aiohttp does before any route runs matters.
"""

from __future__ import annotations

import base64
import os
import socket
import time

import orjson
import pytest

from collab.app import ROOMS, create_app
from collab.settings import Settings
from serverproc import ServerProcess
from wsutil import USER, closed, recv_type, send


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(Settings(db=str(tmp_path / "h.db"), write_rate=0, min_free_disk=0)))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One `collab serve` for the module's raw-socket tests."""
    tmp = tmp_path_factory.mktemp("hostile48")
    proc = ServerProcess(tmp / "h.db", log_path=tmp / "server.log", extra_args=["--min-free-disk", "0"])
    proc.start()
    yield proc
    proc.kill()


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is; the answer's status, headers (lower-case names) and body, once the server
    has closed the connection (a socket.timeout if it does not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def error_of(body: bytes) -> dict:
    data = orjson.loads(body)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    return data["error"]


# ------------------------------------------------------- /static/ folders

@pytest.mark.parametrize("path", ["/static/", "/static"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_static_folder_itself_is_not_found_not_forbidden(client, method, path):
    """Was: `GET /static/` answered 403 `forbidden` (aiohttp's static route lists no folder), a code that
    says the token does not give access; every other address without a file there is 404 `not-found`."""
    resp = await client.request(method, path)
    assert resp.status == 404, (resp.status, await resp.text())
    if method == "GET":
        assert error_of(await resp.read())["code"] == "not-found"
    assert (await client.get("/static/style.css")).status == 200  # the files are still served


# ------------------------------------------------------------------ 405

@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api/docs/x", {"GET", "HEAD", "DELETE"}),
    ("DELETE", "/api/docs/x/history", {"GET", "HEAD"}),
    ("PATCH", "/api/docs", {"GET", "HEAD", "POST"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
])
async def test_a_method_a_path_does_not_take_is_405_naming_those_it_takes(client, method, path, allow):
    """RFC 9110 (15.5.6): a 405 MUST carry `Allow`. Was: aiohttp's 405 said it, but the answer in the one
    error shape, made anew from the code and message, left it out."""
    resp = await client.request(method, path, json={})
    assert resp.status == 405 and error_of(await resp.read())["code"] == "bad-request"
    assert {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()} == allow, resp.headers


# --------------------------------------------- requests the parser refuses

@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",                                     # no Host
    b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\nConnection: close\r\n\r\n",     # two
    b"NOT AN HTTP REQUEST\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nno colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX: a\x00b\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: {host}\r\n\r\n",                             # line too long
    b"POST /api/docs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",                       # smuggling
    b"GET /healthz HTTP/9.9\r\nHost: {host}\r\n\r\n",
], ids=["no-host", "two-hosts", "not-http", "no-colon", "nul-in-header", "line-too-long", "cl-and-te",
        "http-9.9"])
def test_a_request_the_http_parser_refuses_is_answered_in_the_error_shape(live, request_bytes):
    """README and docs/protocol.md: errors are {"error": {"code", "message"}}. Was: a request aiohttp's
    HTTP parser refuses (before any route or middleware) was answered 400 in plain text, without the
    security headers every other answer has; now `collab serve` answers it in the one shape, closing the
    connection after it as aiohttp did."""
    host = f"127.0.0.1:{live.port}".encode()
    status, headers, body = raw_http(live.port, request_bytes.replace(b"{host}", host))
    assert status == 400, (status, headers, body)
    assert headers.get("content-type", "").startswith("application/json"), (headers, body)
    error = error_of(body)
    assert error["code"] == "bad-request" and 0 < len(error["message"]) <= 201, error
    assert headers.get("x-content-type-options") == "nosniff", headers  # (and raw_http saw the connection close)
    ok, _, body = raw_http(live.port, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert ok == 200 and orjson.loads(body)["ok"] is True


# ------------------------------------------------------------------ logs

def test_websocket_upgrades_offering_foreign_subprotocols_log_one_short_line_a_minute(live):
    """Was: aiohttp.websocket warned of every upgrade whose Sec-WebSocket-Protocol offered only other
    subprotocols than collab.v1, quoting the header whole: any client, without a token, wrote 8 KB to
    the log with each request, as fast as it could send them. Now held like aiohttp's other flood, one
    line a minute, cut short."""
    before = live.log().count("Client protocols")
    for i in range(20):
        head = (f"GET /ws/flood{i} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: x{'y' * 7000}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
            s.sendall(head)
            assert s.recv(65536).startswith(b"HTTP/1.1 101")
    ok, _, _ = raw_http(live.port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
                                   "Connection: close\r\n\r\n".encode())
    assert ok == 200
    time.sleep(0.5)
    lines = [line for line in live.log().splitlines() if "Client protocols" in line]
    assert len(lines) - before <= 1 and all(len(line) < 1000 for line in lines), [len(line) for line in lines]


# ------------------------------------------- what a WebSocket's upgrade leaves

async def test_a_welcomed_connection_keeps_nothing_of_a_long_token(aiohttp_client, tmp_path):
    """Was: on a personal instance (no token is checked) a WebSocket's `?token=`, of up to 8 KB, was kept
    as long as the connection (Peer.token), though only its hello needs it (the clientID's owner is kept
    as the token's digest): 8 KB more per idle connection, for any client that asks. A reload with the
    same token from the same address still takes its clientID over."""
    app = create_app(Settings(db=str(tmp_path / "t.db")))
    client = await aiohttp_client(app)
    token = "t" * 7000
    first = await client.ws_connect(f"/ws/longtoken?token={token}", protocols=["collab.v1"])
    await send(first, {"type": "hello", "clientID": "c1", "version": None, "user": USER})
    assert (await recv_type(first, "welcome"))["doc"] == ""
    (member,) = app[ROOMS].rooms["longtoken"].members.values()
    assert member.conn.token is None or len(member.conn.token) <= 64, len(member.conn.token)
    again = await client.ws_connect(f"/ws/longtoken?token={token}", protocols=["collab.v1"])
    await send(again, {"type": "hello", "clientID": "c1", "version": None, "user": USER})
    assert (await recv_type(again, "welcome"))["doc"] == ""
    assert (await closed(first))[0] == 4001  # replaced by the same client (its token, its address)
    other = await client.ws_connect(f"/ws/longtoken?token={token}x", protocols=["collab.v1"])
    await send(other, {"type": "hello", "clientID": "c1", "version": None, "user": USER})
    assert (await recv_type(other, "error"))["code"] == "conflict"  # another token proves nothing
    for ws in (again, other):
        await ws.close()


# ------------------------------------------------------ HEAD and WebSockets

@pytest.mark.parametrize("path", ["/ws/headless", "/status/ws"])
def test_a_head_request_is_never_upgraded_to_a_websocket(live, path):
    """RFC 6455 (4.1, 4.2.1): the opening handshake is a GET. Was: a HEAD asking to upgrade (the routes take
    HEAD as every GET route does) got 101 and a WebSocket, an answer to HEAD that has a body after all.
    Now 405 with `Allow: GET`, in the error shape; a GET still opens one."""
    def upgrade(method: str) -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: collab.v1\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(upgrade("HEAD"))
        head = s.recv(65536).split(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 405"), head
    assert "\r\nAllow: GET\r\n" in head and "\r\nContent-Type: application/json" in head, head
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:  # any other method: the same Allow
        s.sendall(f"OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nContent-Length: 0\r\n\r\n".encode())
        head = s.recv(65536).split(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 405") and "\r\nAllow: GET\r\n" in head, head  # (was "GET,HEAD")
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(upgrade("GET"))
        assert s.recv(65536).startswith(b"HTTP/1.1 101")


# --------------------------------------------------------- numbers in bodies

@pytest.mark.parametrize("path, extra", [("restore", {}), ("fork", {}), ("checkpoints", {"name": "n"})])
async def test_a_body_version_past_64_bits_is_said_to_be_beyond_the_latest(client, path, extra):
    """Was: {"version": 18446744073709551616} (2**64; orjson reads an integer past 64 bits as a float) was
    'version must be a non-negative integer, got 1.8446744073709552e+19': it is one. The same number in a
    URL, or in a push's changes, was already said to be too large (test_protocol_audit)."""
    assert (await client.post("/api/docs", json={"name": "big"})).status == 201
    resp = await client.post(f"/api/docs/big/{path}", data=b'{"version": 18446744073709551616%s}' % (
        b"".join(b', "%s": "%s"' % (k.encode(), v.encode()) for k, v in extra.items())),
        headers={"Content-Type": "application/json"})
    error = error_of(await resp.read())
    assert (resp.status, error["code"]) == (400, "bad-request"), error
    assert error["message"] == "version (a number over 64 bits) is beyond the latest version 0", error
    resp = await client.post(f"/api/docs/big/{path}", json={"version": 1.5, **extra})  # a float is still refused so
    assert error_of(await resp.read())["message"] == "version must be a non-negative integer, got 1.5"
    resp = await client.post(f"/api/docs/big/{path}", data=b'{"version": 9.3e18%s}' % (  # a float under 2**64
        b"".join(b', "%s": "%s"' % (k.encode(), v.encode()) for k, v in extra.items())),
        headers={"Content-Type": "application/json"})
    assert error_of(await resp.read())["message"] == "version must be a non-negative integer, got 9.3e+18"
