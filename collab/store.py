"""Store: every SQL statement of collab, the migrations runner and the one writer.

Rules that always hold:
  * one writer connection, and every write goes through its queue
    (`_write`); whatever is queued while a transaction runs is committed
    together in the next one (group commit, across documents). A caller's
    `await` returns only after COMMIT returned, so the sequencer can ack;
  * a document's `documents.version` and its update rows change in the same
    transaction, so the log is contiguous from the first kept version;
  * reads use a second connection; in WAL mode they never block the writer
    and never see a half-written batch;
  * snapshots (the full text at some version) are written at least every
    `snapshot_every` updates and when a document unloads, so any version is
    one snapshot plus at most `snapshot_every` updates away.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import aiosqlite
import orjson

from . import resources

from .changes import ChangeSet
from .history import Authorship
from .rebase import Update
from .sequencer import Accepted
from .text import Text

_MIGRATION_NAME = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


# ------------------------------------------------------------------ migrations

def migration_files(directory: Path | None = None) -> list[tuple[int, Path]]:
    directory = resources.migrations_dir() if directory is None else directory
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise RuntimeError(f"migration file {path.name!r} is not named NNN_name.sql")
        found.append((int(m.group(1)), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 001, 002, ... without gaps; found {numbers}")
    return found


def apply_migrations(conn: sqlite3.Connection, directory: Path | None = None) -> list[str]:
    """Apply the migrations not yet recorded in `schema_version`, each in its own transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                 "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    applied = []
    for number, path in migration_files(directory):
        if number in done:
            continue
        sql = path.read_text()
        # executescript commits first, so BEGIN/COMMIT make script + record atomic;
        # a failing statement leaves the transaction open, so roll it back.
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\n;INSERT INTO schema_version(version, name, applied) "
                f"VALUES ({number}, '{path.name}', {time.time()});\nCOMMIT;")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(path.name)
    return applied


