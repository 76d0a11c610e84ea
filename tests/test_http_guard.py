"""The HTTP guards (collab/httpguard.py): Host names, state changes from other sites, edit-link
powers, write rate limits, the document cap, /status/ws, request-head deadlines, the connection
cap and the accept-error log flood.

Pure cores are tested as values; every refusal is also shown against a real app (in-process,
aiohttp's test client) or a real `collab serve` (raw sockets), with what is stored checked to be
unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import sys
import resource
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiohttp import WSServerHandshakeError

from collab.access import Access
from collab.app import create_app
from collab.httpguard import WRITE_LIMITER, FloodFilter, HeadWatch, HostPolicy, RateBuckets, state_change_refusal
from collab.settings import Settings
from serverproc import ServerProcess
from wsutil import USER, recv_type, send

SECRET = "http guard secret, long enough"
ADMIN = Access(SECRET.encode()).admin_token()
JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------ pure cores

def test_host_policy_loopback_names_only_on_the_servers_port():
    p = HostPolicy.parse("", access_control=False)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST:8080"):
        assert p.allows(host, 8080, False), host
    for host in ("127.0.0.1:9090", "evil.example:8080", "evil.example", "127.0.0.1.nip.io:8080", "",
                 None, "localhost:8080@evil", "[::1", "localhost:80800", "localhost:0x50", "127.0.0.1:-1"):
        assert not p.allows(host, 8080, False), host
    assert p.allows("localhost", 80, False) and p.allows("localhost", 443, True)  # default ports
    assert not p.allows("localhost", 443, False)


def test_host_policy_configured_names_and_the_access_control_default():
    p = HostPolicy.parse("collab.example.com, other.example:8443", access_control=True)
    assert p.allows("collab.example.com", 8080, True) and p.allows("Collab.Example.com:444", 8080, True)
    assert p.allows("other.example:8443", 8080, True) and not p.allows("other.example", 8080, True)
    assert not p.allows("evil.example", 8080, True) and p.allows("127.0.0.1:8080", 8080, False)
    # With access control on and nothing configured, every name is served; personal mode never.
    assert HostPolicy.parse("", access_control=True).allows("anything.example", 1, False)
    assert not HostPolicy.parse("", access_control=False).allows("anything.example", 1, False)
    assert HostPolicy.parse("*", access_control=False).allows("anything.example", 1, False)
    assert not HostPolicy.parse("*", access_control=True).allows(None, 1, False)  # a Host is required
    with pytest.raises(ValueError, match="--allow-host"):
        HostPolicy.parse("good.example, http://bad.example/", access_control=False)


OWN = "http://127.0.0.1:8080"


@pytest.mark.parametrize("method, ctype, body, origin, site, code", [
    ("GET", "text/plain", False, "http://evil.example", "cross-site", None),  # reads are not judged here
    ("POST", "application/json", True, OWN, "same-origin", None),
    ("POST", "application/json", True, None, None, None),                   # no browser: a script
    ("POST", "application/json", True, OWN, None, None),
    ("POST", "application/json", True, None, "same-origin", None),
    ("POST", "text/plain", True, None, None, "bad-request"),                # what a form can send
    ("POST", "application/x-www-form-urlencoded", True, OWN, "same-origin", "bad-request"),
    ("POST", "application/octet-stream", False, OWN, None, "bad-request"),  # no body, no type: still POST
    ("POST", "application/json", True, "http://evil.example", None, "forbidden"),
    ("POST", "application/json", True, "null", None, "forbidden"),
    ("POST", "application/json", True, "http://127.0.0.1:9999", None, "forbidden"),
    ("POST", "application/json", True, None, "cross-site", "forbidden"),
    ("POST", "application/json", True, None, "same-site", "forbidden"),
    ("POST", "application/json", True, OWN, "none", "forbidden"),
    ("POST", "text/plain", True, "http://evil.example", "cross-site", "forbidden"),
    ("DELETE", "application/octet-stream", False, None, None, None),        # nothing to read
    ("DELETE", "text/plain", True, OWN, None, "bad-request"),
    ("DELETE", "application/octet-stream", False, "http://evil.example", None, "forbidden"),
    ("PUT", "text/plain", True, None, None, "bad-request"),
    ("PATCH", "application/json", True, None, "cross-site", "forbidden"),
])
def test_state_change_rules(method, ctype, body, origin, site, code):
    refusal = state_change_refusal(method, ctype, body, origin, site, OWN, frozenset())
    assert (refusal.code if refusal else None) == code


def test_state_change_allows_the_configured_extra_origins():
    extra = frozenset({"https://editor.example"})
    assert state_change_refusal("POST", "application/json", True, "https://editor.example", None, OWN, extra) is None


def test_rate_buckets_burst_then_rate_and_no_partial_takes():
    b = RateBuckets(per_minute=60, burst=3)  # one a second
    assert [b.take(["a"], 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(["a"], 0.0) == pytest.approx(1.0)
    assert b.take(["a"], 0.5) == pytest.approx(0.5)
    assert b.take(["a"], 1.0) == 0.0
    # A refusal takes nothing from the other keys: "b" keeps its whole burst.
    assert b.take(["a", "b"], 1.0) > 0
    assert [b.take(["b"], 1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert RateBuckets(0, 1).take(["x"] * 5, 0.0) == 0.0  # 0 a minute: no limit


def test_rate_buckets_memory_is_bounded():
    b = RateBuckets(per_minute=60, burst=2, max_keys=100)
    for i in range(10_000):
        b.take([f"addr {i}"], i * 0.001)
    assert len(b.buckets) <= 100


def test_head_watch():
    w = HeadWatch()
    assert not w.feed(b"\r\n\r\n")  # blank lines before the request line do not count
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\n\r":
        assert not w.feed(bytes([byte]))
    assert w.feed(b"\n")
    assert HeadWatch().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody")


def test_flood_filter_one_line_per_interval_without_traceback():
    now = [0.0]
    f = FloodFilter(("socket.accept() out of system resource",), interval=60, clock=lambda: now[0])
    logger = logging.getLogger("test_http_guard.flood")
    logger.propagate = False
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    logger.addFilter(f)
    try:
        for i in range(50):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.error("socket.accept() out of system resource\nsocket: <socket>", exc_info=True)
            logger.error("something else %d", i)
            now[0] += 1
        now[0] = 61
        logger.error("socket.accept() out of system resource")
    finally:
        logger.removeHandler(handler)
    floods = [r for r in seen if r.getMessage().startswith("socket.accept()")]
    assert len(floods) == 2 and len(seen) == 52
    assert floods[0].exc_info is None and "Too many open files" in floods[0].getMessage()
    assert "49 more like it" in floods[1].getMessage()


# --------------------------------------------------- in-process, real app

def settings_for(tmp_path, **kw) -> Settings:
    return Settings(db=str(tmp_path / "g.db"), **kw)


async def docs_of(client, token=None) -> list[str]:
    resp = await client.get("/api/docs", headers={"Authorization": f"Bearer {token}"} if token else {})
    return sorted(d["name"] for d in (await resp.json())["docs"])


async def make(client, name: str, token=None) -> dict:
    resp = await client.post("/api/docs", json={"name": name},
                             headers={"Authorization": f"Bearer {token}"} if token else {})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def type_into(client, doc: str, text: str, token=None) -> None:
    ws = await client.ws_connect(f"/ws/{doc}" + (f"?token={token}" if token else ""), protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": "typist", "version": None, "user": USER})
    welcome = await recv_type(ws, "welcome")
    await send(ws, {"type": "push", "version": welcome["version"],
                    "updates": [{"clientID": "typist", "changes": [[0, text]]}]})
    await recv_type(ws, "updates")
    await ws.close()


async def test_a_foreign_host_is_refused_on_http_and_websocket(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    await make(client, "victim")
    await type_into(client, "victim", "precious")
    evil = {"Host": f"evil.example:{client.port}"}
    for method, path, body in (("GET", "/api/docs/victim", None), ("GET", "/d/victim", None),
                               ("GET", "/api/docs", None), ("POST", "/api/docs/victim/restore", {"version": 0}),
                               ("POST", "/api/docs/victim/fork", {}), ("DELETE", "/api/docs/victim", None),
                               ("GET", "/metrics", None)):
        resp = await client.request(method, path, headers={**evil, **JSON}, json=body)
        assert resp.status == 400, (method, path, resp.status)
        assert "victim" not in (await resp.text()).replace("/api/docs/victim", "")
    # The Origin matching the foreign Host (as under DNS rebinding) changes nothing.
    resp = await client.post("/api/docs/victim/restore", json={"version": 0},
                             headers={**evil, "Origin": f"http://evil.example:{client.port}"})
    assert resp.status == 400
    for path in ("/ws/victim", "/status/ws"):
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(path, protocols=["collab.v1"],
                                    headers={**evil, "Origin": f"http://evil.example:{client.port}"})
        assert refused.value.status == 400, path
    # The same requests with the server's own name go through.
    assert (await client.get("/api/docs/victim", headers={"Host": f"localhost:{client.port}"})).status == 200
    doc = await (await client.get("/api/docs/victim")).json()
    assert (doc["doc"], doc["version"]) == ("precious", 1)
    assert await docs_of(client) == ["victim"]


async def test_allow_host_serves_a_configured_name(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path, allow_host="collab.example.com")))
    assert (await client.get("/healthz", headers={"Host": "collab.example.com"})).status == 200
    assert (await client.get("/healthz", headers={"Host": "evil.example"})).status == 400


async def test_state_changes_from_other_sites_are_refused(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    await make(client, "victim")
    await type_into(client, "victim", "precious")
    own = f"http://127.0.0.1:{client.port}"
    body = orjson.dumps({"version": 0}).decode()
    attempts = [
        {"Content-Type": "text/plain"},                                  # a form's enctype=text/plain
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
        {"Content-Type": "application/json", "Origin": "null"},
        {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "text/plain", "Origin": own, "Sec-Fetch-Site": "same-origin"},
    ]
    for headers in attempts:
        for path in ("/api/docs/victim/restore", "/api/docs/victim/fork", "/api/docs",
                     "/api/docs/victim/links/reset"):
            resp = await client.post(path, data=body, headers=headers)
            assert resp.status in (400, 403), (headers, path, resp.status)
            code = (await resp.json())["error"]["code"]
            assert code == ("forbidden" if "Origin" in headers and headers["Origin"] != own
                            or "Sec-Fetch-Site" in headers and headers["Sec-Fetch-Site"] != "same-origin"
                            else "bad-request"), (headers, path)
        if "Origin" in headers and headers["Origin"] != own or headers.get("Sec-Fetch-Site", "same-origin") != \
                "same-origin":  # a DELETE needs no body, but the page must be ours
            resp = await client.delete("/api/docs/victim", headers={k: v for k, v in headers.items()
                                                                     if k != "Content-Type"})
            assert resp.status == 403, headers
    doc = await (await client.get("/api/docs/victim")).json()
    assert (doc["doc"], doc["version"]) == ("precious", 1)
    assert await docs_of(client) == ["victim"]
    # This server's own page (Origin and Sec-Fetch-Site as a browser sends them) and a script may.
    resp = await client.post("/api/docs/victim/fork", json={"name": "copy"},
                             headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/docs/victim/restore", json={"version": 0})
    assert resp.status == 200
    assert (await client.delete("/api/docs/copy")).status == 200  # curl -X DELETE: no body, no type


async def test_a_body_its_content_encoding_does_not_decode_is_a_bad_request(aiohttp_client, tmp_path, caplog):
    """Was: garbage sent as `Content-Encoding: gzip` (or deflate), with no token at all, was a 500
    `internal`, logged twice with a traceback (collab's and aiohttp's, whose reading of the rest of the
    body after the answer failed again). Now it is 400 `bad-request`, the connection ends after the
    answer (its parser stopped mid-body: `Connection: close`), and nothing is logged as an error."""
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    await make(client, "victim")
    await type_into(client, "victim", "precious")
    garbage = b"not compressed at all" * 100
    with caplog.at_level(logging.ERROR):
        for method, path, encoding in (("POST", "/api/docs", "gzip"), ("POST", "/api/docs/victim/restore", "deflate"),
                                       ("DELETE", "/api/docs/victim", "deflate"),
                                       ("POST", "/api/docs/victim/checkpoints", "gzip")):
            resp = await client.request(method, path, data=garbage,
                                        headers={**JSON, "Content-Encoding": encoding})
            assert resp.status == 400, (method, path, resp.status, await resp.text())
            error = (await resp.json())["error"]
            assert error["code"] == "bad-request" and encoding in error["message"], error
            assert resp.headers.get("Connection") == "close", dict(resp.headers)
            # The next request, on a new connection, is served as usual.
            assert (await client.get("/api/docs/victim")).status == 200
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == [], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    doc = await (await client.get("/api/docs/victim")).json()
    assert (doc["doc"], doc["version"]) == ("precious", 1)
    assert await docs_of(client) == ["victim"]
    # The server itself ends the connection after the answer, even with a next request waiting behind it.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    bad = (f"POST /api/docs HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\nContent-Type: application/json\r\n"
           f"Content-Encoding: gzip\r\nContent-Length: {len(garbage)}\r\n\r\n").encode() + garbage
    writer.write(bad + f"GET /api/docs/victim HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)  # to the end: the server closed it
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    # A body compressed as it says is read as usual.
    resp = await client.post("/api/docs", data=gzip.compress(orjson.dumps({"name": "zipped"})),
                             headers={**JSON, "Content-Encoding": "gzip"})
    assert resp.status == 201, await resp.text()
    assert await docs_of(client) == ["victim", "zipped"]


async def test_edit_links_can_neither_reset_links_nor_fork(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path, secret=SECRET)))
    links = (await make(client, "doc", ADMIN))["links"]
    edit = links["edit"].split("token=")[1]
    await type_into(client, "doc", "text", edit)
    for path in ("/api/docs/doc/links/reset", "/api/docs/doc/fork"):
        resp = await client.post(f"{path}?token={edit}", json={})
        assert resp.status == 403, path
        assert "admin access" in (await resp.json())["error"]["message"]
    assert (await client.get(f"/api/docs/doc?token={edit}")).status == 200  # the link still works
    assert await docs_of(client, ADMIN) == ["doc"]
    # The admin may do both.
    resp = await client.post(f"/api/docs/doc/fork?token={ADMIN}", json={"name": "copy"})
    assert resp.status == 201
    resp = await client.post(f"/api/docs/doc/links/reset?token={ADMIN}", json={})
    assert resp.status == 200
    assert (await client.get(f"/api/docs/doc?token={edit}")).status == 403


async def test_max_documents_refuses_create_and_fork(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path, max_documents=3)))
    for name in ("a", "b", "c"):
        await make(client, name)
    for path, body in (("/api/docs", {"name": "d"}), ("/api/docs/a/fork", {"name": "e"})):
        resp = await client.post(path, json=body)
        assert resp.status == 413, path
        error = (await resp.json())["error"]
        assert error["code"] == "too-large" and "--max-documents 3" in error["message"]
    # Creations at once cannot pass the count together.
    assert (await client.delete("/api/docs/c")).status == 200
    answers = await asyncio.gather(*(client.post("/api/docs", json={"name": f"n{i}"}) for i in range(8)))
    assert sorted(r.status for r in answers) == [201] + [413] * 7
    assert len(await docs_of(client)) == 3


async def test_fork_and_restore_are_rate_limited_per_token_and_per_address(aiohttp_client, tmp_path):
    settings = settings_for(tmp_path, secret=SECRET, write_rate=6, write_burst=2, trusted_proxy="127.0.0.1")
    client = await aiohttp_client(create_app(settings))
    edit = {}
    for name in ("t", "a1", "a2", "a3", "c"):
        edit[name] = (await make(client, name, ADMIN))["links"]["edit"].split("token=")[1]

    async def restore(doc, address):
        return await client.post(f"/api/docs/{doc}/restore?token={edit[doc]}", json={"version": 0},
                                 headers={"X-Forwarded-For": address})

    # One token from three addresses: its bucket empties after the burst.
    assert [(await restore("t", f"10.0.0.{i}")).status for i in (1, 2, 3)] == [200, 200, 429]
    # One address with three tokens: the address's bucket empties after the burst.
    answers = [await restore(doc, "10.0.1.1") for doc in ("a1", "a2", "a3")]
    assert [r.status for r in answers] == [200, 200, 429]
    refused = answers[-1]
    assert (await refused.json())["error"]["code"] == "rate-limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    # Forks count too (the admin's token, from yet another address).
    statuses = [(await client.post(f"/api/docs/t/fork?token={ADMIN}", json={},
                                   headers={"X-Forwarded-For": "10.0.2.1"})).status for _ in range(3)]
    assert statuses == [201, 201, 429]
    assert (await restore("a3", "10.0.3.1")).status == 200  # other buckets are untouched
    # Naming versions too (was: not limited at all, each answer the whole list).
    statuses = [(await client.post(f"/api/docs/c/checkpoints?token={edit['c']}", json={"version": 0, "name": f"n{k}"},
                                   headers={"X-Forwarded-For": "10.0.4.1"})).status for k in range(3)]
    assert statuses == [200, 200, 429]


async def test_the_write_limiter_keeps_a_few_bytes_per_token_however_long_the_token(aiohttp_client, tmp_path):
    """Was (the soak audit): the limiter kept each request's token itself as its key, unchecked without
    --secret (any token is let in): 10,000 keys of tokens of up to 8 KB, about 80 MB. Now a token's key
    is a digest of it, of a fixed size; one token is still one bucket."""
    client = await aiohttp_client(create_app(settings_for(tmp_path, write_rate=6, write_burst=2,
                                                          trusted_proxy="127.0.0.1")))
    await make(client, "t")
    tokens = [f"{k}" + "x" * 6000 for k in range(20)]
    for k, token in enumerate(tokens):
        resp = await client.post("/api/docs/t/restore", json={"version": 0},
                                 headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": f"10.1.0.{k}"})
        assert resp.status == 200, await resp.text()
    keys = list(client.server.app[WRITE_LIMITER].buckets)
    assert len(keys) == 40 and max(map(len, keys)) < 100, sorted(map(len, keys))
    answers = [(await client.post("/api/docs/t/restore", json={"version": 0}, headers={
        "Authorization": f"Bearer {tokens[0]}", "X-Forwarded-For": f"10.2.0.{k}"})).status for k in range(2)]
    assert answers == [200, 429]  # its bucket had one left of its burst of 2


async def test_status_ws_checks_the_origin_and_caps_connections(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(settings_for(tmp_path, max_status_conns=2)))
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/status/ws", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    own = {"Origin": f"http://127.0.0.1:{client.port}"}
    first = await client.ws_connect("/status/ws", headers=own)
    second = await client.ws_connect("/status/ws")
    assert "collab_connections" in orjson.loads((await first.receive()).data)
    with pytest.raises(WSServerHandshakeError) as full:
        await client.ws_connect("/status/ws", headers=own)
    assert full.value.status == 429
    await first.close()
    for _ in range(50):  # the slot comes back when a socket closes
        try:
            third = await client.ws_connect("/status/ws", headers=own)
            break
        except WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the status slot never came back")
    await third.close()
    await second.close()


# ------------------------------------------------ a real `collab serve`

def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def get_status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def post_json(url: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST", headers=JSON)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def test_slowloris_is_cut_off_within_the_header_timeout_while_others_are_served(tmp_path):
    server = ServerProcess(tmp_path / "s.db", extra_args=["--header-timeout", "2"]).start()
    try:
        head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: {'a' * 40}\r\n\r\n".encode()
        ended: dict[int, float] = {}
        answers: dict[int, bytes] = {}

        def trickle(i: int) -> None:  # one header byte a second
            s = raw_connect(server.port)
            start = time.monotonic()
            got = b""
            try:
                for byte in head:
                    s.sendall(bytes([byte]))
                    s.settimeout(1.0)
                    try:
                        chunk = s.recv(1000)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    got += chunk
            except OSError:
                pass
            finally:
                ended[i] = time.monotonic() - start
                answers[i] = got
                s.close()

        slow = [threading.Thread(target=trickle, args=(i,)) for i in range(20)]
        for t in slow:
            t.start()
        # Meanwhile ordinary requests are answered at once.
        served = []
        for _ in range(10):
            start = time.monotonic()
            assert get_status(server.url + "/healthz") == 200
            served.append(time.monotonic() - start)
            time.sleep(0.2)
        for t in slow:
            t.join(30)
        assert max(served) < 1.0, served
        assert len(ended) == 20 and all(1.5 < took < 4.5 for took in ended.values()), ended
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers.values()), answers
        # A client trickling the body of a change is cut off too.
        s = raw_connect(server.port)
        s.sendall(f"POST /api/docs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
                  "Content-Length: 100\r\n\r\n{".encode())
        start = time.monotonic()
        s.settimeout(10)
        answer = s.recv(1000)
        assert b" 400 " in answer.split(b"\r\n")[0] and b"did not arrive" in answer, answer
        assert time.monotonic() - start < 4
        s.close()
        assert get_status(server.url + "/api/docs") == 200
    finally:
        server.kill()


def test_connection_cap(tmp_path):
    server = ServerProcess(tmp_path / "c.db", extra_args=["--max-connections", "5", "--header-timeout", "30"]).start()
    try:
        time.sleep(0.3)  # the health check's connection is closed
        idle = [raw_connect(server.port) for _ in range(5)]
        time.sleep(0.3)
        extra = raw_connect(server.port)
        extra.settimeout(5)
        answer = extra.recv(1000)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert extra.recv(1000) in (b"", answer[len(answer):])  # and closed
        extra.close()
        for s in idle:
            s.close()
        deadline = time.monotonic() + 5
        while get_status(server.url + "/healthz") != 200:
            assert time.monotonic() < deadline, "no connection slot came back"
            time.sleep(0.1)
    finally:
        server.kill()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_out_of_file_descriptors_logs_one_line_not_a_flood(tmp_path, monkeypatch, loop):
    """asyncio logs a failed accept() with a traceback every second: the filter lets one line a minute
    through. uvloop (the default) accepts and closes at once when out of descriptors (libuv's reserve
    descriptor) and logs nothing. Either way: no flood, and the server recovers."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    server = ServerProcess(tmp_path / "f.db", extra_args=["--max-connections", "1000", "--header-timeout", "30",
                                                          "--loop", loop])
    real_popen = subprocess.Popen
    # ServerProcess has no hook for the child's limits: its Popen lowers them, for this start only.
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: real_popen(*a, preexec_fn=low_limit, **kw))
    server.start()
    monkeypatch.undo()
    held = []
    try:
        assert "open-file limit is 64" in server.log()
        for _ in range(120):
            try:
                held.append(raw_connect(server.port))
            except OSError:
                break
        time.sleep(4)  # asyncio retries accept() once a second
        log = server.log()
        floods = [line for line in log.splitlines() if "out of system resource" in line]
        assert (1 if loop == "asyncio" else 0) <= len(floods) <= 2, log[-3000:]
        assert "Traceback" not in log and all("Too many open files" in line for line in floods), log[-3000:]
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 10
        while True:  # the server recovers once descriptors are free again
            try:
                if get_status(server.url + "/healthz", timeout=2) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
    finally:
        for s in held:
            s.close()
        server.kill()


