"""Storage: migrations, group commit, snapshots, and reading any version back.

The tests taking `open_store` are the storage contract: each runs on SQLite
and on PostgreSQL with the same assertions (conftest.BOTH_BACKENDS). The
SQLite-only ones are about SQLite's files and migrations runner; PostgreSQL's
own are in test_pg_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import orjson
import pytest

from collab import history, store as store_module
from collab.app import create_app
from collab.changes import ChangeSet, utf16_len
from collab.errors import CLOSE_INTERNAL, ServerError
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.settings import Settings
from collab.storage import (COPY_TABLES, GATHER_TURNS, Commit, NameTaken, StorageUnavailable, TooManyCheckpoints,
                            VersionCompacted, VersionConflict, store_at)
from collab.store import Store, apply_migrations, connect_sync, migration_files
from conftest import BOTH_BACKENDS
from storeutil import OneCommit, commit, random_edits, raw_sql
from test_room_memory import FakeConn, hello, push_msg, registry


@pytest.fixture
async def open_store(db):
    """open_store(**options) -> an opened store on the test's database (closed at the end)."""
    opened = []

    async def make(**options):
        store = await store_at(db, **options).open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def test_migrations_are_numbered_and_idempotent(tmp_path):
    conn = connect_sync(tmp_path / "m.db")
    first = apply_migrations(conn)
    assert first == [p.name for _, p in migration_files()]
    assert apply_migrations(conn) == []
    rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(first) + 1))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failing_migration_changes_nothing(tmp_path):
    mig = tmp_path / "migs"
    mig.mkdir()
    (mig / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (mig / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);")
    conn = connect_sync(tmp_path / "m.db")
    with pytest.raises(sqlite3.OperationalError):
        apply_migrations(conn, mig)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [1]


def test_a_migration_that_would_orphan_rows_changes_nothing(tmp_path):
    # Foreign keys are off while a migration runs (a table made again would take its referencing rows
    # with it, by cascade); they are checked before it commits.
    mig = tmp_path / "migs"
    mig.mkdir()
    (mig / "001_ok.sql").write_text("CREATE TABLE a (id INTEGER PRIMARY KEY); "
                                    "CREATE TABLE b (a_id INTEGER REFERENCES a(id));")
    (mig / "002_orphans.sql").write_text("INSERT INTO b VALUES (7);")
    conn = connect_sync(tmp_path / "m.db")
    with pytest.raises(RuntimeError, match="002_orphans.sql would leave rows of b referencing missing rows of a"):
        apply_migrations(conn, mig)
    assert conn.execute("SELECT COUNT(*) FROM b").fetchone()[0] == 0
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [1]
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_rows_referencing_nothing_made_outside_collab_do_not_block_a_migration(tmp_path):
    # foreign_key_check looks at the whole database: a row left by hand with foreign keys off (the
    # sqlite3 shell's default) must not make every later migration fail.
    mig = tmp_path / "migs"
    mig.mkdir()
    (mig / "001_ok.sql").write_text("CREATE TABLE a (id INTEGER PRIMARY KEY); "
                                    "CREATE TABLE b (a_id INTEGER REFERENCES a(id));")
    conn = connect_sync(tmp_path / "m.db")
    apply_migrations(conn, mig)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("INSERT INTO b VALUES (7)")
    conn.execute("PRAGMA foreign_keys=ON")
    (mig / "002_next.sql").write_text("CREATE TABLE c (x INTEGER);")
    assert apply_migrations(conn, mig) == ["002_next.sql"]
    assert conn.execute("SELECT a_id FROM b").fetchall() == [(7,)]


def test_migrations_refuse_a_connection_inside_a_transaction(tmp_path):
    # PRAGMA foreign_keys=OFF does nothing inside a transaction: 006's DROP TABLE would then delete every
    # row referencing a document, and the check after it would find nothing wrong.
    mig = tmp_path / "migs"
    mig.mkdir()
    (mig / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    conn = connect_sync(tmp_path / "m.db")
    conn.execute("BEGIN")
    with pytest.raises(RuntimeError, match="no transaction open"):
        apply_migrations(conn, mig)
    conn.execute("ROLLBACK")
    assert apply_migrations(conn, mig) == ["001_ok.sql"]


def test_a_migration_another_process_applied_meanwhile_is_skipped(tmp_path, monkeypatch):
    # Two processes starting at once both read schema_version before either migrates; the second to take
    # the write lock finds the migration recorded (its own run of it fails and is rolled back) and goes on.
    db = tmp_path / "m.db"
    first = connect_sync(db)
    apply_migrations(first)
    recorded = first.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    monkeypatch.setattr(store_module, "pending_migrations", lambda files, done: files)  # read before the other
    second = connect_sync(db)
    assert apply_migrations(second) == []
    assert second.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == recorded
    assert second.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_making_the_documents_table_again_keeps_every_row_and_reference(tmp_path):
    # 006 makes `documents` again (AUTOINCREMENT: ids never given twice). A database made before it keeps
    # its documents, their rows in every table, and the cascade that deletes them with their document.
    before = tmp_path / "before"
    before.mkdir()
    files = migration_files()
    for number, path in files:
        if number < 6:
            (before / path.name).write_text(path.read_text())
    conn = connect_sync(tmp_path / "m.db")
    apply_migrations(conn, before)
    now = time.time()
    for doc_id, name in ((1, "one"), (2, "two")):
        conn.execute("INSERT INTO documents(id, name, version, length, created, updated, salt) "
                     "VALUES (?, ?, 1, 1, ?, ?, ?)", (doc_id, name, now, now, f"salt{doc_id}"))
        conn.execute("INSERT INTO updates(doc_id, version, client_id, author, time, changes, inserted, deleted) "
                     "VALUES (?, 1, 'c', 'a', ?, '[[0,\"x\"]]', 1, 0)", (doc_id, now))
        conn.execute("INSERT INTO snapshots(doc_id, version, text, time) VALUES (?, 1, 'x', ?)", (doc_id, now))
        conn.execute("INSERT INTO checkpoints(doc_id, version, name, author, time) VALUES (?, 1, 'v', 'a', ?)",
                     (doc_id, now))
        conn.execute("INSERT INTO authorship(doc_id, version, spans) VALUES (?, 1, '[[1,\"a\"]]')", (doc_id,))
        conn.execute("INSERT INTO renamed(name, doc_id, time) VALUES (?, ?, ?)", (f"old-{name}", doc_id, now))
    tables = ("updates", "snapshots", "checkpoints", "authorship", "renamed")
    rows = {table: conn.execute(f"SELECT * FROM {table} ORDER BY doc_id").fetchall() for table in tables}
    assert apply_migrations(conn) == [path.name for number, path in files if number >= 6]
    assert conn.execute("SELECT id, name, salt FROM documents ORDER BY id").fetchall() == [
        (1, "one", "salt1"), (2, "two", "salt2")]
    for table in tables:
        assert conn.execute(f"SELECT * FROM {table} ORDER BY doc_id").fetchall() == rows[table], table
    conn.execute("DELETE FROM documents WHERE id = 2")
    for table in tables:
        assert conn.execute(f"SELECT doc_id FROM {table}").fetchall() == [(1,)], table
    conn.execute("INSERT INTO documents(name, created, updated) VALUES ('three', ?, ?)", (now, now))
    assert conn.execute("SELECT id FROM documents WHERE name = 'three'").fetchone()[0] == 3


@BOTH_BACKENDS
async def test_a_deleted_documents_id_is_never_given_again(open_store):
    # SQLite without AUTOINCREMENT gave the newest document's id to the next one made once it was deleted.
    store = await open_store()
    await store.create_document("first")
    gone = await store.create_document("gone")
    await store.delete_document(gone)
    again = await store.create_document("gone")
    assert again > gone


def test_a_database_newer_than_this_collab_is_refused_and_left_alone(tmp_path):
    mig = tmp_path / "migs"
    mig.mkdir()
    (mig / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    conn = connect_sync(tmp_path / "m.db")
    assert apply_migrations(conn, mig) == ["001_ok.sql"]
    with conn:
        conn.execute("INSERT INTO schema_version VALUES (3, '003_future.sql', 0)")
    (mig / "002_next.sql").write_text("CREATE TABLE b (x INTEGER);")
    with pytest.raises(RuntimeError, match="schema version 3, newer than this collab knows \\(2\\)"):
        apply_migrations(conn, mig)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "b" not in tables, "a migration ran against a database newer than the code"


@BOTH_BACKENDS
async def test_append_load_and_every_version(open_store):
    store = await open_store(snapshot_every=10, keep=7)
    doc_id = await store.create_document("doc")
    edits = random_edits(60)
    for k in range(0, 60, 4):
        batch = [e for e, _ in edits[k:k + 4]]
        last_text = edits[k + 3][1]
        snap = (batch[-1].version, last_text) if batch[-1].version % 20 == 0 else None
        await commit(store, doc_id, batch, utf16_len(last_text), snap)
    loaded = await store.load("doc")
    assert (loaded.version, loaded.text, loaded.snapshot_version) == (60, edits[-1][1], 60)
    assert [u.client_id for u in loaded.log] == [e.update.client_id for e, _ in edits[-7:]]
    for v in [0, 1, 19, 20, 21, 39, 59, 60]:
        assert await store.text_at(doc_id, v) == ("" if v == 0 else edits[v - 1][1])
    info = await store.document("doc")
    assert (info["version"], info["length"]) == (60, utf16_len(edits[-1][1]))
    assert (await store.updates(doc_id, 55, 60)).updates == [e.update for e, _ in edits[55:60]]
    await store.close()


@BOTH_BACKENDS
async def test_a_loaded_log_holds_at_most_keep_bytes_of_changes(open_store, monkeypatch):
    """Was: a load read the last `keep` updates whatever their size (up to a frame each), so a document
    whose text was pasted in and cut out over and over loaded about `keep` x maxFrame into memory."""
    from collab import store_pg
    for module in (store_module, store_pg):
        monkeypatch.setattr(module, "KEEP_BYTES", 10_000)
    store = await open_store(keep=1000)
    doc_id = await store.create_document("doc")
    edits = []
    for v in range(1, 41):  # 3,000 characters in, then out again
        changes = ChangeSet.from_json([[0, "x" * 3000]] if v % 2 else [[3000]])
        edits.append(Accepted(v, Update("c", changes), "c", 1000.0 + v))
    for k in range(0, 40, 2):
        await commit(store, doc_id, edits[k:k + 2], 0, (40, "") if k == 38 else None)
    loaded = await store.load("doc")
    assert (loaded.version, loaded.text) == (40, "")
    json_bytes = [len(orjson.dumps(u.changes.to_json())) for u in loaded.log]
    assert 3 <= len(loaded.log) < 10 and sum(json_bytes) <= 10_000 < sum(json_bytes) + 3008, json_bytes
    assert loaded.log == [e.update for e in edits[40 - len(loaded.log):]]


@BOTH_BACKENDS
async def test_replaying_a_history_never_runs_on_the_event_loop(open_store, monkeypatch):
    """Was (PostgreSQL): load and text_at replayed the updates after a snapshot on the event loop, so
    opening an old version of a long document stalled every connection of the process (a reviewer's
    80,000 updates of a 2 MB document: 2.9 s without an acknowledgement anywhere)."""
    from collab.text import Text
    store = await open_store(keep=5)
    doc_id = await store.create_document("doc")
    edits = random_edits(30)
    for k in range(0, 30, 3):
        await commit(store, doc_id, [e for e, _ in edits[k:k + 3]], utf16_len(edits[k + 2][1]))
    threads, real_apply = [], Text.apply

    def apply(self, changes):
        threads.append(threading.get_ident())
        return real_apply(self, changes)

    monkeypatch.setattr(Text, "apply", apply)
    loaded = await store.load("doc")
    assert loaded.text == edits[-1][1] and len(loaded.log) == 5
    assert await store.text_at(doc_id, 17) == edits[16][1]
    assert len(threads) >= 47 and threading.get_ident() not in threads  # replayed, and never here


@BOTH_BACKENDS
async def test_concurrent_appends_share_transactions(open_store):
    store = await open_store()
    ids = [await store.create_document(f"d{k}") for k in range(20)]
    commits_before = store.commits
    one = ChangeSet.from_json([[0, "x"]])
    await asyncio.gather(*(commit(store, i, [Accepted(1, Update("c", one), "u", 1.0)], 1) for i in ids))
    assert store.commits - commits_before < 20  # grouped
    docs = await store.list_documents()
    assert sorted(d["version"] for d in docs) == [1] * 20
    await store.close()


@BOTH_BACKENDS
async def test_commits_scheduled_a_turn_apart_share_a_transaction(open_store):
    # Clients answering one broadcast push a few event-loop turns apart; the writer lets the loop turn
    # (GATHER_TURNS) before it takes a group, so their updates commit together.
    assert GATHER_TURNS >= 2
    store = await open_store()
    one = ChangeSet.from_json([[0, "x"]])
    a, b = [await store.create_document(n) for n in "ab"]
    before = store.commits
    first = OneCommit(Commit(a, 0, [Accepted(1, Update("c", one), "u", 1.0)], 1))
    second = OneCommit(Commit(b, 0, [Accepted(1, Update("c", one), "u", 1.0)], 1))
    store.schedule(first)
    await asyncio.sleep(0)  # the writer's first turn
    store.schedule(second)
    assert await asyncio.gather(first.done, second.done) == [1, 1]
    assert store.commits - before == 1
    await store.close()


@BOTH_BACKENDS
async def test_append_refuses_a_gap(open_store):
    store = await open_store()
    doc_id = await store.create_document("doc")
    one = ChangeSet.from_json([[0, "x"]])
    with pytest.raises(VersionConflict, match="is at version 0, not 1"):
        await commit(store, doc_id, [Accepted(2, Update("c", one), "u", 1.0)], 1)
    assert (await store.document("doc"))["version"] == 0
    assert (await store.updates(doc_id, 0, 5)).updates == []
    await store.close()


@BOTH_BACKENDS
async def test_create_with_text_and_missing_documents(open_store):
    store = await open_store()
    doc_id = await store.create_document("forked", "line one\nline 😀 two", author="ann")
    assert await store.create_document("forked", "ignored") == doc_id
    loaded = await store.load("forked")
    assert (loaded.version, loaded.text) == (1, "line one\nline 😀 two")
    assert await store.load("nothing") is None
    assert await store.document("nothing") is None
    await store.close()


@BOTH_BACKENDS
async def test_a_conflicting_commit_is_refused_alone_and_the_rest_of_the_group_commits(open_store):
    store = await open_store()
    a, b, c = [await store.create_document(n) for n in "abc"]
    one = ChangeSet.from_json([[0, "x"]])
    good_a = commit(store, a, [Accepted(1, Update("c", one), "u", 1.0)], 1)
    stale_b = commit(store, b, [Accepted(3, Update("c", ChangeSet.from_json([[0, "y"]])), "u", 1.0)], 1)
    good_c = commit(store, c, [Accepted(1, Update("c", one), "u", 1.0)], 1)
    commits_before = store.commits
    results = await asyncio.gather(good_a, stale_b, good_c, return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], VersionConflict) and (results[1].expected, results[1].found) == (2, 0)
    assert store.commits - commits_before == 1  # one transaction carried all three
    assert {d["name"]: d["version"] for d in await store.list_documents()} == {"a": 1, "b": 0, "c": 1}
    assert (await store.updates(b, 0, 5)).updates == []
    await store.close()


@BOTH_BACKENDS
async def test_a_failing_write_is_undone_alone(open_store):
    store = await open_store()
    await store.create_document("taken")
    results = await asyncio.gather(store.create_document("taken", exist_ok=False), store.create_document("fresh"),
                                   return_exceptions=True)
    assert isinstance(results[0], NameTaken)
    assert type(results[1]) is int
    assert sorted(d["name"] for d in await store.list_documents()) == ["fresh", "taken"]
    await store.close()


class BuggySource(OneCommit):
    """A document whose own code fails (a bug) when the writer takes its commit, or hears how it went."""

    def __init__(self, commit: Commit, fails_in: str):
        super().__init__(commit)
        self.fails_in = fails_in

    def take_commit(self) -> Commit | None:
        if self.fails_in == "take":
            raise RuntimeError("a bug in take_commit")
        return super().take_commit()

    def commit_done(self, commit: Commit, error: BaseException | None) -> None:
        if self.fails_in == "done":
            self.done.set_result("heard")
            raise RuntimeError("a bug in commit_done")
        super().commit_done(commit, error)


@BOTH_BACKENDS
async def test_a_document_whose_code_fails_in_the_writer_leaves_the_others_and_the_writer_working(
        open_store, caplog):
    """Was: an exception from one source's take_commit or commit_done ended the writer's loop: the
    documents after it in that group never heard of their commits (their pushers never acknowledged),
    though the writer started again for later ones."""
    store = await open_store()
    ids = [await store.create_document(n) for n in "abcd"]
    one = ChangeSet.from_json([[0, "x"]])
    sources = [BuggySource(Commit(i, 0, [Accepted(1, Update("c", one), "u", 1.0)], 1), fails)
               for i, fails in zip(ids, ("take", "done", "none", "none"))]
    for source in sources:
        store.schedule(source)
    async with asyncio.timeout(10):
        assert await asyncio.gather(*(s.done for s in sources[1:])) == ["heard", 1, 1]
        assert await commit(store, ids[2], [Accepted(2, Update("c", one), "u", 1.0)], 1) == 2  # still writing
    assert {d["name"]: d["version"] for d in await store.list_documents()} == {"a": 0, "b": 1, "c": 2, "d": 1}
    assert not sources[0].done.done()
    assert "taking a document's pending commit failed" in caplog.text
    assert f"document {ids[1]}: handling the outcome of its commit failed" in caplog.text


def one_edit(version: int, client: str, text: str = "x", length: int = 0) -> Accepted:
    """An update inserting `text` at the start of a document of `length` UTF-16 units."""
    return Accepted(version, Update(client, ChangeSet.from_json([[0, text]] + ([length] if length else []))),
                    f"user-{client}", 1000.0 + version)


@BOTH_BACKENDS
async def test_a_row_that_should_not_be_there_fails_only_its_commit(open_store, db, request):
    """An update row above a document's version (planted behind the store's back) makes that commit fail
    with the database's error; the other commits of the same transaction are written."""
    store = await open_store()
    a, b, c = [await store.create_document(n) for n in "abc"]
    pg = request.getfixturevalue("pg_server") if "://" in db else None
    raw_sql(db, "INSERT INTO updates(doc_id, version, client_id, author, time, changes, inserted, deleted) "
                f"VALUES ({b}, 1, 'ghost', 'ghost', 0, '[[0,\"g\"]]', 1, 0)", pg)
    before = store.commits
    results = await asyncio.gather(*(commit(store, d, [one_edit(1, "c")], 1) for d in (a, b, c)),
                                   return_exceptions=True)
    assert results[0] == 1 and results[2] == 1, results
    assert isinstance(results[1], Exception) and not isinstance(results[1], VersionConflict), results
    assert store.commits - before == 1
    assert {d["name"]: d["version"] for d in await store.list_documents()} == {"a": 1, "b": 0, "c": 1}
    assert await store.text_at(a, 1) == await store.text_at(c, 1) == "x"
    assert [u.client_id for u in (await store.updates(b, 0, 1)).updates] == ["ghost"], "the planted row is left alone"


@BOTH_BACKENDS
async def test_salts_snapshots_history_authorship_and_delete(open_store):
    store = await open_store(snapshot_every=4)
    doc = await store.create_document("doc", "ab", author="ann", client_id="c0")
    other = await store.create_document("other", "keep me")
    info = await store.document("doc")
    assert (info["version"], info["length"]) == (1, 2) and info["salt"]
    salt = await store.new_salt(doc)
    assert salt != info["salt"] and (await store.document("doc"))["salt"] == salt
    assert (await store.load("doc")).salt == salt
    text = "ab"
    for v in range(2, 10):
        text = f"{v}{text}"
        await commit(store, doc, [one_edit(v, f"c{v % 2}", str(v), utf16_len(text) - 1)], utf16_len(text))
    await store.write_snapshot(doc, 9, text)
    await store.write_snapshot(doc, 9, text)  # twice: the first stays
    loaded = await store.load("doc")
    assert (loaded.version, loaded.text, loaded.snapshot_version) == (9, text, 9)
    history = await store.history(doc, 10, 3)
    assert [(e["version"], e["clientID"], e["author"], e["inserted"], e["deleted"]) for e in history] == [
        (9, "c1", "user-c1", 1, 0), (8, "c0", "user-c0", 1, 0), (7, "c1", "user-c1", 1, 0)]
    assert (await store.history(doc, 2, 10))[0] == {"version": 1, "clientID": "c0", "author": "ann",
                                                     "time": info["created"], "inserted": 2, "deleted": 0}
    authors = (await store.authorship(doc, 9)).to_list()
    assert authors == [[1, "user-c1"], [1, "user-c0"], [1, "user-c1"], [1, "user-c0"], [1, "user-c1"],
                       [1, "user-c0"], [1, "user-c1"], [1, "user-c0"], [2, "ann"]]
    assert (await store.authorship(doc, 9)).to_list() == authors  # from the cache written at version 8
    assert await store.oldest_update(doc) == 1
    await store.delete_document(doc)
    assert await store.document("doc") is None and await store.load("doc") is None
    assert (await store.updates(doc, 0, 9)).updates == [] and await store.oldest_update(doc) is None
    assert [d["name"] for d in await store.list_documents()] == ["other"]
    assert await store.text_at(other, 1) == "keep me"
    await store.ping()


@BOTH_BACKENDS
async def test_compaction_keeps_the_boundary_and_names_the_nearest_readable_versions(open_store):
    store = await open_store(snapshot_every=1000)
    store.COMPACT_CHUNK = 7  # several delete transactions; the outcome does not depend on it
    doc = await store.create_document("doc")
    edits = random_edits(50, seed=3)
    for k in range(0, 50, 5):
        batch = [e for e, _ in edits[k:k + 5]]
        v = batch[-1].version
        await commit(store, doc, batch, utf16_len(edits[v - 1][1]), (v, edits[v - 1][1]) if v == 20 else None)
    spans = (await store.authorship(doc, 30)).to_list()
    assert await store.compact(doc, 30, edits[29][1], spans) == 30
    assert await store.oldest_update(doc) == 31
    for v in (20, 30, 31, 45, 50):
        assert await store.text_at(doc, v) == edits[v - 1][1], v
    with pytest.raises(VersionCompacted) as err:
        await store.text_at(doc, 25)
    assert str(err.value) == "version 25 was compacted away; the nearest readable versions are 20 and 30"
    # Version 0 (the empty text) is always readable: it is the nearest below when no snapshot is (was: left out).
    assert str(VersionCompacted(2, None, 5)) == "version 2 was compacted away; the nearest readable versions are 0 and 5"
    assert str(VersionCompacted(7, 5, None)) == "version 7 was compacted away; the nearest readable version is 5"
    with pytest.raises(VersionCompacted):
        await store.authorship(doc, 25)
    assert (await store.authorship(doc, 30)).to_list() == spans
    assert (await store.updates(doc, 20, 35)).updates == [], "compacted rows are not handed out as if complete"
    kept = (await store.updates(doc, 30, 33)).updates
    assert [u.client_id for u in kept] == [e.update.client_id for e, _ in edits[30:33]]
    loaded = await store.load("doc")
    assert (loaded.version, loaded.text) == (50, edits[-1][1])
    assert await store.compact(doc, 30, edits[29][1], spans) == 0, "a second run finds nothing"


@BOTH_BACKENDS
async def test_a_view_is_one_moment_and_copied_rows_read_back_the_same(open_store):
    store = await open_store()
    doc = await store.create_document("src", "start", author="ann")
    text = "start"
    for v in range(2, 8):
        await commit(store, doc, [one_edit(v, "c", "😀", utf16_len(text))], utf16_len(text) + 2,
                     (v, "😀" + text) if v == 5 else None)
        text = "😀" + text
    await store.authorship(doc, 7)  # nothing cached below snapshot_every: the table may stay empty
    async with store.view() as view:
        await commit(store, doc, [one_edit(8, "late", "z", utf16_len(text))], utf16_len(text) + 1)
        docs = await view.documents()
        assert [(d["name"], d["version"]) for d in docs] == [("src", 7)], "the view does not see later commits"
        rows = {t: await view.rows(doc, t, -1, 1000) for t in COPY_TABLES}
        assert [r[0] for r in rows["updates"]] == list(range(1, 8))
        assert [r[0] for r in rows["snapshots"]] == [5]
        assert [r[0] for r in await view.rows(doc, "updates", 3, 2)] == [4, 5], "paged by version"
    info = dict(docs[0], name="dst")
    with pytest.raises(NameTaken):
        await store.add_document(dict(info, name="src"))
    copy = await store.add_document(info)
    for table, table_rows in rows.items():
        if table_rows:
            await store.add_rows(copy, table, table_rows)
    assert (await store.document("dst"))["salt"] == docs[0]["salt"]
    for v in range(1, 8):
        assert await store.text_at(copy, v) == await store.text_at(doc, v), v
    assert await store.history(copy, 8, 100) == await store.history(doc, 8, 100)
    assert (await store.load("dst")).text == text


@BOTH_BACKENDS
async def test_documents_named_is_document_of_each_name_that_has_one(open_store):
    """The check of rooms open on names nobody had made (cluster.py) looks them all up at once."""
    store = await open_store()
    for k in range(0, 1200, 100):  # past SQLite's chunk of 500 names
        await store.create_document(f"n{k}", text=f"text {k}")
    names = [f"n{k}" for k in range(1200)] + ["n100", "gone", "n"]
    found = await store.documents_named(names)
    assert found == {f"n{k}": await store.document(f"n{k}") for k in range(0, 1200, 100)}
    assert await store.documents_named([]) == {}


@BOTH_BACKENDS
async def test_two_writers_on_one_database_never_fork_the_log_nor_deadlock(open_store):
    """Two stores on one database (two processes, as the multi-process setup will have) commit the same
    versions of two documents at once, in opposite orders: per document and round exactly one wins, the
    loser hears VersionConflict, and nothing else goes wrong."""
    one, two = await open_store(), await open_store()
    d1, d2 = await one.create_document("d1"), await one.create_document("d2")
    wins = {d1: [], d2: []}
    for r in range(25):
        tries = [(one, d1, "A"), (one, d2, "A"), (two, d2, "B"), (two, d1, "B")]
        results = await asyncio.gather(*(commit(s, d, [one_edit(r + 1, who, "x", r)], r + 1) for s, d, who in tries),
                                       return_exceptions=True)
        for (_, d, who), result in zip(tries, results):
            if result == r + 1:
                wins[d].append(who)
            else:
                assert isinstance(result, VersionConflict) and (result.expected, result.found) == (r, r + 1), result
        assert len(wins[d1]) == len(wins[d2]) == r + 1, (r, results)
    heads = await one.heads([d1, d2, 999])
    assert {k: v[0] for k, v in heads.items()} == {d1: 25, d2: 25}, "heads: the committed versions, the missing left out"
    assert [heads[d][1:] for d in (d1, d2)] == [((await one.document(n))["salt"], n) for n in ("d1", "d2")], heads
    assert await one.heads([]) == {}
    for d in (d1, d2):
        assert [u.client_id for u in (await two.updates(d, 0, 25)).updates] == wins[d]
        assert (await two.load(f"d{1 if d == d1 else 2}")).version == 25
    # PostgreSQL: the row locks decided every race; no statement failed on a duplicate row and was retried.
    assert getattr(one, "retries", 0) == getattr(two, "retries", 0) == 0


async def test_a_read_asked_for_while_the_store_closes_is_refused_not_left_waiting(tmp_path):
    """Was: while close() waited for the reader threads, a read could still be queued, behind their stop
    marks: no thread ever ran it, and its caller waited for ever."""
    store = await Store(tmp_path / "c.db").open()
    await store.create_document("x")
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() is under way: it waits for the threads
    async with asyncio.timeout(5):
        with pytest.raises(RuntimeError, match="store is closed"):
            await store.document("x")
        await closing


async def test_writes_asked_for_while_the_store_closes_are_finished_first(tmp_path):
    """Was: close() looked for a running writer before it waited for a WAL checkpoint, never after; a
    write asked for meanwhile started the writer again, and its next group found the writer's
    threads gone (an AttributeError for every caller in it; their documents reloaded)."""
    store = await Store(tmp_path / "c.db").open()
    await store.create_document("x")
    store._checkpoint = asyncio.ensure_future(asyncio.sleep(0.05))  # a checkpoint under way as close begins
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)
    slow = asyncio.ensure_future(store._write(lambda conn: time.sleep(0.2)))  # a group in the thread
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(store.create_document("y"))  # the next group
    async with asyncio.timeout(10):
        await slow
        assert type(await queued) is int
        await closing
    store = await Store(tmp_path / "c.db").open()
    assert sorted(d["name"] for d in await store.list_documents()) == ["x", "y"]
    await store.close()


async def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path):
    first = await Store(tmp_path / "one.db", exclusive=True).open()
    with pytest.raises(RuntimeError, match="another collab server is already serving"):
        await Store(tmp_path / "one.db", exclusive=True).open()
    admin = await Store(tmp_path / "one.db").open()  # admin commands do not take the lock
    assert await admin.list_documents() == []
    await admin.close()
    await first.close()
    again = await Store(tmp_path / "one.db", exclusive=True).open()  # the lock went with the first
    await again.close()


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_migrations_that_cannot_be_found_fail_loudly(tmp_path, layout):
    folder = tmp_path / "migrations"
    if layout == "empty":
        folder.mkdir()
        (folder / "README").write_text("not a migration")
    conn = connect_sync(tmp_path / "m.db")
    with pytest.raises(RuntimeError, match="installation is incomplete"):
        apply_migrations(conn, folder)
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall() == []


