"""A document's room lifecycle racing what happens to it: a rename while things go on, and a room
unloading (or loaded again) while requests and connections arrive.

The technique is test_deleted_meanwhile's: a step a request awaits (a Rooms or store method, or the
writer taking a room's commit) is replaced by one that does the competing thing first, at the worst
moment; then the test checks what the user sees (an answer, a welcome, a close code) and what is
stored. Nothing typed may be lost, nothing may land on another document, and a name that no longer
names a document answers like a missing one.
"""

from __future__ import annotations

import asyncio

import pytest

from collab import compute
from collab.app import ROOMS, STORE
from collab.room import Room
from conftest import BOTH_BACKENDS
from wsutil import USER, closed, connect, push, recv, recv_type, send
import test_deleted_meanwhile
from test_deleted_meanwhile import ADMIN, meanwhile, opened, still_open, typed  # the delete races' helpers

pytestmark = BOTH_BACKENDS  # every test runs on SQLite and on PostgreSQL

# The same servers as the delete races': `client` (snapshots every 37 updates) and `secured` (access control on).
client, secured = test_deleted_meanwhile.client, test_deleted_meanwhile.secured


async def answer(resp, status, code=None):
    body = await resp.json()
    assert resp.status == status, (resp.status, body)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


async def text_of(client, doc, headers=None):
    body = await answer(await client.get(f"/api/docs/{doc}", headers=headers), 200)
    return body["version"], body["doc"]


def hold_commits(request, monkeypatch, room):
    """`room`'s pending updates stay out of the store (the writer finds nothing to take) until the
    returned `release()` (at the latest when the test ends): an edit sequenced and not yet durable, for
    as long as a test needs."""
    real = Room.take_commit
    held = []

    def take_commit(self):
        if self is room and not held:
            return None
        return real(self)

    def release():
        if not held:
            held.append(True)
            room.store.schedule(room)

    monkeypatch.setattr(Room, "take_commit", take_commit)
    request.addfinalizer(release)  # a failed test still lets the room flush and the server stop
    return release


async def rename_with_an_edit_held(client, monkeypatch, request, a, version, headers=None):
    """Session `a` (on "p", at `version`) types "X" at the start; the edit is sequenced in the old room and
    held out of the store (`hold_commits`) while "p" is renamed to "q". Returns (the rename under way,
    release)."""
    old_room = client.server.app[ROOMS]._open("p")
    release = hold_commits(request, monkeypatch, old_room)
    await push(a, version, "a", [[0, "X"], 5])
    await until(lambda: old_room.seq.version == version + 1)
    return asyncio.ensure_future(client.post("/api/docs/p/rename", json={"name": "q"}, headers=headers)), release


def renamed(client, again=None):
    """A step that renames "p" to "q" (for `meanwhile`); with `again`, a session "b" then opens there
    (`again["ws"]`)."""
    async def rename():
        await answer(await client.post("/api/docs/p/rename", json={"name": "q"}), 200)
        if again is not None:
            again["ws"], _ = await opened(client, "q", "b")

    return rename


async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------ rename


async def test_an_edit_in_flight_when_the_document_is_renamed_is_neither_lost_nor_doubled(client, monkeypatch, request):
    # The edit is sequenced in the old name's room and not yet durable when the rename closes its session
    # (1008, naming the new name). The client comes back under the new name before that commit lands, and
    # pushes the edit again (it was never acknowledged). Someone else reads the document meanwhile.
    store = client.server.app[STORE]
    a, version = await typed(client, "p", "hello", keep=True)
    renaming, release = await rename_with_an_edit_held(client, monkeypatch, request, a, version)
    assert await closed(a) == (1008, "this document was renamed to q")

    # Back under the new name while the old room's commit is still held: welcomed at what is durable.
    a2, welcome = await opened(client, "q", "a", version=version)
    assert welcome["version"] == version
    release()
    assert (await renaming).status == 200
    # The edit is durable now (the old room's commit): every reader sees it, the new room included.
    assert await text_of(client, "q") == (version + 1, "Xhello")
    # The session back under the new name gets it too: that is its edit's acknowledgement.
    frame = await recv_type(a2, "updates")
    assert frame["from"] == version and [u["clientID"] for u in frame["updates"]] == ["a"]
    b, welcome_b = await opened(client, "q", "b")
    assert (welcome_b["version"], welcome_b["doc"]) == (version + 1, "Xhello")
    # A client that pushes it again all the same (its acknowledgement crossed its push) has it kept once.
    await push(a2, version, "a", [[0, "X"], 5])
    await still_open(a2, "a", version + 1, 6)
    assert await text_of(client, "q") == (version + 2, "!Xhello")
    assert (await store.document("q"))["version"] == version + 2
    for ws in (a, a2, b):
        await ws.close()


