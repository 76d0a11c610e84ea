"""Admin commands against a real server and database: docs, export/import, backup under load, compact.

Every command runs as `python -m collab ...` in a subprocess, as a person
would run it, next to a live `collab serve` on the same database. Every test
runs on SQLite and on PostgreSQL (conftest.BOTH_BACKENDS) with the same
assertions; backups are SQLite files on both.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from collab.changes import ChangeSet, utf16_len
from collab.storage import database_exists, store_at
from conftest import BOTH_BACKENDS, JS_DIR
from serverproc import ROOT, ServerProcess, get_json
from loadclients import apply_changes

USER = {"name": "Admin test", "color": "#336699"}
pytestmark = BOTH_BACKENDS


def collab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collab", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def start_server(tmp_path, db):
    procs = []

    def start(*extra: str, db=db) -> ServerProcess:
        proc = ServerProcess(db, extra_args=list(extra), log_path=tmp_path / f"server-{len(procs)}.log")
        procs.append(proc)
        return proc.start()

    yield start
    for proc in procs:
        proc.kill()


class Scribe:
    """One editor over a real WebSocket: one update at a time, each awaited until acknowledged.

    Keeps the text at every version it saw (`texts`), computed from the
    updates the server broadcast.
    """

    def __init__(self, ws, client_id: str, welcome: dict):
        self.ws, self.id = ws, client_id
        self.version = welcome["version"]
        self.text = welcome.get("doc", "")
        self.texts = {self.version: self.text}

    @classmethod
    async def join(cls, http: aiohttp.ClientSession, ws_url: str, doc: str, client_id: str, version=None):
        ws = await http.ws_connect(f"{ws_url}/ws/{doc}", protocols=("collab.v1",), max_msg_size=0)
        await ws.send_json({"type": "hello", "clientID": client_id, "version": version, "user": USER})
        return cls(ws, client_id, await cls._next(ws, "welcome"))

    @staticmethod
    async def _next(ws, kind: str) -> dict:
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
            frame = json.loads(msg.data)
            if frame["type"] == kind:
                return frame
            assert frame["type"] in ("presences", "leave"), frame

    async def edit(self, changes: list) -> None:
        await self.ws.send_json({"type": "push", "version": self.version,
                                 "updates": [{"clientID": self.id, "changes": changes}]})
        while True:
            frame = await self._next(self.ws, "updates")
            assert frame["from"] == self.version, frame
            for u in frame["updates"]:
                self.text = ChangeSet.from_json(u["changes"]).apply_to_str(self.text)
                self.version += 1
                self.texts[self.version] = self.text
            if any(u["clientID"] == self.id for u in frame["updates"]):
                return

    async def insert_at_end(self, text: str) -> None:
        n = utf16_len(self.text)
        await self.edit(([n] if n else []) + [[0, *text.split("\n")]])

    def random_edit(self, rnd: random.Random) -> list:
        t = self.text
        pos = rnd.randint(0, len(t))
        cut = rnd.randint(0, min(5, len(t) - pos)) if rnd.random() < 0.3 else 0
        ins = rnd.choice(["a", "bc", " word", "😀", "\n", "é", "中"])
        head, mid, tail = utf16_len(t[:pos]), utf16_len(t[pos:pos + cut]), utf16_len(t[pos + cut:])
        return ([head] if head else []) + [[mid, *ins.split("\n")]] + ([tail] if tail else [])


FIXED = {
    "unicode": ["héllo wörld\n", "中文 😀👍🏽 𝄞\n", "e\u0301 ok"],
    "blank-lines": ["\n\nx\n", "\n\n"],
    "Mixed_Case-9": ["no newline at the end"],
}


async def make_documents(ws_url: str, random_edits: int = 150) -> dict[str, str]:
    """Documents with awkward content and one with a long random history; returns name -> text."""
    rnd = random.Random(5)
    texts = {}
    async with aiohttp.ClientSession() as http:
        s = await Scribe.join(http, ws_url, "notes", "scribe-notes")
        for _ in range(random_edits):
            await s.edit(s.random_edit(rnd))
        texts["notes"] = s.text
        for name, pieces in FIXED.items():
            s = await Scribe.join(http, ws_url, name, f"scribe-{name}")
            for piece in pieces:
                await s.insert_at_end(piece)
            texts[name] = s.text
            assert s.text == "".join(pieces)
        # A document comes to be at its first edit; an empty one is made through the API.
        base = ws_url.replace("ws://", "http://", 1)
        async with http.post(f"{base}/api/docs", json={"name": "empty"}) as resp:
            assert resp.status == 201, await resp.text()
        texts["empty"] = ""
    return texts


async def read_all(db) -> dict[str, tuple[int, str]]:
    store = store_at(db)
    await store.open()
    try:
        out = {}
        for d in await store.list_documents():
            info = await store.document(d["name"])
            out[d["name"]] = (info["version"], await store.text_at(info["id"], info["version"]))
        return out
    finally:
        await store.close()


# ----------------------------------------------------------- export / import

def test_docs_export_and_import_reproduce_every_document(start_server, tmp_path, make_db):
    server = start_server()
    texts = asyncio.run(make_documents(server.ws_url))

    listing = ok(collab("docs", "--db", server.db)).splitlines()
    assert listing[0].split()[:3] == ["name", "version", "length"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert set(rows) == set(texts)
    for name, text in texts.items():
        info = get_json(f"{server.url}/api/docs/{name}")
        assert rows[name][1:3] == [str(info["version"]), str(utf16_len(text))], rows[name]
        assert time.strptime(" ".join(rows[name][3:5]), "%Y-%m-%d %H:%M:%S")

    out = tmp_path / "export"
    assert "exported 5 documents" in ok(collab("export", out, "--db", server.db))  # while the server runs
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.txt" for n in texts)
    for name, text in texts.items():
        assert (out / f"{name}.txt").read_bytes() == text.encode("utf-8"), name

    fresh = make_db("fresh")
    assert "imported 5 documents" in ok(collab("import", out, "--db", fresh))
    imported = asyncio.run(read_all(fresh))
    assert {n: t for n, (_, t) in imported.items()} == texts
    assert {n: v for n, (v, _) in imported.items()} == {n: (1 if t else 0) for n, t in texts.items()}

    # A server on the imported database serves them; history shows one update by "import".
    other = start_server(db=fresh)
    for name, text in texts.items():
        assert get_json(f"{other.url}/api/docs/{name}")["doc"] == text
    entry = get_json(f"{other.url}/api/docs/notes/history")["entries"]
    assert [(e["version"], e["author"]) for e in entry] == [(1, "import")]


def test_import_refuses_clashes_and_bad_files(start_server, tmp_path, make_db):
    server = start_server()
    texts = asyncio.run(make_documents(server.ws_url, random_edits=20))
    out = tmp_path / "export"
    ok(collab("export", out, "--db", server.db))
    before = asyncio.run(read_all(server.db))

    (out / "bad name.txt").write_text("spaces are not allowed in names")
    (out / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (out / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")
    (out / "README.md").write_text("not a document")
    result = collab("import", out, "--db", server.db)  # into the live database
    assert result.returncode == 1, result
    for name in texts:
        assert f"{name}.txt: a document named {name!r} exists already" in result.stderr
    assert "'bad name' is not a document name" in result.stderr
    assert "latin1.txt: not UTF-8" in result.stderr
    assert "skipped README.md" in result.stderr
    assert "imported 1 document from" in result.stdout and "refused 7" in result.stdout

    after = asyncio.run(read_all(server.db))
    assert after.pop("crlf") == (1, "one\ntwo\nthree\n")
    assert after == before, "clashing documents were left exactly as they were"
    assert get_json(f"{server.url}/api/docs/crlf")["doc"] == "one\ntwo\nthree\n"

    nope = make_db("nope", exists=False)
    missing = collab("export", tmp_path / "x", "--db", nope)
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not database_exists(nope)


# --------------------------------------------------------------------- backup

LOAD_MS = 7000


def test_backup_during_continuous_edits_is_consistent(start_server, node, tmp_path):
    server = start_server()
    texts = asyncio.run(make_documents(server.ws_url, random_edits=30))
    record = tmp_path / "acked.json"
    load = subprocess.Popen(
        [node, "client.mjs", "fuzz", "--url", server.ws_url, "--doc", "busy", "--clients", "3",
         "--duration", str(LOAD_MS), "--seed", "11", "--delay", "0", "--reconnects", "0",
         "--interval", "15,30", "--settle", "20000", "--record-out", str(record)],
        cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    backups = []
    try:
        time.sleep(1.0)
        for k in range(3):
            path = tmp_path / f"backup-{k}.db"
            assert "integrity ok" in ok(collab("backup", path, "--db", server.db))
            backups.append(path)
            time.sleep(0.5)
        out, err = load.communicate(timeout=LOAD_MS / 1000 + 30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err[-3000:]
    r = json.loads(out)
    problems = [c["violations"][:3] + c["errors"][:3] for c in r["clients"]]
    assert r["ok"] and not r["conflicts"], (r["versions"], r["server"], problems)
    final = get_json(f"{server.url}/api/docs/busy")
    acked = {int(v): u for v, u in json.loads(record.read_text()).items()}
    assert set(acked) == set(range(1, final["version"] + 1))

    seen_versions = []
    for path in backups:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",), "a self-contained file"
        (version,) = conn.execute("SELECT version FROM documents WHERE name = 'busy'").fetchone()
        rows = conn.execute("SELECT version, client_id, changes FROM updates WHERE doc_id = "
                            "(SELECT id FROM documents WHERE name = 'busy') ORDER BY version").fetchall()
        conn.close()
        # The copy holds exactly the acknowledged updates 1..version: one moment of the server's history.
        assert [v for v, _, _ in rows] == list(range(1, version + 1)), path
        for v, client_id, changes in rows:
            assert {"clientID": client_id, "changes": json.loads(changes)} == acked[v], (path, v)
        text16 = b""
        for v in range(1, version + 1):
            text16 = apply_changes(text16, acked[v]["changes"])
        copied = asyncio.run(read_all(path))
        assert copied["busy"] == (version, text16.decode("utf-16-le")), path
        assert {n: t for n, (_, t) in copied.items() if n != "busy"} == texts
        seen_versions.append(version)
    assert 0 < seen_versions[0] <= seen_versions[1] <= seen_versions[2] <= final["version"], seen_versions
    assert seen_versions[0] < final["version"], \
        f"the first backup was taken while the edits went on: {seen_versions} < {final['version']}"

    refused = collab("backup", backups[0], "--db", server.db)
    assert refused.returncode == 1 and "pass --force" in refused.stderr
    ok(collab("backup", backups[0], "--db", server.db, "--force"))
    assert asyncio.run(read_all(backups[0]))["busy"] == (final["version"], final["doc"])


# -------------------------------------------------------------------- compact

def _on_store(db: str, fn):
    """fn(store) on a store opened on `db` for it."""
    async def run():
        store = await store_at(db).open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def snapshot_versions(db, doc: str) -> list[int]:
    """The versions `doc` has snapshots of, read through the storage interface (either backend)."""
    async def read(store) -> list[int]:
        async with store.view() as view:
            doc_id = next(d["id"] for d in await view.documents() if d["name"] == doc)
            return [row[0] for row in await view.rows(doc_id, "snapshots", -1, 100000)]

    return _on_store(db, read)


def get_status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def version_text(server: ServerProcess, doc: str, v: int) -> tuple[int, dict]:
    status, body = get_status(f"{server.url}/api/docs/{doc}/versions/{v}")
    return status, json.loads(body)


async def scribble(ws_url: str, doc: str, edits: int, seed: int, texts: dict[int, str]) -> None:
    rnd = random.Random(seed)
    async with aiohttp.ClientSession() as http:
        s = await Scribe.join(http, ws_url, doc, f"scribe-{seed}")
        assert s.text == texts.get(s.version, ""), "resumed where the last run ended"
        for _ in range(edits):
            await s.edit(s.random_edit(rnd))
        texts.update(s.texts)
        await s.ws.close()


async def welcome_for(ws_url: str, doc: str, version: int) -> tuple[dict, dict | None]:
    """The welcome for a hello resuming at `version`, and the reply to a push based on it."""
    async with aiohttp.ClientSession() as http:
        s = await Scribe.join(http, ws_url, doc, "old-laptop", version=version)
        await s.ws.send_json({"type": "push", "version": version,
                              "updates": [{"clientID": "old-laptop", "changes": [[0, "x"], 1]}]})
        reply = await Scribe._next(s.ws, "error")
        await s.ws.close()
    return s.texts, reply


def test_compact_keeps_current_text_boundary_and_snapshots(start_server, tmp_path):
    # Snapshots come when the update bytes since the last one reach --snapshot-min-bytes (ratio 0):
    # a one-character update is about 15 bytes of JSON, so every few dozen updates.
    server = start_server("--snapshot-ratio", "0", "--snapshot-min-bytes", "600")
    texts: dict[int, str] = {}
    asyncio.run(scribble(server.ws_url, "doc", 300, 1, texts))
    asyncio.run(scribble(server.ws_url, "small", 20, 2, {}))
    snaps = snapshot_versions(server.db, "doc")
    assert len(snaps) >= 5 and snaps == sorted(set(snaps)) and snaps[-1] < 300, snaps
    below = lambda boundary, versions: [v for v in versions if v < boundary]  # noqa: E731

    assert "nothing to do" in ok(collab("compact", "--db", server.db))  # keep-history 0 keeps all
    out = ok(collab("compact", "--db", server.db, "--keep-history", "75"))  # online: the server runs
    assert "doc: dropped 225 updates up to version 225, snapshot kept at 225" in out, out
    assert "small:" not in out, "a document with fewer updates than the window is left alone"
    assert snapshot_versions(server.db, "doc") == sorted(snaps + [225])

    def check(boundary: int, latest: int, readable_below: list[int]) -> None:
        assert get_json(f"{server.url}/api/docs/doc") == {"name": "doc", "version": latest, "doc": texts[latest]}
        for v in readable_below + list(range(boundary, latest + 1)):
            assert version_text(server, "doc", v) == (200, {"version": v, "doc": texts[v]}), v
        hist = get_json(f"{server.url}/api/docs/doc/history?limit=1000")["entries"]
        assert [e["version"] for e in hist] == list(range(latest, boundary, -1))
        for v in (boundary, latest):
            spans = get_json(f"{server.url}/api/docs/doc/authors?version={v}")["spans"]
            assert spans[-1]["to"] == utf16_len(texts[v]) and spans[0]["from"] == 0

    check(225, 300, below(225, snaps))
    gap = next(v for v in range(1, 225) if v not in snaps)
    assert version_text(server, "doc", gap)[0] != 200, "compacted away (the exact answer: the test below)"
    assert ok(collab("compact", "--db", server.db, "--keep-history", "75")).endswith(
        "compacted 0 documents, 0 updates dropped, keeping 75 per document\n"), "a second run finds nothing"

    # The server restarts from the compacted database and goes on; a second compaction moves the boundary.
    server.kill()
    server.start()
    check(225, 300, below(225, snaps))
    welcome, reply = asyncio.run(welcome_for(server.ws_url, "doc", 10))
    assert welcome == {300: texts[300]}, "a resume from a compacted version gets the full text"
    assert reply["code"] == "bad-version" and "compacted" in reply["message"], reply
    asyncio.run(scribble(server.ws_url, "doc", 60, 3, texts))
    out = ok(collab("compact", "--db", server.db, "--keep-history", "75"))
    assert "doc: dropped 60 updates up to version 285" in out, out
    check(285, 360, below(285, snapshot_versions(server.db, "doc")))
    assert server.proc.poll() is None


def test_compact_in_small_chunks_is_the_same(start_server, monkeypatch, capsys):
    """The deletes go in transactions of COMPACT_CHUNK rows; the outcome does not depend on it."""
    from collab import admin
    from collab.settings import Settings
    server = start_server("--snapshot-every", "1000")
    texts: dict[int, str] = {}
    asyncio.run(scribble(server.ws_url, "doc", 100, 5, texts))
    monkeypatch.setattr(type(store_at(server.db)), "COMPACT_CHUNK", 7)
    assert admin.compact(Settings(db=str(server.db), keep_history=30)) == 0
    assert "doc: dropped 70 updates up to version 70" in capsys.readouterr().out
    assert snapshot_versions(server.db, "doc") == [70]
    for v in range(70, 101):
        assert version_text(server, "doc", v) == (200, {"version": v, "doc": texts[v]})
    assert version_text(server, "doc", 69)[0] != 200


def test_compacted_version_is_a_clear_not_found(start_server):
    """A version whose rows were compacted away (and that has no snapshot) answers 404 not-found,
    naming the nearest versions that can still be read."""
    server = start_server("--snapshot-ratio", "0", "--snapshot-min-bytes", "200")
    texts: dict[int, str] = {}
    asyncio.run(scribble(server.ws_url, "doc", 70, 4, texts))
    snaps = [v for v in snapshot_versions(server.db, "doc") if v < 45]
    assert len(snaps) >= 2, snaps
    ok(collab("compact", "--db", server.db, "--keep-history", "25"))  # boundary 45
    for v in (*snaps, 45, 46, 70):
        assert version_text(server, "doc", v) == (200, {"version": v, "doc": texts[v]})
    lo, hi = next((a, b) for a, b in zip(snaps, snaps[1:]) if b - a > 1)
    gone = lo + 1
    status, body = version_text(server, "doc", gone)
    assert status == 404, (status, body)
    assert body["error"]["code"] == "not-found"
    assert body["error"]["message"] == f"version {gone} was compacted away; the nearest readable versions are {lo} and {hi}"
    for path in (f"export?version={gone}", f"authors?version={gone}"):  # every route reading old versions says the same
        status, _ = get_status(f"{server.url}/api/docs/doc/{path}")
        assert status == 404, path
    naming = urllib.request.Request(f"{server.url}/api/docs/doc/checkpoints", method="POST",
                                    data=json.dumps({"version": gone, "name": "too late"}).encode(),
                                    headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(naming, timeout=10)
        raise AssertionError("a compacted version was named")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and json.loads(exc.read())["error"]["message"] == body["error"]["message"]


@pytest.mark.parametrize("failure", ["no worker", "database busy"])
def test_compact_stops_and_drops_nothing_when_authorship_fails_for_now(db, monkeypatch, failure):
    """Was: any failure to compute the authorship at the boundary let compaction go on without it, so a
    passing one (no worker process could start, the database unusable for a moment) lost the
    document's authors view for good. Now the command stops, drops nothing, and says to run it again."""
    from collab import admin, compute
    from collab.settings import Settings
    from collab.storage import StorageUnavailable

    (doc_id,), backend_class = _filled(db)

    async def fails(self, doc, version):
        if failure == "no worker":
            raise compute.NoWorker("the authorship could not start a worker process (Too many open files)")
        raise StorageUnavailable("the database cannot be used right now (reading): database is locked")

    monkeypatch.setattr(backend_class, "authorship", fails)
    with pytest.raises(admin.AdminError, match="nothing of it was compacted, run the command again later"):
        admin.compact(Settings(db=db, keep_history=10))
    assert _oldest(db, doc_id) == 1, "no update row was dropped"