@BOTH_BACKENDS
async def test_a_document_keeps_its_last_hundred_former_names(open_store):
    """Was: every rename kept the old name for ever (the `renamed` table grew by a row a rename, without
    bound: found by an audit). Now the newest MAX_FORMER_NAMES are kept; older links are forgotten."""
    from collab.storage import MAX_FORMER_NAMES

    store = await open_store()
    doc_id = await store.create_document("n0")
    for k in range(MAX_FORMER_NAMES + 5):
        assert await store.rename_document(doc_id, f"n{k + 1}") == f"n{k}"
    last = f"n{MAX_FORMER_NAMES + 5}"
    names = [name for name, _ in await store.former_names(doc_id, limit=1000)]
    assert names == [f"n{k}" for k in range(MAX_FORMER_NAMES + 4, 4, -1)]
    assert await store.renamed_to("n4") is None and await store.renamed_to("n5") == last


async def test_frame_ends_people_checkpoints_and_renames_are_kept(open_store):
    """Each commit ends a frame (a resume after a reload is cut there); who made an update, named
    versions and old names read back the same from every backend."""
    store = await open_store(keep=100)
    doc_id = await store.create_document("framed")
    edits = random_edits(6)
    for entry, _ in edits:
        entry.person, entry.color = f"p-{entry.version % 2}", "#123456"
    for lo, hi in ((0, 2), (2, 3), (3, 6)):  # three commits: frames end at 2, 3 and 6
        await commit(store, doc_id, [e for e, _ in edits[lo:hi]], utf16_len(edits[hi - 1][1]))
    loaded = await store.load("framed")
    assert loaded.frame_ends == [2, 3]  # below the head (the head always ends one)
    read = await store.updates(doc_id, 0, 6)
    assert (read.since, read.ends) == (0, [2, 3, 6]) and (await store.updates(doc_id, 2, 5)).ends == [3]
    # A page bounded by bytes of ChangeSetJSON ends with the update that reaches the bound (one at least).
    sizes = [len(e.changes_json) for e, _ in edits]
    for since, bound, count in ((0, 1, 1), (1, sizes[1] + 1, 2), (0, sum(sizes[:3]), 3), (2, 10 ** 6, 4)):
        page = await store.updates(doc_id, since, 6, max_bytes=bound)
        assert (page.since, page.updates) == (since, [e.update for e, _ in edits[since:since + count]]), bound
        assert page.ends == [v for v in (2, 3, 6) if since < v <= since + count]
        assert page.cut == (sum(sizes[since:since + count]) >= bound), "whether the byte bound stopped it"
    assert not (await store.updates(doc_id, 0, 6)).cut, "a read without a byte bound is never cut"
    history = await store.history(doc_id, 10, 10)
    assert [(e["version"], e.get("person"), e.get("color")) for e in history][:2] == [
        (6, "p-0", "#123456"), (5, "p-1", "#123456")]
    await store.set_checkpoint(doc_id, 3, "first draft", "Ann")
    await store.set_checkpoint(doc_id, 5, "second", "Bob")
    await store.set_checkpoint(doc_id, 5, None, "Bob")
    assert [(c["version"], c["name"], c["author"]) for c in await store.checkpoints(doc_id)] == [
        (3, "first draft", "Ann")]
    await store.set_checkpoint(doc_id, 4, "fourth", "Ann", max_checkpoints=2)
    await store.set_checkpoint(doc_id, 4, "4th", "Ann", max_checkpoints=2)  # renaming one counts no more
    with pytest.raises(TooManyCheckpoints) as err:
        await store.set_checkpoint(doc_id, 6, "sixth", "Ann", max_checkpoints=2)
    assert (err.value.limit, err.value.count) == (2, 2)
    await store.set_checkpoint(doc_id, 6, "sixth", "Ann")  # no limit given: none applies
    # Over a limit lowered afterwards: a named version may still be renamed, a new one not.
    await store.set_checkpoint(doc_id, 3, "first", "Ann", max_checkpoints=2)
    with pytest.raises(TooManyCheckpoints) as err:
        await store.set_checkpoint(doc_id, 5, "fifth", "Ann", max_checkpoints=2)
    assert "has 3 named versions and keeps at most 2" in str(err.value)
    assert [(c["version"], c["name"]) for c in await store.checkpoints(doc_id)] == [
        (3, "first"), (4, "4th"), (6, "sixth")]
    assert await store.rename_document(doc_id, "renamed") == "framed"
    assert await store.renamed_to("framed") == "renamed"
    assert (await store.document("renamed"))["id"] == doc_id and await store.document("framed") is None
    await store.create_document("taken")
    with pytest.raises(NameTaken):
        await store.rename_document(doc_id, "taken")
    await store.delete_document(doc_id)
    assert await store.renamed_to("framed") is None
    await store.close()


