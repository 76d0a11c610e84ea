"""The text of a version is rebuilt in a worker process (compute.text_at), never in the server's threads.

A scale audit measured event-loop pauses of 16 to 294 ms while the History's
"text at version N" requests were answered on a document of 220,000 updates:
the replay of the rows after the snapshot ran in the store's reader thread
(SQLite) or in a thread of its own (PostgreSQL), holding the GIL. These tests
check the rebuild goes through the worker pool (its job count), that a
refused one answers 503 (413 beyond the memory budget) and leaves the server
serving, that a given-up one never reaches a worker, and that the texts are
those the old thread replay gave, on both backends.
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest

from collab import compute
from collab.app import STORE, create_app
from collab.changes import ChangeSet, utf16_len
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.settings import Settings
from collab.text import Text
from conftest import BOTH_BACKENDS
from storeutil import commit, random_edits, raw_sql
import test_history
import test_store

open_store = test_store.open_store  # stores opened on the test's database, closed at the end
small_pool = test_history.small_pool  # small_pool(**kw): a new Pool in place of the process's, closed at the end


def old_thread_replay(text: str, rows: list[str]) -> str:
    """What the stores' text_at did in their threads before (the reference)."""
    doc = Text(text)
    for changes in rows:
        doc.apply(ChangeSet.from_json(orjson.loads(changes)))
    return str(doc)


async def filled(store, n: int, seed: int, snapshots=()) -> tuple[int, list[str], list[str]]:
    """A document of `n` random updates (snapshots after the versions in `snapshots`): (its id, the text at
    each version, the stored ChangeSetJSON of each update, both indexed by version)."""
    doc = await store.create_document(f"doc{seed}")
    edits = random_edits(n, seed=seed)
    texts, rows = [""], [""]
    rnd = random.Random(seed)
    k = 0
    while k < n:
        step = rnd.randint(1, 40)
        batch = edits[k:k + step]
        last = batch[-1][0].version
        snapshot = next(((v, edits[v - 1][1]) for v in snapshots if batch[0][0].version <= v <= last), None)
        if snapshot is not None:  # a commit's snapshot is of its last version
            batch = edits[k:snapshot[0]]
        await commit(store, doc, [e for e, _ in batch], utf16_len(batch[-1][1]), snapshot)
        for entry, text in batch:
            texts.append(text)
            rows.append(entry.changes_json.decode())
        k += len(batch)
    return doc, texts, rows


@BOTH_BACKENDS
async def test_every_version_rebuilt_in_a_worker_is_the_old_thread_replays_text(open_store, small_pool, monkeypatch):
    """Random documents with snapshots here and there; every version of each, rebuilt with every replay sent
    to a worker, is the text the old thread replay gave (and the text it had), and every one with rows
    after its snapshot went through the pool."""
    monkeypatch.setattr(compute, "REBUILD_INLINE_CHANGES", 0)  # every replay goes to a worker
    pool = small_pool(queue=8)
    store = await open_store()
    replays = 0
    for seed in (3, 11, 29):
        n = 120
        snapshots = sorted(random.Random(seed).sample(range(2, n), 3))
        doc, texts, rows = await filled(store, n, seed, snapshots)
        for v in range(n + 1):
            below = max([0] + [s for s in snapshots if s <= v])
            expected = old_thread_replay(texts[below], rows[below + 1:v + 1])
            assert expected == texts[v]
            assert await store.text_at(doc, v) == expected, (seed, v)
            replays += v > below
    assert pool.jobs == replays and pool.started == 1


@BOTH_BACKENDS
async def test_a_small_rebuild_stays_in_a_thread_and_a_large_one_goes_to_a_worker(open_store, small_pool):
    pool = small_pool(queue=8)
    store = await open_store()
    doc, texts, rows = await filled(store, 600, seed=5)
    assert len(",".join(rows[1:20])) < compute.REBUILD_INLINE_CHANGES < len(",".join(rows[1:600]))
    assert await store.text_at(doc, 19) == texts[19]
    assert pool.jobs == 0  # 19 updates: cheaper in a thread than the trip to a worker
    assert await store.text_at(doc, 600) == texts[600]
    assert pool.jobs == 1 and pool.started == 1


@BOTH_BACKENDS
async def test_a_rebuild_nobody_waits_for_any_more_never_reaches_a_worker(open_store, small_pool):
    pool = small_pool(queue=8)
    store = await open_store()
    doc, texts, _ = await filled(store, 600, seed=7)
    with pytest.raises(compute.GivenUp) as caught:
        await store.text_at(doc, 590, wanted=lambda: False)
    assert caught.value.code == "unavailable" and "the rebuild of version 590" in caught.value.message
    assert pool.jobs == 0
    assert await store.text_at(doc, 590, wanted=lambda: True) == texts[590] and pool.jobs == 1


