"""Issue 10, attacked as a hostile user would: each test is one finding, measured as it was found.

In-process servers (aiohttp's test client) for the access races and the
takeover; real server subprocesses where memory or disk is measured.
Findings 1 and 5 (restore and authors off the loop) are in
test_history_load.py; 6, 8, 9 and the HTTP part of 10 in test_http_guard.py,
test_deploy_nginx.py and browser/test_csrf.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import unicodedata

import aiohttp
import orjson
import pytest

from collab import room as room_module
from collab.access import Access
from collab.app import ROOMS, create_app
from collab.errors import CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_REPLACED
from collab.settings import Settings
from serverproc import ServerProcess
from test_room_memory import until
from wsutil import USER, closed, recv, recv_type, send

SECRET = "a secret for the hardening tests"
ACCESS = Access(SECRET.encode())
ADMIN = ACCESS.admin_token()


@pytest.fixture
async def team(aiohttp_client, tmp_path):
    """A team instance (access control on) with one document, "doc", holding "hello"."""
    app = create_app(Settings(db=str(tmp_path / "h.db"), secret=SECRET, unload_after=60))
    client = await aiohttp_client(app)
    resp = await client.post("/api/docs", json={"name": "doc"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 201, await resp.text()
    ws, _ = await hello(client, "doc", ADMIN, "seed")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "seed", "changes": [[0, "hello"]]}]})
    await recv_type(ws, "updates")
    await ws.close()
    return app, client


async def links(client, name="doc") -> dict:
    resp = await client.get(f"/api/docs/{name}/links", headers={"Authorization": f"Bearer {ADMIN}"})
    return {role: url.split("token=")[1] for role, url in (await resp.json())["links"].items()}


async def hello(client, doc, token, client_id, version=None, resume_key=None):
    ws = await client.ws_connect(f"/ws/{doc}?token={token}", protocols=["collab.v1"])
    frame = {"type": "hello", "clientID": client_id, "version": version, "user": USER}
    if resume_key:
        frame["resumeKey"] = resume_key
    await send(ws, frame)
    msg = await recv(ws)
    return ws, msg


async def stored(client, name="doc"):
    resp = await client.get(f"/api/docs/{name}", headers={"Authorization": f"Bearer {ADMIN}"})
    return resp.status, (await resp.json()) if resp.status == 200 else None


# ------------------------------------------------- finding 3: revoked links keep working

async def test_a_socket_opened_before_a_reset_is_refused_at_its_hello(team):
    app, client = team
    old = await links(client)
    early = await client.ws_connect(f"/ws/doc?token={old['edit']}", protocols=["collab.v1"])  # no hello yet
    resp = await client.post("/api/docs/doc/links/reset", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    # Closed while it waited for its hello, and a hello made afterwards with the old link is refused too.
    assert (await closed(early))[0] == CLOSE_POLICY
    late = await client.ws_connect(f"/ws/doc?token={old['edit']}", protocols=["collab.v1"])
    resp = await client.post("/api/docs/doc/links/reset", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    await send(late, {"type": "hello", "clientID": "late", "version": None, "user": USER})
    frames = []
    while (msg := await late.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
        frames.append(orjson.loads(msg.data))
    assert all(f["type"] == "error" and f["code"] == "forbidden" for f in frames)
    assert late.close_code == CLOSE_POLICY
    assert (await stored(client))[1]["doc"] == "hello"


async def test_a_deleted_document_is_not_made_again_by_an_old_view_link(team):
    app, client = team
    view = (await links(client))["view"]
    waiting = await client.ws_connect(f"/ws/doc?token={view}", protocols=["collab.v1"])  # before the delete
    resp = await client.delete("/api/docs/doc", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    assert (await closed(waiting))[0] == CLOSE_POLICY
    ws, frame = await hello(client, "doc", view, "viewer")
    assert frame["type"] == "error" and frame["code"] == "forbidden"
    assert (await closed(ws))[0] == CLOSE_POLICY
    assert (await stored(client))[0] == 404
    docs = await (await client.get("/api/docs", headers={"Authorization": f"Bearer {ADMIN}"})).json()
    assert [d["name"] for d in docs["docs"]] == []


# ------------------------------------------------- finding 4: a viewer can lock out any editor

async def test_a_view_session_cannot_take_over_an_editors_client_id(team):
    app, client = team
    tokens = await links(client)
    editor, welcome = await hello(client, "doc", tokens["edit"], "victim")
    assert welcome["type"] == "welcome" and welcome["resumeKey"]
    for attempt in range(3):  # repeating it does not help
        thief, frame = await hello(client, "doc", tokens["view"], "victim")
        assert (frame["type"], frame["code"]) == ("error", "conflict")
        assert (await closed(thief))[0] == CLOSE_PROTOCOL
    # Another editor (another token would be the admin's; same address) without the key: refused too.
    thief, frame = await hello(client, "doc", ADMIN, "victim")
    assert (frame["type"], frame["code"]) == ("error", "conflict")
    # The victim keeps syncing.
    await send(editor, {"type": "push", "version": 1, "updates": [{"clientID": "victim", "changes": [5, [0, "!"]]}]})
    ack = await recv_type(editor, "updates")
    assert ack["updates"][0]["clientID"] == "victim"
    assert (await stored(client))[1]["doc"] == "hello!"
    # The victim itself, reconnecting with its key (another token, as from a new page), takes over: 4001.
    again, frame = await hello(client, "doc", ADMIN, "victim", version=2, resume_key=welcome["resumeKey"])
    assert frame["type"] == "welcome"
    assert (await closed(editor))[0] == CLOSE_REPLACED


async def test_view_sessions_never_see_client_ids(team):
    app, client = team
    tokens = await links(client)
    viewer, welcome = await hello(client, "doc", tokens["view"], "watcher", version=0)
    assert welcome["role"] == "view"
    assert [u["clientID"] for u in welcome["updates"]] != ["seed"]
    editor, _ = await hello(client, "doc", tokens["edit"], "writer-42")
    await send(editor, {"type": "push", "version": 1, "updates": [{"clientID": "writer-42", "changes": [5, [0, "?"]]}]})
    seen = await recv_type(viewer, "updates")
    assert (await recv_type(editor, "updates"))["updates"][0]["clientID"] == "writer-42"
    hidden = seen["updates"][0]["clientID"]
    assert hidden != "writer-42" and "writer" not in hidden
    history = await (await client.get(f"/api/docs/doc/history?token={tokens['view']}")).json()
    assert "writer-42" not in orjson.dumps(history).decode() and "seed" not in orjson.dumps(history).decode()
    assert history["entries"][0]["clientID"] == hidden  # the same stand-in everywhere
    history = await (await client.get(f"/api/docs/doc/history?token={tokens['edit']}")).json()
    assert history["entries"][0]["clientID"] == "writer-42"
    # A viewer posing as the hidden id gets nowhere either: it is just another clientID.
    await viewer.close()


# ------------------------------------------------- finding 2: one edit link fills the disk

def _db_bytes(db) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if not p.name.endswith(".lock"))


async def _push_all(url: str, doc: str, frames: list[tuple[int, list]], client_id: str) -> list[str]:
    """Push each (version, updates-changes) frame, waiting for its answer; the error codes seen."""
    errors = []
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}/ws/{doc}", protocols=["collab.v1"], max_msg_size=0)
        await send(ws, {"type": "hello", "clientID": client_id, "version": None, "user": USER})
        welcome = await recv_type(ws, "welcome")
        version = welcome["version"]
        for changes in frames:
            await send(ws, {"type": "push", "version": version,
                            "updates": [{"clientID": client_id, "changes": c} for c in changes]})
            while True:
                frame = await recv(ws, timeout=30)
                if frame["type"] == "updates" and frame["updates"][-1]["clientID"] == client_id:
                    version = frame["from"] + len(frame["updates"])
                    break
                if frame["type"] == "error":
                    errors.append(f'{frame["code"]}: {frame["message"]}')
                    break
        await ws.close()
    return errors


def test_one_character_floods_write_snapshots_in_proportion_to_their_bytes(tmp_path):
    """Was: 5 MB of pushes (frames of 1,000 one-character updates) on a 10 MB document wrote 1.02 GB
    of snapshots. Here: 200 frames of 1,000 one-character updates on a 2 MB document (3.3 MB of
    update JSON); the documented bound is snapshot bytes <= --snapshot-ratio x update bytes + one
    document (and one at unload)."""
    db = tmp_path / "snap.db"
    size = 2_000_000
    with ServerProcess(db, extra_args=["--update-rate", "1e9", "--update-burst", "1000000",
                                       "--doc-update-rate", "1e9", "--doc-update-burst", "1000000",
                                       "--max-frame", str(4 << 20)]) as server:
        base = [[[[0, "x" * size]]]]  # one frame, one update
        assert asyncio.run(_push_all(server.url, "big", base, "filler")) == []
        before = _db_bytes(db)
        frames = [[[size + k, [0, "y"]] for k in range(1000)] for _ in range(200)]
        for n, frame in enumerate(frames):  # each update appends at the then-end of the document
            for k, update in enumerate(frame):
                update[0] = size + n * 1000 + k
        assert asyncio.run(_push_all(server.url, "big", frames, "flooder")) == []
        growth = _db_bytes(db) - before
    conn = sqlite3.connect(db)
    snap_bytes, snaps = conn.execute("SELECT COALESCE(SUM(LENGTH(text)), 0), COUNT(*) FROM snapshots "
                                     "WHERE version > 1").fetchone()
    update_bytes = conn.execute("SELECT SUM(LENGTH(changes)) FROM updates WHERE version > 1").fetchone()[0]
    conn.close()
    assert update_bytes > 3_000_000
    assert snap_bytes <= 1.0 * update_bytes + 2 * (size + 200_000), (snap_bytes, snaps, update_bytes)
    assert growth < 40 * 1024 * 1024, growth  # was: a snapshot of 2 MB every 1,000 updates, 400 MB


def test_tiny_update_floods_are_held_to_the_documented_rate(tmp_path):
    """Was: tiny insert/delete pairs on an empty document added 57,000 history rows a second.
    Now one document takes at most --doc-update-burst + --doc-update-rate x seconds updates."""
    db = tmp_path / "tiny.db"
    rate, burst, seconds = 1000, 5000, 4.0
    with ServerProcess(db, extra_args=["--doc-update-rate", str(rate), "--doc-update-burst", str(burst),
                                       "--update-rate", "1e9", "--update-burst", "1000000"]) as server:
        async def flood() -> tuple[int, int]:
            refused = accepted = 0
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{server.url}/ws/tiny", protocols=["collab.v1"])
                await send(ws, {"type": "hello", "clientID": "f", "version": None, "user": USER})
                version = (await recv_type(ws, "welcome"))["version"]
                pair = [{"clientID": "f", "changes": [[0, "a"]]}, {"clientID": "f", "changes": [[1]]}] * 500
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    await send(ws, {"type": "push", "version": version, "updates": pair})
                    frame = await recv(ws, timeout=10)
                    while frame["type"] not in ("updates", "error"):
                        frame = await recv(ws, timeout=10)
                    if frame["type"] == "error":
                        assert frame["code"] == "rate-limited", frame
                        refused += 1
                        await asyncio.sleep(0.01)
                    else:
                        version = frame["from"] + len(frame["updates"])
                        accepted += len(frame["updates"])
                await ws.close()
            return accepted, refused

        started = time.monotonic()
        accepted, refused = asyncio.run(flood())
        elapsed = time.monotonic() - started
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM updates").fetchone()[0]
    assert refused > 0
    assert rows == accepted
    assert rows <= burst + rate * elapsed + 1000, (rows, elapsed)  # was: 57,000 a second


# ------------------------------------------------- finding 7: memory and fan-out

def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_non_reading_view_sessions_on_a_large_document_hold_no_memory(tmp_path):
    """Was: 99 non-reading view sessions on a 10 MB document took the server from 184 MB to 1.9 GB,
    and it stayed there. Now the document's JSON is shared and goes out a fragment at a time, so
    they cost little, and they are dropped after --send-timeout, and memory comes back down."""
    db = tmp_path / "rss.db"
    size = 10 * 1024 * 1024 - 1000
    with ServerProcess(db, extra_args=["--secret", SECRET, "--send-timeout", "4", "--max-frame", str(16 << 20),
                                       "--update-rate", "1e9", "--doc-update-rate", "1e9",
                                       "--max-conns-per-addr", "200"]) as server:
        async def scenario() -> tuple[float, float, float, list]:
            async with aiohttp.ClientSession() as session:
                resp = await session.post(f"{server.url}/api/docs", json={"name": "big"},
                                          headers={"Authorization": f"Bearer {ADMIN}",
                                                   "Origin": server.url})
                assert resp.status == 201, await resp.text()
                view = (await resp.json())["links"]["view"].split("token=")[1]
                ws = await session.ws_connect(f"{server.url}/ws/big?token={ADMIN}", protocols=["collab.v1"],
                                              max_msg_size=0)
                await send(ws, {"type": "hello", "clientID": "filler", "version": None, "user": USER})
                await recv_type(ws, "welcome")
                await send(ws, {"type": "push", "version": 0,
                                "updates": [{"clientID": "filler", "changes": [[0, "z" * size]]}]})
                await recv_type(ws, "updates", timeout=30)
                base = _rss_mb(server.proc.pid)
                sleepers = []
                for k in range(99):
                    s = await session.ws_connect(f"{server.url}/ws/big?token={view}", protocols=["collab.v1"],
                                                 max_msg_size=0)
                    s._response.connection.transport.pause_reading()
                    await send(s, {"type": "hello", "clientID": f"v{k}", "version": None, "user": USER})
                    sleepers.append(s)
                peak = base
                for _ in range(30):  # while they sit there, not reading
                    await asyncio.sleep(0.1)
                    peak = max(peak, _rss_mb(server.proc.pid))
                await asyncio.sleep(4 + 5 + 2)  # --send-timeout, then the closing handshake's 5 s
                after = _rss_mb(server.proc.pid)
                # The editor was never held up.
                await send(ws, {"type": "push", "version": 1, "updates": [{"clientID": "filler",
                                                                            "changes": [size, [0, "!"]]}]})
                assert (await recv_type(ws, "updates", timeout=10))["from"] == 1
                codes = []
                for s in sleepers:
                    s._response.connection.transport.resume_reading()
                for s in sleepers[:5]:
                    while (await s.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                        pass
                    codes.append(s.close_code)
                return base, peak, after, codes

        base, peak, after, codes = asyncio.run(scenario())
        assert peak - base < 300, (base, peak)     # was: +1,700 MB
        assert after - base < 120, (base, after)   # and it stayed there
        assert set(codes) <= {1013, 1006, None}, codes


def test_a_presence_flood_leaves_a_bystanders_acks_fast(tmp_path):
    """Was: 99 sockets flooding presence from one address held a core at 100% and a bystander's ack
    at 1.2 s. Now presence goes out once per tick per document: the bystander's ack stays < 100 ms."""
    db = tmp_path / "flood.db"
    with ServerProcess(db) as server:  # default limits: 100 presence frames/s per connection
        async def scenario() -> list[float]:
            async with aiohttp.ClientSession() as session:
                flooders = []
                for k in range(99):
                    f = await session.ws_connect(f"{server.url}/ws/busy", protocols=["collab.v1"], max_msg_size=0)
                    await send(f, {"type": "hello", "clientID": f"f{k}", "version": None, "user": USER})
                    await recv_type(f, "welcome")
                    flooders.append(f)
                stop = asyncio.Event()

                async def flood(f, k):
                    # They do not read (that costs this test process, not the server): what the
                    # server sends them waits in the sockets' buffers for the few seconds this lasts.
                    f._response.connection.transport.pause_reading()
                    n = 0
                    while not stop.is_set():
                        await f.send_str('{"type":"presence","version":0,"ranges":[]}')
                        n += 1
                        if n % 10 == 0:
                            await asyncio.sleep(0.1)  # 100 a second, the default rate

                tasks = [asyncio.ensure_future(flood(f, k)) for k, f in enumerate(flooders)]
                await asyncio.sleep(1.0)
                by = await session.ws_connect(f"{server.url}/ws/busy", protocols=["collab.v1"], max_msg_size=0)
                await send(by, {"type": "hello", "clientID": "bystander", "version": None, "user": USER})
                version = (await recv_type(by, "welcome", timeout=10))["version"]
                latencies = []
                for k in range(30):
                    started = time.perf_counter()
                    await send(by, {"type": "push", "version": version,
                                    "updates": [{"clientID": "bystander", "changes": ([k] if k else []) + [[0, "b"]]}]})
                    frame = await recv_type(by, "updates", timeout=10)
                    latencies.append(time.perf_counter() - started)
                    version = frame["from"] + len(frame["updates"])
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.gather(*tasks)
                return latencies

        latencies = sorted(asyncio.run(scenario()))
        assert latencies[len(latencies) // 2] < 0.05, latencies
        assert latencies[int(len(latencies) * 0.9)] < 0.1, latencies  # was: 1.2 s (p90, on a shared machine)


async def test_view_sessions_cannot_fill_a_document_so_editors_get_in(aiohttp_client, tmp_path):
    """Was: 200 view sessions filled a document's connection cap and locked editors out (429)."""
    app = create_app(Settings(db=str(tmp_path / "slots.db"), secret=SECRET, max_conns_per_doc=10,
                              reserved_edit_slots=3, max_conns_per_addr=100))
    client = await aiohttp_client(app)
    resp = await client.post("/api/docs", json={"name": "doc"}, headers={"Authorization": f"Bearer {ADMIN}"})
    tokens = await links(client)
    viewers = []
    for k in range(7):
        ws, frame = await hello(client, "doc", tokens["view"], f"v{k}")
        assert frame["type"] == "welcome"
        viewers.append(ws)
    resp = await client.get(f"/ws/doc?token={tokens['view']}", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "collab.v1"})
    assert resp.status == 429  # the 8th viewer: only the editors' slots are left
    editors = []
    for k in range(3):
        ws, frame = await hello(client, "doc", tokens["edit"], f"e{k}")
        assert frame["type"] == "welcome"
        editors.append(ws)
    assert len(app[ROOMS].rooms["doc"].members) == 10