# ------------------------------------------------------ commits on the event loop (--sync normal)

async def test_small_commits_on_the_event_loop_keep_the_wal_checkpointed(tmp_path):
    """3,000 one-update commits, each small enough to commit on the event loop (whose connection never
    checkpoints inside a COMMIT): the writer thread's checkpoints start the WAL over, so while the
    store runs its file stays near SQLite's own bound (1,000 pages, 4 MB) instead of growing with every
    commit (about 9 KB each here: 27 MB without them), and everything reads back. Every 100 commits the
    test lets a checkpoint under way finish before it looks: on a machine whose cores are all busy the
    writer thread can lag hundreds of commits behind (CI once saw 10.9 MB), which is the scheduler's
    doing, not a WAL that grows with every commit."""
    path = tmp_path / "wal.db"
    wal = path.with_name(path.name + "-wal")
    store = await Store(path, synchronous="NORMAL").open()
    try:
        doc_id = await store.create_document("w")
        edits = random_edits(3000, seed=7)
        biggest = 0
        for k, (entry, text) in enumerate(edits):
            await commit(store, doc_id, [entry], utf16_len(text))
            if k % 100 == 99:
                if store._checkpoint is not None:
                    await store._checkpoint
                biggest = max(biggest, wal.stat().st_size)
        assert store.commits >= 3000
        assert biggest < 8 * 1024 * 1024, f"the WAL grew to {biggest / 2**20:.1f} MB"
        loaded = await store.load("w")
        assert loaded.version == 3000 and loaded.text == edits[-1][1]
    finally:
        await store.close()