def connect_sync(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    _pragmas(conn, synchronous)
    return conn


def _pragmas(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")


class VersionCompacted(LookupError):
    """The update rows needed to rebuild `version` were compacted away (and no snapshot is there)."""

    def __init__(self, version: int, below: int | None, above: int | None):
        near = " and ".join(str(v) for v in (below, above) if v is not None)
        super().__init__(f"version {version} was compacted away"
                         + (f"; the nearest readable versions are {near}" if near else ""))
        self.version, self.below, self.above = version, below, above


def _compacted(conn: sqlite3.Connection, doc_id: int, version: int, below: int | None) -> VersionCompacted:
    row = conn.execute("SELECT MIN(version) FROM snapshots WHERE doc_id = ? AND version > ?",
                       (doc_id, version)).fetchone()
    return VersionCompacted(version, below, row[0] if row else None)


# ---------------------------------------------------------------- data shapes

@dataclass(slots=True)
class Loaded:
    """A document as read from disk: enough to start its sequencer."""

    doc_id: int
    name: str
    version: int
    text: str
    log: list[Update]          # the last updates, ending at `version`
    snapshot_version: int      # newest snapshot at or below `version`
    salt: str = ""             # signs this document's share links


_INSERT_UPDATE = ("INSERT INTO updates(doc_id, version, client_id, author, time, changes, inserted, deleted, "
                  "restored_from) VALUES (?,?,?,?,?,?,?,?,?)")


def _update_row(doc_id: int, entry: Accepted) -> tuple:
    changes = entry.update.changes
    inserted, deleted = changes.counts()
    return (doc_id, entry.version, entry.update.client_id, entry.author, entry.time,
            entry.changes_json.decode(), inserted, deleted, entry.restored_from)


def _parse_update(client_id: str, changes: str) -> Update:
    return Update(client_id, ChangeSet.from_json(orjson.loads(changes)))


class Store:
    def __init__(self, path: str | Path, synchronous: str = "FULL", snapshot_every: int = 1000,
                 keep: int = 2000):
        self.path = str(path)
        self.synchronous = synchronous
        self.snapshot_every = snapshot_every
        self.keep = keep
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._queue: list[tuple[Callable[[sqlite3.Connection], object], asyncio.Future]] = []
        self._sources: dict[int, CommitSource] = {}
        self._writer: asyncio.Task | None = None
        self.commits = 0  # transactions committed (for metrics and tests)

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> "Store":
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._w = await aiosqlite.connect(self.path, isolation_level=None)
        await self._w._execute(_pragmas, self._w._conn, self.synchronous)
        await self._w._execute(apply_migrations, self._w._conn)
        self._r = await aiosqlite.connect(self.path, isolation_level=None)
        await self._r._execute(_pragmas, self._r._conn, self.synchronous)
        return self

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        for conn in (self._r, self._w):
            if conn is not None:
                await conn.close()
        self._r = self._w = None

    # --------------------------------------------------------------- writer

    async def _write(self, fn: Callable[[sqlite3.Connection], object]):
        """Run `fn(conn)` inside the next group transaction; return after COMMIT."""
        if self._w is None:
            raise RuntimeError("store is closed")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))
        self._wake_writer()
        return await fut

    def schedule(self, source: "CommitSource") -> None:
        """`source` has updates to make durable: the next transaction takes them from it.

        Pull, not push: the writer asks each waiting source for everything it
        has at the moment a transaction starts, so updates that arrive while
        one commits all go into the next (group commit), and the source hears
        back in the same loop iteration that the commit finished.
        """
        if self._w is None:
            source.commit_done(None, RuntimeError("store is closed"))
            return
        self._sources[id(source)] = source
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        while self._queue or self._sources:
            batch, self._queue = self._queue, []
            sources, self._sources = list(self._sources.values()), {}
            taken = []
            for source in sources:
                work = source.take_commit()
                if work is not None:
                    taken.append((source, work))
            fns = [fn for fn, _ in batch] + [fn for _, (fn, _) in taken]
            if not fns:
                continue
            try:
                results = await self._w._execute(self._transaction, self._w._conn, fns)
            except Exception as exc:  # the whole group failed; every caller learns it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                for source, (_, token) in taken:
                    source.commit_done(token, exc)
                continue
            self.commits += 1
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
            for source, (_, token) in taken:
                source.commit_done(token, None)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fns: list) -> list:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [fn(conn) for fn in fns]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    # ---------------------------------------------------------------- writes

    async def create_document(self, name: str, text: str = "", author: str = "", client_id: str = "") -> int:
        """Make a document (idempotent); with `text`, it starts with one update inserting it."""
        now = time.time()
        salt = secrets.token_urlsafe(12)

        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT id FROM documents WHERE name = ?", (name,)).fetchone()
            if row:
                return row[0]
            cur = conn.execute("INSERT INTO documents(name, version, length, created, updated, salt) "
                               "VALUES (?, 0, 0, ?, ?, ?)", (name, now, now, salt))
            doc_id = cur.lastrowid
            if text:
                changes = ChangeSet.from_json([[0, *text.split("\n")]])
                entry = Accepted(1, Update(client_id, changes), author, now)
                conn.execute(_INSERT_UPDATE, _update_row(doc_id, entry))
                conn.execute("UPDATE documents SET version = 1, length = ? WHERE id = ?",
                             (changes.new_length, doc_id))
            return doc_id

        return await self._write(fn)

    async def append(self, doc_id: int, entries: list[Accepted], length: int,
                     snapshot: tuple[int, str] | None = None) -> None:
        """Make `entries` durable (one row per version) and move the document's head."""
        await self._write(append_fn(doc_id, entries, length, snapshot))

    async def new_salt(self, doc_id: int) -> str:
        """Give the document a new salt: every share link made before stops working."""
        salt = secrets.token_urlsafe(12)
        await self._write(lambda conn: conn.execute("UPDATE documents SET salt = ? WHERE id = ?", (salt, doc_id)))
        return salt

    async def delete_document(self, doc_id: int) -> None:
        """Remove a document with its whole history."""
        def fn(conn: sqlite3.Connection) -> None:
            for table in ("updates", "snapshots", "authorship"):
                conn.execute(f"DELETE FROM {table} WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

        await self._write(fn)

    async def ping(self) -> None:
        """Prove the database can take a write transaction right now."""
        await self._write(lambda conn: None)

    async def write_snapshot(self, doc_id: int, version: int, text: str) -> None:
        await self._write(lambda conn: _insert_snapshot(conn, doc_id, version, text))

    # ----------------------------------------------------------------- reads

    async def _read(self, fn):
        return await self._r._execute(fn, self._r._conn)

    async def load(self, name: str) -> Loaded | None:
        """The document's head text and its last `keep` updates; None if it does not exist."""
        keep = self.keep

        def fn(conn: sqlite3.Connection) -> Loaded | None:
            row = conn.execute("SELECT id, version, salt FROM documents WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            doc_id, version, salt = row
            snap_version, text = _snapshot_at(conn, doc_id, version)
            start = min(snap_version, max(0, version - keep))
            rows = _update_rows(conn, doc_id, start, version)
            log = _contiguous_tail(rows, version)
            log_from = version - len(log)
            if log_from > snap_version:
                raise RuntimeError(f"document {name!r}: updates {snap_version + 1}..{log_from} are missing")
            doc = Text(text)
            for u in log[snap_version - log_from:]:
                doc.apply(u.changes)
            return Loaded(doc_id, name, version, str(doc), log[-keep:] if keep else [], snap_version, salt)

        return await self._read(fn)

    async def updates(self, doc_id: int, since: int, until: int) -> list[Update]:
        """Updates producing versions since+1 .. until (fewer if history was compacted away)."""
        def fn(conn: sqlite3.Connection) -> list[Update]:
            rows = _update_rows(conn, doc_id, since, until)
            if not rows or rows[0][0] != since + 1:
                return []
            return [_parse_update(c, ch) for _, c, ch in rows]

        return await self._read(fn)

    async def list_documents(self) -> list[dict]:
        def fn(conn: sqlite3.Connection) -> list[dict]:
            rows = conn.execute("SELECT name, version, length, updated, created FROM documents "
                                "ORDER BY updated DESC, name").fetchall()
            return [{"name": n, "version": v, "length": ln, "updated": u, "created": c}
                    for n, v, ln, u, c in rows]

        return await self._read(fn)

    async def document(self, name: str) -> dict | None:
        def fn(conn: sqlite3.Connection) -> dict | None:
            row = conn.execute("SELECT id, name, version, length, updated, created, salt FROM documents "
                               "WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            return dict(zip(("id", "name", "version", "length", "updated", "created", "salt"), row))

        return await self._read(fn)

    async def text_at(self, doc_id: int, version: int) -> str:
        """The text at `version`: the newest snapshot at or below it plus the updates after it."""
        def fn(conn: sqlite3.Connection) -> str:
            snap_version, text = _snapshot_at(conn, doc_id, version)
            rows = _update_rows(conn, doc_id, snap_version, version)
            if len(rows) != version - snap_version:
                raise _compacted(conn, doc_id, version, snap_version if snap_version or rows else None)
            doc = Text(text)
            for _, client_id, changes in rows:
                doc.apply(ChangeSet.from_json(orjson.loads(changes)))
            return str(doc)

        return await self._read(fn)

    async def history(self, doc_id: int, before: int, limit: int) -> list[dict]:
        """Update summaries with version < `before`, newest first."""
        def fn(conn: sqlite3.Connection) -> list[dict]:
            rows = conn.execute("SELECT version, client_id, author, time, inserted, deleted, restored_from "
                                "FROM updates WHERE doc_id = ? AND version < ? ORDER BY version DESC LIMIT ?",
                                (doc_id, before, limit)).fetchall()
            out = []
            for v, c, a, t, i, d, r in rows:
                entry = {"version": v, "clientID": c, "author": a, "time": t, "inserted": i, "deleted": d}
                if r is not None:
                    entry["restored"] = r
                out.append(entry)
            return out

        return await self._read(fn)

    async def authorship(self, doc_id: int, version: int) -> Authorship:
        """Who wrote each character of the text at `version` (cached every snapshot_every versions)."""
        every = self.snapshot_every

        def fn(conn: sqlite3.Connection):
            row = conn.execute("SELECT version, spans FROM authorship WHERE doc_id = ? AND version <= ? "
                               "ORDER BY version DESC LIMIT 1", (doc_id, version)).fetchone()
            start, spans = (row[0], orjson.loads(row[1])) if row else (0, [])
            authors = Authorship([(n, a) for n, a in spans])
            new_cache = []
            rows = conn.execute("SELECT version, author, changes FROM updates "
                                "WHERE doc_id = ? AND version > ? AND version <= ? ORDER BY version",
                                (doc_id, start, version))
            expect = start
            for v, author, changes in rows:
                expect += 1
                if v != expect:
                    raise _compacted(conn, doc_id, version, start or None)
                authors.apply(ChangeSet.from_json(orjson.loads(changes)), author)
                if v % every == 0:
                    new_cache.append((doc_id, v, orjson.dumps(authors.to_list()).decode()))
            if expect != version:
                raise _compacted(conn, doc_id, version, start or None)
            return authors, new_cache

        authors, new_cache = await self._read(fn)
        if new_cache:
            await self._write(lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO authorship(doc_id, version, spans) VALUES (?,?,?)", new_cache))
        return authors


def append_fn(doc_id: int, entries: list[Accepted], length: int,
              snapshot: tuple[int, str] | None = None) -> Callable[[sqlite3.Connection], None]:
    """The write that makes `entries` durable, for a group transaction.

    Refuses (and so rolls back the whole group) if the document is not at the
    version just before the first entry: that would mean two writers.
    """
    rows = [_update_row(doc_id, e) for e in entries]
    last = entries[-1]

    def fn(conn: sqlite3.Connection) -> None:
        conn.executemany(_INSERT_UPDATE, rows)
        cur = conn.execute("UPDATE documents SET version = ?, length = ?, updated = ? "
                           "WHERE id = ? AND version = ?",
                           (last.version, length, last.time, doc_id, entries[0].version - 1))
        if cur.rowcount != 1:
            raise RuntimeError(f"document {doc_id} is not at version {entries[0].version - 1}: "
                               "two writers, or a lost batch")
        if snapshot is not None:
            _insert_snapshot(conn, doc_id, *snapshot)

    return fn


class CommitSource(Protocol):
    """What `Store.schedule` needs from a document: its pending write, and a reply."""

    def take_commit(self) -> tuple[Callable[[sqlite3.Connection], object], object] | None: ...

    def commit_done(self, token: object, error: BaseException | None) -> None: ...


def _update_rows(conn: sqlite3.Connection, doc_id: int, after: int, upto: int) -> list[tuple]:
    """(version, client_id, changes) of the updates producing versions after+1 .. upto, in order."""
    return conn.execute("SELECT version, client_id, changes FROM updates "
                        "WHERE doc_id = ? AND version > ? AND version <= ? ORDER BY version",
                        (doc_id, after, upto)).fetchall()


def _insert_snapshot(conn: sqlite3.Connection, doc_id: int, version: int, text: str) -> None:
    conn.execute("INSERT OR IGNORE INTO snapshots(doc_id, version, text, time) VALUES (?,?,?,?)",
                 (doc_id, version, text, time.time()))


def _snapshot_at(conn: sqlite3.Connection, doc_id: int, version: int) -> tuple[int, str]:
    row = conn.execute("SELECT version, text FROM snapshots WHERE doc_id = ? AND version <= ? "
                       "ORDER BY version DESC LIMIT 1", (doc_id, version)).fetchone()
    return (row[0], row[1]) if row else (0, "")


def _contiguous_tail(rows: list, version: int) -> list[Update]:
    """Parse the rows that form an unbroken run ending at `version`."""
    start = len(rows)
    expect = version
    while start > 0 and rows[start - 1][0] == expect:
        start -= 1
        expect -= 1
    return [_parse_update(c, ch) for _, c, ch in rows[start:]]
