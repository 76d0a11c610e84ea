"""PostgreSQL's own storage rules (the shared contract is test_store.py): U+0000, the pool, migrations.

PostgreSQL `text` cannot hold U+0000: the store must refuse it with a clear
error and write nothing, never store something else instead. Reads must
survive their pooled connections being killed. Migrations are recorded, run
under an advisory lock, and refuse a schema newer than the code.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from collab import store_pg
from collab.changes import ChangeSet
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.storage import TurnLost, store_at
from serverproc import ROOT, ServerProcess
from storeutil import commit


def edit(version: int, client: str, author: str, text: str = "x", length: int = 0) -> Accepted:
    return Accepted(version, Update(client, ChangeSet.from_json([[0, text]] + ([length] if length else []))),
                    author, 1.0 + version)


async def test_u0000_is_refused_clearly_and_nothing_is_written(pg_url):
    store = await store_at(pg_url).open()
    try:
        a, b = await store.create_document("a"), await store.create_document("b")
        # Inside update rows it is escaped ChangeSetJSON: stored and read back exactly.
        assert await commit(store, a, [edit(1, "c", "ann", "x\x00y")], 3) == 1
        assert await store.text_at(a, 1) == "x\x00y"
        with pytest.raises(ValueError, match="U\\+0000"):
            await store.write_snapshot(a, 1, "x\x00y")
        async with store.view() as view:
            assert await view.rows(a, "snapshots", -1, 10) == []
        # A commit whose author holds it is refused alone; the other commit of the transaction is written.
        results = await asyncio.gather(commit(store, a, [edit(2, "c", "bad\x00name", "z", 3)], 4),
                                       commit(store, b, [edit(1, "c", "fine")], 1), return_exceptions=True)
        assert isinstance(results[0], ValueError) and "U+0000" in str(results[0]), results
        assert results[1] == 1
        assert (await store.document("a"))["version"] == 1 and (await store.document("b"))["version"] == 1
        with pytest.raises(ValueError, match="U\\+0000"):
            await store.create_document("c", "text", author="x\x00")
        assert await store.document("c") is None
        with pytest.raises(ValueError, match="U\\+0000"):
            await store.add_rows(b, "snapshots", [(1, "x\x00", 1.0)])
    finally:
        await store.close()


async def test_reads_and_writes_survive_their_connections_being_killed(pg_url, pg_server, pg_database):
    store = await store_at(pg_url).open()
    try:
        doc = await store.create_document("doc", "hello")
        assert (await store.load("doc")).text == "hello"
        for name in ("collab-reader", "collab-writer"):
            assert pg_server.terminate(pg_database, name) >= 1, name
        await asyncio.sleep(0.2)
        assert (await store.load("doc")).text == "hello"           # a new pooled connection
        assert await commit(store, doc, [edit(2, "c", "ann", "!", 5)], 6) == 2  # a new writer, no error
        assert await store.text_at(doc, 2) == "!hello"
        assert store.reconnects == 1
    finally:
        await store.close()


async def test_the_writer_and_a_restore_turn_ask_postgresql_to_find_them_dead_within_half_a_minute(pg_url):
    """Was: the kernel's keepalive defaults (probes after two hours): a machine that vanished (power,
    network) kept its restore turns, and a commit's row locks, for that long. The writer's session and a
    turn's ask for probes after 10 s, 5 s apart, 3 missed (store_pg.KEEPALIVES), also after the pool
    RESET ALL a turn's connection; a setting in the URL wins."""
    show = [f"SHOW {k}" for k in store_pg.KEEPALIVES]

    async def settings(url: str) -> list[list[str]]:
        store = await store_at(url).open()
        try:
            seen = [[await store._w.fetchval(q) for q in show]]
            for key in (1, 2):  # the second may get the first's connection back, RESET
                turn = await store._take_turn(store._turns, key, 5.0)
                try:
                    seen.append([await turn.fetchval(q) for q in show])
                finally:
                    await store._end_turn(turn, key)
                    await store_pg._give_back(store._turns, turn)
            return seen
        finally:
            await store.close()

    assert await settings(pg_url) == [["10", "5", "3"]] * 3
    separator = "&" if "?" in pg_url else "?"
    assert await settings(f"{pg_url}{separator}tcp_keepalives_idle=30") == [["30", "5", "3"]] * 3


async def test_a_failing_migration_changes_nothing_and_a_newer_schema_is_refused(pg_url, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (folder / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);")
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await store_pg.apply_migrations(conn, folder)
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == {"a", "schema_version"}
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version")] == [1]
        assert not await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), "lock released"
        (folder / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER);")
        assert await store_pg.apply_migrations(conn, folder) == ["002_bad.sql"]
        assert await store_pg.apply_migrations(conn, folder) == []
        await conn.execute("INSERT INTO schema_version VALUES (99, '099_future.sql', 0)")
        with pytest.raises(RuntimeError, match="newer than this collab knows"):
            await store_pg.apply_migrations(conn, folder)
    finally:
        await conn.close()