async def test_a_database_locked_elsewhere_never_stalls_the_event_loop(tmp_path):
    """Another connection (an admin command) holds the write lock for a second: the commit waits for
    it in the writer thread, not on the event loop, and lands once the lock is released."""
    path = tmp_path / "locked.db"
    store = await Store(path, synchronous="NORMAL").open()
    try:
        doc_id = await store.create_document("l")
        (entry, text), = random_edits(1)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        gaps, stop = [], asyncio.Event()

        async def ticker():
            last = asyncio.get_running_loop().time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = asyncio.get_running_loop().time()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        pending = asyncio.create_task(commit(store, doc_id, [entry], utf16_len(text)))
        await asyncio.sleep(1.0)
        assert not pending.done()  # it waits for the lock
        other.execute("COMMIT")
        other.close()
        assert await asyncio.wait_for(pending, 10) == 1
        stop.set()
        await ticking
        assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"
        assert (await store.load("l")).text == text
    finally:
        await store.close()


def test_a_checkpoint_holds_writers_off_only_for_what_came_during_its_copy(tmp_path):
    """The writer thread's checkpoint copies a WAL of 6,000 pages back while another connection writes
    every few ms without waiting for locks (busy_timeout 0, as the event loop's connection does). Its
    writes go through during the copy (PASSIVE first), and are held off only while the RESTART copies
    what they added; a RESTART alone holds every writer off for the whole copy. The checkpoint still
    starts the WAL over."""
    path = tmp_path / "ckpt.db"
    conn = connect_sync(path, "NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE small(id INTEGER PRIMARY KEY, n INTEGER)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO big(data) VALUES (?)", ((bytes(4000),) for _ in range(6000)))
    conn.execute("COMMIT")
    other = connect_sync(path, "NORMAL")  # as the event loop's connection: no fsync per commit,
    other.execute("PRAGMA busy_timeout=0")  # no waiting for a lock, no checkpoint of its own
    other.execute("PRAGMA wal_autocheckpoint=0")
    other.execute("INSERT INTO small(n) VALUES (0)")  # its first statement (the schema read) is done
    done = threading.Event()
    failure: list[BaseException] = []

    def run_checkpoint():
        try:
            store_module._checkpoint(conn)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
        finally:
            done.set()

    writes, longest, held_since = 1, 0.0, None  # the longest run of refused attempts, and this one's start
    worker = threading.Thread(target=run_checkpoint)
    started = time.monotonic()
    worker.start()
    while not done.is_set():
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # held off
            held_since = time.monotonic() if held_since is None else held_since
            time.sleep(0.0005)
            continue
        if held_since is not None:
            longest, held_since = max(longest, time.monotonic() - held_since), None
        other.execute("INSERT INTO small(n) VALUES (?)", (writes,))
        other.execute("COMMIT")
        writes += 1
        time.sleep(0.002)  # commits come a few ms apart, as people type
    took = time.monotonic() - started
    if held_since is not None:
        longest = max(longest, time.monotonic() - held_since)
    worker.join()
    assert not failure, failure
    assert longest < 0.6 * took, (f"writers were held off for {longest * 1000:.0f} ms of the {took * 1000:.0f} ms "
                                  f"the checkpoint took ({writes - 1} writes meanwhile)")
    other.execute("INSERT INTO small(n) VALUES (-1)")  # the first write after it starts the WAL over
    busy, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames < 10, f"the WAL did not start over: {frames} frames after one small write"
    assert other.execute("SELECT COUNT(*) FROM small").fetchone() == (writes + 1,)
    other.close()
    conn.close()


