"""History API: every version readable, paging complete, restore as a live change, clear errors."""

from __future__ import annotations

import asyncio
import random

import pytest

from collab.app import create_app
from collab.changes import ChangeSet, utf16_len
from collab.settings import Settings
from conftest import BOTH_BACKENDS
from wsutil import join, push, recv_type


pytestmark = BOTH_BACKENDS  # every test runs on SQLite and on PostgreSQL


@pytest.fixture
async def client(aiohttp_client, db):
    settings = Settings(db=db, snapshot_every=37, unload_after=60)
    return await aiohttp_client(create_app(settings))


class Editor:
    """A minimal client: tracks the text at every version from `updates` frames."""

    def __init__(self, ws, client_id, welcome):
        self.ws, self.id = ws, client_id
        self.version = welcome["version"]
        self.text = welcome.get("doc", "")
        self.seen = {self.version: self.text}

    async def absorb(self, until_version):
        while self.version < until_version:
            frame = await recv_type(self.ws, "updates")
            assert frame["from"] == self.version
            for u in frame["updates"]:
                self.text = ChangeSet.from_json(u["changes"]).apply_to_str(self.text)
                self.version += 1
                self.seen[self.version] = self.text

    def random_edit(self, rnd):
        t = self.text
        pos = rnd.randint(0, len(t))
        cut = rnd.randint(0, min(5, len(t) - pos)) if rnd.random() < 0.3 else 0
        ins = rnd.choice(["a", "bc", " word", "😀", "\n", "é", ""]) or "x"
        head, mid, tail = utf16_len(t[:pos]), utf16_len(t[pos:pos + cut]), utf16_len(t[pos + cut:])
        return ([head] if head else []) + [[mid, *ins.split("\n")]] + ([tail] if tail else [])


async def make_history(client, doc="h", edits=500, seed=7):
    rnd = random.Random(seed)
    editors = []
    for k in range(3):
        ws, welcome = await join(client, doc, f"client{k}")
        editors.append(Editor(ws, f"client{k}", welcome))
    done = 0
    while done < edits:
        # Several clients push on top of what they have (often stale: rebased by the server).
        burst = rnd.sample(editors, rnd.randint(1, 3))
        for e in burst:
            await push(e.ws, e.version, e.id, e.random_edit(rnd))
        done += len(burst)
        for e in editors:
            await e.absorb(done)
    return editors


async def test_every_version_and_paging(client):
    editors = await make_history(client)
    seen = editors[0].seen
    assert all(e.seen == seen for e in editors)
    latest = max(seen)
    assert latest == 500
    for v in sorted(random.Random(1).sample(range(0, latest + 1), 60)) + [0, latest]:
        resp = await client.get(f"/api/docs/h/versions/{v}")
        assert resp.status == 200
        assert await resp.json() == {"version": v, "doc": seen[v]}
    # Paging newest first covers every version exactly once.
    versions, before = [], None
    while True:
        url = "/api/docs/h/history?limit=33" + (f"&before={before}" if before is not None else "")
        entries = (await (await client.get(url)).json())["entries"]
        if not entries:
            break
        assert [e["version"] for e in entries] == sorted((e["version"] for e in entries), reverse=True)
        versions += [e["version"] for e in entries]
        before = entries[-1]["version"]
    assert sorted(versions) == list(range(1, latest + 1)) and len(versions) == latest
    entry = (await (await client.get("/api/docs/h/history?limit=1")).json())["entries"][0]
    assert set(entry) >= {"version", "clientID", "author", "time", "inserted", "deleted"}
    assert entry["clientID"].startswith("client")
    export = await client.get("/api/docs/h/export?version=250")
    assert export.headers["Content-Type"].startswith("text/plain") and "charset=utf-8" in export.headers["Content-Type"]
    assert await export.text() == seen[250]
    assert "attachment" in export.headers["Content-Disposition"]