def test_several_migrators_and_servers_started_at_once_on_an_empty_database(pg_url, pg_server, pg_database, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "collab", "migrate", "--db", pg_url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    said = sorted(out.strip().split(": ", 2)[-1] for out, _ in outs)
    every = ", ".join(p.name for p in sorted((ROOT / "migrations" / "postgres").glob("*.sql")))
    assert said == [f"applied {every}"] + ["schema up to date"] * 5, said
    numbers = [str(n) for n in range(1, len(list((ROOT / "migrations" / "postgres").glob("*.sql"))) + 1)]
    assert pg_server.sql("SELECT version FROM schema_version ORDER BY version", db=pg_database).split() == numbers

    other = pg_server.create_database()
    servers = [ServerProcess(pg_server.url(other), log_path=tmp_path / f"s{k}.log") for k in range(3)]
    try:
        for s in servers:  # started together: each migrates, or waits for the lock, on the empty database
            s.launch()
        for s in servers:
            s.wait_ready(30)
        assert pg_server.sql("SELECT version FROM schema_version ORDER BY version", db=other).split() == numbers
    finally:
        for s in servers:
            s.kill()
        pg_server.drop_database(other)


# ------------------------------------------------------------- restore turns

async def turns_held(conn: asyncpg.Connection) -> list[tuple[int, bool]]:
    """(document key, granted) of every restore turn held or waited for on the server (pg_locks)."""
    rows = await conn.fetch("SELECT objid::bigint, granted FROM pg_locks WHERE locktype = 'advisory' "
                            "AND classid = $1::bigint::oid AND objsubid = 2 ORDER BY granted DESC",
                            store_pg.RESTORE_TURNS)
    return [(r[0], r[1]) for r in rows]


async def test_a_restore_turn_is_one_process_at_a_time_and_let_go_of_on_every_way_out(pg_url, pg_server, pg_database):
    """Two stores on one database stand for two processes. A document's turn is had by one of them at
    a time (another document's is not held up); a wait is bounded and leaves nothing behind; the turn
    goes when its block ends by an error, by cancellation, and when its connection is killed (and the
    block's `held` says so). A turn that comes within its timeout is had: the times bounded below are
    the waits, generously (a loaded machine)."""
    a, b = await store_at(pg_url).open(), await store_at(pg_url).open()
    watch = await asyncpg.connect(pg_url)
    tasks = []
    try:
        async def take(store, doc_id: int, timeout: float, hold: asyncio.Event | None = None,
                       entered: asyncio.Event | None = None, fail: bool = False) -> float:
            start = time.monotonic()
            async with store.restore_turn(doc_id, timeout) as held:
                await held()
                if entered is not None:
                    entered.set()
                if hold is not None:
                    await hold.wait()
                if fail:
                    raise KeyError("the restore failed")
                await held()
            return time.monotonic() - start

        def spawn(coro) -> asyncio.Future:
            tasks.append(asyncio.ensure_future(coro))
            return tasks[-1]

        # Held at a: b waits for it at most its timeout, then gives up holding and waiting for nothing.
        go, entered = asyncio.Event(), asyncio.Event()
        holder = spawn(take(a, 7, 5.0, go, entered))
        await asyncio.wait_for(entered.wait(), 5)
        assert await turns_held(watch) == [(7, True)]
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await take(b, 7, 0.3)
        assert 0.25 < time.monotonic() - start < 3.0
        assert await take(b, 8, 1.0) < 3.0  # another document's turn is its own
        assert await turns_held(watch) == [(7, True)]
        # b waits; the moment a lets go, b has it.
        waiter = spawn(take(b, 7, 5.0))
        await asyncio.sleep(0.3)
        assert not waiter.done() and await turns_held(watch) == [(7, True), (7, False)]
        go.set()
        await holder
        assert await asyncio.wait_for(waiter, 5) < 3.0
        assert await turns_held(watch) == []

        # A block that fails lets go.
        with pytest.raises(KeyError):
            await take(a, 7, 1.0, fail=True)
        assert await turns_held(watch) == [] and await take(b, 7, 1.0) < 3.0

        # Cancelled while holding it, and cancelled while waiting for it: nothing is left held.
        entered = asyncio.Event()
        holder = spawn(take(a, 7, 5.0, asyncio.Event(), entered))
        await asyncio.wait_for(entered.wait(), 5)
        waiter = spawn(take(b, 7, 5.0))
        await asyncio.sleep(0.2)
        waiter.cancel()
        holder.cancel()
        for task in (waiter, holder):
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.1)  # a cancelled lock statement's connection is reset as the pool takes it back
        assert await turns_held(watch) == [] and await take(b, 7, 1.0) < 3.0

        # Its connection killed while held (as when the process holding it is killed, or its connection
        # cut): the turn goes with it, `held` says so (a restore then commits nothing), and the block's
        # end raises nothing else.
        entered, go = asyncio.Event(), asyncio.Event()
        holder = spawn(take(a, 7, 5.0, go, entered))
        await asyncio.wait_for(entered.wait(), 5)
        assert pg_server.terminate(pg_database, "collab-turns") >= 1
        assert await take(b, 7, 2.0) < 3.0
        go.set()
        with pytest.raises(TurnLost):
            await asyncio.wait_for(holder, 5)
        assert await take(a, 7, 1.0) < 3.0  # and a takes turns again, on another connection
        assert await turns_held(watch) == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watch.close()
        await a.close()
        await b.close()
