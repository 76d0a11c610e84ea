"""Review 49 of store_pg.py and cluster.py: what the tests left thin, one regression test per bug found.

Two registries (`Rooms`) on one SQLite file stand for two processes on one database, as in test_bus.py
(the code under test here does not depend on the store); news is handed to `Cluster._handle` as the
subscriber would hand it.
"""

from __future__ import annotations

import asyncio

import pytest

from collab.room import Room
from serverproc import silent_server
from storeutil import hold_loads
import test_bus
from test_room_memory import FakeConn, hello, push_msg, until

two = test_bus.two  # the fixture: two registries on one database, the second with a Cluster without Redis


async def _unloading_with_its_flush_held(here, there, monkeypatch):
    """Document "doc" made at `here`, open at `there` with an edit sequenced and held out of the store,
    then unloading there: its flush waits for that edit. Returns the document's id, and what lets the
    edit go and waits for the unload to end."""
    await here.create("doc", "hello")
    doc_id = (await here.store.document("doc"))["id"]
    member = await there.join("doc", FakeConn("a"), hello("a"), token=there.access.admin_token())
    room = member.room
    real_take, held = Room.take_commit, asyncio.Event()

    def take_commit(self):
        return None if self is room and not held.is_set() else real_take(self)

    monkeypatch.setattr(Room, "take_commit", take_commit)
    await room.push(member, push_msg(1, "a", [5, [0, "!"]]))
    room.leave(member)
    unloading = asyncio.ensure_future(there.unload(room))
    await until(lambda: "doc" in there._loading, "the unload under way")

    async def flushed() -> None:
        held.set()
        there.store.schedule(room)
        await asyncio.wait_for(unloading, 5)

    return doc_id, flushed


async def test_a_room_forgotten_while_it_unloads_no_longer_keeps_its_channel(two, monkeypatch):
    """Was: an unload registers itself in `_loading` while it flushes, and `forget` unwatches only a name
    nobody is loading (a load under way needs its subscription). A room forgotten during that flush (its
    document deleted elsewhere, or a commit that failed) was therefore never unwatched: its channel stayed
    in `_channels` and subscribed at Redis for as long as the process ran, one more per such document, and
    its news was still received and read for nothing."""
    here, there = two
    doc_id, flushed = await _unloading_with_its_flush_held(here, there, monkeypatch)
    channel = there.cluster.channel("doc")
    assert channel in there.cluster._channels
    # The document is deleted at the other process, and its news comes while the flush waits.
    await here.delete("doc")
    there.cluster._handle("doc", {"k": "r", "p": "elsewhere", "d": doc_id, "deleted": True})
    await until(lambda: "doc" not in there.rooms, "the room forgotten")
    await flushed()
    assert "doc" not in there.rooms and "doc" not in there._loading
    assert channel not in there.cluster._channels


async def test_news_that_comes_while_a_document_loads_waits_in_one_task_however_much_comes(two, monkeypatch):
    """Was: each message of updates that came while the document loaded here spawned a task of its own,
    holding that message until the load ended: a busy document whose load took long (a slow database,
    the readers all busy) gathered tasks and frames without a bound. What a room needs of them is the one
    that goes furthest (`Room.remote` applies it, or reads what it missed from the database): that one
    waits, in one task per load."""
    here, there = two
    await here.create("doc", "hello")
    doc_id = (await here.store.document("doc"))["id"]
    ann = FakeConn("ann")
    member = await here.join("doc", ann, hello("ann"), token=here.access.admin_token())
    read, go_on = hold_loads(monkeypatch, there.store)
    bob = FakeConn("bob")
    joining = asyncio.ensure_future(there.join("doc", bob, hello("bob"), token=there.access.admin_token()))
    await asyncio.wait_for(read.wait(), 5)
    before = len(there._tasks)
    news = []
    for k in range(3):  # committed at the other process while the load waits; each one's news comes
        await member.room.push(member, push_msg(1 + k, "ann", [5 + k, [0, "!"]]))
        await member.room.settled()
        news.append({"k": "u", "p": "elsewhere", "d": doc_id,
                     "m": {"from": 1 + k, "updates": [{"clientID": "ann", "changes": [5 + k, [0, "!"]]}]}})
    try:
        for _ in range(200):
            for msg in news:
                there.cluster._handle("doc", msg)
        assert len(there._tasks) - before <= 1, "one task waits for the load, not one per message"
    finally:
        go_on.set()  # (a failed test still lets the load end, and the registry shut down)
    await asyncio.wait_for(joining, 5)
    room = there.rooms["doc"]
    await until(lambda: room.seq.committed_version == 4, "the news applied")
    assert room.seq.committed_text() == "hello!!!"
    assert not there.cluster._after_load