async def test_restore_is_a_live_minimal_change_and_can_be_undone(client):
    editors = await make_history(client, edits=60)
    e = editors[0]
    current, old_version = e.text, 20
    resp = await client.post("/api/docs/h/restore", json={"version": old_version, "author": "Ann"})
    assert resp.status == 200 and (await resp.json())["unchanged"] is False
    restored_version = (await resp.json())["version"]
    assert restored_version == e.version + 1
    for ed in editors:  # everyone receives it live, like any update
        await ed.absorb(restored_version)
        assert ed.text == e.seen[old_version]
    # One update, and a minimal one: it does not delete and re-insert everything.
    entry = (await (await client.get("/api/docs/h/history?limit=1")).json())["entries"][0]
    assert entry["version"] == restored_version and entry["restored"] == old_version
    assert entry["author"] == "Ann"
    assert entry["deleted"] < utf16_len(current) or not current
    assert (await (await client.get("/api/docs/h")).json())["doc"] == e.seen[old_version]
    # Undo the restore by restoring the version before it.
    resp = await client.post("/api/docs/h/restore", json={"version": restored_version - 1})
    back = (await resp.json())["version"]
    await e.absorb(back)
    assert e.text == current
    assert (await (await client.get("/api/docs/h")).json()) == {"name": "h", "version": back, "doc": current}


async def test_restoring_the_current_text_makes_no_update(client):
    """A restore whose diff is empty (the current version, or an older one with the same text) changes
    nothing: it answers the current version and adds no update for anyone to be told of."""
    ws, welcome = await join(client, "same", "w")
    e = Editor(ws, "w", welcome)
    for version, changes in enumerate([[[0, "hello"]], [5, [0, " world"]], [5, [6]]]):
        await push(ws, version, "w", changes)  # the last one goes back to "hello": version 1's text
        await e.absorb(version + 1)
    assert e.text == "hello"
    for version in (3, 1):
        resp = await client.post("/api/docs/same/restore", json={"version": version, "author": "Carol"})
        assert resp.status == 200 and (await resp.json()) == {"version": 3, "unchanged": True}
    assert (await (await client.get("/api/docs/same")).json()) == {"name": "same", "version": 3, "doc": "hello"}
    entries = (await (await client.get("/api/docs/same/history")).json())["entries"]
    assert [x["version"] for x in entries] == [3, 2, 1]


async def test_restore_keeps_concurrent_edits(client):
    ws, welcome = await join(client, "r", "w")
    e = Editor(ws, "w", welcome)
    await push(ws, 0, "w", [[0, "first line"]])
    await e.absorb(1)
    await push(ws, 1, "w", [10, [0, "", "second line"]])
    await e.absorb(2)
    # The client made an edit on version 2 that the server has not seen yet
    # (unconfirmed); meanwhile someone restores version 1. The edit, pushed
    # after the restore, is rebased over it and survives.
    resp = await client.post("/api/docs/r/restore", json={"version": 1})
    assert resp.status == 200 and (await resp.json())["version"] == 3
    await push(ws, 2, "w", [[0, ">> "], 22])
    await e.absorb(4)
    assert e.text == ">> first line"


async def test_two_restores_at_once_do_not_merge(client, monkeypatch):
    """Two people restore two versions at the same moment: the text ends as one of them restores it, not
    as a mixture of both diffs (each made against the same text, the later rebased over the earlier)."""
    from collab import compute
    ws, welcome = await join(client, "two", "w")
    e = Editor(ws, "w", welcome)
    texts = ["the quick brown fox", "a slow green turtle walks", "one two three four five"]
    for i, text in enumerate(texts):
        await push(ws, i, "w", [[utf16_len(e.text), text]])  # the whole text replaced
        await e.absorb(i + 1)
        assert e.text == text
    diffing, real = [], compute.restore_changes

    async def restore_changes(current, target):  # each diff waits a little for the other to start too
        diffing.append(current)
        for _ in range(50):
            if len(diffing) >= 2:
                break
            await asyncio.sleep(0.01)
        return await real(current, target)

    monkeypatch.setattr(compute, "restore_changes", restore_changes)
    one, two = await asyncio.gather(client.post("/api/docs/two/restore", json={"version": 1}),
                                    client.post("/api/docs/two/restore", json={"version": 2}))
    assert one.status == 200 and two.status == 200
    made = {1: (await one.json())["version"], 2: (await two.json())["version"]}
    first, last = sorted(made, key=made.get)
    assert sorted(made.values()) == [4, 5]
    assert diffing == [texts[2], texts[first - 1]], "the later restore is diffed against the earlier one's text"
    await e.absorb(5)
    assert e.text == texts[last - 1], "was: both diffs of the same text, the later rebased over the earlier"
    assert (await (await client.get("/api/docs/two")).json())["doc"] == texts[last - 1]