async def test_the_document_cap_holds_when_sessions_arrive_at_once(aiohttp_client, tmp_path):
    """Was: --max-conns-per-doc (welcomed sessions) was checked only at the handshake, so sockets
    opened at once all passed it, and then all of them joined."""
    app = create_app(Settings(db=str(tmp_path / "cap.db"), max_conns_per_doc=4, max_conns_per_addr=100))
    client = await aiohttp_client(app)
    sockets = [await client.ws_connect("/ws/doc", protocols=["collab.v1"]) for _ in range(7)]  # nobody in yet
    for k, ws in enumerate(sockets):
        await send(ws, {"type": "hello", "clientID": f"c{k}", "version": None, "user": USER})
    frames = [await recv(ws) for ws in sockets]
    assert sorted(f["type"] for f in frames) == ["error"] * 3 + ["welcome"] * 4, frames
    assert {f["code"] for f in frames if f["type"] == "error"} == {"rate-limited"}
    assert len(app[ROOMS].rooms["doc"].members) == 4
    for ws in sockets:
        await ws.close()


async def test_joining_a_new_document_counts_against_max_documents(aiohttp_client, tmp_path):
    """Documents come to be through one door (Rooms.create), at their first edit: past --max-documents
    that edit is refused (the visit itself made nothing)."""
    app = create_app(Settings(db=str(tmp_path / "cap.db"), max_documents=2))
    client = await aiohttp_client(app)
    for name in ("one", "two", "three"):
        ws, frame = await hello(client, name, "", f"c-{name}")
        assert frame["type"] == "welcome"
        await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": f"c-{name}", "changes": [[0, "x"]]}]})
        frame = await recv(ws)
        if name != "three":
            assert frame["type"] == "updates"
    assert (frame["type"], frame["code"]) == ("error", "too-large")
    assert "--max-documents 2" in frame["message"]
    resp = await client.post("/api/docs/one/fork", json={"name": "four"})
    assert resp.status == 413
    assert sorted(d["name"] for d in (await (await client.get("/api/docs")).json())["docs"]) == ["one", "two"]