def _filled(db: str, names=("doc",), edits: int = 40):
    """Documents `names` with `edits` updates each; returns their ids and the store's class."""
    from storeutil import commit, random_edits

    async def fill():
        store = await store_at(db).open()
        ids = []
        for name in names:
            ids.append(await store.create_document(name))
            for entry, text in random_edits(edits, seed=2):
                await commit(store, ids[-1], [entry], utf16_len(text))
        await store.close()
        return ids, type(store)

    return asyncio.run(fill())


def _oldest(db: str, doc_id: int):
    return _on_store(db, lambda store: store.oldest_update(doc_id))


def test_compact_keeps_a_document_whose_authorship_is_over_the_time_budget(db, monkeypatch, capsys):
    """Was: authorship over --history-timeout (compute.Overrun, a CollabError) was taken for history that
    cannot be had: the rows went without it and the document's authors view was lost for good, when a
    larger budget would have kept it. compact also ignored --history-timeout (15 s whatever was given)."""
    from collab import admin, compute
    from collab.settings import Settings

    (doc_id, other_id), backend_class = _filled(db, ("doc", "other"))
    real, budgets = backend_class.authorship, []

    async def slow_for_doc(self, doc, version):
        budgets.append(compute.AUTHORS_TIMEOUT)
        if doc == doc_id:
            raise compute.Overrun("who wrote what took longer than 7s")
        return await real(self, doc, version)

    monkeypatch.setattr(backend_class, "authorship", slow_for_doc)
    assert admin.compact(Settings(db=db, keep_history=10, history_timeout=7.0)) == 1
    out = capsys.readouterr().out
    assert "doc: left as it was: who wrote what took longer to rebuild than --history-timeout allows" in out
    assert budgets == [7.0, 7.0]
    assert _oldest(db, doc_id) == 1, "no update row of it was dropped"
    assert _oldest(db, other_id) == 31, "the other document was compacted"


