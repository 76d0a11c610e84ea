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
from collab.storage import store_at
from conftest import BOTH_BACKENDS
from storeutil import commit

pytestmark = BOTH_BACKENDS


def _on_store(db: str, fn):
    """fn(store) on a store opened on `db` for it."""
    async def run():
        store = await store_at(db).open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


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