async def test_first_pushes_at_once_are_all_told_why_the_document_could_not_be_made(aiohttp_client, tmp_path):
    """Was: when the making of a document by its first pushes failed, the first of the pushes waiting on it
    to be told forgot the attempt, and the others failed on that (internal error, close 1011), instead of
    each getting the refusal (here --max-documents) and keeping its connection."""
    app = create_app(Settings(db=str(tmp_path / "cap.db"), max_documents=1))
    client = await aiohttp_client(app)
    ws, _ = await hello(client, "one", "", "c-one")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "c-one", "changes": [[0, "x"]]}]})
    assert (await recv(ws))["type"] == "updates"
    sockets = []
    for k in range(4):
        other, frame = await hello(client, "two", "", f"c{k}")
        assert frame["type"] == "welcome"
        sockets.append(other)
    for k, other in enumerate(sockets):  # all before any answer: they wait on one making of the document
        await send(other, {"type": "push", "version": 0, "updates": [{"clientID": f"c{k}", "changes": [[0, "y"]]}]})
    frames = [await recv(other) for other in sockets]
    assert [(f["type"], f.get("code")) for f in frames] == [("error", "too-large")] * 4, frames
    for k, other in enumerate(sockets):  # still open, and still refused the same way
        await send(other, {"type": "push", "version": 0, "updates": [{"clientID": f"c{k}", "changes": [[0, "z"]]}]})
        frame = await recv(other)
        assert (frame["type"], frame.get("code")) == ("error", "too-large"), frame
    for other in sockets:
        await other.close()
    await ws.close()