def test_compact_keeps_every_named_version_readable_and_a_compacted_one_cannot_be_named(db, capsys):
    """Was: compaction kept only its boundary and the snapshots already there, so a named version below
    the boundary (a checkpoint someone made to come back to) could no longer be opened, restored or
    shown with its authors; and a version already compacted away could still be named."""
    from collab import admin
    from collab.settings import Settings
    from collab.storage import VersionCompacted

    (doc_id,), _ = _filled(db)  # 40 updates; keep 10: boundary 30
    named = (3, 12, 29, 35)

    async def name_and_read(store):
        for v in named:
            await store.set_checkpoint(doc_id, v, f"v{v}", "ann")
        return ({v: await store.text_at(doc_id, v) for v in range(41)},
                {v: (await store.authorship(doc_id, v)).to_list() for v in named})

    texts, authors = _on_store(db, name_and_read)
    assert admin.compact(Settings(db=db, keep_history=10)) == 0
    out = capsys.readouterr().out
    assert "doc: dropped 30 updates up to version 30, snapshot kept at 30 and at the 3 named versions below it" \
        in out, out

    async def after(store):
        for v in (*named, *range(30, 41)):
            assert await store.text_at(doc_id, v) == texts[v], v
        for v in named:
            assert (await store.authorship(doc_id, v)).to_list() == authors[v], v
        with pytest.raises(VersionCompacted, match="version 13 was compacted away; the nearest readable "
                                                   "versions are 12 and 29"):
            await store.text_at(doc_id, 13)
        with pytest.raises(VersionCompacted, match="version 13 was compacted away"):
            await store.set_checkpoint(doc_id, 13, "too late", "ann")
        await store.set_checkpoint(doc_id, 12, "renamed", "bob")  # renaming a named version always works
        await store.set_checkpoint(doc_id, 31, "fine", "bob")  # above the boundary: readable
        return [(c["version"], c["name"]) for c in await store.checkpoints(doc_id)]

    assert _on_store(db, after) == [(3, "v3"), (12, "renamed"), (29, "v29"), (31, "fine"), (35, "v35")]


