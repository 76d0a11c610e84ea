"""Found by a chaos campaign (SIGKILLs, Redis and PostgreSQL restarts under stock clients): what a
crash-and-reconnect storm shows that the other tests did not.

Each test pins one finding down in-process, on the real code path, without waiting on the clock.
"""

from __future__ import annotations

import contextlib
import logging

import aiohttp
import pytest

from collab import ws
from collab.app import ADMISSION, create_app
from collab.settings import Settings
from wsutil import join


async def test_a_client_gone_during_its_websocket_upgrade_is_not_logged_as_a_server_error(
        aiohttp_client, tmp_path, monkeypatch, caplog):
    """Was: a client that hung up while its upgrade was being answered (a reconnecting client giving up
    on a process busy starting, a handshake timeout) made `ws.prepare` raise ClientConnectionResetError,
    which ws.handle handed to the error answer as a bug: an ERROR "error in GET /ws/doc" with its
    traceback in the log, and a 500 `internal` counted. Nobody is left to answer: it is let go quietly,
    and its place in the per-address count is given back."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "t.db"), unload_after=60)))
    admission = client.server.app[ADMISSION]
    prepare = ws.Socket.prepare

    async def hung_up_first(self, request):
        request.transport.close()  # the client's close arrived just before the 101 went out
        return await prepare(self, request)

    monkeypatch.setattr(ws.Socket, "prepare", hung_up_first)
    with caplog.at_level(logging.WARNING, logger="collab"):
        with pytest.raises(aiohttp.ClientError):
            await client.ws_connect("/ws/doc", protocols=["collab.v1"])
        monkeypatch.undo()
        other, welcome = await join(client, "doc", "next")  # the server goes on as before
        assert admission.per_address == {"127.0.0.1": 1}, "only the open connection counts"
        await other.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert welcome["version"] == 0



@contextlib.asynccontextmanager
async def _news_during_every_pass(pg_url: str, monkeypatch, most: int, note):
    """Two processes on one database, no Redis (no news but what the test makes): ann typed "hello" at
    `a`, bob joined at `b`. Each time a pass of the catch-up of bob's room has read all there was (at most
    `most` times), `note(room, head)`, then ann commits again at `a` and the news of it comes in while
    that pass goes on. Yields (ann, bob, bob's member, bob's room)."""
    from collab.room import Room
    from test_cluster_audit import process, typed
    from test_room_memory import FakeConn, hello, push_msg

    async with process(pg_url, None, check_every=30.0, poll_every=30.0) as a, \
            process(pg_url, None, check_every=30.0, poll_every=30.0) as b:
        _, ann = await typed(a, "doc", "ann", "hello")
        bob = FakeConn("bob")
        member = await b.join("doc", bob, hello("bob"), token=None)
        room = member.room
        news_after, noted = Room._news_after, [0]

        async def overtaken(self, head):
            news, more = await news_after(self, head)
            if self is room and not more and noted[0] < most:  # this pass read all there was: a commits again
                noted[0] += 1
                note(room, head)
                text = ann.room.seq.committed_text()
                await ann.room.push(ann, push_msg(ann.room.seq.version, "ann", [[0, "a"], len(text)]))
                await ann.room.settled()
                room.catch_up()  # the news of it, while this pass goes on
            return news, more

        monkeypatch.setattr(Room, "_news_after", overtaken)
        yield ann, bob, member, room


async def test_a_catch_up_that_news_keeps_overtaking_still_lets_the_pushes_it_holds_be_committed(pg_url, monkeypatch):
    """Was: a catch-up passed again and again for as long as another writer's news came in while a pass
    ran (`Room._catch_up` looped on `_news`), and only then let its pushes go to a commit. Under a busy
    writer elsewhere whose commits come faster than a pass takes (a restore's large change rebased
    over hundreds of updates, a machine under load), that was for ever: nothing of this process was
    committed or refused (a restore answered nothing for 90 s, its editors' pushes were never
    acknowledged), and since no commit was tried none counted as lost, so MAX_LOST_ROUNDS never
    reloaded the room. Now a pass that holds pushes ends with a commit, and one that loses again is a
    lost round like any other.

    Two processes on one database, no Redis (no news but what the test makes): news of another commit
    at `a` comes in during every pass of `b`'s catch-up, 40 times at most."""
    from test_cluster_audit import until
    from test_room_memory import push_msg

    passes: list[float] = []  # the commits b had lost when each pass of its catch-up ended
    async with _news_during_every_pass(pg_url, monkeypatch, 40, lambda room, head: passes.append(
            room.rooms.metrics.conflicts._value.get())) as (ann, bob, member, room):
        await ann.room.push(ann, push_msg(1, "ann", [5, [0, "!"]]))  # b does not know yet: bob's commit loses
        await ann.room.settled()
        await room.push(member, push_msg(1, "bob", [[0, "B"], 5]))
        await until(lambda: len(passes) >= 40 or room.broken or bob.closed
                    or any(f["updates"][-1]["clientID"] == "bob" for f in bob.of("updates")),
                    "bob's push committed or refused, or 40 passes", timeout=60)
        assert len(set(passes)) > 1 or room.broken or bob.closed, (
            f"{len(passes)} passes of the catch-up with news coming in during each, and no commit tried meanwhile")


async def test_a_heavy_push_sequenced_again_is_rebased_only_over_the_news_since_it_was_last(pg_url, monkeypatch):
    """Was: each time a catch-up sequenced a heavy push again (a client's backlog of a thousand edits
    after an outage, a restore), it rebased the push as it arrived over everything committed since its
    version, though the part up to the last committed head had been done already and is never taken
    back. Each pass took longer than the one before, the news that came meanwhile grew with it, and
    under a busy writer elsewhere the process never got its commit in (chaos seed 234028226: passes of
    5, 14, 35, 46 s, two processes' editors unacknowledged for minutes). Now what a heavy push became
    over durable history is kept: a pass rebases it over the news since then alone (a rebase stopped
    at a frame end and taken on from there changes nothing: Sequencer.committed_part).

    As above, news of another commit at `a` comes in during every pass of `b`'s catch-up; every rebase
    counts as heavy here, and each is watched: what it moved over."""
    import collab.room as room_module
    from test_cluster_audit import until
    from test_room_memory import push_msg

    monkeypatch.setattr(room_module, "HEAVY_REBASE", 0)
    passes: list[int] = []
    moved_over: list[int] = []  # how many updates each rebase of bob's push went over
    rebase = room_module._rebase_taking_turns

    async def watched(updates, over, ends):
        moved_over.append(len(over))
        return await rebase(updates, over, ends)

    async with _news_during_every_pass(pg_url, monkeypatch, 12, lambda room, head: passes.append(head)) \
            as (ann, bob, member, room):
        monkeypatch.setattr(room_module, "_rebase_taking_turns", watched)
        await ann.room.push(ann, push_msg(1, "ann", [5, [0, "!"]]))
        await ann.room.settled()
        await room.push(member, push_msg(1, "bob", [[0, "B"], 5]))
        await until(lambda: len(passes) >= 12 or room.broken or bob.closed,
                    "12 passes of b's catch-up", timeout=60)
        assert len(moved_over) >= 6, moved_over
        assert max(moved_over) <= 3, f"each pass rebased bob's push over everything since it came: {moved_over}"
