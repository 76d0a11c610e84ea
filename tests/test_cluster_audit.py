"""Several processes on one PostgreSQL database and one Redis: interleavings the cluster tests leave to chance.

Each "process" here is a registry (`Rooms`) with its own PostgreSQL store and
its own `cluster.Cluster`, all in this event loop, on a real PostgreSQL server
(the session's, a fresh database per test) and a real `redis-server` on a free
port (tests/clusterproc.py), stopped by its pid. Connections are the fake
ones of test_room_memory (what a room sends them is recorded). A process that
died is a process id that said something on Redis and then nothing more,
which is all the others can see of a SIGKILL. test_cluster.py runs real
`collab serve` processes under load; these pin down one interleaving each.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest

from collab import protocol
from collab.access import Access
from collab.errors import ServerError
from collab.cluster import Cluster
from collab.room import Rooms
from collab.settings import Settings
from collab.store_pg import PgStore
from storeutil import hold_loads
from test_room_memory import FakeConn, hello, push_msg


@contextlib.asynccontextmanager
async def process(db_url: str, redis_url: str | None, **options):
    """One collab process's registry, store and cluster (started), stopped at the end."""
    cluster_options = {k: options.pop(k) for k in ("check_every", "poll_every", "republish", "expiry") if k in options}
    secret = options.pop("secret", None)
    settings = Settings(db=db_url, unload_after=60.0, **options)
    store = await PgStore(db_url, keep=settings.keep_updates).open()
    rooms = Rooms(settings, store, access=Access(secret.encode()) if secret else None)
    rooms.cluster = Cluster(rooms, redis_url, **cluster_options)
    await rooms.cluster.start()
    try:
        yield rooms
    finally:
        await rooms.shutdown()
        await rooms.cluster.stop()
        await store.close()


async def until(predicate, what: str, timeout: float = 5.0) -> float:
    """Wait until `predicate()` holds (failing after `timeout` s); how long it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def cursors_seen(conn: FakeConn) -> dict[str, list]:
    """session -> ranges of the other people's cursors `conn` is showing (welcome peers, presences, leaves)."""
    shown: dict[str, list] = {}
    for f in conn.frames:
        if f["type"] in ("welcome", "presences"):
            shown.update({p["session"]: p["ranges"] for p in f["peers"]})
        elif f["type"] == "leave":
            shown.pop(f["session"], None)
    return shown


async def typed(rooms: Rooms, name: str, client_id: str, text: str):
    """A member of `name` at `rooms` who typed `text` (durable); (connection, member)."""
    conn = FakeConn(client_id)
    member = await rooms.join(name, conn, hello(client_id), token=None)
    await member.room.push(member, push_msg(0, client_id, [[0, text]]))
    await member.room.settled()
    return conn, member


async def test_the_cursors_of_people_elsewhere_show_when_a_document_is_opened_here(pg_url, redis):
    """Was: a process that opened a document (the first person there, or a reload after a storage
    error) heard of the cursors at the other processes only when they moved or at the next republish,
    up to --presence-republish seconds later (10 by default): someone opening a document saw nobody
    else's cursor for that long, however many were reading it at the other processes. Now the process
    asks the others for their rosters of it as soon as its room is there."""
    async with process(pg_url, redis.url, republish=30.0, expiry=60.0) as a, \
            process(pg_url, redis.url, republish=30.0, expiry=60.0) as b:
        await until(lambda: a.cluster.up and b.cluster.up, "both processes on Redis")
        ann, member = await typed(a, "doc", "ann", "hello world")
        member.room.presence(member, protocol.Presence(1, [(3, 3)]))  # published live, before b has the room
        await asyncio.sleep(0.2)
        bob = FakeConn("bob")
        await b.join("doc", bob, hello("bob"), token=None)
        await until(lambda: ann.session in cursors_seen(bob), "ann's cursor at bob's screen", timeout=3)
        assert cursors_seen(bob)[ann.session] == [{"anchor": 3, "head": 3}]