def test_a_version_named_while_compact_runs_stops_the_deletes_before_its_rows(db, monkeypatch, capsys):
    """A version named after compact read the checkpoints (the server runs) has no snapshot of its own:
    the deletes stop before the first row it needs (here the first: no snapshot is below it), say so,
    exit 1, and the next run keeps it."""
    from collab import admin
    from collab.settings import Settings

    (doc_id,), backend_class = _filled(db)

    async def name_and_read(store):
        texts = {v: await store.text_at(doc_id, v) for v in range(41)}
        await store.set_checkpoint(doc_id, 12, "named meanwhile", "ann")
        return texts

    texts = _on_store(db, name_and_read)
    real = backend_class.checkpoints
    monkeypatch.setattr(backend_class, "checkpoints", lambda self, doc: asyncio.sleep(0, []))  # read before it
    assert admin.compact(Settings(db=db, keep_history=10)) == 1
    out = capsys.readouterr().out
    assert ("doc: left partly compacted: version 12 was named while the document was compacted; "
            "0 update rows were dropped before it, the rest are kept: run the command again") in out, out
    assert out.endswith("1 partly compacted (above)\n"), out
    assert _oldest(db, doc_id) == 1, "it needs every row from 1 (it has no snapshot below it)"
    assert _on_store(db, lambda store: store.text_at(doc_id, 12)) == texts[12]

    monkeypatch.setattr(backend_class, "checkpoints", real)
    assert admin.compact(Settings(db=db, keep_history=10)) == 0
    assert "doc: dropped 30 updates up to version 30, snapshot kept at 30 and at the 1 named versions below it" \
        in capsys.readouterr().out
    assert _oldest(db, doc_id) == 31
    for v in (12, 30, 40):
        assert _on_store(db, lambda store, v=v: store.text_at(doc_id, v)) == texts[v]


