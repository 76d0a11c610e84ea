"""Upgrades keep everything: databases made by older collabs (tests/fixtures/upgrade/, README there) are
migrated by this one and must answer exactly what the old code answered: every document's text, every
version's text, the whole history, who wrote what, named versions, former names, the share links; and they
must keep working: old links open their documents (a link revoked before the upgrade stays revoked), a
client resumes from an old version, a re-pushed update accepted before the upgrade is not applied twice,
an old version is restored, a document is deleted with its rows."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import WSMsgType

from collab.app import create_app
from collab.changes import ChangeSet
from collab.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
ROOT = Path(__file__).parent.parent
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/expected.json"))  # not tools/
USER = {"name": "Upgrader", "color": "#123456"}


def digest(obj) -> str:
    """What the fixture keeps of an answer: tools/shrink in the README hashes the old answers the same way."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode()).hexdigest()[:16]


def only(answer: dict, keys: list[str]) -> dict:
    """The fields the old collab answered (a newer one may add fields; it may not change or drop these)."""
    return {k: answer[k] for k in keys if k in answer}


def load_sqlite(case: str, path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(gzip.decompress((FIXTURES / case / "old.sql.gz").read_bytes()).decode())
    conn.close()


async def load_postgres(case: str, url: str) -> None:
    """The old schema from this checkout's migrations (files never change once released: the old collab
    applied these very ones), then the old database's rows (a data-only pg_dump)."""
    import asyncpg

    from collab import store_pg
    expected = json.loads((FIXTURES / case / "expected.json").read_text())
    conn = await asyncpg.connect(url)
    try:
        old = [p for n, p in store_pg.migration_files() if n <= expected["postgres_schema"]]
        await conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                           "applied DOUBLE PRECISION NOT NULL)")  # as store_pg.apply_migrations makes it
        for path in old:
            async with conn.transaction():
                await conn.execute(path.read_text())
        await conn.execute(gzip.decompress((FIXTURES / case / "old.sql.gz").read_bytes()).decode())
    finally:
        await conn.close()


