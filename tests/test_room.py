"""Room behaviour over real WebSockets: presence coalescing and mapping, unloading, old versions."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import orjson
import pytest

from collab.app import ROOMS, STORE, create_app
from collab.settings import Settings
from wsutil import join, push, recv, recv_type, send


@pytest.fixture
def settings(tmp_path):
    return Settings(db=str(tmp_path / "r.db"), keep_updates=5, snapshot_every=4, unload_after=0.2,
                    presence_interval=0.05)


@pytest.fixture
async def app_client(aiohttp_client, settings):
    app = create_app(settings)
    return app, await aiohttp_client(app)


async def type_chars(ws, client_id, start_version, count, peer=None):
    """Push `count` one-character updates, each after the previous ack."""
    v = start_version
    for k in range(count):
        await push(ws, v, client_id, ([v] if v else []) + [[0, "x"]])
        ack = await recv_type(ws, "updates")
        v = ack["from"] + len(ack["updates"])
        if peer is not None:
            await recv_type(peer, "updates")
    return v


async def test_presence_is_coalesced_to_about_20_per_second(app_client):
    app, client = app_client
    a, _ = await join(client, "p", "A")
    b, _ = await join(client, "p", "B")
    await push(a, 0, "A", [[0, "0123456789"]])
    await recv_type(a, "updates"), await recv_type(b, "updates")
    start = time.monotonic()
    for k in range(100):  # a very fast typist: 100 selection changes in ~0.5 s
        await send(a, {"type": "presence", "version": 1, "ranges": [{"anchor": k % 10, "head": k % 10}]})
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - start
    await asyncio.sleep(0.1)
    frames = []
    while True:
        try:
            frames.append(await recv(b, timeout=0.2))
        except asyncio.TimeoutError:
            break
    assert all(f["type"] == "presences" and len(f["peers"]) == 1 for f in frames)
    assert 2 <= len(frames) <= elapsed * 20 + 3, (len(frames), elapsed)
    # The newest selection always arrives last.
    assert frames[-1]["peers"][0]["ranges"] == [{"anchor": 9, "head": 9}]
    assert frames[-1]["peers"][0]["user"] == {"name": "Tester", "color": "#3366ff"}


async def test_presence_is_mapped_to_the_version_peers_have(app_client):
    app, client = app_client
    a, _ = await join(client, "m", "A")
    b, _ = await join(client, "m", "B")
    await push(a, 0, "A", [[0, "hello world"]])
    await recv_type(a, "updates"), await recv_type(b, "updates")
    await push(b, 1, "B", [[0, ">> "], 11])
    await recv_type(a, "updates"), await recv_type(b, "updates")
    # A still thinks in version 1: its cursor after "hello" is 5.
    await send(a, {"type": "presence", "version": 1, "ranges": [{"anchor": 5, "head": 5}]})
    frame = (await recv_type(b, "presences"))["peers"][0]
    assert frame["version"] == 2 and frame["ranges"] == [{"anchor": 8, "head": 8}]
    # A newcomer gets it in its welcome, at the welcome's version.
    c, welcome = await join(client, "m", "C")
    assert [(p["version"], p["ranges"]) for p in welcome["peers"]] == [(2, [{"anchor": 8, "head": 8}])]
    # Leaving drops the cursor everywhere.
    await a.close()
    assert (await recv_type(b, "leave"))["session"] == frame["session"]


async def test_idle_document_unloads_and_reloads_counting_what_a_snapshot_waits_for(app_client):
    """An unload writes a snapshot only when a commit would (--snapshot-ratio, --snapshot-min-bytes):
    six keystrokes are far from it, so the reload replays them, and counts their bytes towards the next.
    (Was: every unload stored the whole text, however little had changed: found by a bounds audit.)"""
    app, client = app_client
    a, _ = await join(client, "u", "A")
    version = await type_chars(a, "A", 0, 6)
    await a.close()
    rooms = app[ROOMS]
    for _ in range(100):
        if "u" not in rooms.rooms:
            break
        await asyncio.sleep(0.02)
    assert "u" not in rooms.rooms
    loaded = await app[STORE].load("u")
    assert (loaded.version, loaded.snapshot_version, loaded.text) == (6, 0, "x" * 6)
    changes = [[v, [0, "x"]] if v else [[0, "x"]] for v in range(6)]  # what type_chars typed
    assert loaded.replay_bytes == sum(len(orjson.dumps(c)) for c in changes)
    b, welcome = await join(client, "u", "B")
    assert (welcome["version"], welcome["doc"]) == (version, "x" * 6)
    assert app[ROOMS].rooms["u"].replay_bytes == loaded.replay_bytes


async def test_resume_and_push_from_before_the_memory_log(app_client):
    app, client = app_client
    a, _ = await join(client, "o", "A")
    await type_chars(a, "A", 0, 12)  # keep_updates=5: versions 1..7 are only on disk
    room = app[ROOMS].rooms["o"]
    assert room.seq.log_from > 2
    # Resume from version 2: the missed updates come from disk.
    b, welcome = await join(client, "o", "B", version=2)
    assert welcome["from"] == 2
    # ... in the frames they were broadcast in: one each, also where the room no longer remembers
    # where they ended (the store does).
    frames = [welcome]
    while frames[-1]["from"] + len(frames[-1]["updates"]) < 12:
        frames.append(await recv_type(b, "updates"))
    assert [(f["from"], len(f["updates"])) for f in frames] == [(v, 1) for v in range(2, 12)]
    # A push based on version 2 is rebased over 10 updates, 5 of them read from disk.
    await push(b, 2, "B", [[0, "B"], 2])
    ack = await recv_type(b, "updates")
    assert ack["from"] == 12 and ack["updates"][0]["changes"] == [[0, "B"], 12]
    resp = await client.get("/api/docs/o")
    assert (await resp.json())["doc"] == "B" + "x" * 12


async def test_resume_from_a_future_version_gets_the_full_text(app_client):
    app, client = app_client
    a, _ = await join(client, "f", "A")
    await type_chars(a, "A", 0, 2)
    b, welcome = await join(client, "f", "B", version=50)
    assert "from" not in welcome and (welcome["version"], welcome["doc"]) == (2, "xx")


def _client_ends_with(node: str, edit: list, frames: list[dict], client_id: str) -> dict:
    """What a real @codemirror/collab client ends with (its text, its unconfirmed updates) that made
    `edit` and was then fed `frames` (welcome or updates frames), in order."""
    import json
    import subprocess
    from pathlib import Path

    actions = [{"edit": 0, "changes": edit}]
    actions += [{"receive": 0, "updates": [{**u, "clientID": "p0" if u["clientID"] == client_id else u["clientID"]}
                                           for u in f["updates"]]} for f in frames]
    actions.append({"report": 0})
    oracle = Path(__file__).resolve().parent / "js" / "oracle.mjs"
    replay = {"doc": "a", "peers": 1, "actions": actions}
    out = subprocess.run([node, str(oracle)], input=json.dumps({"replays": [replay]}), capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)["replays"][0]["reports"][0]


async def _type_at_start(ws, client_id: str, version: int, length: int, count: int, peer=None) -> int:
    """Push `count` updates inserting "x" at the start of a text of `length`, each after the previous
    acknowledgement (each its own frame); the version after them."""
    for k in range(count):
        await push(ws, version + k, client_id, [[0, "x"], length + k] if length + k else [[0, "x"]])
        await recv_type(ws, "updates")
        if peer is not None:
            await recv_type(peer, "updates")
    return version + count


async def _frames_until(ws, first: dict | None, version: int) -> list[dict]:
    """`first` (a welcome, or None) and the updates frames after it, until they reach `version`."""
    frames = [first] if first is not None else [await recv_type(ws, "updates")]
    while frames[-1]["from"] + len(frames[-1]["updates"]) < version:
        frames.append(await recv_type(ws, "updates"))
    return frames


async def _two_frames_c_does_not_read(client, doc: str) -> tuple:
    """A, B and C in `doc` at version 1 (text "a"), then two frames that map an edit of C's at version 1
    differently apart than composed: A deletes the "a" (v2), B types "Y" (v3). A and B read them."""
    a, _ = await join(client, doc, "A")
    await push(a, 0, "A", [[0, "a"]])
    await recv_type(a, "updates")
    b, _ = await join(client, doc, "B")
    c, _ = await join(client, doc, "C")
    await push(a, 1, "A", [[1]])                       # v2
    await recv_type(a, "updates"), await recv_type(b, "updates")
    await push(b, 2, "B", [[0, "Y"]])                  # v3
    await recv_type(a, "updates"), await recv_type(b, "updates")
    return a, b, c


@pytest.mark.parametrize("later", [0, 12], ids=["the room remembers the frames", "only the store does"])
async def test_a_resume_replays_the_frames_a_lost_connection_was_sent(app_client, node, later):
    """C's push is rebased along two frames C's connection was sent but C never read; C resumes.

    The resume must come in those same frames: a real @codemirror/collab
    client fed them ends with the server's text, while fed them composed into
    one welcome it ends with "ZY" against the server's "YZ", silently. With
    `later` frames typed before C is back, the room no longer holds where
    those two ended (keep_updates=5): the resume reads it from the store.
    """
    app, client = app_client
    a, b, c = await _two_frames_c_does_not_read(client, "lost")
    await push(c, 1, "C", [[0, "Z"], 1])               # C has read neither
    assert (await recv_type(a, "updates"))["updates"][0]["changes"] == [1, [0, "Z"]]
    await c.close()                                    # and never will
    head = await _type_at_start(a, "A", 4, 2, later)
    assert later == 0 or app[ROOMS].rooms["lost"].seq.frame_ends[0] > 3
    c, welcome = await join(client, "lost", "C", version=1)
    frames = await _frames_until(c, welcome, head)
    assert [(f["from"], len(f["updates"])) for f in frames] == [(v, 1) for v in range(1, head)]
    report = _client_ends_with(node, [[0, "Z"], 1], frames, "C")
    resp = await client.get("/api/docs/lost")
    assert (await resp.json())["doc"] == report["doc"] == "x" * later + "YZ" and not report["unconfirmed"]


async def test_a_push_from_before_the_memory_log_is_rebased_along_the_frames_its_connection_was_sent(app_client,
                                                                                                     node):
    """C pushes at version 1 after two frames that map its edit differently apart than composed, and
    twelve more, so the room no longer holds where those two ended (keep_updates=5): the rebase reads
    that from the store, and C's client, fed what its connection was sent, ends with the server's text."""
    app, client = app_client
    a, b, c = await _two_frames_c_does_not_read(client, "late")
    await _type_at_start(a, "A", 3, 1, 12, peer=b)     # v4 .. v15; C reads none of it yet
    assert app[ROOMS].rooms["late"].seq.frame_ends[0] > 3 and app[ROOMS].rooms["late"].seq.log_from > 1
    await push(c, 1, "C", [[0, "Z"], 1])
    frames = await _frames_until(c, None, 16)
    assert [(f["from"], len(f["updates"])) for f in frames] == [(v, 1) for v in range(1, 16)]
    report = _client_ends_with(node, [[0, "Z"], 1], frames, "C")
    resp = await client.get("/api/docs/late")
    assert (await resp.json())["doc"] == report["doc"] == "x" * 12 + "YZ" and not report["unconfirmed"]


async def test_a_resume_many_times_the_send_buffer_reaches_a_client_in_one_connection(aiohttp_client, tmp_path):
    """Sent all at once, a resume of more than fits in the socket and --send-buffer closed the client
    (1013) before it read anything; now it goes a page at a time as the client reads."""
    settings = Settings(db=str(tmp_path / "big.db"), keep_updates=5, send_buffer=64 << 10)
    client = await aiohttp_client(create_app(settings))
    a, _ = await join(client, "big", "A")
    chunk = "y" * 100_000
    for v in range(100):                               # 10 MB of history, a frame per update
        await push(a, v, "A", [[0, chunk]] + ([v * len(chunk)] if v else []))
        await recv_type(a, "updates")
    b, welcome = await join(client, "big", "B", version=0)
    frames = await _frames_until(b, welcome, 100)
    assert [(f["from"], len(f["updates"])) for f in frames] == [(v, 1) for v in range(100)]


async def test_background_work_that_fails_is_logged_once_and_never_left_unretrieved(settings, caplog):
    """Was: a task the registry spawned (a cluster message finding a document made elsewhere, say) that
    raised was left to asyncio's "Task exception was never retrieved". Now a bug is logged with its
    traceback, and a database that cannot be reached is left to the store's own throttled warning."""
    from collab.room import Rooms
    from collab.store import Store
    from collab.storage import StorageUnavailable

    store = await Store(settings.db).open()
    rooms = Rooms(settings, store)

    async def bug():
        raise RuntimeError("a bug in background work")

    async def outage():
        raise StorageUnavailable("the database cannot be reached")

    try:
        with caplog.at_level(logging.ERROR):
            for task in (rooms.spawn(bug()), rooms.spawn(outage())):
                await asyncio.wait([task])
            await asyncio.sleep(0)
            del task
            gc.collect()
            await asyncio.sleep(0)
        failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [(r.getMessage(), str(r.exc_info[1])) for r in failed] == [
            ("background work test_background_work_that_fails_is_logged_once_and_never_left_unretrieved"
             ".<locals>.bug failed", "a bug in background work")], failed
        assert not rooms._tasks
    finally:
        await rooms.shutdown()
        await store.close()