def database_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def test_a_fork_flood_stays_under_the_documented_bound(tmp_path):
    db = tmp_path / "flood.db"
    rate, burst = 60, 5  # a minute; the defaults are 30 and 10 (README)
    server = ServerProcess(db, extra_args=["--write-rate", str(rate), "--write-burst", str(burst)]).start()
    try:
        status, _ = post_json(server.url + "/api/docs", {"name": "big"})
        assert status == 201
        size = 200_000
        asyncio.run(_type_remote(server.ws_url, "big", "x" * size))
        before = database_bytes(db)
        start = time.monotonic()
        statuses: list[int] = []

        def flood():
            while time.monotonic() - start < 4:
                statuses.append(post_json(server.url + "/api/docs/big/fork", {})[0])

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - start
        made = statuses.count(201)
        allowed = burst + int(rate * elapsed / 60) + 1
        assert len(statuses) > 50 and set(statuses) == {201, 429}, statuses[:20]
        assert burst <= made <= allowed, (made, allowed)
        with urllib.request.urlopen(server.url + "/api/docs", timeout=10) as r:
            assert len(orjson.loads(r.read())["docs"]) == 1 + made
        time.sleep(0.5)
        grown = database_bytes(db) - before
        # Each fork stores its text once (plus a little): far from 104 MB/s.
        assert grown <= made * size * 2 + 512 * 1024, (grown, made)
    finally:
        server.kill()


