"""`collab copy` and PostgreSQL backups (transfer.copy_view): moving an install between stores, whole, and checked.

The round trip SQLite -> PostgreSQL -> SQLite on a database with several
documents, long histories, a compacted one, astral characters, a restore, an
authorship cache, a reset salt and a renamed document: afterwards every
version of every document reads the same in all three, every row is there,
share links made before the move open the document on a server running on the
copy, and links to a document's old names lead to it. On each backend: old
names follow a copy and a backup, and a copy reads a bounded amount of text at
a time however large a document's snapshots are.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import urllib.error
import urllib.request

from collab import transfer
from collab.access import Access
from collab.changes import ChangeSet, utf16_len
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.storage import COPY_TABLES, VersionCompacted, store_at
from conftest import BOTH_BACKENDS
from serverproc import ROOT, ServerProcess
from storeutil import commit, random_edits, raw_sql

SECRET = "copy-test-secret-0123456789"


def collab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collab", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


async def build(path: str) -> dict[str, int]:
    """The source database; returns each document's version."""
    store = await store_at(path, snapshot_every=50).open()
    try:
        for name, n, seed in (("long", 700, 1), ("compacted", 300, 2), ("short", 40, 3)):
            doc = await store.create_document(name)
            edits = random_edits(n, seed)
            for k in range(0, n, 7):
                batch = [e for e, _ in edits[k:k + 7]]
                v = batch[-1].version
                snap = (v, edits[v - 1][1]) if v // 50 != (v - len(batch)) // 50 else None
                await commit(store, doc, batch, utf16_len(edits[v - 1][1]), snap)
            if name == "compacted":
                spans = (await store.authorship(doc, 220)).to_list()
                assert await store.compact(doc, 220, edits[219][1], spans) == 220
            if name == "long":
                await store.authorship(doc, 700)  # fills the authorship cache at its checkpoints
        astral = await store.create_document("astral", "𝄞 music 😀\n中文 e\u0301", author="ann", client_id="a1")
        text = "𝄞 music 😀\n中文 e\u0301"
        restored = Accepted(2, Update("restore-1", ChangeSet.from_json([[0, "👍🏽"], utf16_len(text)])), "bob", 5.5,
                            restored_from=1)
        await commit(store, astral, [restored], utf16_len(text) + 4)
        await store.new_salt(astral)  # the links made before the reset stay dead, the new ones live
        await store.create_document("empty")
        draft = await store.create_document("draft", "a plan")
        await store.rename_document(draft, "plan")
        await store.rename_document(draft, "final")  # old links to "draft" and "plan" lead to "final"
        return {d["name"]: d["version"] for d in await store.list_documents()}
    finally:
        await store.close()


async def dump(db: str) -> dict:
    """Everything a store holds, through its interface: document rows (ids aside) and every copied table."""
    store = await store_at(db).open()
    try:
        out = {}
        async with store.view() as view:
            for doc in await view.documents():
                rows = {t: await view.rows(doc["id"], t, -1, 1_000_000) for t in COPY_TABLES}
                out[doc["name"]] = ({k: v for k, v in doc.items() if k != "id"},
                                    {t: [tuple(r) for r in rs] for t, rs in rows.items()})
        return out
    finally:
        await store.close()


