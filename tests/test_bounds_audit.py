"""Bounds audit: input from outside that stalls the event loop or grows memory or storage past what the
docs state, found by an audit and fixed since. Each test is one finding, measured against a real server
(in-process, aiohttp's test client, where the event loop's work is measured; 127.0.0.1 only), and fails
while the problem is there."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time

import orjson

from collab import compute, protocol
from collab.app import ROOMS, STORE, create_app
from collab.sequencer import MAP_BUDGET
from collab.settings import Settings
import test_hardening
from wsutil import USER, closed, recv, recv_type, send

STALL = 0.05  # seconds: the most one request may hold the event loop
team = test_hardening.team  # the fixture: a team instance (access control on) with a document "doc"
ADMIN = test_hardening.ADMIN


class Lateness:
    """A task on the server's loop (the test's loop: the server runs in-process) that wakes every 5 ms
    and records the most CPU time the loop's thread spent between two of its wakes: the longest stretch
    of work in which the loop ran nothing else. CPU time, not the clock: a machine busy with other
    processes (two cores, the suite's other worker) delays the wakes without the loop doing anything.
    The cyclic garbage collector is off meanwhile: a full pass over all a test worker has accumulated
    (about 0.1 s late in a whole-suite run) would count as the code under test holding the loop."""

    def __init__(self):
        self.worst = 0.0
        self._task = None

    async def _run(self):
        cpu = time.thread_time()
        while True:
            await asyncio.sleep(0.005)
            now = time.thread_time()
            self.worst = max(self.worst, now - cpu)
            cpu = now

    async def __aenter__(self):
        gc.collect()
        gc.disable()
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0.02)
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc):
        gc.enable()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def _many_keeps_push(client_id: str = "x") -> str:
    """A push frame of just under 1 MiB (--max-frame) whose changes are 499,990 one-character keeps:
    protocol.parse walks every one of them in Python."""
    return orjson.dumps({"type": "push", "version": 0, "updates": [
        {"clientID": client_id, "changes": [1] * 499_990}]}).decode()


def _one_line_push(client_id: str = "x") -> str:
    """The control: a push frame of the same size whose changes are one insertion of one line."""
    return orjson.dumps({"type": "push", "version": 0, "updates": [
        {"clientID": client_id, "changes": [[0, "y" * 999_900]]}]}).decode()


# ------------------------------------------------------------------ stalls (c)

async def test_a_push_sent_before_hello_without_a_token_is_parsed_whole_on_the_loop(team):
    """Was: a socket with no token at all, on a team instance, sends a 1 MiB push as its first frame. It is
    refused (bad-message, 4000: the first frame must be hello) only after protocol.parse has built every
    one of its ~500,000 sections in Python on the event loop: about 0.1-0.2 s in which nothing else runs,
    and the socket may reconnect and do it again (100 at once from one address)."""
    _, client = team
    heavy, light = _many_keeps_push(), _one_line_push()

    async def first_frame(frame: str) -> tuple[float, object]:
        ws = await client.ws_connect("/ws/doc", protocols=["collab.v1"])  # no token
        async with Lateness() as late:
            await ws.send_str(frame)
            error = await recv(ws, timeout=10)
            code, _ = await closed(ws, timeout=10)
        assert error["type"] == "error" and error["code"] == "bad-message", error
        assert code == 4000, code
        return late.worst, code

    control, _ = await first_frame(light)  # the same bytes, cheap to parse: what the transfer itself costs
    worst, _ = await first_frame(heavy)
    assert worst < STALL, (f"a tokenless socket's first frame held the event loop {worst * 1000:.0f} ms "
                           f"(a frame of the same size that is cheap to parse: {control * 1000:.0f} ms)")


async def test_a_view_sessions_push_is_parsed_whole_before_it_is_refused_read_only(team):
    """Was: a view link's session may never push (read-only), yet every push frame it sends is parsed whole
    first: a 1 MiB one holds the event loop as long as above, at up to 100 frames a second."""
    _, client = team
    resp = await client.get("/api/docs/doc/links", headers={"Authorization": f"Bearer {ADMIN}"})
    view = (await resp.json())["links"]["view"].split("token=")[1]
    ws = await client.ws_connect(f"/ws/doc?token={view}", protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": "viewer", "version": None, "user": USER})
    assert (await recv_type(ws, "welcome"))["role"] == "view"
    heavy = _many_keeps_push("viewer")
    held = []  # up to three tries on the same session: the least counts (see below)
    while len(held) < 3 and min(held, default=STALL) >= STALL:
        async with Lateness() as late:
            await ws.send_str(heavy)
            error = await recv_type(ws, "error", timeout=10)
        assert error["code"] == "read-only", error
        held.append(late.worst)
    # The refusal reads the frame as JSON once (about 20 ms of the loop's CPU here, alone or beside a
    # CPU-bound process); parsed whole, as it was, it took 100-200 ms every time. A whole-suite run on a
    # loaded CI machine once measured 66 ms for the first: the least of three tries still tells the two
    # apart, where one try can be an outlier.
    assert min(held) < STALL, ("a view session's refused push held the event loop "
                               + ", ".join(f"{t * 1000:.0f}" for t in held) + " ms in each try")
    await ws.close()


N_PLACES = 12_500  # places of the big update: 4 section numbers each, so one range behind it is 50,000 steps


async def _sixty_four_cursors(client):
    """An editor on /ws/p with a text of 2 * N_PLACES characters at version 1, then an update of N_PLACES
    places (version 2), and 64 more sessions welcomed at version 2: (editor, sockets)."""
    editor = await client.ws_connect("/ws/p", protocols=["collab.v1"], max_msg_size=0)
    await send(editor, {"type": "hello", "clientID": "ed", "version": None, "user": USER})
    await recv_type(editor, "welcome")
    await send(editor, {"type": "push", "version": 0, "updates": [
        {"clientID": "ed", "changes": [[0, "ab" * N_PLACES]]}]})
    await recv_type(editor, "updates")
    await send(editor, {"type": "push", "version": 1, "updates": [
        {"clientID": "ed", "changes": [x for _ in range(N_PLACES) for x in (1, [1, "c"])]}]})
    await recv_type(editor, "updates", timeout=10)
    sockets = []
    for k in range(64):
        ws = await client.ws_connect("/ws/p", protocols=["collab.v1"], max_msg_size=0)
        await send(ws, {"type": "hello", "clientID": f"c{k}", "version": None, "user": USER})
        assert (await recv_type(ws, "welcome"))["version"] == 2
        sockets.append(ws)
    return editor, sockets


async def _cursors_seen(ws, want: int, seen: set | None = None) -> set:
    """Sessions whose cursor `ws` is shown (in presences frames), until there are `want` of them."""
    seen = set() if seen is None else seen
    while len(seen) < want:
        msg = await recv(ws, timeout=10)
        if msg["type"] == "presences":
            seen |= {p["session"] for p in msg["peers"]}
    return seen


def _selection(version: int, anchor: int) -> str:
    return orjson.dumps({"type": "presence", "version": version,
                         "ranges": [{"anchor": anchor, "head": 2 * N_PLACES}]}).decode()


async def test_one_presence_tick_maps_64_cursors_each_at_the_full_budget_on_the_loop(aiohttp_client, tmp_path):
    """The mapping budget (50,000 steps) is per presence frame, but one presence tick maps up to
    --presence-batch (64) of them in one go, in a timer callback: 64 sessions that each send one cursor
    from just before an update of 12,500 places held the event loop for the whole tick's mapping
    (270 ms). Now a tick maps about MAP_BUDGET steps in all; the rest go out in the next ticks."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "p.db"))))
    editor, sockets = await _sixty_four_cursors(client)
    end = 2 * N_PLACES

    async def tick(version: int, anchor: int) -> float:
        """Every socket sends one selection as of `version`; the worst lateness until all went out."""
        async with Lateness() as late:
            await asyncio.gather(*(ws.send_str(_selection(version, anchor)) for ws in sockets))
            await _cursors_seen(editor, 64)  # the editor sees every cursor go out
            await asyncio.sleep(0.1)
        return late.worst

    control = await tick(2, end - 2)  # as of the head: nothing to map, the same frames otherwise
    worst = await tick(1, end - 1)    # as of the version before the update of 12,500 places
    for ws in sockets:
        await ws.close()
    await editor.close()
    assert worst < STALL, (f"one presence tick held the event loop {worst * 1000:.0f} ms (the same 64 "
                           f"cursors with nothing to map: {control * 1000:.0f} ms)")


async def _cursors_left_behind(client):
    """_sixty_four_cursors, each then showing a selection at version 3 (mapped, sent), then an update
    that takes each of them almost the whole budget to map goes by while they stay put: (editor, sockets)."""
    editor, sockets = await _sixty_four_cursors(client)
    await send(editor, {"type": "push", "version": 2, "updates": [{"clientID": "ed", "changes": [[0, "z"], 2 * N_PLACES]}]})
    await recv_type(editor, "updates")
    await asyncio.gather(*(ws.send_str(_selection(3, 1)) for ws in sockets))
    await _cursors_seen(editor, 64)  # every cursor shown, at version 3
    places = N_PLACES - 1  # with the keep after them, just within one cursor's budget
    await send(editor, {"type": "push", "version": 3, "updates": [  # the places go by the cursors
        {"clientID": "ed", "changes": [x for _ in range(places) for x in (1, [0, "d"])] + [2 * N_PLACES + 1 - places]}]})
    await recv_type(editor, "updates", timeout=10)
    return editor, sockets


async def test_a_welcome_maps_the_cursors_behind_within_the_budget_and_the_rest_follow(aiohttp_client, tmp_path):
    """64 cursors that stayed put while an update of 12,500 places went by are mapped when a newcomer
    is welcomed: all at once, that was the same stall as a whole presence tick. Now the welcome carries
    those it can map within the budget, and the newcomer sees the others in the next ticks."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "w.db"))))
    editor, sockets = await _cursors_left_behind(client)
    async with Lateness() as late:
        newcomer = await client.ws_connect("/ws/p", protocols=["collab.v1"], max_msg_size=0)
        await send(newcomer, {"type": "hello", "clientID": "new", "version": None, "user": USER})
        welcome = await recv_type(newcomer, "welcome", timeout=10)
    in_welcome = {p["session"] for p in welcome["peers"]}
    seen = await _cursors_seen(newcomer, 64, set(in_welcome))
    assert late.worst < STALL, f"a welcome held the event loop {late.worst * 1000:.0f} ms"
    assert len(seen) == 64 and len(in_welcome) < 64, (len(in_welcome), len(seen))
    for ws in (*sockets, editor, newcomer):
        await ws.close()


# ------------------------------------------------------------------ storage (b)

async def test_a_snapshot_of_the_whole_text_is_written_at_every_unload_after_a_keystroke(aiohttp_client, tmp_path):
    """README, --snapshot-ratio: snapshots take 'at most about this share of the history's bytes, plus one
    document'. Was: every unload wrote one of the whole text when anything was committed since the last:
    one keystroke, then leaving the document idle for --unload-after, stores the whole text again, for
    ever (nothing prunes snapshots). 20 keystrokes on a 100 KB document: 20 more copies of it."""
    db = tmp_path / "snap.db"
    app = create_app(Settings(db=str(db), unload_after=0.05))
    client = await aiohttp_client(app)
    rooms = app[ROOMS]
    size = 100_000
    version = 0
    for k in range(21):
        ws = await client.ws_connect("/ws/s", protocols=["collab.v1"])
        await send(ws, {"type": "hello", "clientID": "typist", "version": version, "user": USER})
        await recv_type(ws, "welcome")
        changes = [[0, "t" * size]] if k == 0 else [size + k - 1, [0, "k"]]
        await send(ws, {"type": "push", "version": version, "updates": [{"clientID": "typist", "changes": changes}]})
        ack = await recv_type(ws, "updates")
        version = ack["from"] + len(ack["updates"])
        await ws.close()
        deadline = time.monotonic() + 5
        while "s" in rooms.rooms or rooms.loading("s") is not None:  # unloaded: flushed and forgotten
            assert time.monotonic() < deadline, "the document was not unloaded"
            await asyncio.sleep(0.01)
    with sqlite3.connect(db) as conn:
        snapshots, snapshot_bytes = conn.execute("SELECT COUNT(*), SUM(LENGTH(text)) FROM snapshots").fetchone()
        history_bytes = conn.execute("SELECT SUM(LENGTH(changes)) FROM updates").fetchone()[0]
    text_len = size + 20
    bound = 1.0 * history_bytes + text_len  # the README's: this share of the history's bytes, plus one document
    assert snapshot_bytes <= 1.1 * bound, (f"{snapshots} snapshots hold {snapshot_bytes:,} bytes for "
                                           f"{history_bytes:,} bytes of history (README bound about {bound:,.0f})")


async def test_renames_add_a_row_each_to_the_renamed_table_without_bound_or_rate_limit(aiohttp_client, tmp_path):
    """Was: every rename to a new name stored the old one (the `renamed` table) for ever, and renames were not
    rate-limited (--write-rate covers forks, restores and checkpoint names only): 200 renames in a row,
    200 rows, of which /former-names ever shows 20. Neither README nor protocol.md states a bound."""
    db = tmp_path / "ren.db"
    app = create_app(Settings(db=str(db)))
    client = await aiohttp_client(app)
    assert (await client.post("/api/docs", json={"name": "r0"})).status == 201
    statuses = []
    for k in range(200):
        resp = await client.post(f"/api/docs/r{k}/rename", json={"name": f"r{k + 1}"})
        statuses.append(resp.status)
        if resp.status != 200:
            break
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM renamed").fetchone()[0]
    shown = len((await (await client.get(f"/api/docs/r{len(statuses)}/former-names")).json()).get("names", []))
    assert 429 in statuses or rows <= 20, (f"{statuses.count(200)} renames accepted, none rate-limited: "
                                           f"{rows} rows in `renamed` ({shown} shown by /former-names)")


# ------------------------------------------------------------------- memory (a)

async def test_the_authorship_cache_bound_counts_span_bytes_not_memory(aiohttp_client, tmp_path):
    """Was: compute.AuthorshipCache kept at most CACHE_BYTES (64 MiB) of spans JSON, but counted only the
    JSON's bytes: every /authors request for another version (a view token may make them, unlimited)
    adds an entry of a key tuple, a value tuple, a bytes object, an OrderedDict node and a list slot,
    over 200 bytes each, for spans of a short text that count 15. At the bound that is gigabytes."""
    import gc
    import tracemalloc

    app = create_app(Settings(db=str(tmp_path / "a.db")))
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws/a", protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": "w", "version": None, "user": USER})
    await recv_type(ws, "welcome")
    n = 600
    await send(ws, {"type": "push", "version": 0, "updates": [
        {"clientID": "w", "changes": ([v] if v else []) + [[0, "a"]]} for v in range(n)]})
    await recv_type(ws, "updates")
    await ws.close()
    cache = compute.authorship_cache(app[STORE])
    for v in range(1, 40):  # the worker pool warmed up, the first entries made
        assert (await client.get(f"/api/docs/a/authors?version={v}")).status == 200
    gc.collect()
    tracemalloc.start()
    try:
        entries0, size0 = len(cache._entries), cache.size
        for v in range(40, n + 1):
            resp = await client.get(f"/api/docs/a/authors?version={v}")
            assert resp.status == 200
            await resp.read()
        added, counted = len(cache._entries) - entries0, cache.size - size0
        gc.collect()
        full = tracemalloc.take_snapshot()
        cache._entries.clear()  # what the cache alone holds: what goes when it is emptied
        cache._versions.clear()
        cache.size = 0
        gc.collect()
        empty = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(-s.size_diff for s in empty.compare_to(full, "filename") if s.size_diff < 0)
    per_entry, counted_per_entry = held / max(added, 1), counted / max(added, 1)
    assert added == n + 1 - 40, added  # one entry per version asked for
    at_bound = compute.CACHE_BYTES / counted_per_entry * per_entry
    assert per_entry <= 2 * counted_per_entry, (
        f"{added} /authors requests added {added} cache entries: {counted_per_entry:.0f} bytes each counted "
        f"against CACHE_BYTES, {per_entry:.0f} bytes each in memory; filled to its bound that is "
        f"about {at_bound / 2**30:.1f} GiB, not {compute.CACHE_BYTES / 2**20:.0f} MiB")


async def test_the_roster_for_other_processes_lists_every_cursor_even_past_the_budget(aiohttp_client, tmp_path):
    """Cluster._republish sends `room.local_presence(roster=True)` to the other processes as a roster
    ("all": True): there, Room.remote_presence(..., roster=True) takes every session it does not list
    as gone (its cursor dropped, a `leave` to every member). So the cursors past the mapping budget are
    in it as they are, at their own version (the receiving process maps them), where a welcome leaves
    them out. (Was, for a moment in this stop: 1 of 64 listed, 63 `leave` frames; found by review.)"""
    app = create_app(Settings(db=str(tmp_path / "r.db")))
    client = await aiohttp_client(app)
    editor, sockets = await _cursors_left_behind(client)
    rooms = app[ROOMS]
    room = rooms.rooms["p"]
    everyone = {s for s, m in room.members.items() if m.presence}
    assert len(everyone) == 64
    # What another process was told of them before, on a document it has a member of: here the room
    # "q" stands for that process's room, "elsewhere" for this process.
    before = [protocol.presence_object(s, m.conn.user, *m.presence) for s, m in room.members.items() if m.presence]
    watcher = await client.ws_connect("/ws/q", protocols=["collab.v1"], max_msg_size=0)
    await send(watcher, {"type": "hello", "clientID": "watch", "version": None, "user": USER})
    await recv_type(watcher, "welcome")
    other = rooms.rooms["q"]
    other.remote_presence("elsewhere", before, time.monotonic())
    roster = room.local_presence(roster=True)  # what Cluster._republish publishes
    assert {p["version"] for p in roster} == {3, 4}, "some mapped to the head (4), the rest as they are (3)"
    other.remote_presence("elsewhere", roster, time.monotonic(), roster=True)
    left = set()
    try:
        while True:
            msg = await recv(watcher, timeout=0.5)
            if msg["type"] == "leave":
                left.add(msg["session"])
    except TimeoutError:
        pass
    listed = {p["session"] for p in roster}
    for ws in (*sockets, editor, watcher):
        await ws.close()
    assert listed == everyone and not left, (f"the roster lists {len(listed)} of the 64 sessions with a "
                                             f"cursor; the other process sent `leave` for {len(left)} of them")


async def test_a_welcome_maps_one_budget_of_our_cursors_and_other_processes_together(aiohttp_client, tmp_path):
    """One welcome maps about MAP_BUDGET steps of cursors in all, ours and other processes' together.
    (Was, for a moment in this stop: a budget of each, twice the bound; found by review.)"""
    app = create_app(Settings(db=str(tmp_path / "w2.db")))
    client = await aiohttp_client(app)
    editor, sockets = await _cursors_left_behind(client)  # 64 of our cursors at version 3, the head is 4
    room = app[ROOMS].rooms["p"]
    assert room.seq.committed_version == 4
    ranges = [{"anchor": 1, "head": 2 * N_PLACES}]
    theirs = [{"session": f"r{k}", "user": {"name": "r", "color": "#123456"}, "version": 3, "ranges": ranges}
              for k in range(64)]
    room.remote_presence("elsewhere", theirs, time.monotonic())  # another process's cursors, as news brings them
    behind = {s for s, m in room.members.items() if m.presence and m.presence[0] == 3}
    behind |= {s for s, e in room.remote_peers.items() if e[2] == 3}
    peers = [p for p in room._cursors() if p["session"] in behind]  # what the next welcome carries
    work = len(peers) * room.seq.map_cost(1, 3, 4)
    for ws in (*sockets, editor):
        await ws.close()
    assert work <= MAP_BUDGET, f"one welcome mapped {work:,} steps of cursors ({len(peers)} cursors)"