async def test_an_update_committed_elsewhere_while_the_document_loads_here_is_not_left_for_the_check(
        pg_url, redis, monkeypatch):
    """Was: a room subscribes before it loads, but news that came during the load found no room and was
    dropped; when the load had read the database before that commit, the room served the version before
    it, and its editors did not see the update, until the next database check (--check-every) or the
    next update from there. Now news of updates that comes while the document loads is handed to its
    room once it is there."""
    async with process(pg_url, redis.url, check_every=30.0) as a, process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: a.cluster.up and b.cluster.up, "both processes on Redis")
        _, member = await typed(a, "doc", "ann", "hello")
        read, go_on = hold_loads(monkeypatch, b.store)  # the document as it is before ann's second update
        bob = FakeConn("bob")
        joining = asyncio.ensure_future(b.join("doc", bob, hello("bob"), token=None))
        await asyncio.wait_for(read.wait(), 5)
        await member.room.push(member, push_msg(1, "ann", [5, [0, "!"]]))
        await member.room.settled()
        received = b.cluster.m_received._value.get()
        await until(lambda: b.cluster.m_received._value.get() > received, "the news reaching b")
        go_on.set()
        await joining
        assert bob.of("welcome")[0]["version"] == 1
        await until(lambda: bob.of("updates"), "the update at bob", timeout=3)
        assert bob.of("updates") == [{"type": "updates", "from": 1,
                                      "updates": [{"clientID": "ann", "changes": [5, [0, "!"]]}]}]
        assert b.rooms["doc"].seq.committed_text() == "hello!"