@pytest.fixture
async def upgraded(request, tmp_path, aiohttp_client):
    """(client, expected, db) for a fixture case: the old database, migrated with `collab migrate`, served."""
    case = request.param
    expected = json.loads((FIXTURES / case / "expected.json").read_text())
    if case.startswith("postgres"):
        db = request.getfixturevalue("pg_url")
        await load_postgres(case, db)
    else:
        db = str(tmp_path / "collab.db")
        load_sqlite(case, Path(db))
    run = subprocess.run([sys.executable, "-m", "collab", "migrate", "--db", db], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "applied" in run.stdout, run.stdout
    settings = Settings(db=db, secret=expected["secret"], snapshot_every=37, unload_after=60)
    client = await aiohttp_client(create_app(settings))
    from collab.access import Access
    client.admin = {"Authorization": f"Bearer {Access(expected['secret'].encode()).admin_token()}"}
    return client, expected, db


both = pytest.mark.parametrize("upgraded", CASES, indirect=True)


async def get_json(client, url):
    resp = await client.get(url, headers=client.admin)
    assert resp.status == 200, (url, resp.status, await resp.text())
    return await resp.json()


async def frame(ws, kinds=("welcome", "updates", "error"), timeout=10.0):
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type != WSMsgType.TEXT:
            return {"type": "closed", "code": ws.close_code, "data": msg.data}
        f = orjson.loads(msg.data)
        if f["type"] in kinds:
            return f


async def hello(client, name, token, client_id, version=None):
    ws = await client.ws_connect(f"/ws/{name}?token={token}", protocols=["collab.v1"])
    await ws.send_str(orjson.dumps({"type": "hello", "clientID": client_id, "version": version,
                                    "user": USER}).decode())
    return ws, await frame(ws)


def token(link: str) -> str:
    return link.split("token=", 1)[1]


@both
async def test_every_answer_is_the_old_one(upgraded):
    client, expected, _ = upgraded
    listing = await get_json(client, "/api/docs")
    assert sorted(d["name"] for d in listing["docs"]) == sorted(expected["docs"])
    for name, want in expected["docs"].items():
        assert only(await get_json(client, f"/api/docs/{name}"), list(want["doc"])) == want["doc"], name
        entries, before = [], None
        while True:
            page = (await get_json(client, f"/api/docs/{name}/history?limit=100"
                                   + ("" if before is None else f"&before={before}")))["entries"]
            if not page:
                break
            entries += page
            before = page[-1]["version"]
        assert [digest(only(e, want["history_keys"])) for e in entries] == want["history"], name
        for version, text in want["versions"].items():
            resp = await client.get(f"/api/docs/{name}/versions/{version}", headers=client.admin)
            got = digest((await resp.json())["doc"]) if resp.status == 200 else {"status": resp.status}
            assert got == text, (name, version)
        for version, answer in want["authors"].items():
            resp = await client.get(f"/api/docs/{name}/authors?version={version}", headers=client.admin)
            got = digest(only(await resp.json(), want["authors_keys"])) if resp.status == 200 else {
                "status": resp.status}
            assert got == answer, (name, version)
        assert (await get_json(client, f"/api/docs/{name}/links"))["links"] == want["links"], name
        if "checkpoints" in want:
            assert (await get_json(client, f"/api/docs/{name}/checkpoints"))["checkpoints"] == want["checkpoints"]
            assert (await get_json(client, f"/api/docs/{name}/former-names"))["names"] == want["former_names"]


@both
async def test_old_links_work_and_a_link_revoked_before_stays_revoked(upgraded):
    client, expected, _ = upgraded
    for name, want in expected["docs"].items():
        for role in ("edit", "view"):
            ws, welcome = await hello(client, name, token(want["links"][role]), f"link-{role}")
            assert welcome["type"] == "welcome", (name, role, welcome)
            assert welcome["doc"] == want["doc"]["doc"] and welcome["role"] == role
            await ws.close()
    for role in ("edit", "view"):
        ws, answer = await hello(client, "delta", token(expected["delta_links_before_reset"][role]), "revoked")
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
        await ws.close()


@both
async def test_resume_repush_and_restore_from_old_versions(upgraded):
    client, expected, _ = upgraded
    admin = client.admin["Authorization"][7:]
    for name, want in expected["docs"].items():
        head = want["doc"]["version"]
        readable = sorted(int(v) for v, t in want["versions"].items() if isinstance(t, str))
        if head < 5:
            continue
        old = readable[len(readable) // 3]
        # A client that was at version `old` before the upgrade resumes: the updates since, in frames.
        text = (await get_json(client, f"/api/docs/{name}/versions/{old}"))["doc"]
        ws, welcome = await hello(client, name, admin, "resumer", old)
        assert welcome["type"] == "welcome" and "doc" not in welcome and welcome["from"] == old, (name, welcome)
        updates, version = list(welcome["updates"]), welcome["version"]
        while version < head:
            f = await frame(ws, ("updates",))
            assert f["from"] == version
            updates += f["updates"]
            version += len(f["updates"])
        await ws.close()
        for u in updates:
            text = ChangeSet.from_json(u["changes"]).apply_to_str(text)
        assert text == want["doc"]["doc"], name
        # The last update before the upgrade, pushed again by its client (its acknowledgement was lost):
        # taken to be the same update, not applied twice.
        # Then one new keystroke on the same connection: frames are handled in order, so once it is
        # acknowledged the re-push was handled too.
        last = updates[-1]
        ws, welcome = await hello(client, name, admin, last["clientID"], head - 1)
        await ws.send_str(orjson.dumps({"type": "push", "version": head - 1, "updates": [last]}).decode())
        length = len(want["doc"]["doc"].encode("utf-16-le")) // 2
        await ws.send_str(orjson.dumps({"type": "push", "version": head, "updates": [
            {"clientID": last["clientID"], "changes": [[0, "Z"], length] if length else [[0, "Z"]]}]}).decode())
        while True:
            f = await frame(ws, ("updates", "error"))
            assert f["type"] == "updates", f
            if any(u["changes"][0] == [0, "Z"] for u in f["updates"]):
                break
        await ws.close()
        now = await get_json(client, f"/api/docs/{name}")
        assert (now["version"], now["doc"]) == (head + 1, "Z" + want["doc"]["doc"]), name
        # Restoring the old version gives its text, as one new version.
        resp = await client.post(f"/api/docs/{name}/restore", json={"version": old}, headers=client.admin)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["version"] == head + 2
        restored = (await get_json(client, f"/api/docs/{name}"))["doc"]
        assert digest(restored) == want["versions"][str(old)], name
        resp = await client.get(f"/api/docs/{name}/authors", headers=client.admin)
        assert resp.status == 200, await resp.text()


@both
async def test_new_edits_and_deletes_after_the_upgrade(upgraded):
    client, expected, db = upgraded
    name, want = "alpha", expected["docs"]["alpha"]
    ws, welcome = await hello(client, name, token(want["links"]["edit"]), "after")
    await ws.send_str(orjson.dumps({"type": "push", "version": welcome["version"], "updates": [
        {"clientID": "after", "changes": [[0, "new "], len(welcome["doc"].encode("utf-16-le")) // 2]}]}).decode())
    f = await frame(ws, ("updates", "error"))
    assert f["type"] == "updates", f
    await ws.close()
    doc = await get_json(client, f"/api/docs/{name}")
    assert doc["version"] == want["doc"]["version"] + 1 and doc["doc"] == "new " + want["doc"]["doc"]
    # A new document gets an id no document ever had; deleting an old one takes its rows with it.
    if not db.startswith("postgresql"):
        conn = sqlite3.connect(db)
        highest = conn.execute("SELECT MAX(id) FROM documents").fetchone()[0]
        conn.close()
    resp = await client.delete("/api/docs/beta" if "beta" in expected["docs"] else "/api/docs/beta-renamed",
                               headers=client.admin)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/docs", json={"name": "fresh"}, headers=client.admin)
    assert resp.status == 201, await resp.text()
    if not db.startswith("postgresql"):
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT COUNT(*) FROM updates WHERE doc_id NOT IN "
                                "(SELECT id FROM documents)").fetchone() == (0,)
            fresh = conn.execute("SELECT id FROM documents WHERE name = 'fresh'").fetchone()[0]
            assert fresh > highest, (fresh, highest)
        finally:
            conn.close()


def schema_of(db: str) -> set[int]:
    if db.startswith("postgresql"):
        import asyncpg

        async def read() -> set[int]:
            conn = await asyncpg.connect(db)
            try:
                return {r[0] for r in await conn.fetch("SELECT version FROM schema_version")}
            finally:
                await conn.close()
        return asyncio.run(read())
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT version FROM schema_version")}
    finally:
        conn.close()


@pytest.fixture
def old_database(request, tmp_path):
    """A database an older collab made (a fixture case), not migrated: its URL or path."""
    case = request.param
    if case.startswith("postgres"):
        db = request.getfixturevalue("pg_url")
        asyncio.run(load_postgres(case, db))
        return db
    db = str(tmp_path / "old.db")
    load_sqlite(case, Path(db))
    return db


@pytest.mark.parametrize("old_database", ["sqlite-935e54b", "postgres-c8b79a3"], indirect=True)
def test_admin_commands_do_not_upgrade_a_database_an_older_collab_made(old_database, tmp_path):
    """Was (the upgrade audit): `collab docs`, `export`, `compact`, `backup`, `import` and `copy` (its
    SOURCE and TARGET) applied the pending migrations to the database they opened. A team that ran
    `collab backup` with the new collab "before upgrading" had upgraded its live database already, and
    the backup was of the new schema too: the collab that made it refused both ("newer than this collab
    knows"). Now each refuses (backup: see below), saying how to upgrade on purpose for that very
    database, and leaves the schema as it was."""
    from test_admin_errors import collab, refused

    before = schema_of(old_database)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "new.txt").write_text("hello")
    current = tmp_path / "current.db"
    assert collab("migrate", "--db", current).returncode == 0
    for args in (["docs"], ["export", tmp_path / "out"], ["compact", "--keep-history", "10"],
                 ["import", tmp_path / "in"], ["copy", old_database, tmp_path / "copy.db"],
                 ["copy", current, old_database]):
        if args[0] != "copy":
            args = [*args, "--db", old_database]
        result = collab(*args)
        refused(result, f"has schema version {max(before)}, older than this collab's")
        assert ("pg_dump" if old_database.startswith("postgresql") else f"collab migrate --db {old_database}") \
            in result.stderr, result.stderr
        assert schema_of(old_database) == before, args
    assert not (tmp_path / "out").exists() and not (tmp_path / "copy.db").exists()


def test_a_backup_of_a_database_an_older_collab_made_is_a_copy_as_it_is(tmp_path):
    """`collab backup` is what a team runs before an upgrade: it copies an older database without
    upgrading it (the original and the copy both keep their schema, and the collab that made them opens
    them), says so, and the copy upgrades as the original would."""
    from test_admin_errors import collab

    db, copy = tmp_path / "old.db", tmp_path / "backup.db"
    load_sqlite("sqlite-935e54b", db)
    before = schema_of(str(db))
    result = collab("backup", copy, "--db", db)
    assert result.returncode == 0, result.stderr
    assert f"schema version {max(before)} as it was" in result.stdout, result.stdout
    assert schema_of(str(db)) == before and schema_of(str(copy)) == before
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
        names = {r[0] for r in conn.execute("SELECT name FROM documents")}
    finally:
        conn.close()
    expected = json.loads((FIXTURES / "sqlite-935e54b" / "expected.json").read_text())
    assert names == set(expected["docs"])
    assert collab("migrate", "--db", copy).returncode == 0
    listed = collab("docs", "--db", copy)
    assert listed.returncode == 0 and all(name in listed.stdout for name in expected["docs"]), listed


def test_a_backup_of_a_postgresql_database_an_older_collab_made_is_refused_saying_pg_dump(pg_url, tmp_path):
    """This collab reads PostgreSQL only at its own schema, so it cannot copy an older one without upgrading
    it: refused, naming pg_dump, with the schema left as it was and no file made."""
    from test_admin_errors import collab, refused

    asyncio.run(load_postgres("postgres-c8b79a3", pg_url))
    before = schema_of(pg_url)
    refused(collab("backup", tmp_path / "b.db", "--db", pg_url), "pg_dump")
    assert schema_of(pg_url) == before and not (tmp_path / "b.db").exists()
