"""Scale audit 49: what a document with a year of history (200,000+ updates, a 2 MB text) costs.

Finding 1: the /authors replay (and `collab compact`, which needs the
authorship at its boundary) sent the worker a fixed 5,000 update rows per
job, and every job parses, rebuilds and dumps the whole spans it starts from,
whatever it replays. So the replay of a long history was quadratic: over
220,000 updates of a 2 MB text, 44 jobs and about 14 s of CPU, a third
of it that per-job overhead; a first /authors took longer than the 15 s
budget (503) and `collab compact --keep-history 1000` left the document as
it was. Now a job replays at least one row per AUTHORS_SPANS_PER_ROW bytes of
the spans it starts from (26 jobs and about 10 s on the same document), within
AUTHORS_CHUNK_MAX rows and AUTHORS_CHUNK_BYTES of them.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from collab import compute
from collab.changes import utf16_len
from collab.storage import Kept
from conftest import BOTH_BACKENDS
from storeutil import commit, random_edits
import test_store


async def test_authorship_jobs_grow_with_the_spans_they_start_from(monkeypatch):
    """Replaying 960 rows from stored spans of 33 KB takes a few jobs, not one per AUTHORS_CHUNK rows."""
    runs = [[1, "alice" if k % 2 else "bob"] for k in range(3000)]
    stored = orjson.dumps(runs)
    length = 3000
    rows = []
    for v in range(3001, 3961):  # carol types at the start, one character an update
        rows.append((v, "carol", orjson.dumps([[0, "x"], length]).decode()))
        length += 1
    asked = []

    async def read_rows(after, upto, max_bytes):
        asked.append((after, upto))
        return rows[after - 3000:upto - 3000]

    async def stored_at(v):
        assert v == 3000
        return stored

    async def nothing(*_):
        return None

    closures = dict(checkpoint=lambda v: asyncio.sleep(0, ("doc", 3000)), spans_at=stored_at, rows=read_rows,
                    save=nothing)
    monkeypatch.setattr(compute, "AUTHORS_CHUNK", 50)
    owner = type("Owner", (), {})()
    authors = await compute.authorship(owner, 1, 3960, 1000, **closures)
    assert authors.to_list() == [[960, "carol"], *runs]
    # 33 KB of spans: at least 330 rows a job, so 3 jobs, not 960 / AUTHORS_CHUNK = 20
    assert len(stored) // 100 >= 320 and len(asked) <= 3, asked
    per_job = len(stored) // compute.AUTHORS_SPANS_PER_ROW
    assert all(upto - after >= min(per_job, 3960 - after) for after, upto in asked), asked


def test_a_job_never_replays_more_than_its_bounds():
    assert compute.chunk_rows(0) == compute.AUTHORS_CHUNK
    assert compute.chunk_rows(10 ** 9) == compute.AUTHORS_CHUNK_MAX
    middle = compute.AUTHORS_CHUNK * compute.AUTHORS_SPANS_PER_ROW * 2
    assert compute.chunk_rows(middle) == 2 * compute.AUTHORS_CHUNK


# Finding 2: `collab compact` dropped a document's update rows up to its boundary but kept every
# authorship checkpoint below it (the spans an /authors replay stores, about 80 bytes per update of
# history): on a document of 220,000 updates, 19 MB of them after compacting down to 1,000 updates,
# and more with each compaction, so compacting never bounded the storage. They serve nothing once the
# rows after them are gone: compact now drops them, but at its boundary and at named versions.

open_store = test_store.open_store  # the fixture: stores opened on the test's database, closed at the end


async def _authorship_versions(store, doc: int) -> list[int]:
    async with store.view() as view:
        return [row[0] for row in await view.rows(doc, "authorship", -1, 1000)]


@BOTH_BACKENDS
async def test_compact_drops_the_authorship_checkpoints_below_its_boundary(open_store):
    store = await open_store(snapshot_every=5)
    doc = await store.create_document("doc")
    edits = random_edits(50, seed=5)
    for k in range(0, 50, 5):
        batch = [e for e, _ in edits[k:k + 5]]
        await commit(store, doc, batch, utf16_len(edits[k + 4][1]))
    for v in (12, 27, 50):  # /authors at three versions stores checkpoints on the way
        await store.authorship(doc, v)
    stored = await _authorship_versions(store, doc)
    assert [v for v in stored if v < 30 and v != 10], stored  # some below the boundary besides the named one
    await store.set_checkpoint(doc, 10, "draft", "ann")
    named = [Kept(10, edits[9][1], (await store.authorship(doc, 10)).to_list())]
    spans = (await store.authorship(doc, 30)).to_list()
    at_head = (await store.authorship(doc, 50)).to_list()
    assert await store.compact(doc, 30, edits[29][1], spans, named) == 30
    kept = await _authorship_versions(store, doc)
    assert [v for v in kept if v <= 30] == [10, 30], kept
    assert [v for v in kept if v > 30] == [v for v in stored if v > 30]
    assert (await store.authorship(doc, 10)).to_list() == named[0].spans
    assert (await store.authorship(doc, 30)).to_list() == spans
    fresh = await open_store(snapshot_every=5)  # no cache: from the stored checkpoints
    assert (await fresh.authorship(doc, 50)).to_list() == at_head
    assert (await fresh.authorship(doc, 42)).to_list() == (await store.authorship(doc, 42)).to_list()


# Finding 4: the History panel aborts its request for a version the slider has left (history.js), but the
# server went on: each aborted `versions/{v}` waited its turn in the line of rebuilds and was rebuilt
# anyway. Scrubbing over 30 versions of a document of 220,000 updates made the server rebuild all 30
# (15 s of CPU) before the preview still asked for came: 15.6 s later. A request whose client went away
# is now dropped when its turn comes, without rebuilding anything.

async def test_a_version_given_up_while_it_waited_is_not_rebuilt(tmp_path, monkeypatch):
    """As `collab serve` runs the app (aiohttp's handler_cancellation off: a handler whose client went away
    runs on; aiohttp's test server turns it on), two rebuilds are held, three more wait behind them and
    their clients give up: once the two are let go on, the next request is answered, and the three are
    never rebuilt."""
    from aiohttp import web

    from collab import room as room_module
    from collab.app import create_app
    from collab.settings import Settings
    from collab.store import Store
    from serverproc import free_port

    runner = web.AppRunner(create_app(Settings(db=str(tmp_path / "s.db"), unload_after=60)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws/doc", protocols=("collab.v1",))
            await ws.send_json({"type": "hello", "clientID": "alice", "version": None,
                                "user": {"name": "Alice", "color": "#aa0000"}})
            version = None
            while version != 6:
                frame = await ws.receive_json(timeout=5)
                if frame["type"] == "welcome" or (frame["type"] == "updates" and version is not None):
                    version = frame["version"] if frame["type"] == "welcome" else version + len(frame["updates"])
                    if version < 6:
                        await ws.send_json({"type": "push", "version": version, "updates": [
                            {"clientID": "alice", "changes": [version, [0, "x"]] if version else [[0, "x"]]}]})

            real, rebuilt, go_on = Store.text_at, [], asyncio.Event()

            async def held_text_at(self, doc_id, v, wanted=None):
                rebuilt.append(v)
                await go_on.wait()
                return await real(self, doc_id, v, wanted)

            monkeypatch.setattr(Store, "text_at", held_text_at)

            async def given_up(v):
                try:
                    async with http.get(f"{base}/api/docs/doc/versions/{v}",
                                        timeout=aiohttp.ClientTimeout(total=0.5)) as resp:
                        await resp.read()
                except asyncio.TimeoutError:
                    return
                raise AssertionError(f"version {v} answered {resp.status} before its rebuild was let go on")

            await asyncio.gather(*(given_up(v) for v in (1, 2, 3, 4, 5)))
            assert room_module.REBUILDS_RUNNING == 2 and len(rebuilt) == 2, rebuilt
            go_on.set()
            async with http.get(f"{base}/api/docs/doc/versions/4") as resp:
                assert resp.status == 200 and (await resp.json())["doc"] == "xxxx"
            assert len(rebuilt) == 3 and rebuilt[2] == 4, rebuilt  # the three given up were never rebuilt
            await ws.close()
    finally:
        await runner.cleanup()


# Finding 5: the same for the authors view. A replay went on to its end (or its 15 s) whoever still
# waited: scrubbing the authors view over 8 versions of a document of 220,000 updates queued 8 replays of
# seconds each in the one worker, and the view still asked for, behind them, ran out of its 15 s (503).
# Now a replay stops between chunks, and a job is not started, once every client that asked went away.

async def test_an_authorship_nobody_waits_for_stops_between_chunks_and_keeps_its_progress(monkeypatch):
    log = [([k, [0, "x"]] if k else [[0, "x"]], ("ann", "bob")[k % 2]) for k in range(150)]
    rows = [(v, who, orjson.dumps(parts).decode()) for v, (parts, who) in enumerate(log, 1)]
    asked = []
    # asked before the first chunk and when its job starts; the client has gone by the next question
    answers = [True, True]

    async def read_rows(after, upto, max_bytes):
        asked.append(after)
        return rows[after:upto]

    async def nothing(*_):
        return None

    closures = dict(checkpoint=lambda v: asyncio.sleep(0, ("doc", 0)), spans_at=nothing, rows=read_rows,
                    save=nothing)
    monkeypatch.setattr(compute, "AUTHORS_CHUNK", 50)
    owner = type("Owner", (), {})()
    with pytest.raises(compute.GivenUp, match="done up to version 50"):
        await compute.authorship(owner, 1, 150, 1000, wanted=lambda: answers.pop(0) if answers else False,
                                  **closures)
    assert asked == [0], "one chunk, not three"
    assert (await compute.authorship(owner, 1, 150, 1000, **closures)).runs == 150  # without `wanted`: to the end
    assert asked == [0, 50, 100], "went on from the chunk kept"


async def test_a_job_whose_caller_went_away_never_starts_a_worker():
    pool = compute.Pool(workers=1, queue=0)
    try:
        with pytest.raises(compute.GivenUp):
            await pool.run(sum, [1, 2], timeout=10, wanted=lambda: False)
        assert pool.started == 0
        assert await pool.run(sum, [1, 2], timeout=10, wanted=lambda: True) == 3
    finally:
        pool.close()


# Found by the review of the stop's diff: compact now drops the authorship checkpoints below its boundary,
# so one can go between `checkpoint` naming it and `spans_at` reading it; and a request could join a
# computation that had just given up.

async def test_an_authorship_checkpoint_compacted_away_while_it_is_read_is_not_found_not_a_crash():
    """Was: the checkpoint named by `checkpoint(v)` was gone when `spans_at` read it (a compaction step
    committed between the two): SQLite raised TypeError, PostgreSQL gave None to len(): a 500 logged as
    a bug. The rows after it went in the same transaction, so it is VersionCompacted (404), as before."""
    from collab.storage import VersionCompacted

    async def checkpoint(v):
        return "doc", 3000

    async def gone(at):
        return None

    async def rows(after, upto, max_bytes):
        raise VersionCompacted(after + 1, 5000, None)

    async def save(found):
        raise AssertionError("nothing to save")

    with pytest.raises(VersionCompacted):
        await compute.authorship(type("Owner", (), {})(), 1, 4000, 1000, checkpoint=checkpoint, spans_at=gone,
                                 rows=rows, save=save)


async def test_a_request_never_joins_a_computation_that_already_gave_up():
    """Was: between a computation giving up (GivenUp: its callers went away) and its entry going, a new
    request for the same version joined it and got 503 at once. It starts its own now."""
    owner = type("Owner", (), {})()
    ended = asyncio.get_running_loop().create_future()
    ended.set_exception(compute.GivenUp("given up by whoever asked for it"))
    compute._running.setdefault(owner, {})[(1, 2)] = (ended, [])  # ended, its entry not yet gone

    async def checkpoint(v):
        return "doc", 0

    async def rows(after, upto, max_bytes):
        return [(1, "ann", '[[0,"a"]]'), (2, "bob", '[1,[0,"b"]]')][after:upto]

    async def nothing(*_):
        return None

    got = await compute.authorship(owner, 1, 2, 1000, checkpoint=checkpoint, spans_at=nothing, rows=rows,
                                   save=nothing)
    assert got.runs == 2