def test_compact_after_a_run_that_stopped_part_way(db, capsys):
    """A run that stopped part way (before this version of collab: deletes interrupted, a version named
    that compaction had already made unreadable) left a document whose rows from 1 are gone, a snapshot
    at its boundary, and a named version nobody can read. A reviewer's repros: that named version
    stopped every later run (exit 1, "run the command again", forever), and a later boundary inside
    the gone rows crashed the command with a traceback."""
    from collab import admin
    from collab.settings import Settings
    from collab.storage import VersionCompacted

    (doc_id,), _ = _filled(db)  # 40 updates

    async def stopped_part_way(store):
        texts = {v: await store.text_at(doc_id, v) for v in range(41)}
        await store.write_snapshot(doc_id, 20, texts[20])  # the stopped run's boundary
        await store.set_checkpoint(doc_id, 15, "named back then", "ann")
        await store._write(lambda conn: conn.execute(f"DELETE FROM updates WHERE doc_id = {doc_id} AND version <= 10"),
                           **({"doc_ids": (doc_id,)} if "://" in db else {}))
        with pytest.raises(VersionCompacted):
            await store.text_at(doc_id, 15)
        return texts

    texts = _on_store(db, stopped_part_way)
    assert admin.compact(Settings(db=db, keep_history=25)) == 1  # boundary 15: inside what is gone
    out = capsys.readouterr().out
    assert ("doc: left as it was: version 15 cannot be read any more (version 15 was compacted away; the "
            "nearest readable versions are 0 and 20): an earlier run stopped part way; finish it with "
            "--keep-history 20 or less (a snapshot is at version 20)") in out, out
    assert _oldest(db, doc_id) == 11

    assert admin.compact(Settings(db=db, keep_history=10)) == 0  # boundary 30: past the unreadable name
    assert "doc: dropped 20 updates up to version 30, snapshot kept at 30" in capsys.readouterr().out
    assert _oldest(db, doc_id) == 31
    for v in (20, 30, 40):
        assert _on_store(db, lambda store, v=v: store.text_at(doc_id, v)) == texts[v]


