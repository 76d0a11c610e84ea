"""A document deleted (and perhaps made again under its name) while a request about it is under way.

Each test deletes the document at the worst moment of one request: a step the request awaits is
replaced by one that deletes it first (and sometimes makes another under the same name), as
test_history_api's restore test does. The request must then answer 404 `not-found` (or, for a
share link, give nothing that opens the other document), never 500; nothing it writes may land on
the other document, and no row may be left referencing the deleted one.
"""

from __future__ import annotations

import asyncio

import pytest

from collab import compute
from collab.access import Access
from collab.app import ROOMS, STORE, create_app
from collab.settings import Settings
from collab.storage import COPY_TABLES, StorageUnavailable
from conftest import BOTH_BACKENDS
from wsutil import USER, push, recv_type, send, until

pytestmark = BOTH_BACKENDS  # every test runs on SQLite and on PostgreSQL

SECRET = "correct horse battery staple"
ADMIN = {"Authorization": f"Bearer {Access(SECRET.encode()).admin_token()}"}


@pytest.fixture
async def client(db, aiohttp_client):
    settings = Settings(db=db, snapshot_every=37, unload_after=60)
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def secured(db, aiohttp_client):
    """Access control on: share links are signed with each document's salt."""
    settings = Settings(db=db, secret=SECRET, unload_after=60)
    return await aiohttp_client(create_app(settings))


async def opened(client, doc, client_id, token=None, version=None):
    """A session on `doc` (with `token` when access control is on); its welcome."""
    url = f"/ws/{doc}" + (f"?token={token}" if token else "")
    ws = await client.ws_connect(url, protocols=["collab.v1"])
    await send(ws, {"type": "hello", "clientID": client_id, "version": version, "user": USER})
    return ws, await recv_type(ws, "welcome")


async def typed(client, doc, text, client_id="a", token=None, keep=False):
    """`text` typed at the start of `doc` (made by this first edit if need be); the session is closed
    unless `keep`. Returns (session, its version now)."""
    ws, welcome = await opened(client, doc, client_id, token)
    version, length = welcome["version"], len(welcome.get("doc", ""))
    await push(ws, version, client_id, [[0, text]] + ([length] if length else []))
    await recv_type(ws, "updates")
    if not keep:
        await ws.close()
    return ws, version + 1


async def still_open(ws, client_id, version, length):
    """The session `ws` still edits its document: a push is acknowledged with the next version."""
    await push(ws, version, client_id, [[0, "!"], length])
    frame = await recv_type(ws, "updates")
    assert frame["from"] == version


async def not_found(resp):
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "not-found", (resp.status, body)


async def rows_left(store, doc_id):
    """The rows of every table still referencing document `doc_id` (a deleted one must have none)."""
    async with store.view() as view:
        return {table: rows for table in COPY_TABLES if (rows := await view.rows(doc_id, table, -1, 1000))}


async def made_again_meanwhile(client, name):
    """`name` typed ("old"), and a step that deletes it and makes another document under the name (where
    a session "b" typed "new": `again["ws"]`). Returns (the old document's row, again, that step)."""
    await typed(client, name, "old")
    old = await client.server.app[STORE].document(name)
    again = {}

    async def delete_and_make_again():
        assert (await client.delete(f"/api/docs/{name}")).status == 200
        again["ws"], _ = await typed(client, name, "new", client_id="b", keep=True)

    return old, again, delete_and_make_again


def meanwhile(monkeypatch, owner, method, before=None, after=None, call=1):
    """`owner.method` does `before()` then itself, or itself then `after()`, the `call`-th time it is
    called (the first, unless said); every other call is the method's own."""
    real = getattr(owner, method)
    calls, done = [], []

    async def step(*args, **kw):
        calls.append(True)
        if len(calls) != call:
            return await real(*args, **kw)
        done.append(True)
        if before is not None:
            await before()
        result = await real(*args, **kw)
        if after is not None:
            await after()
        return result

    monkeypatch.setattr(owner, method, step)
    return done


# ------------------------------------------------------------------ writes