async def test_an_edit_pushed_again_under_the_new_name_before_the_old_commit_lands(client, monkeypatch, request):
    # The other order: the client's second push of the edit commits first (in the new name's room); the
    # old room's commit of the same edit then finds the document moved on, catches up, and drops it.
    a, version = await typed(client, "p", "hello", keep=True)
    renaming, release = await rename_with_an_edit_held(client, monkeypatch, request, a, version)
    assert (await closed(a))[0] == 1008
    a2, welcome = await opened(client, "q", "a", version=version)
    await push(a2, version, "a", [[0, "X"], 5])
    frame = await recv_type(a2, "updates")
    assert frame["from"] == version
    release()
    assert (await renaming).status == 200
    assert await text_of(client, "q") == (version + 1, "Xhello")
    await a2.close()


async def test_a_hello_on_the_old_name_while_the_rename_flushes(client, monkeypatch, request):
    # The rename is in the store; the old room's last commit is still on its way. A page that comes back
    # to the old name then is told where the document went, as the sessions open at the rename were
    # (1008 with the new name), not refused as if the document had been deleted (4000).
    a, version = await typed(client, "p", "hello", keep=True)
    renaming, release = await rename_with_an_edit_held(client, monkeypatch, request, a, version)
    assert (await closed(a))[0] == 1008
    ws = await connect(client, "p")
    await send(ws, {"type": "hello", "clientID": "c", "version": None, "user": USER})
    error = await recv(ws)
    assert error["code"] == "not-found", error
    assert await closed(ws) == (1008, "this document was renamed to q")
    release()
    assert (await renaming).status == 200
    await ws.close()


async def test_a_document_made_under_the_old_name_while_the_rename_flushes(client, monkeypatch, request):
    # A new document "p", made while the renamed one's room still writes its last commit, is that new
    # document for every reader and every joiner: empty, at version 0, not the renamed one's text.
    a, version = await typed(client, "p", "hello", keep=True)
    renaming, release = await rename_with_an_edit_held(client, monkeypatch, request, a, version)
    assert (await closed(a))[0] == 1008
    await answer(await client.post("/api/docs", json={"name": "p"}), 201)
    assert await text_of(client, "p") == (0, "")
    b, welcome = await opened(client, "p", "b")
    assert (welcome["version"], welcome["doc"]) == (0, "")
    release()
    assert (await renaming).status == 200
    assert await text_of(client, "q") == (version + 1, "Xhello")
    assert await text_of(client, "p") == (0, "")
    for ws in (a, b):
        await ws.close()


async def test_old_links_never_open_a_document_made_under_the_old_name_while_the_rename_flushes(
        secured, monkeypatch, request):
    made = await answer(await secured.post("/api/docs", json={"name": "p"}, headers=ADMIN), 201)
    old_edit = made["links"]["edit"].split("token=")[1]
    a, version = await typed(secured, "p", "hello", token=old_edit, keep=True)
    renaming, release = await rename_with_an_edit_held(secured, monkeypatch, request, a, version, headers=ADMIN)
    assert (await closed(a))[0] == 1008
    await answer(await secured.post("/api/docs", json={"name": "p"}, headers=ADMIN), 201)
    await answer(await secured.get(f"/api/docs/p?token={old_edit}"), 403, "forbidden")
    release()
    assert (await renaming).status == 200
    await answer(await secured.get(f"/api/docs/p?token={old_edit}"), 403, "forbidden")


async def test_a_rename_racing_another_rename(client, monkeypatch):
    # Both renames read "p"; the other one renames it to "q" first (and a session opens there). This one
    # names a document no longer called "p": not found, and "q", its room and its session stay as they are.
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await typed(client, "p", "hello")
    doc_id = (await store.document("p"))["id"]
    again = {}
    meanwhile(monkeypatch, store, "rename_document", before=renamed(client, again))
    await answer(await client.post("/api/docs/p/rename", json={"name": "r"}), 404, "not-found")
    assert (await store.document("q"))["id"] == doc_id
    assert await store.document("r") is None and await store.renamed_to("q") is None
    assert rooms._open("q").doc_id == doc_id
    await still_open(again["ws"], "b", 1, 5)
    await again["ws"].close()


async def test_a_delete_racing_a_rename(client, monkeypatch):
    # The delete read "p" and found no room open; the document is renamed "q" before the delete writes,
    # and a session opens there. The delete names a document no longer called "p": not found, and "q"
    # lives on with its session.
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await typed(client, "p", "hello")
    doc_id = (await store.document("p"))["id"]
    again = {}
    # after the delete's own look (the first is the handler's)
    meanwhile(monkeypatch, rooms, "info", after=renamed(client, again), call=2)
    await answer(await client.delete("/api/docs/p"), 404, "not-found")
    assert (await store.document("q"))["id"] == doc_id
    await still_open(again["ws"], "b", 1, 5)
    assert await text_of(client, "q") == (2, "!hello")
    await again["ws"].close()