async def test_a_long_read_never_holds_commits_off_behind_a_checkpoint(tmp_path):
    """A reader keeps a read transaction open (a backup, say) while 450 commits go on the event loop
    (two checkpoints due): each checkpoint waits for it only briefly and gives up, so no commit waits
    long (SQLite's 5 s busy timeout would hold writers off for as long)."""
    path = tmp_path / "read.db"
    store = await Store(path, synchronous="NORMAL").open()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        doc_id = await store.create_document("r")
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM documents").fetchone() == (1,)  # holds its snapshot
        worst = 0.0
        for entry, text in random_edits(450, seed=5):
            started = time.monotonic()
            await commit(store, doc_id, [entry], utf16_len(text))
            worst = max(worst, time.monotonic() - started)
        assert worst < 1.0, f"a commit waited {worst:.2f} s behind a checkpoint"
        reader.execute("COMMIT")
        assert (await store.load("r")).version == 450
    finally:
        reader.close()
        await store.close()


async def test_a_read_sees_one_commit_even_when_compact_commits_between_its_statements(tmp_path, monkeypatch):
    """`collab compact` (another process) commits between the statements of one read: it writes a
    snapshot at 30 and deletes updates 1..30 just after `load` or `text_at` read their snapshot. Each
    read is one read transaction, so it still sees the rows it began with and answers as before the
    compaction, instead of "updates 1..30 are missing" or "compacted away"."""
    path = tmp_path / "compact.db"
    store = await Store(path, synchronous="NORMAL", snapshot_every=1000, keep=5).open()
    try:
        texts = {}  # doc id -> the text after each update
        for name, seed in (("c", 11), ("d", 12)):
            doc_id = await store.create_document(name)
            edits = random_edits(50, seed=seed)
            for entry, text in edits:
                await commit(store, doc_id, [entry], utf16_len(text))
            texts[doc_id] = [text for _, text in edits]
        c, d = texts
        original, compacted = store_module._snapshot_at, []

        def snapshot_then_compact_elsewhere(conn, doc_id, version):
            found = original(conn, doc_id, version)
            other = connect_sync(path, "NORMAL")  # as `collab compact` does, from its own connection
            try:
                other.execute("BEGIN IMMEDIATE")
                store_module._insert_snapshot(other, doc_id, 30, texts[doc_id][29])
                compacted.append(other.execute("DELETE FROM updates WHERE doc_id = ? AND version <= 30",
                                               (doc_id,)).rowcount)
                other.execute("COMMIT")
            finally:
                other.close()
            return found

        monkeypatch.setattr(store_module, "_snapshot_at", snapshot_then_compact_elsewhere)
        loaded = await store.load("c")
        assert (loaded.version, loaded.text, loaded.snapshot_version) == (50, texts[c][-1], 0)
        assert await store.text_at(d, 35) == texts[d][34]
        assert compacted == [30, 30], "each compaction ran between the statements of one read"
        monkeypatch.setattr(store_module, "_snapshot_at", original)
        assert (await store.load("c")).snapshot_version == 30, "the next read sees the compaction"
        assert await store.text_at(d, 35) == texts[d][34]
    finally:
        await store.close()