async def test_requests_that_come_after_the_store_closed_at_shutdown_are_told_so(aiohttp_client, tmp_path):
    """Was: a request or a hello still coming in while the server stopped, after its store had closed,
    failed on RuntimeError("store is closed"): 500 `internal`, logged as a bug. Now it is 503
    `unavailable` saying the server is shutting down, and a hello gets close 1001 (reconnect and resume)."""
    app = create_app(Settings(db=str(tmp_path / "closed.db")))
    client = await aiohttp_client(app)
    await app[ROOMS].store.close()
    for path in ("/api/docs", "/api/docs/x", "/api/docs/x/history"):
        resp = await client.get(path)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"]) == (503, "unavailable"), (path, error)
        assert "shutting down" in error["message"], error
    ws, frame = await hello(client, "x", "", "c")
    assert (frame["type"], frame["code"]) == ("error", "unavailable"), frame
    assert (await closed(ws))[0] == 1001


async def test_only_a_push_the_server_takes_makes_a_document(aiohttp_client, tmp_path):
    """Was: any push to a name with no document made it before the push was checked, so an empty push, a
    refused one, or one from the future made a document for good (listed, counted by --max-documents)."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "made.db"), max_doc=10)))
    ws, frame = await hello(client, "fresh", "", "c")
    assert frame["type"] == "welcome" and frame["version"] == 0
    refused = [({"version": 3, "updates": [{"clientID": "c", "changes": [[0, "x"]]}]}, "bad-version"),
               ({"version": 0, "updates": [{"clientID": "someone", "changes": [[0, "x"]]}]}, "bad-message"),
               ({"version": 0, "updates": [{"clientID": "c", "changes": [5, [0, "x"]]}]}, "bad-changes"),
               ({"version": 0, "updates": [{"clientID": "c", "changes": [[0, "x" * 11]]}]}, "too-large")]
    await send(ws, {"type": "push", "version": 0, "updates": []})  # nothing, and no answer
    for push, code in refused:
        await send(ws, {"type": "push"} | push)
        frame = await recv(ws)
        assert (frame["type"], frame.get("code")) == ("error", code), (push, frame)
    assert (await (await client.get("/api/docs")).json())["docs"] == []
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": [[0, "x"]]}]})
    assert (await recv(ws))["type"] == "updates"
    assert [d["name"] for d in (await (await client.get("/api/docs")).json())["docs"]] == ["fresh"]
    await ws.close()


async def test_versions_rebuilt_from_the_store_wait_in_a_bounded_line_and_the_rest_are_refused(
        aiohttp_client, tmp_path, monkeypatch):
    """Was: every request for an old version (any view link may ask) rebuilt its text on the store's
    few reader connections with no bound on how many at once or in line, so a crowd of them held up
    every load and join behind it (a reviewer: a join took 14 s). Now REBUILDS_RUNNING run at once,
    REBUILDS_WAITING wait, and one more is 503 unavailable at once."""
    monkeypatch.setattr(room_module, "REBUILDS_RUNNING", 2)
    monkeypatch.setattr(room_module, "REBUILDS_WAITING", 3)
    app = create_app(Settings(db=str(tmp_path / "r.db")))
    client = await aiohttp_client(app)
    ws, frame = await hello(client, "doc", "", "c")
    for v in range(3):
        await send(ws, {"type": "push", "version": v, "updates": [{"clientID": "c", "changes": [v, [0, "x"]]}]})
        await recv_type(ws, "updates")
    store = app[ROOMS].store
    rebuild, running, most, go = store.text_at, [0], [0], asyncio.Event()

    async def held_rebuild(doc_id, version, wanted=None):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await go.wait()
            return await rebuild(doc_id, version, wanted)
        finally:
            running[0] -= 1

    monkeypatch.setattr(store, "text_at", held_rebuild)

    async def read():
        resp = await client.get("/api/docs/doc/versions/1")
        return resp.status, await resp.json()

    reads = [asyncio.ensure_future(read()) for _ in range(9)]
    await until(lambda: sum(r.done() for r in reads) == 4, "four refusals")
    refused = [r.result() for r in reads if r.done()]
    assert all(status == 503 and body["error"]["code"] == "unavailable" for status, body in refused), refused
    other, frame = await hello(client, "another", "", "d")  # loads and joins do not wait in that line
    assert frame["type"] == "welcome"
    go.set()
    answered = await asyncio.gather(*(r for r in reads if not r.done()))
    assert answered == [(200, {"version": 1, "doc": "x"})] * 5 and most[0] == 2
    await ws.close()
    await other.close()


async def test_a_push_of_many_places_takes_from_the_update_budget_by_its_size(aiohttp_client, tmp_path):
    """Was: a push took one unit per update whatever its size, so one client could send frame after frame
    of a hundred thousand places (each about 0.3 s of the event loop to parse and apply) within the
    budget meant for keystrokes. Now it costs one unit per 100 sections, at most --max-updates."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "w.db"), update_rate=1, update_burst=1000,
                                                      max_updates=1000)))
    ws, frame = await hello(client, "doc", "", "c")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": [[0, "a" * 30_000]]}]})
    await recv_type(ws, "updates")
    wide = [[0, "x"], 1] * 30_000  # 60,000 sections: 600 units

    async def push(version, changes):
        await send(ws, {"type": "push", "version": version, "updates": [{"clientID": "c", "changes": changes}]})
        return await recv(ws)

    assert (await push(1, wide))["type"] == "updates"  # 1 + 600 of the burst's 1,000
    frame = await push(2, [60_000, [0, "y"]])
    assert frame["type"] == "updates"  # a keystroke still costs one
    frame = await push(3, [[0, "x"], 1] * 60_001)  # 120,002 sections: at most --max-updates, 1,000
    assert (frame["type"], frame["code"]) == ("error", "rate-limited") and "push again in" in frame["message"]
    said = float(frame["message"].rsplit("push again in ", 1)[1].removesuffix(" s"))
    assert 500 < frame["retryAfter"] <= 1000 and abs(frame["retryAfter"] - said) <= 0.05, frame
    assert (await (await client.get("/api/docs/doc")).json())["version"] == 3
    await ws.close()