# ------------------------------------------------------- through the real app

@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(Settings(db=str(tmp_path / "r.db"), unload_after=60)))


async def test_a_rebuild_refused_by_the_pool_answers_503_or_413_and_the_server_goes_on(client, small_pool,
                                                                                      monkeypatch):
    """A busy pool, a rebuild past --history-timeout and one past the worker's memory: 503, 503 and 413 (never
    a 500), and the server serves the next request, a rebuild again once the pool is free."""
    store = client.server.app[STORE]
    doc, texts, _ = await filled(store, 600, seed=13)
    assert doc == (await store.document("doc13"))["id"]

    async def version(v):
        resp = await client.get(f"/api/docs/doc13/versions/{v}")
        return resp.status, await resp.json()

    pool = small_pool()
    nap = asyncio.create_task(pool.run(time.sleep, 1.0, timeout=20))
    await asyncio.sleep(0.2)
    status, body = await version(590)
    assert status == 503 and body["error"]["code"] == "unavailable" and "busy" in body["error"]["message"]
    assert (await client.get("/healthz")).status == 200
    await nap
    monkeypatch.setattr(compute, "REBUILD_TIMEOUT", 0.0)
    status, body = await version(590)
    assert status == 503 and "the rebuild of version 590" in body["error"]["message"], body
    monkeypatch.setattr(compute, "REBUILD_TIMEOUT", 15.0)
    assert await version(590) == (200, {"version": 590, "doc": texts[590]})

    probe = small_pool(queue=8)
    assert await probe.run(sum, [1], timeout=20) == 1
    with open(f"/proc/{probe._idle[0].proc.pid}/status") as f:
        idle_size = int(f.read().split("VmSize:")[1].split()[0]) << 10
    big = await typed_at_end(store, "big", "x" * (16 << 20), 400)  # a text the worker cannot even read ...
    small_pool(queue=8, memory=idle_size + (1 << 20))  # ... with 1 MB more than it holds idle
    resp = await client.get("/api/docs/big/versions/300")
    assert resp.status == 413, await resp.text()
    assert (await resp.json())["error"]["code"] == "too-large"
    small_pool(queue=8)
    assert await version(589) == (200, {"version": 589, "doc": texts[589]})
    assert (await client.get("/api/docs/big/versions/300")).status == 200 and big == 401


async def typed_at_end(store, name: str, text: str, n: int) -> int:
    """A document made with `text` (version 1), then `n` characters typed at its end; returns its head version."""
    doc = await store.create_document(name, text)
    length = utf16_len(text)
    entries = [Accepted(2 + k, Update("typist", ChangeSet.from_json([length + k, [0, "y"]])), "typist", 1000.0 + k)
               for k in range(n)]
    return await commit(store, doc, entries, length + n)


@BOTH_BACKENDS
@pytest.mark.parametrize("where", ["thread", "worker"])
async def test_stored_rows_that_do_not_replay_are_unreplayable_in_a_thread_or_a_worker(
        open_store, small_pool, monkeypatch, db, backend, request, where):
    """Was: a rebuild in a worker answered a damaged log with a 500 and one in a thread with 400 bad-changes;
    and a row holding two JSON values (`[[0,"a"]],[1,[0,"b"]]`), joined with the others, was taken for two
    updates: a wrong text, silently. Now either is Unreplayable (500 internal), wherever it ran."""
    if where == "worker":
        monkeypatch.setattr(compute, "REBUILD_INLINE_CHANGES", 0)
    pool = small_pool(queue=8)
    store = await open_store()
    pg = request.getfixturevalue("pg_server") if backend == "postgres" else None
    doc = await store.create_document("damaged")
    entries = [Accepted(v, Update("c1", ChangeSet.from_json([v - 1, [0, "x"]] if v > 1 else [[0, "x"]])), "ann", 1.0)
               for v in (1, 2, 3)]
    await commit(store, doc, entries, 3)
    assert await store.text_at(doc, 3) == "xxx"
    for damage, version in (('[[0,"a"]],[1,[0,"b"]]', 2),  # two values in one row: two updates' worth
                            ('[5,[0,"y"]]', 3)):            # a change of a longer document
        raw_sql(db, f"UPDATE updates SET changes = '{damage}' WHERE doc_id = {doc} AND version = {version}", pg)
        with pytest.raises(compute.Unreplayable) as caught:
            await store.text_at(doc, 3)
        assert caught.value.code == "internal" and "version 3 cannot be rebuilt" in caught.value.message
    assert pool.jobs == (3 if where == "worker" else 0)  # the good rebuild and the two damaged ones