async def every_version(db: str) -> dict[tuple[str, int], str | None]:
    """The text of every version of every document (None where compacted away), through ordinary reads."""
    store = await store_at(db).open()
    try:
        out = {}
        for d in await store.list_documents():
            info = await store.document(d["name"])
            for v in range(info["version"] + 1):
                try:
                    out[d["name"], v] = await store.text_at(info["id"], v)
                except VersionCompacted:
                    out[d["name"], v] = None
        return out
    finally:
        await store.close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def redirect(url: str) -> tuple[int, str | None]:
    """(status, Location) of a GET, redirects not followed."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=10) as r:
            return r.status, r.headers.get("Location")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location")


def test_copy_round_trip_sqlite_postgres_sqlite(tmp_path, pg_server):
    source = str(tmp_path / "source.db")
    versions = asyncio.run(build(source))
    assert versions == {"long": 700, "compacted": 300, "short": 40, "astral": 2, "empty": 0, "final": 1}
    before = asyncio.run(dump(source))
    salts = {name: doc["salt"] for name, (doc, _) in before.items()}
    pg = pg_server.url(pg_server.create_database())
    back = str(tmp_path / "back" / "back.db")

    there = collab("copy", source, pg)
    assert there.returncode == 0, there.stderr
    assert "copied 6 documents (" in there.stdout and "every version and current text equal" in there.stdout
    assert "long: version 700, 700 updates" in there.stdout
    assert "compacted: version 300, 80 updates" in there.stdout
    assert "final: version 1, 1 updates, 0 snapshots, 0 authorship entries, 2 old names\n" in there.stdout
    assert "entries, 2 old names, share-link salts)" in there.stdout
    again = collab("copy", source, pg)
    assert again.returncode == 1 and "already holds documents" in again.stderr
    home = collab("copy", pg, back)
    assert home.returncode == 0, home.stderr
    for out in (there, again, home):
        assert pg_server.password not in out.stdout + out.stderr

    texts = asyncio.run(every_version(source))
    assert sum(t is None for t in texts.values()) > 100, "the compacted document has unreadable versions"
    assert texts["astral", 2] == "👍🏽𝄞 music 😀\n中文 e\u0301"
    assert asyncio.run(every_version(pg)) == texts
    assert asyncio.run(every_version(back)) == texts
    assert asyncio.run(dump(pg)) == before
    assert asyncio.run(dump(back)) == before
    assert before["long"][1]["authorship"], "the authorship cache was filled, and copied"
    assert [r[7] for r in before["astral"][1]["updates"]] == [None, 1], "restored_from is copied"

    # Share links made on the source open the document on servers running on either copy.
    access = Access(SECRET.encode())
    for db in (pg, back):
        server = ServerProcess(db, extra_args=["--secret", SECRET], log_path=tmp_path / "server.log").start()
        try:
            for name, salt in salts.items():
                token = access.doc_token(name, "edit", salt)
                assert status(f"{server.url}/api/docs/{name}?token={token}") == 200, (db, name)
            stale = access.doc_token("astral", "edit", "an-older-salt")
            assert status(f"{server.url}/api/docs/astral?token={stale}") in (401, 403)
            # A link to an old name of a renamed document leads to it (was: not found on the copy).
            for old in ("draft", "plan"):
                token = access.doc_token(old, "edit", salts["final"])
                assert redirect(f"{server.url}/d/{old}?token={token}") == (
                    302, f"/d/final?token={access.doc_token('final', 'edit', salts['final'])}"), (db, old)
        finally:
            server.kill()


def test_the_copy_check_finds_a_difference(tmp_path, pg_server):
    """transfer.verify is the check `collab copy` runs: a copy that differs from its source is reported."""
    source = str(tmp_path / "source.db")
    asyncio.run(build(source))
    name = pg_server.create_database()
    target = pg_server.url(name)

    async def run() -> tuple[list[str], list[str]]:
        src, dst = await store_at(source).open(), await store_at(target).open()
        try:
            async with src.view() as view:
                copied = await transfer.copy_view(view, dst)
            clean, _ = await transfer.verify(src, dst, copied, samples=1000)
            doc = next(c for c in copied if c.name == "short")
            raw_sql(target, "UPDATE updates SET changes = '[[0,\"!\"],' || substr(changes, 2) "
                            f"WHERE doc_id = {doc.target_id} AND version = 5", pg_server)
            broken, _ = await transfer.verify(src, dst, copied, samples=1000, rng=random.Random(1))
            return clean, broken
        finally:
            await src.close()
            await dst.close()

    clean, broken = asyncio.run(run())
    assert clean == []
    assert broken and all(p.startswith("short: ") for p in broken), broken


def test_copy_refuses_what_postgres_cannot_hold_and_a_missing_source(tmp_path, pg_server):
    source = str(tmp_path / "nul.db")

    async def make() -> None:
        store = await store_at(source).open()
        doc = await store.create_document("nul", "a\x00b")
        await store.write_snapshot(doc, 1, "a\x00b")
        await store.close()

    asyncio.run(make())
    target = pg_server.url(pg_server.create_database())
    result = collab("copy", source, target)
    assert result.returncode == 1 and "U+0000" in result.stderr, result
    missing = collab("copy", tmp_path / "nothing.db", str(tmp_path / "to.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "to.db").exists()
    nodb = collab("copy", source, pg_server.url("no_such_database"))
    assert nodb.returncode == 1 and "no database at" in nodb.stderr and pg_server.password not in nodb.stderr


def test_the_versions_verify_samples_are_drawn_without_listing_the_history():
    """What verify may sample: the versions below the head that the kept update rows rebuild, and every
    snapshot. Was: the whole kept range was listed per document (a Python int per version, all of
    them held until verify), so memory grew with the total history, against this module's rule."""
    rng = random.Random(7)
    for _ in range(2000):
        version = rng.randrange(0, 40)
        first = rng.choice([None, *range(1, version + 2)])
        snapshots = [rng.randrange(-1, version + 2) for _ in range(rng.randrange(0, 5))]
        c = transfer.Copied("d", 1, 2, version, "s", first_update=first, snapshots=snapshots)
        kept = set(range(first - 1, version)) if first is not None else set()
        population = sorted(kept | {v for v in snapshots if 0 <= v < version})
        assert sorted(transfer.sample_readable(c, 10**6, random.Random(0))) == population
        few = transfer.sample_readable(c, 3, random.Random(0))
        assert len(set(few)) == len(few) == min(3, len(population)) and set(few) <= set(population)
    huge = transfer.Copied("d", 1, 2, 10**15, "s", first_update=1, snapshots=[0, 10**9])
    assert len(set(transfer.sample_readable(huge, 8, rng))) == 8