def _hold_write_lock(path) -> sqlite3.Connection:
    """Another process's connection holding SQLite's write lock (a transaction left open, as a long admin
    command's would be). WAL readers go on; writers wait for it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE documents SET updated = updated")
    return other


async def test_a_database_locked_past_the_busy_timeout_is_unavailable_not_a_bug(tmp_path, monkeypatch, caplog):
    """Another process holds the write lock for longer than the busy timeout: a queued write (and a read
    that would need the lock) raise StorageUnavailable (503 `unavailable`, the path not in the client's
    message), one warning is logged for both, plain reads go on, and once the lock is gone writes work
    again. An error in SQL of ours stays an error (a bug, 500)."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "busy.db"
    store = await Store(path, synchronous="NORMAL").open()
    try:
        await store.create_document("doc")
        other = _hold_write_lock(path)
        with caplog.at_level(logging.WARNING, logger="collab"):
            with pytest.raises(StorageUnavailable) as err:
                await store.create_document("new")
            assert (err.value.code, err.value.status) == ("unavailable", 503)
            assert str(path) not in err.value.message and "SQLITE_BUSY" in str(err.value)
            with pytest.raises(StorageUnavailable):
                await store._read(lambda conn: conn.execute("UPDATE documents SET updated = updated"))
        assert len([r for r in caplog.records if "cannot be used right now" in r.getMessage()]) == 1
        assert (await store.load("doc")).version == 0  # WAL: reading never waits for a writer
        other.close()
        await store.create_document("new")
        assert (await store.document("new")) is not None
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            await store._read(lambda conn: conn.execute("SELECT nope FROM documents").fetchall())
    finally:
        await store.close()