async def test_named_versions_per_document_stop_at_max_checkpoints(aiohttp_client, tmp_path):
    """Named versions are bounded per document: past --max-checkpoints naming another version is 413 with
    why; renaming a named one and taking a name away still work, and then a new one may be named."""
    app = create_app(Settings(db=str(tmp_path / "cp.db"), max_checkpoints=2, write_rate=0))
    client = await aiohttp_client(app)
    ws, frame = await hello(client, "doc", "", "c")
    for v in range(4):
        await send(ws, {"type": "push", "version": v, "updates": [{"clientID": "c", "changes": [v, [0, "x"]]}]})
        await recv_type(ws, "updates")

    async def name(version, label):
        resp = await client.post("/api/docs/doc/checkpoints", json={"version": version, "name": label})
        return resp.status, await resp.json()

    assert (await name(1, "one"))[0] == 200 and (await name(2, "two"))[0] == 200
    status, body = await name(3, "three")
    assert (status, body["error"]["code"]) == (413, "too-large")
    assert "--max-checkpoints 2" in body["error"]["message"]
    status, body = await name(2, "second")  # a version already named may be renamed
    assert status == 200 and [c["name"] for c in body["checkpoints"]] == ["one", "second"]
    assert (await name(1, None))[0] == 200
    status, body = await name(3, "three")
    assert status == 200 and [(c["version"], c["name"]) for c in body["checkpoints"]] == [(2, "second"), (3, "three")]
    await ws.close()