# ------------------------------------------------------------------ on each backend

def run_with(db: str, fn):
    """asyncio.run(fn(store)) on an open store at `db`."""
    async def go():
        store = await store_at(db, snapshot_every=50).open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def verify_again(db: str, target: str, copied: list) -> list[str]:
    """The problems transfer.verify finds now in an earlier copy from `db` to `target` (which the test
    changed behind its back)."""
    async def check(src) -> list[str]:
        dst = await store_at(target).open()
        try:
            return (await transfer.verify(src, dst, copied))[0]
        finally:
            await dst.close()

    return run_with(db, check)


async def renamed_twice(store) -> None:
    """"draft" renamed "plan" then "final", "old-notes" renamed "notes", and a document never renamed."""
    draft = await store.create_document("draft", "a plan")
    await store.rename_document(draft, "plan")
    await store.rename_document(draft, "final")
    notes = await store.create_document("old-notes", "notes")
    await store.rename_document(notes, "notes")
    await store.create_document("plain")


OLD_NAMES = {"draft": "final", "plan": "final", "old-notes": "notes", "plain": None, "final": None}


@BOTH_BACKENDS
def test_old_names_of_renamed_documents_follow_a_copy_and_a_backup(db, make_db, backend, pg_server, tmp_path):
    """A renamed document's old names (the `renamed` rows, storage.COPY_TABLES) go with it, and verify
    checks them. Was: they were left behind, and old links to it found nothing on the copy or backup."""
    run_with(db, renamed_twice)
    target = make_db("copy")

    async def read_old_names(store) -> dict:
        return {old: await store.renamed_to(old) for old in OLD_NAMES}

    async def copy(src) -> tuple[list, list[str]]:
        dst = await store_at(target).open()
        try:
            async with src.view() as view:
                copied = await transfer.copy_view(view, dst)
            return copied, (await transfer.verify(src, dst, copied))[0]
        finally:
            await dst.close()

    copied, problems = run_with(db, copy)
    assert run_with(db, read_old_names) == OLD_NAMES
    assert run_with(target, read_old_names) == OLD_NAMES
    assert problems == []
    assert {c.name: sorted(c.renamed) for c in copied} == {"final": ["draft", "plan"], "notes": ["old-notes"],
                                                          "plain": []}
    assert {c.name: c.rows["renamed"] for c in copied} == {"final": 2, "notes": 1, "plain": 0}
    backup = tmp_path / "backup.db"
    run_with(db, lambda store: store.backup(backup))  # PostgreSQL: through copy_view into a SQLite file
    assert run_with(str(backup), read_old_names) == OLD_NAMES

    final = next(c for c in copied if c.name == "final")
    raw_sql(target, f"DELETE FROM renamed WHERE name = 'plan' AND doc_id = {final.target_id}", pg_server)
    assert verify_again(db, target, copied) == ["final: its old name 'plan' leads to nothing in the copy"]