async def test_resetting_the_links_of_a_document_renamed_meanwhile(secured, monkeypatch):
    # The reset read "p"; the document is renamed "q" (its links are given for "q") and opened with them
    # before the new salt is written. The reset names a document no longer called "p": not found, and
    # nothing changes for "q": its links work, in the room open now and after it is loaded again.
    store, rooms = secured.server.app[STORE], secured.server.app[ROOMS]
    await answer(await secured.post("/api/docs", json={"name": "p"}, headers=ADMIN), 201)
    again = {}

    async def rename_first():
        renamed = await answer(await secured.post("/api/docs/p/rename", json={"name": "q"}, headers=ADMIN), 200)
        again["edit"] = renamed["links"]["edit"].split("token=")[1]
        again["ws"], _ = await typed(secured, "q", "hello", client_id="b", token=again["edit"], keep=True)
        again["salt"] = (await store.document("q"))["salt"]

    meanwhile(monkeypatch, store, "new_salt", before=rename_first)
    await answer(await secured.post("/api/docs/p/links/reset", json={}, headers=ADMIN), 404, "not-found")
    assert (await store.document("q"))["salt"] == again["salt"] == rooms._open("q").salt
    await still_open(again["ws"], "b", 1, 5)
    await again["ws"].close()
    await until(lambda: not rooms._open("q").members)
    await rooms.unload(rooms._open("q"))
    await answer(await secured.get(f"/api/docs/q?token={again['edit']}"), 200)


async def test_a_restore_of_a_document_renamed_while_its_diff_ran(client, monkeypatch):
    # The restore's update would go to the old name's room, closed by the rename: not found, and the
    # document under its new name is unchanged.
    store = client.server.app[STORE]
    await typed(client, "p", "hello")

    meanwhile(monkeypatch, compute, "restore_changes", before=renamed(client))
    await answer(await client.post("/api/docs/p/restore", json={"version": 0}), 404, "not-found")
    assert await text_of(client, "q") == (1, "hello")
    assert (await store.document("q"))["version"] == 1


async def test_naming_a_version_of_a_document_renamed_meanwhile(client, monkeypatch):
    # A checkpoint goes by the document's id: the document renamed meanwhile is the same document, so it
    # is named, and the answer lists it.
    store = client.server.app[STORE]
    await typed(client, "p", "hello")

    meanwhile(monkeypatch, store, "set_checkpoint", before=renamed(client))
    body = await answer(await client.post("/api/docs/p/checkpoints", json={"version": 1, "name": "v1"}), 200)
    assert [c["name"] for c in body["checkpoints"]] == ["v1"]
    listed = await answer(await client.get("/api/docs/q/checkpoints"), 200)
    assert [(c["version"], c["name"]) for c in listed["checkpoints"]] == [(1, "v1")]


async def test_a_fork_of_a_document_renamed_meanwhile(client, monkeypatch):
    rooms = client.server.app[ROOMS]
    await typed(client, "p", "hello")

    meanwhile(monkeypatch, rooms, "text_at", before=renamed(client))
    await answer(await client.post("/api/docs/p/fork", json={"version": 1, "name": "copy"}), 201)
    assert await text_of(client, "copy") == (1, "hello")
    assert await text_of(client, "q") == (1, "hello")


@pytest.mark.parametrize("made", ["create", "fork"])
async def test_a_document_made_under_the_new_name_before_the_rename_writes(client, monkeypatch, made):
    # The name was free when the rename looked; another request takes it first: conflict, and the
    # document keeps its name, its text and its session.
    store = client.server.app[STORE]
    a, version = await typed(client, "p", "hello", keep=True)
    await typed(client, "other", "elsewhere", client_id="o")

    async def take_the_name():
        if made == "create":
            await answer(await client.post("/api/docs", json={"name": "q"}), 201)
        else:
            await answer(await client.post("/api/docs/other/fork", json={"name": "q"}), 201)

    meanwhile(monkeypatch, store, "rename_document", before=take_the_name)
    await answer(await client.post("/api/docs/p/rename", json={"name": "q"}), 409, "conflict")
    assert await text_of(client, "p") == (1, "hello")
    assert await text_of(client, "q") == ((0, "") if made == "create" else (1, "elsewhere"))
    await still_open(a, "a", version, 5)
    await a.close()


# ------------------------------------------------------------------ unload


async def unloading(client, doc, monkeypatch, during):
    """Unload `doc`'s idle room, doing `during()` while it flushes (before it waits for its commits)."""
    rooms = client.server.app[ROOMS]
    room = rooms._open(doc)
    await until(lambda: not room.members)
    meanwhile(monkeypatch, Room, "settled", before=during)
    await rooms.unload(room)
    return room