async def test_a_checkpoint_name_is_visible_at_most_100_characters_and_only_null_takes_it_away(aiohttp_client, tmp_path):
    """Was: a name that normalised to nothing ("   ", a zero-width space) silently took the version's name away,
    and the 100-character limit was checked before NFC, so 100 x U+FB2C was stored as 300 characters. And a
    body that is not JSON was bad-request, where the error table says bad-json. And a body with no "name" at
    all (a typo) took the name away as null does."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "cp.db"), write_rate=0)))
    ws, frame = await hello(client, "doc", "", "c")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": [[0, "x"]]}]})
    await recv_type(ws, "updates")

    async def name(label, author=None):
        body = {"version": 1, "name": label} | ({"author": author} if author is not None else {})
        resp = await client.post("/api/docs/doc/checkpoints", json=body)
        return resp.status, await resp.json()

    assert (await name("release 1"))[0] == 200
    for blank in ("   ", "\u200b", " \u200b\u202e \n"):
        status, body = await name(blank)
        assert (status, body["error"]["code"]) == (400, "bad-request"), (blank, body)
    checkpoints = (await (await client.get("/api/docs/doc/checkpoints")).json())["checkpoints"]
    assert [c["name"] for c in checkpoints] == ["release 1"]
    status, body = await name("\ufb2c" * 100, author="\ufb2c" * 100)
    assert status == 200, body
    (stored,) = body["checkpoints"]
    assert stored["name"] == unicodedata.normalize("NFC", "\ufb2c" * 100)[:100], len(stored["name"])
    assert len(stored["author"]) == 100
    for typo in ({"version": 1}, {"version": 1, "nam": "x"}):  # was: no "name" took the name away
        resp = await client.post("/api/docs/doc/checkpoints", json=typo)
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, "bad-request"), typo
    checkpoints = (await (await client.get("/api/docs/doc/checkpoints")).json())["checkpoints"]
    assert [c["name"] for c in checkpoints] == [stored["name"]]
    assert (await name(None))[0] == 200
    assert (await (await client.get("/api/docs/doc/checkpoints")).json())["checkpoints"] == []
    resp = await client.post("/api/docs/doc/checkpoints", data=b"{version: 1", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad-json"
    await ws.close()


# ------------------------------------------------- finding 2: the free-disk low-water mark

async def test_a_nearly_full_disk_refuses_writes_cleanly_and_reads_go_on(aiohttp_client, tmp_path):
    db = str(tmp_path / "disk.db")
    app = create_app(Settings(db=db))
    client = await aiohttp_client(app)
    ws, _ = await hello(client, "doc", "", "w")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "w", "changes": [[0, "kept"]]}]})
    await recv_type(ws, "updates")
    await ws.close()
    await client.close()
    # The same database, served again with a low-water mark no disk can meet.
    client = await aiohttp_client(create_app(Settings(db=db, min_free_disk=1 << 62)))
    ws, welcome = await hello(client, "doc", "", "w2")
    assert welcome["type"] == "welcome" and welcome["doc"] == "kept"
    await send(ws, {"type": "push", "version": 1, "updates": [{"clientID": "w2", "changes": [4, [0, "!"]]}]})
    frame = await recv(ws)
    assert (frame["type"], frame["code"]) == ("error", "unavailable") and "disk" in frame["message"]
    await send(ws, {"type": "presence", "version": 1, "ranges": [{"anchor": 1, "head": 1}]})
    assert (await recv_type(ws, "presences"))["peers"][0]["ranges"] == [{"anchor": 1, "head": 1}]  # still open
    assert (await (await client.get("/api/docs/doc")).json())["doc"] == "kept"
    assert (await client.post("/api/docs/doc/restore", json={"version": 0})).status == 503
    assert (await client.post("/api/docs", json={"name": "new"})).status == 503
    assert (await client.post("/api/docs/doc/checkpoints", json={"version": 1, "name": "n"})).status == 503
    assert (await (await client.get("/api/docs/doc/checkpoints")).json())["checkpoints"] == []
    other, frame = await hello(client, "new-doc", "", "n")  # a visit makes nothing; the first edit would
    assert frame["type"] == "welcome"
    await send(other, {"type": "push", "version": 0, "updates": [{"clientID": "n", "changes": [[0, "new"]]}]})
    frame = await recv(other)
    assert (frame["type"], frame["code"]) == ("error", "unavailable")
    assert (await (await client.get("/api/docs/new-doc")).json())["error"]["code"] == "not-found"
    assert (await (await client.get("/api/docs/doc")).json())["doc"] == "kept"


@pytest.mark.parametrize("shape", ["places", "lines"])
async def test_a_large_push_lets_the_event_loop_run_between_its_long_steps(aiohttp_client, tmp_path, monkeypatch,
                                                                            shape):
    """Was: a 1 MB push of 100,000 places was parsed, applied and made ready to store (its JSON) in one go,
    about 0.3 s in which nothing else ran (bench/stall.py, replace-all: /healthz waited 311-374 ms). The
    loop now runs rounds between those steps (each about 0.1 s), and does not for a keystroke. One
    insertion of 100,000 lines is as slow to parse, though it is one place: it is judged by its weight."""
    from collab import protocol
    from collab.room import Room
    from collab.sequencer import Sequencer

    app = create_app(Settings(db=str(tmp_path / "big.db"), rate=1e6, burst=1e6, update_rate=1e6,
                              update_burst=1e6, doc_update_rate=1e6, doc_update_burst=1e6))
    client = await aiohttp_client(app)
    rounds = 0

    async def ticker():  # counts the event loop's rounds
        nonlocal rounds
        while True:
            rounds += 1
            await asyncio.sleep(0)

    marks: list[tuple[str, int]] = []

    def watched(owner, name):
        real = getattr(owner, name)

        def step(*args, **kwargs):
            marks.append((name + " begins", rounds))
            try:
                return real(*args, **kwargs)
            finally:
                marks.append((name + " ends", rounds))
        monkeypatch.setattr(owner, name, step)

    n = 100_000
    ws = await client.ws_connect("/ws/big", protocols=["collab.v1"], max_msg_size=0)
    await send(ws, {"type": "hello", "clientID": "big", "version": None, "user": USER})
    await recv_type(ws, "welcome")
    await send(ws, {"type": "push", "version": 0, "updates": [{"clientID": "big", "changes": [[0, "ab" * n]]}]})
    await recv_type(ws, "updates")
    for owner, name in ((protocol, "parse"), (Sequencer, "push"), (Room, "_take_commit")):
        watched(owner, name)
    tick = asyncio.ensure_future(ticker())
    try:
        changes = [x for _ in range(n) for x in (1, [1, "c"])] if shape == "places" else [2 * n, [0] + ["l"] * n]
        await send(ws, {"type": "push", "version": 1, "updates": [{"clientID": "big", "changes": changes}]})
        await recv_type(ws, "updates", timeout=30)
        heavy = list(marks)
        marks.clear()
        length = 2 * n if shape == "places" else 4 * n - 1
        await send(ws, {"type": "push", "version": 2, "updates": [{"clientID": "big", "changes": [[0, "k"], length]}]})
        await recv_type(ws, "updates")
        light = list(marks)
    finally:
        tick.cancel()
    await ws.close()

    def gaps(marks) -> list[int]:
        """Rounds the loop ran from the end of each step to the beginning of the next one."""
        names = [m for m, _ in marks]
        assert names == ["parse begins", "parse ends", "push begins", "push ends", "_take_commit begins",
                         "_take_commit ends"], names
        at = [r for _, r in marks]
        return [at[2] - at[1], at[4] - at[3]]

    assert all(g >= room_module.TURN_ROUNDS for g in gaps(heavy)), heavy
    assert gaps(light)[0] < room_module.TURN_ROUNDS, light  # a keystroke is applied as soon as it is read