@pytest.mark.parametrize("change", ["rename", "delete", "delete-before-read"])
def test_compact_leaves_a_document_renamed_or_deleted_meanwhile_and_goes_on(db, monkeypatch, capsys, change):
    """Was: a document renamed after compact listed the documents, or deleted while compact worked on it,
    stopped the whole command with a traceback (a TypeError on the missing row, a foreign-key failure
    writing the boundary's snapshot), the other documents left uncompacted. Deleted before its boundary
    was read, it was said to be unreadable from an earlier run that stopped part way (exit status 1)."""
    from collab import admin
    from collab.settings import Settings

    (a_id, b_id), backend_class = _filled(db, ("a", "b"))
    real_list, real_text_at = backend_class.list_documents, backend_class.text_at

    async def listed_then_renamed(self):
        listed = await real_list(self)
        await self.rename_document(a_id, "a2")
        return listed

    async def deleted_meanwhile(self, doc, version):
        text = await real_text_at(self, doc, version)
        if doc == a_id:
            await self.delete_document(a_id)
        return text

    async def deleted_before_read(self, doc, version):
        if doc == a_id:
            await self.delete_document(a_id)
        return await real_text_at(self, doc, version)

    if change == "rename":
        monkeypatch.setattr(backend_class, "list_documents", listed_then_renamed)
    else:
        monkeypatch.setattr(backend_class, "text_at", deleted_meanwhile if change == "delete" else deleted_before_read)
    assert admin.compact(Settings(db=db, keep_history=10)) == 0
    out = capsys.readouterr().out
    assert _oldest(db, b_id) == 31, "the next document was compacted"
    if change == "rename":
        assert _oldest(db, a_id) == 1 and "a:" not in out  # the next run compacts it as a2
    else:
        assert "a: left as it was: deleted or renamed while it was compacted" in out


@pytest.mark.parametrize("change", ["rename", "delete"])
def test_export_leaves_out_a_document_renamed_or_deleted_meanwhile_and_goes_on(db, monkeypatch, capsys, tmp_path,
                                                                              change):
    """Was: a document renamed or deleted after export listed the documents stopped the whole export with
    a TypeError traceback, the other documents not written."""
    from collab import admin
    from collab.settings import Settings

    (a_id, _), backend_class = _filled(db, ("a", "b"), edits=5)
    real_list = backend_class.list_documents

    async def listed_then_changed(self):
        listed = await real_list(self)
        if change == "rename":
            await self.rename_document(a_id, "a2")
        else:
            await self.delete_document(a_id)
        return listed

    monkeypatch.setattr(backend_class, "list_documents", listed_then_changed)
    assert admin.export(Settings(db=db), str(tmp_path / "out")) == 0
    captured = capsys.readouterr()
    assert "left out a: renamed or deleted while the export ran" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.txt"]