async def test_fork_and_authors(client):
    a, wa = await join(client, "f", "alice", user={"name": "Alice", "color": "#aa0000"})
    b, wb = await join(client, "f", "bob", user={"name": "Bob", "color": "#0000aa"})
    await push(a, 0, "alice", [[0, "hello"]])
    await recv_type(a, "updates"), await recv_type(b, "updates")
    await push(b, 1, "bob", [5, [0, " 😀world"]])
    await recv_type(a, "updates"), await recv_type(b, "updates")
    resp = await client.get("/api/docs/f/authors")
    spans = (await resp.json())["spans"]
    assert [(s["from"], s["to"]) for s in spans] == [(0, 5), (5, 13)]
    assert [s["author"] for s in spans] == ["Alice", "Bob"]
    assert (await (await client.get("/api/docs/f/authors?version=1")).json())["spans"] == [
        {"from": 0, "to": 5, "author": "Alice"}]
    resp = await client.post("/api/docs/f/fork", json={"version": 1, "name": "f-copy"})
    assert resp.status == 201 and (await resp.json()) == {"name": "f-copy"}
    assert (await (await client.get("/api/docs/f-copy")).json())["doc"] == "hello"
    resp = await client.post("/api/docs/f/fork", json={"version": 1, "name": "f-copy"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    resp = await client.post("/api/docs/f/fork", json={})
    name = (await resp.json())["name"]
    assert (await (await client.get(f"/api/docs/{name}")).json())["doc"] == "hello 😀world"


async def test_a_fork_is_stored_as_the_person_who_made_it(client):
    ws, _ = await join(client, "g", "w")
    await push(ws, 0, "w", [[0, "hello"]])
    await recv_type(ws, "updates")
    resp = await client.post("/api/docs/g/fork", json={"name": "g-copy", "author": "Carol", "person": "carol-1",
                                                      "color": "#30a46c"})
    assert resp.status == 201
    entry = (await (await client.get("/api/docs/g-copy/history")).json())["entries"][0]
    assert (entry["author"], entry["person"], entry["color"]) == ("Carol", "carol-1", "#30a46c")
    resp = await client.post("/api/docs/g/fork", json={"name": "g-bad", "person": "no spaces"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad-request"


@pytest.mark.parametrize("url, says", [
    ("/api/docs/e/history?limit=100000", "limit 100000 is beyond the most entries one page holds, 1000"),
    ("/api/docs/e/versions/99", "version 99 is beyond the latest version 1"),
    ("/api/docs/e/versions/%C2%B2", "version must be a non-negative integer"),  # '²' passes str.isdigit()
    ("/api/docs/e/history?before=%E2%91%A0", "before must be a non-negative integer"),  # '①' too
])
async def test_bad_numbers_say_what_is_wrong_with_them(client, url, says):
    ws, _ = await join(client, "e", "x")
    await push(ws, 0, "x", [[0, "text"]])
    await recv_type(ws, "updates")
    resp = await client.get(url)
    assert resp.status == 400
    assert says in (await resp.json())["error"]["message"]


@pytest.mark.parametrize("method, url, body, status, code", [
    ("get", "/api/docs/e/versions/-1", None, 400, "bad-request"),
    ("get", "/api/docs/e/versions/99", None, 400, "bad-request"),
    ("get", "/api/docs/e/versions/two", None, 400, "bad-request"),
    ("get", "/api/docs/e/versions/1.5", None, 400, "bad-request"),
    ("get", "/api/docs/e/history?before=x", None, 400, "bad-request"),
    ("get", "/api/docs/e/history?limit=0", None, 400, "bad-request"),
    ("get", "/api/docs/e/history?limit=100000", None, 400, "bad-request"),
    ("get", "/api/docs/e/export?version=-3", None, 400, "bad-request"),
    ("get", "/api/docs/e/authors?version=50", None, 400, "bad-request"),
    ("post", "/api/docs/e/restore", {"version": 9}, 400, "bad-request"),
    ("post", "/api/docs/e/restore", {"version": "1"}, 400, "bad-request"),
    ("post", "/api/docs/e/restore", {}, 400, "bad-request"),
    ("post", "/api/docs/e/restore", [1], 400, "bad-request"),
    ("post", "/api/docs/e/fork", {"name": "no spaces"}, 400, "bad-request"),
    ("get", "/api/docs/missing/versions/0", None, 404, "not-found"),
    ("get", "/api/docs/missing/history", None, 404, "not-found"),
    ("post", "/api/docs/missing/restore", {"version": 0}, 404, "not-found"),
    ("get", "/api/docs/missing/export", None, 404, "not-found"),
    ("get", "/api/docs/missing/authors", None, 404, "not-found"),
])
async def test_bad_requests_answer_the_error_shape(client, method, url, body, status, code):
    ws, _ = await join(client, "e", "x")
    await push(ws, 0, "x", [[0, "text"]])
    await recv_type(ws, "updates")
    resp = await getattr(client, method)(url, **({"json": body} if body is not None else {}))
    assert resp.status == status
    payload = await resp.json()
    assert payload["error"]["code"] == code and payload["error"]["message"]
    assert (await (await client.get("/api/docs/e")).json()) == {"name": "e", "version": 1, "doc": "text"}


async def test_a_restore_can_name_its_person(client):
    ws, _ = await join(client, "rp", "x")
    await push(ws, 0, "x", [[0, "one"]])
    await recv_type(ws, "updates")
    resp = await client.post("/api/docs/rp/restore", json={"version": 0, "author": "Ann", "person": "ann-1",
                                                          "color": "#112233"})
    assert resp.status == 200, await resp.text()
    entry = (await (await client.get("/api/docs/rp/history?limit=1")).json())["entries"][0]
    assert (entry["author"], entry["person"], entry["color"], entry["restored"]) == ("Ann", "ann-1", "#112233", 0)
    for bad in ({"version": 0, "person": "no spaces"}, {"version": 0, "color": "red"}):
        assert (await client.post("/api/docs/rp/restore", json=bad)).status == 400


async def test_a_restore_never_lands_on_a_document_made_again_under_its_name(client):
    # The old text is read from the document the request named; if that document is deleted and
    # another made under its name meanwhile, the restore must not turn the new one into the old one's
    # text.
    from collab.app import ROOMS
    rooms = client.server.app[ROOMS]
    ws, _ = await join(client, "again", "a")
    await push(ws, 0, "a", [[0, "the deleted document's text"]])
    await recv_type(ws, "updates")
    await ws.close()
    read_old_text = rooms.text_at

    async def and_meanwhile(info, version):
        old = await read_old_text(info, version)
        assert (await client.delete("/api/docs/again")).status == 200
        other, _ = await join(client, "again", "b")
        await push(other, 0, "b", [[0, "another document"]])
        await recv_type(other, "updates")
        await other.close()
        return old

    rooms.text_at = and_meanwhile
    resp = await client.post("/api/docs/again/restore", json={"version": 1})
    rooms.text_at = read_old_text
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not-found"
    assert (await (await client.get("/api/docs/again")).json())["doc"] == "another document"