async def test_the_cursors_of_a_process_that_died_leave_when_their_expiry_is_due(pg_url, redis):
    """Was: other processes' cursors were expired at a fixed tick of a third of --presence-expiry, so one
    stayed up to that much longer than the expiry after its last news (with the defaults, 40 s instead of
    30 for the people of a killed process). Four cursors of a process that then goes silent, a quarter of
    a second apart: each leaves at its expiry, none a tick later."""
    import redis.asyncio as aioredis
    async with process(pg_url, redis.url, republish=2.0, expiry=3.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        bob, _ = await typed(b, "doc", "bob", "hello world")
        dead = aioredis.Redis.from_url(redis.url)
        news: dict[str, float] = {}
        try:
            for i in range(4):
                session = f"dead-{i}"
                await dead.publish(b.cluster.channel("doc"), orjson.dumps({"k": "p", "p": "deadprocess", "peers": [
                    {"session": session, "user": {"name": f"d{i}", "color": "#123456"}, "version": 1,
                     "ranges": [{"anchor": i, "head": i}]}]}))
                news[session] = time.monotonic()
                await until(lambda: session in cursors_seen(bob), "the cursor shown")
                await asyncio.sleep(0.25)
        finally:
            await dead.aclose()
        left: dict[str, float] = {}
        deadline = time.monotonic() + 10
        while len(left) < len(news) and time.monotonic() < deadline:
            shown = cursors_seen(bob)
            left.update({s: time.monotonic() - t for s, t in news.items() if s not in left and s not in shown})
            await asyncio.sleep(0.01)
        assert len(left) == len(news), left
        assert all(3.0 - 0.1 < after < 3.0 + 0.5 for after in left.values()), left


async def test_a_commit_refused_because_the_document_was_deleted_elsewhere_ends_its_sessions_as_deleted(
        pg_url, redis, caplog):
    """Was: a push here to a document another process had just deleted, before the news of it came (lost,
    or late), was refused by the store (no such document) and handled as a commit lost to another writer:
    caught up (nothing to read) and committed again, seventeen times, each counted in
    collab_conflicts_total, then a warning that it "lost 17 commits in a row to other writers" and a
    reload, its editors closed with 1011 (storage error, reconnect) instead of being told the document was
    deleted. Now the first refusal ends the room as the news would: 1008, "this document was deleted"."""
    import logging
    caplog.set_level(logging.WARNING, logger="collab")
    # The deleting process publishes nothing (its news is lost), and this one checks the database rarely.
    async with process(pg_url, None) as a, process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        bob, member = await typed(b, "doc", "bob", "hello")
        room = member.room
        await a.delete("doc")
        await room.push(member, push_msg(1, "bob", [5, [0, "!"]]))
        await until(lambda: bob.closed, "bob's session ending", timeout=5)
        assert bob.closed_with == (1008, "this document was deleted")
        await until(lambda: room.broken and "doc" not in b.rooms, "the room being done")
        assert b.metrics.conflicts._value.get() <= 1
        assert not [r for r in caplog.records if "commits in a row" in r.getMessage()]


async def test_people_at_another_process_learn_which_document_the_first_edit_made(pg_url, redis, caplog):
    """The frame from version 0 says which document it made (welcome.docId is absent while nobody made
    it): people waiting at another process get it from there too, so their next hello can say which
    document their version is of (a name deleted and used again is another document).

    Was also: that process's room, opened before anybody made the document, applied the first edit as
    news and stayed a room of no document with text in it: its frames could not say which document,
    and what it wrote of it failed (its snapshot at shutdown: "flushing document doc at shutdown
    failed", a null document id). Now the news makes it find the document first."""
    import logging
    caplog.set_level(logging.ERROR, logger="collab")
    async with process(pg_url, redis.url) as a, process(pg_url, redis.url) as b:
        await until(lambda: a.cluster.up and b.cluster.up, "both processes on Redis")
        bob = FakeConn("bob")
        await b.join("doc", bob, hello("bob"), token=None)
        assert "docId" not in bob.of("welcome")[0]
        ann, member = await typed(a, "doc", "ann", "hello")
        made = ann.of("updates")[0]
        assert made["from"] == 0 and made["docId"] == member.room.identity
        await until(lambda: bob.of("updates"), "the first edit at bob", timeout=3)
        assert bob.of("updates")[0]["docId"] == made["docId"]
        carol = FakeConn("carol")
        await b.join("doc", carol, hello("carol"), token=None)
        assert carol.of("welcome")[0]["docId"] == made["docId"]
        assert b.rooms["doc"].doc_id == member.room.doc_id
        assert b.rooms["doc"].seq.committed_text() == "hello"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_acknowledged_elsewhere_is_not_welcomed_with_an_empty_text_by_a_room_of_no_document(
        pg_url, redis):
    """Was: a room opened here before anybody made its document, whose news of the first commits at
    another process was lost, welcomed a client that process had acknowledged (its hello at a version
    past ours) with an empty text at version 0 after waiting 2 s for a catch-up that could read nothing
    (the room had no document to read from): the page showed nothing and offered its saved text as
    rescued, until the next database check found the document. Now the room looks the document up
    first, then catches up."""
    async with process(pg_url, None) as a, process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        bob = FakeConn("bob")
        await b.join("doc", bob, hello("bob"), token=None)  # b's room: nobody made the document yet
        ann, _ = await typed(a, "doc", "ann", "hello")  # a publishes nothing: b hears nothing of it
        carol = FakeConn("carol")
        await asyncio.wait_for(b.join("doc", carol, hello("carol", version=1), token=None), 5)
        welcome = carol.of("welcome")[0]
        assert (welcome["version"], welcome.get("from"), welcome["updates"]) == (1, 1, []), welcome  # a resume
        assert welcome["docId"] == ann.of("updates")[0]["docId"]


async def test_a_resume_of_a_name_with_no_document_is_welcomed_without_waiting_for_a_catch_up(pg_url, redis):
    """A client back at version 3 of a name that has no document (deleted meanwhile, through another
    process whose news was lost; here: never made) and without its docId. Was: the room looked the
    name up, found nothing, then waited 2 s for a catch-up that had no document to read before it
    welcomed the client at version 0. The document of an acknowledged version is committed before the
    acknowledgement, so finding none is final: the welcome comes at once."""
    async with process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        carol = FakeConn("carol")
        started = time.monotonic()
        await b.join("doc", carol, hello("carol", version=3), token=None)
        waited = time.monotonic() - started
        welcome = carol.of("welcome")[0]
        assert (welcome["version"], welcome["doc"], welcome.get("docId")) == (0, "", None), welcome
        assert waited < 1.0, f"the welcome waited {waited:.2f} s (the catch-up's 2 s)"


async def test_a_hello_naming_the_document_made_elsewhere_is_resumed_by_a_room_that_missed_it(pg_url, redis):
    """A room here stood for a name nobody had made; another process made the document (empty, through
    the API) and its news was lost. A client welcomed there (docId, version 0) that comes here is
    resumed in that document, not given an empty text and a rescue, nor welcomed without its docId."""
    async with process(pg_url, None) as a, process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        await b.join("doc", FakeConn("bob"), hello("bob"), token=None)  # b's room: no document
        await a.create("doc")  # a publishes nothing
        ann = FakeConn("ann")
        await a.join("doc", ann, hello("ann"), token=None)
        made = ann.of("welcome")[0]["docId"]
        carol = FakeConn("carol")
        await b.join("doc", carol, protocol.Hello("carol", 0, {"name": "c", "color": "#123456"}, doc_id=made),
                     token=None)
        welcome = carol.of("welcome")[0]
        assert (welcome.get("from"), welcome["docId"]) == (0, made), welcome


async def test_a_hello_naming_a_document_made_after_this_room_loaded_is_sent_back_not_given_the_old_text(
        pg_url, redis):
    """A room here is of a document another process deleted and made again under the name, and the news
    did not come (lost, or not yet). A client of the new document that comes here must not be welcomed
    to the deleted one's text (its unsent edits would go to a rescue dialog, for a document that is
    there): it is told to reconnect (1011), and the check this sets off ends the out-of-date room, so
    that it is welcomed to the new document next time."""
    async with process(pg_url, None) as a, process(pg_url, redis.url, check_every=30.0) as b:
        await until(lambda: b.cluster.up, "the process on Redis")
        await typed(b, "doc", "bob", "the old document")
        await a.delete("doc")  # a publishes nothing: b's room is the deleted document's
        ann, _ = await typed(a, "doc", "ann", "the new one")
        made = ann.of("updates")[0]["docId"]
        carol = FakeConn("carol")
        again = protocol.Hello("carol", 1, {"name": "c", "color": "#123456"}, doc_id=made)
        with pytest.raises(ServerError) as refused:
            await b.join("doc", carol, again, token=None)
        assert refused.value.close == 1011 and not carol.of("welcome")
        await until(lambda: b.rooms.get("doc") is None or b.rooms["doc"].identity == made,
                    "the check ending the out-of-date room")
        dave = FakeConn("dave")
        await b.join("doc", dave, protocol.Hello("dave", 1, {"name": "d", "color": "#123456"}, doc_id=made),
                     token=None)
        assert (dave.of("welcome")[0].get("from"), dave.of("welcome")[0]["docId"]) == (1, made)


async def test_two_deployments_sharing_one_redis_never_hear_each_other(pg_server, pg_url, redis):
    """Was: channels were named after the document alone, and Redis pub/sub channels are server-wide (the
    database number of a Redis URL does not separate them): two deployments on one Redis server, each with
    a document of one name, showed each other's cursors and names, and their leaves. Now each database has
    its own deployment id (migration 005), and channels are named after it. Processes on one database
    still hear each other at once."""
    other = pg_server.create_database()
    try:
        async with process(pg_url, redis.url, check_every=30.0) as a, \
                process(pg_url, redis.url, check_every=30.0) as a2, \
                process(pg_server.url(other), redis.url, check_every=30.0) as b:
            await until(lambda: a.cluster.up and a2.cluster.up and b.cluster.up, "the processes on Redis")
            heard = []  # the processes b heard from
            handle = b.cluster._handle
            b.cluster._handle = lambda name, msg, loaded=False: (heard.append(msg.get("p")), handle(name, msg, loaded))
            ann, ann_member = await typed(a, "shared", "ann", "hello world")
            neighbour, _ = await typed(a2, "shared", "nick", "")
            stranger, _ = await typed(b, "shared", "mallory", "other text")
            ann_member.room.presence(ann_member, protocol.Presence(1, [(3, 5)]))
            await until(lambda: ann.session in cursors_seen(neighbour), "ann's cursor at the same deployment")
            await asyncio.sleep(0.5)  # the same bus: anything crossing would be here by now
            assert ann.session not in cursors_seen(stranger), "was: ann's cursor shown at another deployment"
            assert not {a.cluster.id, a2.cluster.id} & set(heard), "b heard the other deployment's news"
            assert b.rooms["shared"].seq.committed_text() == "other text"
            assert a.cluster.prefix == a2.cluster.prefix != b.cluster.prefix
    finally:
        pg_server.drop_database(other)


async def test_a_process_started_with_another_secret_says_so(pg_url, caplog):
    """Was: every process of a deployment must sign links with the same secret, but one started with another
    (or none) joined silently: links made at the others were refused there (`forbidden`), and its log said
    only that. Now a process compares its secret's fingerprint with the one the process that started before
    it on the database recorded, and warns when they differ."""
    import logging

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "another secret" in r.getMessage()]

    first, second = "a first secret, long enough", "another secret, long enough"
    with caplog.at_level(logging.WARNING, logger="collab.cluster"):
        async with process(pg_url, None, secret=first), process(pg_url, None, secret=first):
            assert said() == [], "the same secret: nothing to say"
            async with process(pg_url, None, secret=second):
                assert len(said()) == 1 and "Give every process the same --secret-file" in said()[0], said()
            async with process(pg_url, None):
                assert len(said()) == 2 and "access control is off here" in said()[1], said()
            async with process(pg_url, None, secret=first):
                assert len(said()) == 3 and "access control is off there" in said()[2], said()
        assert first.encode().hex() not in " ".join(said()) and first not in " ".join(said())