@BOTH_BACKENDS
def test_copied_tables_page_by_their_key_and_old_names_by_name(db, backend):
    """view.rows pages every copied table by its first column: versions, and names for `renamed`."""
    run_with(db, renamed_twice)

    async def read(store) -> list:
        async with store.view() as view:
            doc = next(d["id"] for d in await view.documents() if d["name"] == "final")
            first = await view.rows(doc, "renamed", -1, 1)
            return [first, await view.rows(doc, "renamed", first[-1][0], 5), await view.rows(doc, "renamed", -1, 5)]

    first, rest, every = run_with(db, read)
    assert [r[0] for r in first] == ["draft"] and [r[0] for r in rest] == ["plan"]
    assert first + rest == every and all(type(r[1]) is float for r in every)


def big_snapshots(n: int, size: int):
    """A store function: "big", n versions of about `size` characters with a snapshot of each, and "small"."""
    async def make(store) -> None:
        text = "a" * (size - n + 1)
        doc = await store.create_document("big", text)
        await store.write_snapshot(doc, 1, text)
        for v in range(2, n + 1):
            edit = Accepted(v, Update("c", ChangeSet.from_json([[0, "a"], len(text)])), "ann", 1.0 + v)
            text = "a" + text
            await commit(store, doc, [edit], len(text), (v, text))
        await store.create_document("small", "x")

    return make


class Recording:
    """A StorageView that records the rows of each page it hands out, per table."""

    def __init__(self, view):
        self.view, self.pages = view, {}

    async def documents(self):
        return await self.view.documents()

    async def rows(self, doc_id, table, after, *args, **kwargs):
        rows = await self.view.rows(doc_id, table, after, *args, **kwargs)
        self.pages.setdefault(table, []).append(rows)
        return rows


def text_of(row) -> int:
    return sum(len(v) for v in row if isinstance(v, str))


@BOTH_BACKENDS
def test_a_copy_reads_a_bounded_amount_of_text_at_a_time(db, make_db, backend, monkeypatch):
    """copy_view reads at most CHUNK rows or CHUNK_BYTES of text per page (one row past it at most), so
    memory does not grow with snapshots x document size. Was: CHUNK (2000) rows whatever their size,
    every snapshot of a document held at once."""
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 100_000, raising=False)
    run_with(db, big_snapshots(12, 40_000))
    target = make_db("copy")

    async def copy(src) -> tuple[Recording, list, list[str]]:
        dst = await store_at(target).open()
        try:
            async with src.view() as view:
                recording = Recording(view)
                copied = await transfer.copy_view(recording, dst)
            problems, _ = await transfer.verify(src, dst, copied, samples=100)
            return recording, copied, problems
        finally:
            await dst.close()

    recording, copied, problems = run_with(db, copy)
    snapshot_pages = [p for p in recording.pages["snapshots"] if p]
    assert len(snapshot_pages) > 1, "the snapshots of one document were read in one page"
    assert [len(p) for p in snapshot_pages] == [3, 3, 3, 3], "40,000 characters a row: the third passes 100,000"
    for table, pages in recording.pages.items():
        for page in pages:
            assert sum(map(text_of, page[:-1])) < 100_000, (table, [text_of(r) for r in page])
    assert problems == []
    big = next(c for c in copied if c.name == "big")
    assert (big.version, big.rows["snapshots"], big.rows["updates"], big.snapshots) == (12, 12, 12, list(range(1, 13)))
    assert asyncio.run(dump(target)) == asyncio.run(dump(db))


@BOTH_BACKENDS
def test_a_page_of_rows_stops_at_max_bytes_of_text(db, backend):
    """view.rows(..., max_bytes): the row that brings a page's text to max_bytes is its last; a page has at
    least one row; without max_bytes only `limit` counts; paging on by key reads every row once."""
    run_with(db, big_snapshots(12, 40_000))

    async def read(store) -> dict:
        async with store.view() as view:
            doc = next(d["id"] for d in await view.documents() if d["name"] == "big")
            pages, after = [], -1
            while page := await view.rows(doc, "snapshots", after, 5, max_bytes=100_000):
                pages.append([r[0] for r in page])
                after = page[-1][0]
            return {"pages": pages, "one": await view.rows(doc, "snapshots", 4, 5, max_bytes=1),
                    "limit": [r[0] for r in await view.rows(doc, "snapshots", -1, 5)],
                    "all": [r[0] for r in await view.rows(doc, "snapshots", -1, 100, max_bytes=10**9)]}

    got = run_with(db, read)
    assert got["pages"] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    assert [r[0] for r in got["one"]] == [5] and text_of(got["one"][0]) > 1
    assert got["limit"] == [1, 2, 3, 4, 5] and got["all"] == list(range(1, 13))