async def test_news_of_another_document_of_the_name_during_a_load_asks_for_a_check_once_it_is_loaded(
        two, monkeypatch):
    """Found by the review of the stop's diff: news of two documents of one name while it loads here (the
    one read, and one made under the name after a delete) kept only the message that went furthest, and
    the check asked for then passed the room by (it was not there yet); if that one was of the document
    read, nothing asked again, and the room served a deleted document until the next periodic check."""
    here, there = two
    await here.create("doc", "hello")
    doc_id = (await here.store.document("doc"))["id"]
    read, go_on = hold_loads(monkeypatch, there.store)
    joining = asyncio.ensure_future(there.join("doc", FakeConn("bob"), hello("bob"), token=there.access.admin_token()))
    await asyncio.wait_for(read.wait(), 5)
    try:
        other = {"k": "u", "p": "elsewhere", "d": doc_id + 1000,
                 "m": {"from": 0, "updates": [{"clientID": "eve", "changes": [[0, "x"]]}]}}
        ours = {"k": "u", "p": "elsewhere", "d": doc_id,
                "m": {"from": 500, "updates": [{"clientID": "ann", "changes": [[0, "y"]]}]}}
        there.cluster._handle("doc", other)
        there.cluster._handle("doc", ours)  # goes further: the one kept
        there.cluster._check_now.clear()  # (what was asked during the load passed the room by)
    finally:
        go_on.set()
    await asyncio.wait_for(joining, 5)
    await until(lambda: not there.cluster._after_load, "the held news handed over")
    assert there.cluster._check_now.is_set(), "a check once the room is there"


@pytest.mark.parametrize("table, row", [
    ("updates", (1, "c", "ann", 1.0, '[[0,"x"]]', 1, 0, None, True, "p\x00", None)),
    ("updates", (1, "c", "ann", 1.0, '[[0,"x"]]', 1, 0, None, True, "p", "#123456\x00")),
    ("people", ("p", 1, "ann", "#123\x00")),
], ids=["updates.person", "updates.color", "people.color"])
async def test_a_copied_row_whose_optional_text_holds_u0000_is_refused_as_the_header_says(pg_url, table, row):
    """Was: store_pg's header says a copied row holding U+0000 is refused with ValueError before anything
    is written; add_rows checked only the columns that must hold text, not those that may be NULL (an
    update row's person and colour, a kept person's colour), so such a row went to PostgreSQL, which
    refused it with its own error (CharacterNotInRepertoireError), not the one the copy reports."""
    from collab.storage import store_at
    store = await store_at(pg_url).open()
    try:
        doc = await store.create_document("doc")
        with pytest.raises(ValueError, match="U\\+0000"):
            await store.add_rows(doc, table, [row])
        async with store.view() as view:
            assert await view.rows(doc, table, -1, 10) == []
    finally:
        await store.close()


async def test_news_of_a_document_made_elsewhere_reads_it_once_at_a_time_however_much_comes(two, monkeypatch):
    """Was: each message of updates for a room open on a name no document had yet spawned a task reading
    the document from the database (`Room.find_document`): while that read was slow, a document typed
    into at another process gathered one task and one read per message, without a bound. One read at a
    time is enough: news is published after its commit, so a read started after any of it finds the
    document."""
    here, there = two
    admin = there.access.admin_token()
    bob = FakeConn("bob")
    member = await there.join("doc", bob, hello("bob"), token=admin)
    room = member.room
    assert room.doc_id is None
    await here.create("doc", "hello")
    doc_id = (await here.store.document("doc"))["id"]
    real_document, asked, go_on = there.store.document, asyncio.Event(), asyncio.Event()

    async def held_document(name):
        asked.set()
        await go_on.wait()
        return await real_document(name)

    monkeypatch.setattr(there.store, "document", held_document)
    before = len(there._tasks)
    news = {"k": "u", "p": "elsewhere", "d": doc_id,
            "m": {"from": 0, "updates": [{"clientID": "ann", "changes": [[0, "hello"]]}]}}
    try:
        for _ in range(300):
            there.cluster._handle("doc", news)
        await asyncio.wait_for(asked.wait(), 5)
        assert len(there._tasks) - before <= 1, "one read of the document at a time, not one per message"
    finally:
        go_on.set()  # (a failed test still lets the reads end, and the registry shut down)
    await until(lambda: room.doc_id == doc_id and room.seq.committed_text() == "hello", "the room made that document")
    assert not there.cluster._finding