@pytest.mark.parametrize("version", [0, 1])
async def test_naming_a_version_of_a_document_deleted_meanwhile(client, monkeypatch, version):
    store = client.server.app[STORE]
    old, again, delete_and_make_again = await made_again_meanwhile(client, "n")
    meanwhile(monkeypatch, store, "set_checkpoint", before=delete_and_make_again)
    await not_found(await client.post("/api/docs/n/checkpoints", json={"version": version, "name": "v1"}))
    assert await rows_left(store, old["id"]) == {}
    assert await store.checkpoints((await store.document("n"))["id"]) == []  # the new one has none
    await again["ws"].close()


async def test_taking_a_name_away_from_a_document_deleted_meanwhile(client, monkeypatch):
    store = client.server.app[STORE]
    await typed(client, "n", "old")
    assert (await client.post("/api/docs/n/checkpoints", json={"version": 1, "name": "v1"})).status == 200
    old = await store.document("n")

    async def delete():
        assert (await client.delete("/api/docs/n")).status == 200

    meanwhile(monkeypatch, store, "set_checkpoint", before=delete)
    await not_found(await client.post("/api/docs/n/checkpoints", json={"version": 1, "name": None}))
    assert await rows_left(store, old["id"]) == {}


async def test_renaming_a_document_deleted_meanwhile(client, monkeypatch):
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    old, again, delete_and_make_again = await made_again_meanwhile(client, "r")
    meanwhile(monkeypatch, store, "rename_document", before=delete_and_make_again)
    await not_found(await client.post("/api/docs/r/rename", json={"name": "elsewhere"}))
    assert await store.document("elsewhere") is None and await store.renamed_to("r") is None
    assert await rows_left(store, old["id"]) == {}
    new = await store.document("r")
    assert new["id"] != old["id"] and rooms._open("r").doc_id == new["id"]
    await still_open(again["ws"], "b", 1, 3)
    await again["ws"].close()


async def test_a_delete_racing_another_delete_leaves_a_document_made_again_alone(client, monkeypatch):
    # The second delete of "d" finds it gone when it writes: it is told so, and the document made again
    # under the name meanwhile, and its session, are not touched.
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    old, again, delete_and_make_again = await made_again_meanwhile(client, "d")
    meanwhile(monkeypatch, store, "delete_document", before=delete_and_make_again)
    await not_found(await client.delete("/api/docs/d"))
    new = await store.document("d")
    assert new is not None and new["id"] != old["id"] and rooms._open("d").doc_id == new["id"]
    await still_open(again["ws"], "b", 1, 3)
    assert (await (await client.get("/api/docs/d")).json())["doc"] == "!new"
    assert await rows_left(store, old["id"]) == {}
    await again["ws"].close()


async def test_a_delete_never_closes_a_document_made_again_before_it_looked(client, monkeypatch):
    # The delete reads the document's row, then looks for its open room: a room open by then under the
    # name is another document's, made after this one was deleted by someone else.
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    old, again, delete_and_make_again = await made_again_meanwhile(client, "d")
    # after the delete's own look (the first is the handler's)
    meanwhile(monkeypatch, rooms, "info", after=delete_and_make_again, call=2)
    await not_found(await client.delete("/api/docs/d"))
    new = await store.document("d")
    assert new is not None and new["id"] != old["id"] and rooms._open("d").doc_id == new["id"]
    await still_open(again["ws"], "b", 1, 3)
    assert await rows_left(store, old["id"]) == {}
    await again["ws"].close()


