"""Handing a store commits the way a room does (storage.CommitSource), for the storage tests; raw SQL for setups."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from urllib.parse import urlsplit

from collab.changes import ChangeSet, utf16_len
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.storage import Commit


class OneCommit:
    """A CommitSource with one commit to give; `await source.done` returns once it committed (or raises)."""

    def __init__(self, commit: Commit):
        self.commit = commit
        self.done = asyncio.get_running_loop().create_future()

    def take_commit(self) -> Commit | None:
        commit, self.commit = self.commit, None
        return commit

    def commit_done(self, commit: Commit, error: BaseException | None) -> None:
        if error is None:
            self.done.set_result(commit.version)
        else:
            self.done.set_exception(error)


async def commit(store, doc_id: int, entries, length: int, snapshot=None) -> int:
    """Make `entries` durable through `store.schedule`, as a room would; returns the new version."""
    source = OneCommit(Commit(doc_id, entries[0].version - 1, list(entries), length, snapshot))
    store.schedule(source)
    return await source.done


def raw_sql(db: str, statement: str, pg=None) -> str:
    """Run one statement on `db` behind the store's back (to plant a problem); `pg` is the PgServer of a URL."""
    if "://" in db:
        return pg.sql(statement, db=urlsplit(db).path.lstrip("/"))
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(statement).fetchall()
        conn.commit()
        return "\n".join("|".join(map(str, r)) for r in rows)
    finally:
        conn.close()


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


def hold_loads(monkeypatch, store) -> tuple[asyncio.Event, asyncio.Event]:
    """`store.load` reads the document, then waits: (read, go_on); `read` is set once it has read (the row
    as it was then), and it returns once the test sets `go_on`."""
    real_load, read, go_on = store.load, asyncio.Event(), asyncio.Event()

    async def held_load(name):
        loaded = await real_load(name)
        read.set()
        await go_on.wait()
        return loaded

    monkeypatch.setattr(store, "load", held_load)
    return read, go_on