async def test_the_api_answers_503_while_the_database_is_locked_elsewhere(tmp_path, monkeypatch, aiohttp_client,
                                                                         caplog):
    """503 `unavailable` for what needs a write, reads go on; the health check fails as often as it is
    asked, but says so in the log once, not once a request."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 100)
    db = tmp_path / "api.db"
    client = await aiohttp_client(create_app(Settings(db=str(db))))
    assert (await client.post("/api/docs", json={"name": "doc"})).status == 201
    other = _hold_write_lock(db)
    try:
        resp = await client.post("/api/docs", json={"name": "two"})
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "unavailable"
        assert (await client.get("/api/docs/doc")).status == 200
        with caplog.at_level(logging.WARNING, logger="collab"):
            assert [(await client.get("/healthz")).status for _ in range(3)] == [503] * 3
        assert len([r for r in caplog.records if r.getMessage().startswith("health check")]) == 1
    finally:
        other.close()
    assert (await client.post("/api/docs", json={"name": "two"})).status == 201
    assert (await client.get("/healthz")).status == 200


async def test_documents_whose_commits_fail_on_a_locked_database_reload_and_say_so_once(tmp_path, monkeypatch,
                                                                                      caplog):
    """Every open document being typed into while the database is locked elsewhere fails its commit
    alike: each reloads (its members are closed with 1011 and resend), the pushers hear 'could not be
    saved', and the log says it once, as a warning that the database cannot be used, not one error
    per document. (Was: the raw SQLite error, logged as an error by every document.)"""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 100)
    async with registry(tmp_path) as (store, rooms):
        members = []
        for name in ("one", "two", "three"):
            await store.create_document(name)
            conn = FakeConn(name)
            members.append((conn, await rooms.join(name, conn, hello(name), token=None)))
        other = _hold_write_lock(store.path)
        try:
            with caplog.at_level(logging.WARNING, logger="collab"):
                for conn, member in members:
                    await member.room.push(member, push_msg(0, conn.client_id, [[0, "hi"]]))
                for _, member in members:
                    with pytest.raises(ServerError, match="could not be saved"):
                        await member.room.settled()
        finally:
            other.close()
        assert all(conn.closed_with[0] == CLOSE_INTERNAL and member.room.broken for conn, member in members)
        failed = [r for r in caplog.records if "commit failed for document" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.WARNING and failed[0].exc_info is None
        assert "cannot be used right now" in failed[0].getMessage()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert rooms.metrics.commit_failures.labels("unavailable")._value.get() == 3
        again = FakeConn("again")  # the lock gone, the document opens and takes the push
        member = await rooms.join("one", again, hello("again"), token=None)
        await member.room.push(member, push_msg(0, "again", [[0, "ok"]]))
        await member.room.settled()
        assert (await store.load("one")).text == "ok"


@pytest.mark.parametrize("size", [1, 3])
def test_a_group_that_fills_the_database_fails_with_the_full_disk_not_with_our_rollback(tmp_path, size):
    """SQLite rolls a whole transaction back itself when the disk fills during a statement. Was: our own
    ROLLBACK (or ROLLBACK TO) then failed, and its plain SQLITE_ERROR ('no transaction is active', 'no
    such savepoint') hid the full disk, a 500 instead of a 503."""
    conn = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("PRAGMA max_page_count=20")  # the disk, as this connection sees it, holds 20 pages

    def small(c):
        c.execute("INSERT INTO t VALUES (?)", (b"x" * 100,))

    def big(c):
        c.execute("INSERT INTO t VALUES (?)", (b"x" * 200_000,))

    if size == 1:
        [(ok, error)] = store_module._group_transaction(conn, [big])
        assert not ok
    else:
        with pytest.raises(sqlite3.OperationalError) as raised:  # the others' work is gone too: all fail
            store_module._group_transaction(conn, [small, big, small])
        error = raised.value
    assert error.sqlite_errorname == "SQLITE_FULL"
    assert not conn.in_transaction and conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert store_module._group_transaction(conn, [small]) == [(True, None)]  # and the connection goes on


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])  # small commits on the event loop's connection, or all in the thread
async def test_documents_whose_commits_fill_the_database_reload_and_queued_writes_answer_503(tmp_path, caplog,
                                                                                           sync):
    """The same through the store's writer: a full database is `unavailable` for documents' commits (said
    once, counted by the metric) and for a queued write, not a bug."""
    async with registry(tmp_path, synchronous=sync) as (store, rooms):
        ids = [await store.create_document(name) for name in ("one", "two")]
        members = []
        for name in ("one", "two"):
            conn = FakeConn(name)
            members.append((conn, await rooms.join(name, conn, hello(name), token=None)))
        pages = await store._w.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        limit = f"PRAGMA max_page_count={pages + 2}"  # on both writer connections: the loop's and the thread's
        if store._inline is not None:
            store._inline.execute(limit).fetchone()
        await store._w.run(lambda c: c.execute(limit).fetchone())
        with caplog.at_level(logging.WARNING, logger="collab"):
            for conn, member in members:
                await member.room.push(member, push_msg(0, conn.client_id, [[0, "x" * 20_000]]))
            for _, member in members:
                with pytest.raises(ServerError, match="could not be saved"):
                    await member.room.settled()
            with pytest.raises(StorageUnavailable, match="SQLITE_FULL"):
                await store.write_snapshot(ids[0], 0, "y" * 50_000)
        assert all(member.room.broken for _, member in members)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        said = [r.getMessage() for r in caplog.records if "commit failed for document" in r.getMessage()]
        assert len(said) == 1 and "SQLITE_FULL" in said[0]
        assert rooms.metrics.commit_failures.labels("unavailable")._value.get() == 2