async def test_a_restore_turn_whose_database_does_not_answer_is_unavailable_not_busy_turns(pg_url):
    """Was: when a restore's turn could not get a connection in time, store_pg said all the turns' connections
    were busy with other restores (TimeoutError: "too many restores are under way at this server at once"),
    even when none was held and the time went waiting for a database that did not answer the connection it
    opened (a stalled server, a host gone from the network). Storage.restore_turn says StorageUnavailable
    then: the client is told the database is unavailable, and the log says so, not that restores crowd."""
    import asyncpg

    from collab import store_pg
    from collab.storage import StorageUnavailable, store_at
    async with silent_server() as (port, taken):
        store = await store_at(pg_url).open()
        try:
            doc = await store.create_document("doc")
            await store._turns.close()  # the turns' connections go to a database that does not answer
            store._turns = await asyncpg.create_pool(f"postgresql://collab@127.0.0.1:{port}/db",
                                                     min_size=0, max_size=store_pg.TURN_CONNECTIONS, timeout=1.0)
            with pytest.raises(StorageUnavailable, match="unavailable"):
                async with store.restore_turn(doc, 0.5):
                    pass
            assert taken, "the turn tried to connect"
        finally:
            await store.close()


async def test_a_change_told_while_a_document_unloads_leaves_no_mark_behind(two, monkeypatch):
    """Was: news of a change to a document (its links reset, deleted or renamed elsewhere: `_changed`)
    marks the name stale while it is in `_loading`, so that a load under way reads it again; only a load
    clears the mark. An unload stands in `_loading` too, and a name marked during an unload stayed in
    `_stale` until that name was loaded again: one more entry, for good, per such document."""
    here, there = two
    doc_id, flushed = await _unloading_with_its_flush_held(here, there, monkeypatch)
    await here.reset_links("doc")
    there.cluster._handle("doc", {"k": "r", "p": "elsewhere", "d": doc_id, "deleted": False})
    await asyncio.sleep(0.05)
    await flushed()
    assert "doc" not in there.rooms and "doc" not in there._loading
    assert not there._stale
    assert there.cluster.channel("doc") not in there.cluster._channels


@pytest.mark.parametrize("frame", [
    {"from": True, "updates": [{"clientID": "x", "changes": [5, [0, "!"]]}]},
    {"from": 1.0, "updates": [{"clientID": "x", "changes": [5, [0, "!"]]}]},
    {"from": 1, "updates": [{"clientID": 7, "changes": [5, [0, "!"]]}]},
], ids=["from-bool", "from-float", "clientID-number"])
async def test_news_of_updates_not_of_the_protocols_shape_is_not_applied_nor_sent_on(two, frame):
    """Was: news of updates was checked for its changes only: a `from` that is not a whole number (JSON
    true equals 1 in Python, 1.0 too) or a clientID that is not a string was applied as
    it came, and sent on to the members as it came ({"from": true}, {"clientID": 7}), frames no client
    expects. Such news is news we cannot read: the room reads what it missed from the database instead
    (where there is nothing of it)."""
    here, there = two
    await here.create("doc", "hello")
    doc_id = (await here.store.document("doc"))["id"]
    conn = FakeConn("a")
    member = await there.join("doc", conn, hello("a"), token=there.access.admin_token())
    room = member.room
    there.cluster._handle("doc", {"k": "u", "p": "elsewhere", "d": doc_id, "m": frame})
    await until(lambda: room._ready.is_set() and room._catching is None, "the room caught up")
    assert room.seq.committed_text() == "hello" and room.seq.committed_version == 1
    assert not conn.of("updates")