async def test_a_process_started_with_or_without_redis_unlike_the_one_before_says_so(pg_url, redis, caplog):
    """Was: one process started without --redis among processes with it (a unit or an environment file
    missed) joined silently: its edits reached the others only at their database checks, and theirs reached
    it by polling, a second late or so, with nothing in any log. Now it says so, and so does one started with
    Redis after one without."""
    import logging

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "Give every process the same --redis" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="collab.cluster"):
        async with process(pg_url, redis.url), process(pg_url, redis.url):
            assert said() == [], "the same: nothing to say"
            async with process(pg_url, None):
                assert len(said()) == 1 and "this process runs without --redis" in said()[0], said()
                assert "used Redis" in said()[0], said()
            async with process(pg_url, redis.url):
                assert len(said()) == 2 and "this process uses Redis" in said()[1], said()
                assert "ran without --redis" in said()[1], said()


async def test_the_check_reads_the_database_a_few_times_however_many_rooms_wait_for_their_document(
        pg_url, monkeypatch):
    """Was: the check of every open document looked up each room open on a name nobody had made yet (an
    editor on a new name, a link to a misspelt one) with a query of its own, one after the other, every
    --check-every (or --poll-every) s, before the one query for every other room: about 0.5 ms each on
    loopback, so 3,000 such rooms made every check 1.5 s late and cost the database 3,000 queries a
    second, and commits made at a process without Redis (which the check alone brings) reached this one
    late by as much. Now one query looks all of them up, and the rooms whose document was made elsewhere
    become it and read its text."""
    async with process(pg_url, None, check_every=30.0, poll_every=30.0) as a, \
            process(pg_url, None, check_every=30.0, poll_every=30.0) as b:
        waiting = []
        for k in range(300):
            conn = FakeConn(f"c{k}")
            await a.join(f"new{k}", conn, hello(f"c{k}"), token=None)
            waiting.append(conn)
        await typed(b, "new7", "ann", "seven")  # two of them made at the other process
        await typed(b, "new123", "bob", "one two three")
        _, member = await typed(b, "made", "carl", "made")  # and one open at both, written there
        here = FakeConn("dan")
        await a.join("made", here, hello("dan"), token=None)
        await member.room.push(member, push_msg(1, "carl", [4, [0, "!"]]))
        await member.room.settled()

        reads = 0
        read = a.store._read

        async def counted(*args, **kwargs):
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)

        monkeypatch.setattr(a.store, "_read", counted)
        await a.cluster.check()
        # Two for the check; and the three rooms with news to read may have begun to (their catch-ups).
        assert reads <= 5, f"one check of 301 open rooms read the database {reads} times"
        monkeypatch.undo()
        await until(lambda: a.rooms["made"].seq.committed_text() == "made!", "the commit made at b")
        for name, text in (("new7", "seven"), ("new123", "one two three")):
            await until(lambda: a.rooms[name].seq.committed_text() == text, f"{name} made at b")
            assert a.rooms[name].doc_id == b.rooms[name].doc_id
        assert waiting[7].of("updates")[0]["docId"] == b.rooms["new7"].identity
        assert all(a.rooms[f"new{k}"].doc_id is None for k in range(300) if k not in (7, 123))
