"""Storage: migrations, group commit, snapshots, and reading any version back."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import pytest

from collab.changes import ChangeSet, utf16_len
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.storage import NameTaken, VersionConflict
from collab.store import Store, apply_migrations, connect_sync, migration_files
from storeutil import commit


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


def random_edits(n, seed=1):
    """n random updates on a growing text, with the text after each."""
    rnd = random.Random(seed)
    text, out = "", []
    for v in range(1, n + 1):
        pos = rnd.randint(0, len(text))
        cut = rnd.randint(0, min(3, len(text) - pos))
        ins = rnd.choice(["a", "bc", "😀", "\n", "", "héllo"])
        if not ins and not cut:
            ins = "z"
        changes = ChangeSet.from_json(([utf16_len(text[:pos])] if pos else [])
                                      + [[utf16_len(text[pos:pos + cut]), *ins.split("\n")]]
                                      + ([utf16_len(text[pos + cut:])] if pos + cut < len(text) else []))
        text = text[:pos] + ins + text[pos + cut:]
        out.append((Accepted(v, Update(f"c{v % 3}", changes), f"user{v % 3}", 1000.0 + v), text))
    return out


async def test_append_load_and_every_version(tmp_path):
    store = await Store(tmp_path / "s.db", snapshot_every=10, keep=7).open()
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
    assert await store.updates(doc_id, 55, 60) == [e.update for e, _ in edits[55:60]]
    await store.close()


async def test_concurrent_appends_share_transactions(tmp_path):
    store = await Store(tmp_path / "g.db").open()
    ids = [await store.create_document(f"d{k}") for k in range(20)]
    commits_before = store.commits
    one = ChangeSet.from_json([[0, "x"]])
    await asyncio.gather(*(commit(store, i, [Accepted(1, Update("c", one), "u", 1.0)], 1) for i in ids))
    assert store.commits - commits_before < 20  # grouped
    docs = await store.list_documents()
    assert sorted(d["version"] for d in docs) == [1] * 20
    await store.close()


async def test_append_refuses_a_gap(tmp_path):
    store = await Store(tmp_path / "x.db").open()
    doc_id = await store.create_document("doc")
    one = ChangeSet.from_json([[0, "x"]])
    with pytest.raises(VersionConflict, match="is at version 0, not 1"):
        await commit(store, doc_id, [Accepted(2, Update("c", one), "u", 1.0)], 1)
    assert (await store.document("doc"))["version"] == 0
    assert await store.updates(doc_id, 0, 5) == []
    await store.close()


async def test_create_with_text_and_missing_documents(tmp_path):
    store = await Store(tmp_path / "c.db").open()
    doc_id = await store.create_document("forked", "line one\nline 😀 two", author="ann")
    assert await store.create_document("forked", "ignored") == doc_id
    loaded = await store.load("forked")
    assert (loaded.version, loaded.text) == (1, "line one\nline 😀 two")
    assert await store.load("nothing") is None
    assert await store.document("nothing") is None
    await store.close()


async def test_a_conflicting_commit_is_refused_alone_and_the_rest_of_the_group_commits(tmp_path):
    store = await Store(tmp_path / "f.db").open()
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
    assert await store.updates(b, 0, 5) == []
    await store.close()


async def test_a_failing_write_is_undone_alone(tmp_path):
    store = await Store(tmp_path / "w.db").open()
    await store.create_document("taken")
    results = await asyncio.gather(store.create_document("taken", exist_ok=False), store.create_document("fresh"),
                                   return_exceptions=True)
    assert isinstance(results[0], NameTaken)
    assert type(results[1]) is int
    assert sorted(d["name"] for d in await store.list_documents()) == ["fresh", "taken"]
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