async def test_resetting_the_links_of_a_document_deleted_meanwhile(secured, monkeypatch):
    # The new salt is written for the deleted document's id: nothing is written, and the document made
    # again under the name keeps its own salt, its links and its sessions.
    store, rooms = secured.server.app[STORE], secured.server.app[ROOMS]
    assert (await secured.post("/api/docs", json={"name": "s"}, headers=ADMIN)).status == 201
    await typed(secured, "s", "old", token=ADMIN["Authorization"][7:])
    old = await store.document("s")
    again = {}

    async def delete_and_make_again():
        assert (await secured.delete("/api/docs/s", headers=ADMIN)).status == 200
        made = await secured.post("/api/docs", json={"name": "s"}, headers=ADMIN)
        again["edit"] = (await made.json())["links"]["edit"].split("token=")[1]
        again["ws"], _ = await typed(secured, "s", "new", client_id="b", token=again["edit"], keep=True)

    meanwhile(monkeypatch, store, "new_salt", before=delete_and_make_again)
    await not_found(await secured.post("/api/docs/s/links/reset", json={}, headers=ADMIN))
    new = await store.document("s")
    assert new["id"] != old["id"] and rooms._open("s").salt == new["salt"]
    await still_open(again["ws"], "b", 1, 3)
    assert (await secured.get(f"/api/docs/s?token={again['edit']}")).status == 200
    await again["ws"].close()


async def test_links_never_open_a_document_made_again_under_the_name(secured, monkeypatch):
    # An edit link of the deleted document asks for the links: it must not be given links signed with
    # the salt of the document made again under the name.
    rooms = secured.server.app[ROOMS]
    made = await secured.post("/api/docs", json={"name": "l"}, headers=ADMIN)
    old_edit = (await made.json())["links"]["edit"].split("token=")[1]

    async def delete_and_make_again():
        rooms.salt_of = real_salt_of
        assert (await secured.delete("/api/docs/l", headers=ADMIN)).status == 200
        assert (await secured.post("/api/docs", json={"name": "l"}, headers=ADMIN)).status == 201

    real_salt_of = rooms.salt_of
    meanwhile(monkeypatch, rooms, "salt_of", after=delete_and_make_again)
    resp = await secured.get(f"/api/docs/l/links?token={old_edit}")
    assert resp.status in (200, 403, 404), await resp.text()
    if resp.status == 200:  # links as they were before the delete: they open nothing now
        for url in (await resp.json())["links"].values():
            assert (await secured.get(f"/api/docs/l?token={url.split('token=')[1]}")).status == 403


async def test_a_document_made_and_deleted_before_its_links_are_read(secured, monkeypatch):
    rooms = secured.server.app[ROOMS]

    async def delete():
        assert (await secured.delete("/api/docs/m", headers=ADMIN)).status == 200

    meanwhile(monkeypatch, rooms, "create", after=delete)
    await not_found(await secured.post("/api/docs", json={"name": "m"}, headers=ADMIN))


@pytest.mark.parametrize("restored", [0, 1], ids=["a-change", "no-change"])
async def test_a_restore_of_a_document_deleted_while_its_diff_ran(client, monkeypatch, restored):
    """Also when the diff turns out empty (the text already is that version's): was 200 with a version of
    a document that no longer existed."""
    store = client.server.app[STORE]
    await typed(client, "t", "old")
    old = await store.document("t")

    async def delete():
        assert (await client.delete("/api/docs/t")).status == 200

    meanwhile(monkeypatch, compute, "restore_changes", before=delete)
    await not_found(await client.post("/api/docs/t/restore", json={"version": restored}))
    assert await store.document("t") is None and await rows_left(store, old["id"]) == {}


async def test_a_restore_of_a_document_another_process_deleted_while_its_diff_ran(client, monkeypatch):
    """The row goes as another process's delete takes it, and this process hears nothing (its news is
    late or lost): the restore's commit finds no document, and the answer is 404, not 503 ("could not be
    saved", as if the disk had failed)."""
    store = client.server.app[STORE]
    await typed(client, "t", "old")
    old = await store.document("t")

    async def delete_elsewhere():
        await store.delete_document(old["id"], name="t")

    meanwhile(monkeypatch, compute, "restore_changes", before=delete_elsewhere)
    await not_found(await client.post("/api/docs/t/restore", json={"version": 0}))
    assert await store.document("t") is None and await rows_left(store, old["id"]) == {}


