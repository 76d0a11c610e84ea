"""History, named versions, restore, authorship and compaction, as a user meets them: found by an audit.

Each test is a bug that was there: what a user saw is in its docstring. Every
test runs on SQLite and on a real PostgreSQL (conftest.BOTH_BACKENDS).
"""

from __future__ import annotations

import asyncio

from collab import admin, compute
from collab.changes import ChangeSet
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.settings import Settings
from conftest import BOTH_BACKENDS
from storeutil import commit
from test_admin import _on_store

pytestmark = BOTH_BACKENDS


def _typed(db: str, authors: list[str], name: str = "doc") -> int:
    """A document typed one "x" at a time at its end, update k by authors[k - 1]; returns its id."""
    async def fill(store):
        doc_id = await store.create_document(name)
        for v, who in enumerate(authors, 1):
            changes = ChangeSet.from_json(([v - 1] if v > 1 else []) + [[0, "x"]])
            await commit(store, doc_id, [Accepted(v, Update(f"c-{who}", changes), who, 1000.0 + v)], v)
        return doc_id

    return _on_store(db, fill)


def test_compact_keeps_the_authorship_of_a_document_over_the_answer_limit(db, monkeypatch, capsys):
    """Was: `collab compact` asked for the authorship at its boundary under --authors-max-runs, the limit
    of one /authors answer; a document with more runs was compacted without it ("authorship could not
    be rebuilt"), so its authors view answered 404 at every version from then on, the current one
    included, and raising --authors-max-runs could never bring it back. compact answers nobody: it
    stores the spans whatever their count."""
    doc_id = _typed(db, ["Ann" if v % 2 else "Bob" for v in range(1, 41)])  # 40 runs
    assert admin.compact(Settings(db=db, keep_history=10, authors_max_runs=5)) == 0
    out = capsys.readouterr().out
    assert "doc: dropped 30 updates up to version 30, snapshot kept at 30\n" in out, out
    monkeypatch.setattr(compute, "AUTHORS_MAX_RUNS", 1000)  # a server with a larger limit answers

    async def authors(store):
        return {v: (await store.authorship(doc_id, v)).to_list() for v in (30, 35, 40)}

    assert _on_store(db, authors) == {v: [[1, "Ann" if k % 2 else "Bob"] for k in range(1, v + 1)]
                                      for v in (30, 35, 40)}


def _worker_size() -> int:
    """Bytes of address space an idle history worker takes (what --history-memory must leave room for)."""
    pool = compute.Pool(1, 0)
    try:
        asyncio.run(pool.run(sum, [1], timeout=20))
        with open(f"/proc/{pool._idle[0].proc.pid}/status") as f:
            return int(f.read().split("VmSize:")[1].split()[0]) << 10
    finally:
        pool.close()


def test_compact_keeps_the_history_of_a_document_whose_authorship_needs_more_memory(db, monkeypatch, capsys):
    """Was: authorship over the workers' memory (--history-memory: 413 too-large) was taken for
    authorship that cannot be had: the rows were dropped without it, and the document's authors view
    answered 404 at every version from then on, when a larger budget would have kept it. Now the
    document is left as it was, and the message says what to run (as for --history-timeout)."""
    big = 100_000  # each update inserts this many units: a chunk of rows (2 MB) does not fit the budget
    doc_id = _on_store(db, lambda store: _big_updates(store, 30, big))
    small = Settings(db=db, keep_history=10, history_memory=_worker_size() + (1 << 20))
    for inline, said in ((True, "who wrote what"), (False, "its text")):
        # The text at the boundary (2 MB) is rebuilt in a worker too (compute.text_at): first in a thread.
        monkeypatch.setattr(compute, "REBUILD_INLINE_TEXT", 1 << 30 if inline else 256 << 10)
        monkeypatch.setattr(compute, "REBUILD_INLINE_CHANGES", 1 << 30 if inline else 8 << 10)
        monkeypatch.setattr(compute, "_pool", None)  # a pool of this budget (compact makes it)
        try:
            assert admin.compact(small) == 1
        finally:
            compute._pool.close()
        out = capsys.readouterr().out
        assert f"doc: left as it was: {said} needs more memory to rebuild than --history-memory allows" in out
        assert _on_store(db, lambda store: store.oldest_update(doc_id)) == 1, "no update row was dropped"

    monkeypatch.setattr(compute, "_pool", None)
    try:
        assert admin.compact(Settings(db=db, keep_history=10)) == 0  # the default budget: compacted, kept
    finally:
        compute._pool.close()
    assert "doc: dropped 20 updates up to version 20, snapshot kept at 20\n" in capsys.readouterr().out
    runs = _on_store(db, lambda store: store.authorship(doc_id, 30))
    assert runs.to_list() == [[big, "Ann" if v % 2 else "Bob"] for v in range(1, 31)]


async def _big_updates(store, n: int, size: int) -> int:
    doc_id = await store.create_document("doc")
    for v in range(1, n + 1):
        changes = ChangeSet.from_json(([(v - 1) * size] if v > 1 else []) + [[0, "x" * size]])
        await commit(store, doc_id, [Accepted(v, Update("c", changes), "Ann" if v % 2 else "Bob", 1000.0 + v)],
                     v * size)
    return doc_id
