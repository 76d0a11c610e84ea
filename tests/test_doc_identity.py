"""Which document a version is of: `welcome.docId`, and a `hello` that resumes with it.

A document deleted and made again under its name counts its versions from 0
again. A client that was away meanwhile (a laptop offline, a closed tab's
record) comes back with a version of the old one; once the new one has
reached that version, a resume would hand it the new document's updates as
if they followed its own text, and take its unsaved edits into a document
they were never made in. With the `docId` of the welcome its version came
from, the server sees that and sends the whole text instead, as it does when
the client is ahead (docs/protocol.md, `hello`).
"""

from __future__ import annotations

import pytest

from collab import transfer
from collab.app import create_app
from collab.settings import Settings
from collab.storage import store_at
from conftest import BOTH_BACKENDS
from test_deleted_meanwhile import opened, typed
from wsutil import USER, push, recv_type, send

pytestmark = BOTH_BACKENDS


@pytest.fixture
async def client(db, aiohttp_client):
    return await aiohttp_client(create_app(Settings(db=db, unload_after=60)))


async def hello(client, doc, client_id, version, doc_id=None):
    ws = await client.ws_connect(f"/ws/{doc}", protocols=["collab.v1"])
    frame = {"type": "hello", "clientID": client_id, "version": version, "user": USER}
    if doc_id is not None:
        frame["docId"] = doc_id
    await send(ws, frame)
    welcome = await recv_type(ws, "welcome")
    await ws.close()
    return welcome


async def test_the_welcome_says_which_document_once_there_is_one(client):
    ws, welcome = await opened(client, "d", "a")
    assert "docId" not in welcome  # nobody made it yet
    await ws.close()
    await typed(client, "d", "hello")
    first = (await hello(client, "d", "b", None))["docId"]
    assert type(first) is str and first
    assert (await hello(client, "d", "b", 1, first))["docId"] == first  # the same on a resume
    await typed(client, "e", "other")
    assert (await hello(client, "e", "c", None))["docId"] != first


async def test_a_resume_from_a_document_deleted_and_made_again_gets_the_whole_text(client):
    await typed(client, "d", "old words ")
    await typed(client, "d", "more ")  # version 2 of the first document
    old = (await hello(client, "d", "b", None))["docId"]
    resp = await client.delete("/api/docs/d")
    assert resp.status in (200, 204)
    await typed(client, "d", "new ")
    await typed(client, "d", "text ")  # version 2 of another document of that name
    welcome = await hello(client, "d", "b", 2, old)
    assert welcome["doc"] == "text new " and welcome["version"] == 2
    assert "from" not in welcome and welcome["docId"] != old
    # Its own docId resumes as ever; a client that sends none (a stock one) is resumed by version alone.
    resumed = await hello(client, "d", "b", 1, welcome["docId"])
    assert (resumed["from"], len(resumed["updates"])) == (1, 1)
    assert (await hello(client, "d", "c", 2))["from"] == 2


async def test_the_frame_that_makes_the_document_says_which_it_made(client):
    ws, welcome = await opened(client, "d", "a")
    assert "docId" not in welcome and welcome["version"] == 0
    watcher, _ = await opened(client, "d", "w")
    await push(ws, 0, "a", [[0, "hi"]])
    made = await recv_type(ws, "updates")
    assert made["from"] == 0 and type(made["docId"]) is str
    assert (await recv_type(watcher, "updates"))["docId"] == made["docId"]  # everyone's copy says it
    await push(ws, 1, "a", [2, [0, "!"]])
    assert "docId" not in await recv_type(ws, "updates")  # only that one
    assert (await hello(client, "d", "b", None))["docId"] == made["docId"]
    await ws.close()
    await watcher.close()


async def test_a_copy_of_the_install_keeps_the_docId_though_ids_are_given_anew(db, tmp_path, aiohttp_client):
    """`collab copy` gives documents new ids (here: the source's first document was deleted, so the
    copy numbers from 1 where the source had 2). docId is made from what the copy keeps, so a page
    with unsent edits from before the move still resumes and merges them, not a rescue dialog."""
    source = str(tmp_path / "source.db")
    before = await aiohttp_client(create_app(Settings(db=source, unload_after=60)))
    await typed(before, "gone", "deleted before the copy")
    assert (await before.delete("/api/docs/gone")).status == 200
    await typed(before, "d", "kept ")
    welcome = await hello(before, "d", "b", None)
    src, dst = await store_at(source).open(), await store_at(db).open()
    try:
        async with src.view() as view:
            copied = await transfer.copy_view(view, dst)
    finally:
        await src.close()
        await dst.close()
    [doc] = copied
    assert doc.source_id != doc.target_id
    after = await aiohttp_client(create_app(Settings(db=db, unload_after=60)))
    resumed = await hello(after, "d", "b", welcome["version"], welcome["docId"])
    assert (resumed["from"], resumed["docId"]) == (welcome["version"], welcome["docId"])


async def test_a_resume_naming_a_document_that_is_gone_gets_the_whole_text_even_at_version_0(client):
    """A document made empty (version 0), its docId known to a client, then deleted: nobody has the name
    now. The client's hello at version 0 names a document that is not there: it gets the whole (empty)
    text, so its unsent edits are offered back, not pushed to make a new document."""
    assert (await client.post("/api/docs", json={"name": "d"})).status == 201
    made = (await hello(client, "d", "b", None))["docId"]
    assert (await client.delete("/api/docs/d")).status == 200
    for version in (0, 3):
        welcome = await hello(client, "d", "b", version, made)
        assert (welcome["doc"], welcome["version"], "docId" in welcome) == ("", 0, False)
        assert "from" not in welcome