async def test_a_restore_of_a_document_made_again_while_its_old_text_was_read_leaves_no_room_loaded(
        db, aiohttp_client, monkeypatch):
    """Was: the restore loaded the room of the document now under the name to find it was another one,
    and answered 404 without letting it go: nobody had joined it and nothing held it, so no unload was
    ever scheduled, and it stayed in memory (a room and its text) until someone opened the name (the
    soak audit, from the code)."""
    client = await aiohttp_client(create_app(Settings(db=db, unload_after=0.1)))
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await typed(client, "t", "old")
    old = await store.document("t")
    await until(lambda: "t" not in rooms.rooms, what="the idle room's unload")

    async def delete_and_make_again():
        assert (await client.delete("/api/docs/t")).status == 200
        assert (await client.post("/api/docs", json={"name": "t"})).status == 201

    meanwhile(monkeypatch, rooms, "text_at", after=delete_and_make_again)
    await not_found(await client.post("/api/docs/t/restore", json={"version": 0}))
    await until(lambda: "t" not in rooms.rooms, 3, "the unload of the room the restore loaded")
    again = await store.document("t")
    assert again["id"] != old["id"] and await rooms.current("t") == (0, "")  # the new document, untouched


async def test_a_restore_whose_commit_fails_while_a_delete_waits_is_not_told_the_document_went(client, monkeypatch):
    """A delete here marks the room before it waits for its pending commits; if the restore's commit then
    fails for want of storage, the delete fails too and the document stays: the restore answers 503 (try
    again), not 404 "was deleted"."""
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await typed(client, "t", "old")
    room = rooms._open("t")
    real_gather, real_take, delete = store._gather, store._take, []

    async def gather():  # the restore's commit is about to be taken: a delete begins, and waits for it
        if not delete:
            delete.append(asyncio.ensure_future(client.delete("/api/docs/t")))
            await until(lambda: room.deleted, what="the delete marking the room")
        await real_gather()

    def take():  # and that commit fails, as on a full disk
        batch, taken = real_take()
        if taken and delete:
            store._answer(taken, [(False, StorageUnavailable("the disk is full"))] * len(taken))
            taken = []
        return batch, taken

    monkeypatch.setattr(store, "_gather", gather)
    monkeypatch.setattr(store, "_take", take)
    resp = await client.post("/api/docs/t/restore", json={"version": 0})
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "unavailable", (resp.status, body)
    assert (await delete[0]).status == 503
    assert (await store.document("t"))["version"] == 1


async def test_a_fork_of_a_document_deleted_meanwhile(client, monkeypatch):
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await typed(client, "f", "old")

    async def delete():
        assert (await client.delete("/api/docs/f")).status == 200

    meanwhile(monkeypatch, rooms, "text_at", before=delete)
    await not_found(await client.post("/api/docs/f/fork", json={"version": 1, "name": "copy"}))
    assert await store.document("copy") is None


# ------------------------------------------------------------------- reads


@pytest.mark.parametrize("path, step", [
    ("/api/docs/h/history", "history"),
    ("/api/docs/h/checkpoints", "checkpoints"),
    ("/api/docs/h/former-names", "former_names"),
    ("/api/docs/h/authors", "people"),
    ("/api/docs/h/authors", "authorship"),
    ("/api/docs/h/versions/1", "text_at"),
    ("/api/docs/h/export?version=1", "text_at"),
])
async def test_a_read_of_a_document_deleted_meanwhile(client, monkeypatch, path, step):
    # The row is read first, then what the answer holds: read after the delete, that would be an empty
    # history (no entries, no names, no people) of a document that had one. Not found, rather.
    store = client.server.app[STORE]
    await typed(client, "h", "old")
    assert (await client.post("/api/docs/h/rename", json={"name": "h2"})).status == 200
    assert (await client.post("/api/docs/h2/rename", json={"name": "h"})).status == 200
    assert (await client.post("/api/docs/h/checkpoints", json={"version": 1, "name": "v1"})).status == 200

    async def delete():
        assert (await client.delete("/api/docs/h")).status == 200

    meanwhile(monkeypatch, store, step, before=delete)
    resp = await client.get(path)
    await not_found(resp)
    if step == "text_at":  # said as it is, not as "version 1 was compacted away"
        assert (await resp.json())["error"]["message"] == "this document was deleted"