async def _type_remote(ws_url: str, doc: str, text: str) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{ws_url}/ws/{doc}", protocols=["collab.v1"]) as ws:
            await send(ws, {"type": "hello", "clientID": "typist", "version": None, "user": USER})
            welcome = await recv_type(ws, "welcome")
            await send(ws, {"type": "push", "version": welcome["version"],
                            "updates": [{"clientID": "typist", "changes": [[0, text]]}]})
            await recv_type(ws, "updates", timeout=20)


def test_the_flood_filters_hold_asyncpgs_pool_retries_to_one_line_a_minute():
    """Was: while PostgreSQL was down, asyncpg's pool logged a warning with a whole traceback at 1, 2, 4 ...
    s (found by a newcomer: the README promises warnings at most every 10 s)."""
    from collab.httpguard import install_flood_filters

    logger = logging.getLogger("asyncpg.pool")
    before = list(logger.filters)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        install_flood_filters()
        for _ in range(5):
            try:
                raise ConnectionRefusedError(111, "Connect call failed")
            except OSError:
                logger.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.filters[:] = before
    assert [(r.getMessage(), r.exc_info) for r in seen] == [
        ("Failed to restore the pool connection floor; retrying: [Errno 111] Connect call failed", None)]


def test_a_flood_line_is_cut_whole_and_names_no_token():
    """Was (the review of audit 48): only the message's first line was cut at MAX_FLOOD_LINE; the exception's
    text after it, which quotes what the client sent (aiohttp's parser errors: the request line, a header),
    was logged whole, an 8 KB line, with the access token of `?token=` or an Authorization header in it,
    where the README promises logs hold no tokens."""
    f = FloodFilter(("Error handling request",), interval=60, clock=lambda: 0.0)
    try:
        raise ValueError("Bad status line 'GET /ws/doc?token=SECRET-ONE&x=1 HTTP/1.1' "
                         "Authorization: Bearer SECRET-TWO " + "x" * 8000)
    except ValueError:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                                   sys.exc_info())
    assert f.filter(record)
    line = record.getMessage()
    assert len(line) <= 301, len(line)
    assert "SECRET" not in line and "token=***" in line and "Bearer ***" in line, line