async def test_a_load_lets_its_snapshot_go_before_it_replays(tmp_path, monkeypatch):
    """`load` and `text_at` end their read transaction once everything is SELECTed, before the replay in
    Python: while a read transaction is open, a checkpoint cannot restart the WAL (it gives up after
    CHECKPOINT_WAIT_MS), so a long replay held the WAL's restart off for its whole length."""
    path = tmp_path / "replay.db"
    store = await Store(path, synchronous="NORMAL", snapshot_every=1000, keep=5).open()
    try:
        doc_id = await store.create_document("r")
        edits = random_edits(30, seed=4)
        for entry, text in edits:
            await commit(store, doc_id, [entry], utf16_len(text))
        busy = []

        class Watched(store_module.Text):
            def apply(self, changes):
                if not busy:  # the first update replayed: can a checkpoint restart the WAL right now?
                    other = sqlite3.connect(path, isolation_level=None, timeout=0)
                    try:
                        busy.append(other.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0])
                    finally:
                        other.close()
                return super().apply(changes)

        monkeypatch.setattr(store_module, "Text", Watched)
        monkeypatch.setattr(history, "Text", Watched)  # text_at's replay (compute.text_at: this small one in a thread)
        assert (await store.load("r")).text == edits[-1][1]
        assert await store.text_at(doc_id, 20) == edits[19][1]
        assert busy == [0], "a checkpoint found the read transaction still open during the replay"
        busy.clear()
        assert await store.text_at(doc_id, 20) == edits[19][1]
        assert busy == [0]
    finally:
        await store.close()


@BOTH_BACKENDS
async def test_former_names_are_the_documents_own_old_names_that_no_document_has_now(open_store):
    store = await open_store()
    doc_id = await store.create_document("a")
    await store.rename_document(doc_id, "b")
    await store.rename_document(doc_id, "c")
    formers = await store.former_names(doc_id)
    assert [name for name, _ in formers] == ["b", "a"] and formers[0][1] >= formers[1][1] > 0
    other = await store.create_document("a")  # the name taken again: edits kept under it are that one's
    assert [name for name, _ in await store.former_names(doc_id)] == ["b"]
    assert await store.former_names(other) == []
    assert [name for name, _ in await store.former_names(doc_id, limit=1)] == ["b"]