async def test_a_join_and_a_push_while_the_room_unloads(client, monkeypatch):
    # A session joins while the idle room flushes to unload, and pushes: it is welcomed to the
    # text, acknowledged, and the room stays (it has a member); once it leaves, the room unloads and a
    # reload has the edit.
    rooms = client.server.app[ROOMS]
    await typed(client, "u", "hello")
    joined = {}

    async def join_and_push():
        joined["ws"], welcome = await opened(client, "u", "b")
        assert (welcome["version"], welcome["doc"]) == (1, "hello")
        await push(joined["ws"], 1, "b", [[0, "B"], 5])
        assert (await recv_type(joined["ws"], "updates"))["from"] == 1

    room = await unloading(client, "u", monkeypatch, join_and_push)
    assert rooms._open("u") is room and list(room.members)
    await still_open(joined["ws"], "b", 2, 6)
    await joined["ws"].close()
    await until(lambda: not room.members)
    await rooms.unload(room)
    assert rooms._open("u") is None
    assert await text_of(client, "u") == (3, "!Bhello")
    c, welcome = await opened(client, "u", "c")
    assert (welcome["version"], welcome["doc"]) == (3, "!Bhello")
    await c.close()


async def test_a_session_that_joins_and_leaves_while_the_room_unloads(client, monkeypatch):
    rooms = client.server.app[ROOMS]
    await typed(client, "u", "hello")

    async def join_push_leave():
        ws, _ = await opened(client, "u", "b")
        await push(ws, 1, "b", [[0, "B"], 5])
        await recv_type(ws, "updates")
        await ws.close()
        await until(lambda: not rooms._open("u").members)

    room = await unloading(client, "u", monkeypatch, join_push_leave)
    assert rooms._open("u") is None and rooms.rooms.get("u") is None
    assert await text_of(client, "u") == (2, "Bhello")
    c, welcome = await opened(client, "u", "c")
    assert (welcome["version"], welcome["doc"]) == (2, "Bhello")
    assert rooms._open("u") is not room
    await c.close()


async def test_a_read_while_the_room_unloads(client, monkeypatch):
    await typed(client, "u", "hello")
    seen = {}

    async def read():
        seen["doc"] = await text_of(client, "u")
        seen["history"] = await answer(await client.get("/api/docs/u/history"), 200)

    await unloading(client, "u", monkeypatch, read)
    assert seen["doc"] == (1, "hello") and [e["version"] for e in seen["history"]["entries"]] == [1]
    assert await text_of(client, "u") == (1, "hello")


async def test_a_restore_while_the_room_unloads_and_loads_again(client, monkeypatch):
    # The restore read the document's text at the version it brings back; meanwhile the idle room
    # unloads and a session loads it again: the restore's update goes to the room open now, and
    # reaches that session.
    rooms = client.server.app[ROOMS]
    await typed(client, "u", "hello")
    again = {}

    async def unload_and_join():
        room = rooms._open("u")
        await until(lambda: not room.members)
        await rooms.unload(room)
        assert rooms._open("u") is None
        again["ws"], _ = await opened(client, "u", "b")
        again["room"] = rooms._open("u")
        assert again["room"] is not room

    meanwhile(monkeypatch, rooms, "text_at", after=unload_and_join)
    body = await answer(await client.post("/api/docs/u/restore", json={"version": 0}), 200)
    assert body["version"] == 2
    frame = await recv_type(again["ws"], "updates")
    assert frame["from"] == 1 and frame["updates"][0]["restore"]["version"] == 0
    assert await text_of(client, "u") == (2, "")
    await again["ws"].close()


@pytest.mark.parametrize("path", ["/api/docs/u/history", "/api/docs/u/authors", "/api/docs/u/versions/1"])
async def test_reads_while_the_room_unloads_and_loads_again(client, monkeypatch, path):
    # The request read the document's row (its version from the room open then); the room unloads and
    # is loaded again, and edited, before the rest is read: the answer is about that version.
    rooms, store = client.server.app[ROOMS], client.server.app[STORE]
    await typed(client, "u", "hello")
    again = {}

    async def unload_join_edit():
        await until(lambda: not rooms._open("u").members)
        await rooms.unload(rooms._open("u"))
        again["ws"], _ = await typed(client, "u", "B", client_id="b", keep=True)

    meanwhile(monkeypatch, rooms, "info", after=unload_join_edit)
    body = await answer(await client.get(path), 200)
    if path.endswith("history"):
        assert [e["version"] for e in body["entries"]] == [1]
    elif path.endswith("authors"):
        assert body["version"] == 1 and sum(s["to"] - s["from"] for s in body["spans"]) == 5
    else:
        assert body == {"version": 1, "doc": "hello"}
    assert (await store.document("u"))["version"] == 2
    await again["ws"].close()
