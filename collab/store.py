"""The SQLite store: every SQL statement collab runs on SQLite, its migrations and its one writer.

The interface and its rules are in storage.py; this backend keeps them so:
  * one writer, and every write goes through its queue: whatever is queued or
    `schedule`d while a transaction runs, or in the few event-loop turns
    before it starts (storage.GroupWriter._gather), is committed together in
    the next one (group commit, across documents), one transaction at a
    time. In a group of several, each queued write and each `Commit` runs
    inside a SAVEPOINT, so one that fails (or a commit whose document moved:
    `VersionConflict`) is undone alone and the rest of the group still
    commits. A caller hears back only after COMMIT returned;
  * a transaction runs on the writer connection in a thread of its own, except
    a small group of updates with `--sync normal` (or off): that COMMIT is an
    append to the WAL file with no fsync, cheaper than the hop to a thread, so
    it runs on the event loop itself when the group has no queued writes, no
    snapshot and at most INLINE_BYTES of changes and INLINE_ROWS updates. Its
    connection never waits for a lock (busy_timeout 0: a lock held elsewhere,
    an admin command's, sends the group to the thread instead) and never
    checkpoints inside a COMMIT: every CHECKPOINT_EVERY of its commits, the
    writer thread checkpoints the WAL (PASSIVE while commits go on, then
    RESTART for what they added: the next commit starts the WAL over; commits
    during the RESTART wait for it in the writer thread), so the WAL stays
    about as small as SQLite's own autocheckpoint keeps it;
  * reads run on a small pool of reader connections in their own threads; in
    WAL mode they never block the writer, never see a half-written batch, and
    one slow read does not hold up the others. Each read is one read
    transaction, so its statements see one commit (`collab compact` or an
    admin command may commit between two of them). `text_at` reads its
    snapshot and rows there and replays them in a worker process
    (compute.text_at); a load still replays in its reader thread;
  * a read, queued write or document commit that fails because the database
    cannot be used right now (locked past BUSY_TIMEOUT_MS, an I/O error, no
    file descriptor to open it, a full disk) raises or is answered with
    StorageUnavailable (503 `unavailable`, at most one warning logged per
    UNAVAILABLE_LOG_EVERY seconds, none when the caller says it itself:
    `log_unavailable=False`, the admin commands); any other SQLite error is a
    bug and stays one (500, logged with its traceback);
  * SQLite is for one process: `open` takes an exclusive lock on `<db>.lock`,
    so a second server on the same file stops with a clear message (admin
    commands do not take it: they are short and go through SQLite's locking).
Threads are plain `sqlite3` connections, each in a thread of its own that
runs the jobs handed to it (`_Connections`): the writer must run a whole group
transaction in one hop to the thread, which no public aiosqlite call can do.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Callable, Sequence

import orjson

from . import resources
from .changes import ChangeSet
from .history import Authorship
from .logs import QUIET_FOR, Throttle
from .rebase import Update
from .sequencer import KEEP_BYTES, Accepted, History
from .storage import (COPY_TABLES, AlreadyServing, DOCUMENT_COLUMNS, DOCUMENT_FIELDS, MAX_FORMER_NAMES, PERSON_KEY,
                      Commit, DocumentGone, GroupWriter, Kept, Loaded, NamedWhileCompacting, NameTaken,
                      StorageUnavailable, StoreClosed, TooManyCheckpoints, TooManyDocuments, VERSION_UNBOUNDED,
                      VersionCompacted, VersionConflict, contiguous_tail, history_entry, history_of, pending_migrations,
                      replayed_bytes)
from .text import Text

_MIGRATION_NAME = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")
log = logging.getLogger("collab")
READERS = 3  # reader connections (threads)
INLINE_BYTES = 64 * 1024  # a group of updates up to this size (and INLINE_ROWS) may commit on the event loop
INLINE_ROWS = 256
CHECKPOINT_EVERY = 200  # commits on the event loop between two checkpoints (about 1,000 WAL pages at most)
BUSY_TIMEOUT_MS = 5000  # how long a connection waits for a lock held elsewhere (but the inline one's: 0)
CHECKPOINT_WAIT_MS = 50  # how long a checkpoint waits for readers (and holds writers off) before it gives up
UNAVAILABLE_LOG_EVERY = QUIET_FOR  # seconds between two warnings that the database cannot be used
# SQLite's primary result codes that say the database cannot be used right now (503), not that our SQL is wrong.
# (Not SQLITE_LOCKED: without a shared cache it only comes from a conflict within one connection, a bug.)
_UNAVAILABLE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
                                sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL,
                                sqlite3.SQLITE_READONLY})


# ------------------------------------------------------------------ migrations

def migration_files(directory: Path | None = None) -> list[tuple[int, Path]]:
    """The numbered migrations in `directory`; raises if it is missing, empty or has gaps."""
    directory = resources.migrations_dir("sqlite") if directory is None else Path(directory)
    if not directory.is_dir():
        raise RuntimeError(f"the migrations folder {directory} does not exist: the installation is incomplete")
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise RuntimeError(f"migration file {path.name!r} is not named NNN_name.sql")
        found.append((int(m.group(1)), path))
    if not found:
        raise RuntimeError(f"the migrations folder {directory} holds no NNN_name.sql files: "
                           "the installation is incomplete")
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 001, 002, ... without gaps; found {numbers}")
    return found


def _orphans(conn: sqlite3.Connection) -> Counter:
    """Rows whose foreign key finds no row, counted by (table, the table it references)."""
    return Counter((row[0], row[2]) for row in conn.execute("PRAGMA foreign_key_check"))


def apply_migrations(conn: sqlite3.Connection, directory: Path | None = None) -> list[str]:
    """Apply the migrations not yet recorded in `schema_version`, each in its own transaction.

    Foreign keys are off while a migration runs and checked before it commits: a migration may make
    a table again (SQLite's way to change what ALTER TABLE cannot), and dropping the old one with
    foreign keys on would delete, by cascade, every row that references it. A migration that would
    leave more rows referencing nothing than there were before it is rolled back (rows like that made
    outside collab, with foreign keys off in the sqlite3 shell, say, are left as they were). A
    migration another process applied since `schema_version` was read here is skipped.
    """
    if conn.in_transaction:  # PRAGMA foreign_keys would do nothing, silently
        raise RuntimeError("migrations need a connection with no transaction open; nothing was changed")
    files = migration_files(directory)
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                 "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    applied = []
    enforced = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
            raise RuntimeError("foreign keys could not be turned off for the migrations; nothing was changed")
        for number, path in pending_migrations(files, done):
            sql = path.read_text()
            before = _orphans(conn)
            if before and not applied:
                log.warning("the database has %d rows referencing rows that do not exist (%s), made outside "
                            "collab; the migrations leave them as they are", sum(before.values()),
                            ", ".join(f"{table} -> {parent}" for table, parent in before))
            # executescript commits first, then runs BEGIN, the script and its record, and leaves the
            # transaction open; a failing statement leaves it open too, so roll it back.
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\n;INSERT INTO schema_version(version, name, applied) "
                    f"VALUES ({number}, '{path.name}', {time.time()});")
                new = _orphans(conn) - before
                if new:
                    table, parent = next(iter(new))
                    raise RuntimeError(f"migration {path.name} would leave rows of {table} referencing "
                                       f"missing rows of {parent}; nothing was changed")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and conn.execute(
                        "SELECT 1 FROM schema_version WHERE version = ?", (number,)).fetchone():
                    continue  # another process applied it since `done` was read: its transaction stands
                raise
            applied.append(path.name)
    finally:
        conn.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")
    return applied


def schema_versions(path: Path) -> set[int]:
    """The migrations the SQLite file at `path` records as applied (it has a `schema_version`); read-only."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    finally:
        conn.close()


def connect_sync(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(path: str | Path, synchronous: str = "FULL") -> list[str]:
    """Create the database file (and its folder) if needed and apply pending migrations."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect_sync(path, synchronous)
    try:
        return apply_migrations(conn)
    finally:
        conn.close()


# ------------------------------------------------------------------ rows

_INSERT_UPDATE = ("INSERT INTO updates(doc_id, version, client_id, author, time, changes, inserted, deleted, "
                  "restored_from, frame_end, person, color) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


def _update_row(doc_id: int, entry: Accepted, frame_end: bool) -> tuple:
    changes = entry.update.changes
    inserted, deleted = changes.counts()
    return (doc_id, entry.version, entry.update.client_id, entry.author, entry.time,
            entry.changes_json.decode(), inserted, deleted, entry.restored_from, int(frame_end),
            entry.person, entry.color)


def _rows_up_to(cursor: sqlite3.Cursor, max_bytes: int, size: Callable[[tuple], int]) -> list[tuple]:
    """The rows of `cursor` up to the one that brings their `size` to `max_bytes` (one at least); no
    row past it is read, and the cursor is closed."""
    out, total = [], 0
    for row in cursor:
        out.append(row)
        total += size(row)
        if total >= max_bytes:
            break
    cursor.close()
    return out


def _update_rows(conn: sqlite3.Connection, doc_id: int, after: int, upto: int) -> list[tuple]:
    """(version, client_id, changes) of the updates producing versions after+1 .. upto, in order."""
    return conn.execute("SELECT version, client_id, changes FROM updates "
                        "WHERE doc_id = ? AND version > ? AND version <= ? ORDER BY version",
                        (doc_id, after, upto)).fetchall()


def _log_start(conn: sqlite3.Connection, doc_id: int, version: int, keep: int) -> int:
    """Where a loaded document's in-memory log starts: at most `keep` updates before `version`, and no
    further back than KEEP_BYTES of their ChangeSetJSON reach (sequencer.py: the log's bounds)."""
    start = max(0, version - keep)
    row = conn.execute("SELECT max(version) FROM (SELECT version, sum(length(CAST(changes AS BLOB))) OVER "
                       "(ORDER BY version DESC) AS newer FROM updates WHERE doc_id = ? AND version > ? "
                       "AND version <= ?) WHERE newer > ?", (doc_id, start, version, KEEP_BYTES)).fetchone()
    return start if row[0] is None else row[0]


def _insert_snapshot(conn: sqlite3.Connection, doc_id: int, version: int, text: str) -> None:
    conn.execute("INSERT OR IGNORE INTO snapshots(doc_id, version, text, time) VALUES (?,?,?,?)",
                 (doc_id, version, text, time.time()))


def _snapshot_at(conn: sqlite3.Connection, doc_id: int, version: int) -> tuple[int, str]:
    row = conn.execute("SELECT version, text FROM snapshots WHERE doc_id = ? AND version <= ? "
                       "ORDER BY version DESC LIMIT 1", (doc_id, version)).fetchone()
    return (row[0], row[1]) if row else (0, "")


def _keep_version(conn: sqlite3.Connection, doc_id: int, kept: Kept) -> None:
    """A snapshot (and authorship, if given) at `kept.version` for `compact`; a snapshot already there must
    be the same text."""
    _insert_snapshot(conn, doc_id, kept.version, kept.text)
    stored = conn.execute("SELECT text FROM snapshots WHERE doc_id = ? AND version = ?",
                          (doc_id, kept.version)).fetchone()[0]
    if stored != kept.text:
        raise RuntimeError(f"document {doc_id}: the stored snapshot of version {kept.version} differs "
                           "from its update log; nothing was compacted (restore from a backup?)")
    if kept.spans is not None:
        conn.execute("INSERT OR IGNORE INTO authorship(doc_id, version, spans) VALUES (?,?,?)",
                     (doc_id, kept.version, orjson.dumps(kept.spans).decode()))


# For compact: the first named version below the boundary that deleting the rows from `low` to `upto`
# would make unreadable: it is read from its newest snapshot (below it, none at it) plus rows that are
# all still stored (the snapshot is at low - 1 or later) and some of them go (it is before upto).
# Parameters: doc_id, low, boundary, low, upto.
_NAMED_LOSING_ROWS = (
    "SELECT MIN(version) FROM (SELECT c.version, (SELECT COALESCE(MAX(s.version), 0) FROM snapshots s "
    "WHERE s.doc_id = c.doc_id AND s.version <= c.version) AS snap FROM checkpoints c "
    "WHERE c.doc_id = ? AND c.version >= ? AND c.version < ?) named "
    "WHERE snap < version AND snap >= ? - 1 AND snap < ?")


# For compact, before it drops a document's update rows up to a version (parameters: doc_id, that version):
# each person's latest name and colour among them, kept in `people` unless a later one is there already.
# (With one max() aggregate, SQLite takes the bare columns from the row holding the maximum.)
_KEEP_PEOPLE = (
    "INSERT INTO people(doc_id, person, version, name, color) SELECT doc_id, person, max(version), author, color "
    "FROM updates WHERE doc_id = ? AND version <= ? AND person IS NOT NULL GROUP BY person "
    "ON CONFLICT(doc_id, person) DO UPDATE SET version = excluded.version, name = excluded.name, "
    "color = excluded.color WHERE excluded.version > people.version")


# For compact, as it drops a document's update rows up to a version (parameters: doc_id, that version, the
# boundary, doc_id): the authorship checkpoints no replay can start from any more, those below it but at
# the boundary and at named versions (the one at the version itself goes with the next rows, or stays if
# the compaction stops there).
_DROP_AUTHORSHIP = ("DELETE FROM authorship WHERE doc_id = ? AND version < ? AND version <> ? AND version NOT IN "
                    "(SELECT version FROM checkpoints WHERE doc_id = ?)")


def _exists(conn: sqlite3.Connection, doc_id: int, name: str | None = None) -> str:
    """The name of the document with the id `doc_id`; DocumentGone if there is none (it was deleted since
    its row was read) or, with `name`, if it is called otherwise (renamed since)."""
    row = conn.execute("SELECT name FROM documents WHERE id = ?", (doc_id,)).fetchone()
    if row is None or name not in (None, row[0]):
        raise DocumentGone(doc_id, name)
    return row[0]


def _rows_of(conn: sqlite3.Connection, doc_id: int, query: str, args: tuple) -> list:
    """`query`'s rows about document `doc_id`, or DocumentGone (in the same read transaction)."""
    _exists(conn, doc_id)
    return conn.execute(query, args).fetchall()


def _readable(conn: sqlite3.Connection, doc_id: int, version: int) -> None:
    """Raise VersionCompacted unless `version` (at most the head) can be rebuilt: its newest snapshot is
    itself, or the row after that snapshot is stored (stored rows are one run up to the head)."""
    snap = conn.execute("SELECT MAX(version) FROM snapshots WHERE doc_id = ? AND version <= ?",
                        (doc_id, version)).fetchone()[0] or 0
    if snap < version and conn.execute("SELECT 1 FROM updates WHERE doc_id = ? AND version = ?",
                                       (doc_id, snap + 1)).fetchone() is None:
        raise _compacted(conn, doc_id, version, snap or None)


def _compacted(conn: sqlite3.Connection, doc_id: int, version: int, below: int | None) -> VersionCompacted:
    row = conn.execute("SELECT MIN(version) FROM snapshots WHERE doc_id = ? AND version > ?",
                       (doc_id, version)).fetchone()
    return VersionCompacted(version, below, row[0] if row else None)


def _write_commit(conn: sqlite3.Connection, commit: Commit) -> None:
    """Make `commit` durable, or raise VersionConflict having written nothing."""
    last = commit.entries[-1]  # a commit is broadcast as one frame: it ends there
    moved = conn.execute("UPDATE documents SET version = ?, length = ?, updated = ? WHERE id = ? AND version = ?",
                         (commit.version, commit.length, last.time, commit.doc_id, commit.base)).rowcount
    if moved != 1:  # nothing written: the document is not at the commit's base
        row = conn.execute("SELECT version FROM documents WHERE id = ?", (commit.doc_id,)).fetchone()
        raise VersionConflict(commit.doc_id, commit.base, row[0] if row else None)
    conn.executemany(_INSERT_UPDATE, [_update_row(commit.doc_id, e, e is last) for e in commit.entries])
    if commit.snapshot is not None:
        _insert_snapshot(conn, commit.doc_id, *commit.snapshot)


def _group_transaction(conn: sqlite3.Connection, work: list[Callable[[sqlite3.Connection], object]],
                       begun: bool = False) -> list:
    """Run every function of `work` in one transaction, each in a savepoint of its own.

    Returns one (ok, result-or-exception) per function: a function that
    raises is rolled back alone. If COMMIT itself fails, the whole group
    raises and nothing is written. `begun`: the caller ran BEGIN IMMEDIATE.
    A group of one needs no savepoint: if it raises, the transaction is
    rolled back whole, which undoes the same. After a full disk or an I/O
    error SQLite may have rolled the whole transaction back itself: then that
    error is the whole group's (raised, not hidden behind the failure of our
    own ROLLBACK).
    """
    if not begun:
        conn.execute("BEGIN IMMEDIATE")
    out = []
    try:
        if len(work) == 1:
            try:
                out.append((True, work[0](conn)))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return [(False, exc)]
            conn.execute("COMMIT")
            return out
        for fn in work:
            conn.execute("SAVEPOINT w")
            try:
                result = fn(conn)
            except Exception as exc:  # noqa: BLE001 - handed back to that caller
                if not conn.in_transaction:
                    raise  # SQLite rolled back everything: what the others did before is gone too
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                out.append((False, exc))
            else:
                conn.execute("RELEASE w")
                out.append((True, result))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


class _Connections:
    """`size` threads, each with its own SQLite connection: `run(fn, *args)` calls fn(conn, *args) in one.

    A job crosses to a thread through a SimpleQueue and its outcome comes back
    with one `call_soon_threadsafe`: no concurrent.futures Future and no
    callback chain in between (a hop through `run_in_executor` cost about half
    as much again, in CPU, on this path every commit takes). A caller that
    stops waiting (cancelled) does not stop the job; its outcome is dropped.
    `close` lets the queued jobs finish, then each thread closes its connection.
    """

    def __init__(self, path: str, synchronous: str, size: int, name: str):
        self.path, self.synchronous = path, synchronous
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"{name}_{k}", daemon=True) for k in range(size)]
        for thread in self.threads:
            thread.start()

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while (job := self.jobs.get()) is not None:
                loop, fut, fn, args = job
                try:
                    if conn is None:
                        conn = connect_sync(self.path, self.synchronous)
                    outcome = (True, fn(conn, *args))
                except BaseException as exc:  # handed to the caller, as the executor did
                    outcome = (False, exc)
                try:
                    loop.call_soon_threadsafe(_settle, fut, outcome)
                except RuntimeError:
                    pass  # the loop is closed: nobody waits any more
        finally:
            if conn is not None:
                conn.close()

    async def run(self, fn, *args):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.jobs.put((loop, fut, fn, args))
        return await fut

    def close(self) -> None:
        """Finish what is queued, then stop every thread (each closes its own connection). Blocks."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


def _in_one_read(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], object]):
    # A deferred BEGIN: in WAL mode the read transaction takes its snapshot at the first SELECT and
    # holds it until it ends. It never blocks a commit, but a checkpoint cannot restart the WAL past
    # it (it waits CHECKPOINT_WAIT_MS, then gives up until the next one), so a read that goes on in
    # Python after its last SELECT (a replay) ends it first: `_end_read`.
    if conn.in_transaction:  # left open by a ROLLBACK that failed: never read in a stale snapshot
        conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    try:
        result = fn(conn)
    except BaseException:
        try:
            _end_read(conn)
        except sqlite3.Error:
            pass  # fn's own error is the one to report; the next read ends this transaction
        raise
    _end_read(conn)
    return result


def _end_read(conn: sqlite3.Connection) -> None:
    """End the read transaction `_in_one_read` began, once everything has been SELECTed."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _settle(fut: asyncio.Future, outcome: tuple[bool, object]) -> None:
    if not fut.done():
        ok, value = outcome
        fut.set_result(value) if ok else fut.set_exception(value)


async def _always_held() -> None:
    """`held` of a SQLite restore turn (Store.restore_turn): there is nothing to lose."""


class Store(GroupWriter):
    """SQLite backend of `storage.Storage`."""

    def __init__(self, path: str | Path, synchronous: str = "FULL", snapshot_every: int = 1000,
                 keep: int = 2000, exclusive: bool = False, log_unavailable: bool = True, migrate: bool = True):
        self.path = str(path)
        self.migrate = migrate  # False: the schema is left as it is (a backup of what an older collab made)
        self.synchronous = synchronous
        self.snapshot_every = snapshot_every
        self.keep = keep
        self.exclusive = exclusive
        self._w: _Connections | None = None
        self._inline: sqlite3.Connection | None = None  # the event loop's writer connection (--sync normal/off)
        self._inline_commits = 0  # since the last checkpoint
        self._checkpoint: asyncio.Task | None = None
        self._r: _Connections | None = None
        self._lock_fd: int | None = None
        self._init_writer()  # storage.GroupWriter: queued writes (fn, future) and waiting documents
        self.commits = 0  # transactions committed (for metrics and tests)
        # A server logs that the database cannot be used (its clients hear only `unavailable`); an admin
        # command says it in its error, and would say it twice.
        self._unavailable_warnings = Throttle(log, UNAVAILABLE_LOG_EVERY) if log_unavailable else None

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> "Store":
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self.exclusive:
            self._lock()
        self._w = _Connections(self.path, self.synchronous, 1, "collab-sqlite-writer")
        if self.migrate:
            await self._w.run(apply_migrations)
        if self.synchronous.upper() in ("NORMAL", "OFF"):
            self._inline = connect_sync(self.path, self.synchronous)
            self._inline.execute("PRAGMA busy_timeout=0")
            self._inline.execute("PRAGMA wal_autocheckpoint=0")
        self._r = _Connections(self.path, self.synchronous, READERS, "collab-sqlite-reader")
        return self

    def _lock(self) -> None:
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyServing(f"another collab server is already serving {self.path} (it holds {lock_path}); "
                               "SQLite is for one process: stop it, or use PostgreSQL for several") from None
        self._lock_fd = fd

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        while True:  # a write asked for while one of these ran starts the writer again
            if self._writer is not None and not self._writer.done():
                await asyncio.shield(self._writer)
            elif self._checkpoint is not None and not self._checkpoint.done():
                await self._checkpoint  # it logs its own failure
            else:
                break
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        # Closed from here on (a read or write asked for later fails at once), then each thread
        # finishes the jobs queued before its stop mark, which nothing can follow any more.
        threads, self._r, self._w = (self._r, self._w), None, None
        for conns in threads:
            if conns is not None:
                await asyncio.get_running_loop().run_in_executor(None, conns.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --------------------------------------------------------------- writer

    async def _write(self, fn: Callable[[sqlite3.Connection], object]):
        """Run `fn(conn)` inside the next group transaction; return its result after COMMIT."""
        if self._w is None:
            raise StoreClosed()
        fut = asyncio.get_running_loop().create_future()
        self._enqueue((fn, fut))
        with self._unavailable("writing"):
            return await fut

    @contextmanager
    def _unavailable(self, doing: str):
        """SQLite errors of the database's state rather than of our SQL leave as StorageUnavailable
        (`_as_unavailable`); the rest as they are."""
        try:
            yield
        except sqlite3.Error as exc:
            unavailable = self._as_unavailable(exc, doing)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _as_unavailable(self, exc: BaseException, doing: str) -> StorageUnavailable | None:
        """StorageUnavailable (503 `unavailable`) for an SQLite error of the database's state rather than
        of our SQL (locked past the busy timeout, an I/O error, a file that cannot be opened for want of
        file descriptors, a full disk, no memory); None for any other error (a bug: a 500, logged with
        its traceback). At most one warning is logged per UNAVAILABLE_LOG_EVERY seconds, not one per
        request (none with log_unavailable=False)."""
        code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
        if code is None or code & 0xFF not in _UNAVAILABLE_CODES:
            return None
        detail = f"the SQLite database {self.path} cannot be used right now ({doing}): {exc} ({exc.sqlite_errorname})"
        if self._unavailable_warnings is not None:
            self._unavailable_warnings.warning("%s", detail)
        unavailable = StorageUnavailable(detail)
        unavailable.__cause__ = exc
        return unavailable

    def _writer_open(self) -> bool:
        return self._w is not None

    async def _write_loop(self) -> None:
        while self._queue or self._sources:
            await self._gather()
            batch, taken = self._take()
            work = [fn for fn, _ in batch] + [_commit_fn(c) for _, c in taken]
            if not work:
                continue
            try:
                outcomes = self._commit_inline(batch, taken, work)
                if outcomes is None:
                    outcomes = await self._w.run(_group_transaction, work)
            except Exception as exc:  # the whole group failed; every caller learns it
                outcomes = [(False, self._as_unavailable(exc, "committing") or exc)] * len(work)
            else:
                self.commits += 1
            for (_, fut), (ok, value) in zip(batch, outcomes):
                if not fut.done():
                    fut.set_result(value) if ok else fut.set_exception(value)
            answers = outcomes[len(batch):]
            if not all(ok for ok, _ in answers):  # a document's commit failed alone (a full disk, say)
                answers = [(ok, value if ok else self._as_unavailable(value, "committing") or value)
                           for ok, value in answers]
            self._answer(taken, answers)

    def _commit_inline(self, batch: list, taken: list, work: list) -> list | None:
        """The group's outcomes if it was small enough to commit here, on the event loop; else None."""
        if self._inline is None or batch:
            return None
        size = rows = 0
        for _, commit in taken:
            if commit.snapshot is not None:
                return None
            rows += len(commit.entries)
            size += commit.size
        if size > INLINE_BYTES or rows > INLINE_ROWS:
            return None
        try:
            self._inline.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return None  # the database is locked elsewhere: the thread waits for it, not the event loop
        outcomes = _group_transaction(self._inline, work, begun=True)
        self._inline_commits += 1
        if self._inline_commits >= CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._inline_commits = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())
        return outcomes

    async def _run_checkpoint(self) -> None:
        try:
            await self._w.run(_checkpoint)
        except Exception as exc:  # noqa: BLE001 - the next one tries again; commits are not affected
            log.warning("WAL checkpoint failed: %s", exc)

    # ---------------------------------------------------------------- writes

    async def create_document(self, name: str, text: str = "", author: str = "", client_id: str = "",
                              exist_ok: bool = True, max_documents: int | None = None,
                              person: str | None = None, color: str | None = None) -> int:
        """Make a document; with `text`, it starts with one update inserting it (by `author`, and
        `person` and `color` when given, as a hello's).

        A name that exists already gives that document's id back unchanged,
        or raises NameTaken when `exist_ok` is false. With `max_documents`, a
        new document is refused (TooManyDocuments) when that many exist: the
        count and the insert are one transaction, so creations at once cannot
        both pass.
        """
        now = time.time()
        salt = secrets.token_urlsafe(12)

        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT id FROM documents WHERE name = ?", (name,)).fetchone()
            if row:
                if not exist_ok:
                    raise NameTaken(f"a document named {name!r} already exists")
                return row[0]
            if max_documents is not None and \
                    conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] >= max_documents:
                raise TooManyDocuments(max_documents)
            cur = conn.execute("INSERT INTO documents(name, version, length, created, updated, salt) "
                               "VALUES (?, 0, 0, ?, ?, ?)", (name, now, now, salt))
            doc_id = cur.lastrowid
            if text:
                changes = ChangeSet.from_json([[0, *text.split("\n")]])
                first = Accepted(1, Update(client_id, changes), author, now, person=person, color=color)
                _write_commit(conn, Commit(doc_id, 0, [first], changes.new_length))
            return doc_id

        return await self._write(fn)

    async def new_salt(self, doc_id: int, name: str | None = None) -> str:
        """Give the document a new salt: every share link made before stops working (DocumentGone if it
        was deleted, or is no longer called `name`)."""
        salt = secrets.token_urlsafe(12)

        def fn(conn: sqlite3.Connection) -> None:
            _exists(conn, doc_id, name)
            conn.execute("UPDATE documents SET salt = ? WHERE id = ?", (salt, doc_id))

        await self._write(fn)
        return salt

    async def delete_document(self, doc_id: int, name: str | None = None) -> None:
        """Remove a document with its whole history (DocumentGone if it was deleted already, or is no
        longer called `name`)."""
        def fn(conn: sqlite3.Connection) -> None:
            _exists(conn, doc_id, name)
            for table in ("updates", "snapshots", "authorship", "checkpoints", "renamed", "people"):
                conn.execute(f"DELETE FROM {table} WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

        await self._write(fn)

    async def ping(self) -> None:
        """Prove the database can take a write transaction right now."""
        await self._write(lambda conn: None)

    async def write_snapshot(self, doc_id: int, version: int, text: str) -> None:
        await self._write(lambda conn: _insert_snapshot(conn, doc_id, version, text))

    COMPACT_CHUNK = 5000  # update rows deleted per transaction: the writer never waits long

    async def compact(self, doc_id: int, boundary: int, text: str, spans: list | None,
                      named: Sequence[Kept] = ()) -> int:
        """Keep a snapshot (and authorship) at `boundary` and at each `named` version below it, then drop
        the update rows up to `boundary`, and the authorship checkpoints below it but those.

        The snapshots commit first, so every later state is safe to stop in:
        the deletes then go oldest first in short transactions, and whatever
        subset of them has committed, the current text, every version >=
        boundary and every named version read exactly as before. A version
        named after the caller read the checkpoints (the server runs) stops
        the deletes before the first row it needs (NamedWhileCompacting).
        Returns the rows dropped.
        """
        def keep(conn: sqlite3.Connection) -> int | None:
            for kept in (Kept(boundary, text, spans), *named):
                _keep_version(conn, doc_id, kept)
            return conn.execute("SELECT MIN(version) FROM updates WHERE doc_id = ?", (doc_id,)).fetchone()[0]

        def drop(conn: sqlite3.Connection, low: int, upto: int, dropped: int) -> int:
            unkept = conn.execute(_NAMED_LOSING_ROWS, (doc_id, low, boundary, low, upto)).fetchone()[0]
            if unkept is not None:
                raise NamedWhileCompacting(unkept, dropped)
            conn.execute(_KEEP_PEOPLE, (doc_id, upto))
            conn.execute(_DROP_AUTHORSHIP, (doc_id, upto, boundary, doc_id))
            return conn.execute("DELETE FROM updates WHERE doc_id = ? AND version <= ?", (doc_id, upto)).rowcount

        low = await self._write(keep)
        dropped = 0
        while low is not None and low <= boundary:
            upto = min(boundary, low + self.COMPACT_CHUNK - 1)
            dropped += await self._write(lambda conn, low=low, upto=upto, dropped=dropped:
                                         drop(conn, low, upto, dropped))
            low = upto + 1
        return dropped

    # ----------------------------------------------------------------- reads

    async def _read(self, fn):
        """fn(conn) on a reader thread, in one read transaction: its statements all see one commit, even
        with `collab compact` or another writer committing between them."""
        if self._r is None:
            raise StoreClosed()
        with self._unavailable("reading"):
            return await self._r.run(_in_one_read, fn)

    async def load(self, name: str) -> Loaded | None:
        """The document's head text and its last `keep` updates; None if it does not exist."""
        keep = self.keep

        def fn(conn: sqlite3.Connection) -> Loaded | None:
            row = conn.execute("SELECT id, version, salt, created FROM documents WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            doc_id, version, salt, created = row
            snap_version, text = _snapshot_at(conn, doc_id, version)
            in_log = version - _log_start(conn, doc_id, version, keep)
            rows = _update_rows(conn, doc_id, min(snap_version, version - in_log), version)
            log = contiguous_tail(rows, version)
            log_from = version - len(log)
            if log_from > snap_version:
                raise RuntimeError(f"document {name!r}: updates {snap_version + 1}..{log_from} are missing")
            replay, log = log[snap_version - log_from:], (log[max(0, len(log) - in_log):] if in_log else [])
            ends = [v for (v,) in conn.execute(
                "SELECT version FROM updates WHERE doc_id = ? AND version > ? AND version < ? AND frame_end = 1",
                (doc_id, version - len(log), version))]
            _end_read(conn)
            doc = Text(text)
            for u in replay:
                doc.apply(u.changes)
            return Loaded(doc_id, name, version, str(doc), log, snap_version, salt, ends, created,
                          replayed_bytes(rows, snap_version))

        return await self._read(fn)

    async def updates(self, doc_id: int, since: int, until: int, max_bytes: int | None = None) -> History:
        """Updates producing versions since+1 .. until (fewer if history was compacted away: none if
        since+1 is gone), with their frame ends. With `max_bytes`, the one that brings their
        ChangeSetJSON to that many bytes (UTF-8) is the last (at least one is read)."""
        def fn(conn: sqlite3.Connection) -> History:
            cursor = conn.execute(
                "SELECT version, client_id, changes, frame_end" + ("" if max_bytes is None else
                                                                   ", length(CAST(changes AS BLOB))")
                + " FROM updates WHERE doc_id = ? AND version > ? AND version <= ? ORDER BY version",
                (doc_id, since, until))
            return history_of(since, cursor.fetchall() if max_bytes is None else
                              _rows_up_to(cursor, max_bytes, lambda row: row[4]), max_bytes)

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
            row = conn.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE name = ?", (name,)).fetchone()
            return None if row is None else dict(zip(DOCUMENT_FIELDS, row))

        return await self._read(fn)

    async def documents_named(self, names: list[str]) -> dict[str, dict]:
        """`document(name)` of each of these names that has a document (a few queries however many)."""
        def fn(conn: sqlite3.Connection) -> dict[str, dict]:
            out = {}
            for k in range(0, len(names), 500):
                chunk = names[k:k + 500]
                for row in conn.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents "
                                        f"WHERE name IN ({','.join('?' * len(chunk))})", chunk):
                    out[row[1]] = dict(zip(DOCUMENT_FIELDS, row))
            return out

        return await self._read(fn) if names else {}

    async def text_at(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> str:
        """The text at `version`: the newest snapshot at or below it plus the updates after it
        (VersionCompacted if they are gone, DocumentGone if the document is), read here and replayed
        by compute.text_at (in a worker process; `wanted` as there)."""
        from . import compute  # the replay runs there, off the event loop and its threads

        def fn(conn: sqlite3.Connection) -> tuple[str, bytes, int]:
            snap_version, text = _snapshot_at(conn, doc_id, version)
            # UTF-8 bytes only (no str, which one emoji makes four bytes a character), each row's tuple freed
            # as soon as it is read: 80,000 tuples kept (fetchall) set off a full garbage collection that held
            # the GIL for 19 ms.
            rows = [changes for changes, in conn.execute(
                "SELECT CAST(changes AS BLOB) FROM updates WHERE doc_id = ? AND version > ? AND version <= ? "
                "ORDER BY version", (doc_id, snap_version, version))]
            if len(rows) != version - snap_version:
                _exists(conn, doc_id)
                raise _compacted(conn, doc_id, version, snap_version if snap_version or rows else None)
            _end_read(conn)
            return text, b",".join(rows), len(rows)

        return await compute.text_at(*await self._read(fn), version, wanted)

    async def history(self, doc_id: int, before: int, limit: int) -> list[dict]:
        """Update summaries with version < `before`, newest first."""
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT version, client_id, author, time, inserted, deleted, restored_from, person, color "
            "FROM updates WHERE doc_id = ? AND version < ? ORDER BY version DESC LIMIT ?", (doc_id, before, limit)))
        return [history_entry(*row) for row in rows]

    async def rename_document(self, doc_id: int, new_name: str, name: str | None = None) -> str:
        """Give the document a new name (NameTaken if it is someone's); the old one is remembered.
        DocumentGone if it was deleted, or is no longer called `name` (renamed by someone else since)."""
        def fn(conn: sqlite3.Connection) -> str:
            old = _exists(conn, doc_id, name)
            if conn.execute("SELECT 1 FROM documents WHERE name = ?", (new_name,)).fetchone():
                raise NameTaken(f"a document named {new_name!r} already exists")
            conn.execute("UPDATE documents SET name = ? WHERE id = ?", (new_name, doc_id))
            conn.execute("DELETE FROM renamed WHERE name = ?", (new_name,))
            conn.execute("INSERT OR REPLACE INTO renamed(name, doc_id, time) VALUES (?, ?, ?)",
                         (old, doc_id, time.time()))
            conn.execute("DELETE FROM renamed WHERE doc_id = ? AND name NOT IN (SELECT name FROM renamed "
                         "WHERE doc_id = ? ORDER BY time DESC LIMIT ?)", (doc_id, doc_id, MAX_FORMER_NAMES))
            return old

        return await self._write(fn)

    async def renamed_to(self, name: str) -> str | None:
        """The name the document once called `name` has now (None if there was none)."""
        row = await self._read(lambda conn: conn.execute(
            "SELECT d.name FROM renamed r JOIN documents d ON d.id = r.doc_id WHERE r.name = ?", (name,)).fetchone())
        return row[0] if row else None

    async def former_names(self, doc_id: int, limit: int = 20) -> list[tuple[str, float]]:
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT r.name, r.time FROM renamed r WHERE r.doc_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM documents d WHERE d.name = r.name) ORDER BY r.time DESC LIMIT ?", (doc_id, limit)))
        return [(name, when) for name, when in rows]

    async def set_checkpoint(self, doc_id: int, version: int, name: str | None, author: str,
                             max_checkpoints: int | None = None) -> None:
        """Name `version` (a checkpoint shown in the history), or with `name` None take the name away.
        Naming a version not named yet is refused (TooManyCheckpoints) when `max_checkpoints` are, and
        (VersionCompacted) when it was compacted away; renaming a named one never is. DocumentGone if
        the document was deleted."""
        def fn(conn: sqlite3.Connection) -> None:
            _exists(conn, doc_id)
            if name is None:
                conn.execute("DELETE FROM checkpoints WHERE doc_id = ? AND version = ?", (doc_id, version))
            else:
                if conn.execute("SELECT 1 FROM checkpoints WHERE doc_id = ? AND version = ?",
                                (doc_id, version)).fetchone() is None:
                    _readable(conn, doc_id, version)
                    if max_checkpoints is not None:
                        count = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE doc_id = ?",
                                             (doc_id,)).fetchone()[0]
                        if count >= max_checkpoints:
                            raise TooManyCheckpoints(max_checkpoints, count)
                conn.execute("INSERT OR REPLACE INTO checkpoints(doc_id, version, name, author, time) "
                             "VALUES (?,?,?,?,?)", (doc_id, version, name, author, time.time()))

        await self._write(fn)

    async def checkpoints(self, doc_id: int) -> list[dict]:
        """Every named version of the document, oldest first."""
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT version, name, author, time FROM checkpoints WHERE doc_id = ? ORDER BY version",
            (doc_id,)))
        return [{"version": v, "name": n, "author": a, "time": t} for v, n, a, t in rows]

    async def oldest_update(self, doc_id: int) -> int | None:
        """The lowest version whose update row is still stored (None if there is none)."""
        return (await self._read(lambda conn: conn.execute(
            "SELECT MIN(version) FROM updates WHERE doc_id = ?", (doc_id,)).fetchone()))[0]

    async def people(self, doc_id: int, upto: int | None = None) -> dict[str, dict]:
        """Each person who edited the document (up to version `upto`, if given): the name and colour of
        their latest update (one compaction dropped: kept in `people`; a stored one is later than any of
        those)."""
        upto = VERSION_UNBOUNDED if upto is None else upto

        def fn(conn: sqlite3.Connection) -> list[tuple]:
            dropped = _rows_of(conn, doc_id, "SELECT person, name, color FROM people WHERE doc_id = ? "
                               "AND version <= ?", (doc_id, upto))
            return dropped + conn.execute(
                "SELECT person, author, color, max(version) FROM updates WHERE doc_id = ? AND version <= ? "
                "AND person IS NOT NULL GROUP BY person", (doc_id, upto)).fetchall()

        return {row[0]: {"name": row[1], "color": row[2]} for row in await self._read(fn)}

    async def deployment(self) -> str:
        """One process serves a SQLite file (the lock), so it shares no channels: no deployment id."""
        return ""

    async def swap_last_start(self, start: dict, now: float) -> tuple[dict, float] | None:
        """One process serves a SQLite file: no other process's settings to compare with."""
        return None

    async def heads(self, doc_ids: list[int]) -> dict[int, tuple[int, str, str]]:
        """(committed version, salt, name) of each of these documents (deleted ones are missing)."""
        def fn(conn: sqlite3.Connection) -> dict[int, tuple[int, str, str]]:
            out = {}
            for k in range(0, len(doc_ids), 500):
                chunk = doc_ids[k:k + 500]
                out.update((row[0], row[1:]) for row in conn.execute(
                    f"SELECT id, version, salt, name FROM documents WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            return out

        return await self._read(fn) if doc_ids else {}

    @asynccontextmanager
    async def restore_turn(self, doc_id: int, timeout: float):
        """Nothing to take: one process serves a SQLite file (`open` holds `<db>.lock`), so the room's own
        lock (room.Room.restore_turn), which a restore takes first, already makes restores take turns."""
        yield _always_held

    async def authorship(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> Authorship:
        """Who wrote each character of the text at `version`: compute.authorship replays the update
        rows off the event loop; this hands it the SQL (checkpoints in the authorship table)."""
        from . import compute  # the replay and its caching policy live there, for every store

        # The document's creation time, telling it from another with its id: since 006_document_ids_never_reused
        # SQLite gives no id twice, so this only guards against a document deleted during the replay.
        born: list = [None]

        def checkpoint(conn: sqlite3.Connection, at: int) -> tuple[float | None, int]:
            created = conn.execute("SELECT created FROM documents WHERE id = ?", (doc_id,)).fetchone()
            row = conn.execute("SELECT MAX(version) FROM authorship WHERE doc_id = ? AND version <= ?",
                               (doc_id, at)).fetchone()
            born[0] = created[0] if created else None
            return born[0], row[0] or 0

        def save(conn: sqlite3.Connection, found: list) -> None:
            # Only for the document the replay began with: deleted meanwhile, these spans have no document.
            conn.executemany("INSERT OR IGNORE INTO authorship(doc_id, version, spans) SELECT ?, ?, ? "
                             "WHERE EXISTS (SELECT 1 FROM documents WHERE id = ? AND created = ?)",
                             [(doc_id, v, spans, doc_id, born[0]) for v, spans in found])

        def spans_at(conn: sqlite3.Connection, at: int) -> str | None:
            row = conn.execute("SELECT spans FROM authorship WHERE doc_id = ? AND version = ?",
                               (doc_id, at)).fetchone()
            return row[0] if row else None  # None: compacted away since `checkpoint` read it

        def rows(conn: sqlite3.Connection, after: int, upto: int, max_bytes: int) -> list:
            # Who: the person id when the update has one, else the name (updates made before person ids).
            cursor = conn.execute("SELECT version, COALESCE(? || person, author), changes FROM updates "
                                  "WHERE doc_id = ? AND version > ? AND version <= ? ORDER BY version",
                                  (PERSON_KEY, doc_id, after, upto))
            out, size = [], 0
            while size < max_bytes:  # in batches: little Python per row, so the loop keeps the GIL
                batch = cursor.fetchmany(64)
                if not batch:
                    break
                out += batch
                size += sum(len(row[2]) for row in batch)
            # Versions are unique and ordered, so the last one says whether any is missing.
            if not out or out[-1][0] != after + len(out) or (size < max_bytes and len(out) != upto - after):
                raise _compacted(conn, doc_id, version, after or None)
            return out

        return await compute.authorship(
            self, doc_id, version, self.snapshot_every, wanted=wanted,
            checkpoint=lambda at: self._read(lambda conn: checkpoint(conn, at)),
            spans_at=lambda at: self._read(lambda conn: spans_at(conn, at)),
            rows=lambda after, upto, max_bytes: self._read(lambda conn: rows(conn, after, upto, max_bytes)),
            save=lambda found: self._write(lambda conn: save(conn, found)))

    async def backup(self, dest: Path) -> tuple[int, int]:
        """Write a consistent copy of the whole database to `dest`; returns (documents, updates).

        One step of SQLite's online backup, which reads every page inside one
        read transaction: the copy is the database exactly as of one commit,
        even while the server keeps committing. The copy is switched to a
        rollback journal (one self-contained file) and integrity-checked.
        """
        def fn(conn: sqlite3.Connection) -> tuple[int, int]:
            try:
                dst = sqlite3.connect(str(dest))
                try:
                    conn.backup(dst)  # pages=-1: everything in one step, so one consistent moment
                finally:
                    dst.close()
                return seal_file(dest)
            except sqlite3.Error as exc:  # writing `dest` (a full disk) is not this database's failure
                if (unwritten := not_written(dest, exc)) is not None:
                    raise unwritten from exc
                raise

        return tuple(await self._read(fn))

    # ---------------------------------------------------------------- copies

    @asynccontextmanager
    async def view(self):
        """One consistent moment of the whole database: one read transaction on a connection of its own."""
        if self._r is None:
            raise StoreClosed()

        def begin(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")  # in WAL mode a read transaction sees one commit from its first SELECT on
            conn.execute("SELECT COUNT(*) FROM documents").fetchone()

        def end(conn: sqlite3.Connection) -> None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

        conns = _Connections(self.path, self.synchronous, 1, "collab-sqlite-view")
        try:
            await conns.run(begin)
            yield _SqliteView(conns)
        finally:
            await conns.run(end)
            await asyncio.get_running_loop().run_in_executor(None, conns.close)

    async def add_document(self, info: dict) -> int:
        """A copied document's row, as given (name, version, length, created, updated, salt); its new id."""
        def fn(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM documents WHERE name = ?", (info["name"],)).fetchone():
                raise NameTaken(f"a document named {info['name']!r} already exists")
            return conn.execute("INSERT INTO documents(name, version, length, created, updated, salt) "
                                "VALUES (?,?,?,?,?,?)", tuple(info[k] for k in DOCUMENT_FIELDS[1:])).lastrowid

        return await self._write(fn)

    async def add_rows(self, doc_id: int, table: str, rows: list[tuple]) -> None:
        """Copied rows of `table` (columns as in storage.COPY_TABLES), inserted as given."""
        columns = COPY_TABLES[table]
        sql = (f"INSERT INTO {table}(doc_id, {', '.join(columns)}) "
               f"VALUES ({', '.join('?' * (len(columns) + 1))})")
        await self._write(lambda conn: conn.executemany(sql, [(doc_id, *row) for row in rows]))


class _SqliteView:
    """`StorageView` over one connection inside one read transaction."""

    def __init__(self, conns: _Connections):
        self.conns = conns

    async def documents(self) -> list[dict]:
        return await self.conns.run(lambda conn: [dict(zip(DOCUMENT_FIELDS, row)) for row in conn.execute(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents ORDER BY id")])

    async def rows(self, doc_id: int, table: str, after: int | str, limit: int,
                   max_bytes: int | None = None) -> list[tuple]:
        columns = COPY_TABLES[table]
        key, first = columns[0], after == -1
        sql = (f"SELECT {', '.join(columns)} FROM {table} WHERE doc_id = ?{'' if first else f' AND {key} > ?'} "
               f"ORDER BY {key} LIMIT ?")
        args = (doc_id, limit) if first else (doc_id, after, limit)

        def fn(conn: sqlite3.Connection) -> list[tuple]:
            cursor = conn.execute(sql, args)
            if max_bytes is None:
                return cursor.fetchall()
            return _rows_up_to(cursor, max_bytes,  # characters of the text
                               lambda row: sum(len(value) for value in row if isinstance(value, (str, bytes))))

        return await self.conns.run(fn)


# What SQLite says when a file it writes cannot take what is written. A backup only reads its database:
# from a backup, these are about the file it writes. (Not CANTOPEN or READONLY, which a database that
# cannot be read gives too, for want of file descriptors or of its -shm: the backup file is tried
# first, before SQLite opens it, so those are the database's.)
_WRITE_FAILURES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC,
                             sqlite3.SQLITE_IOERR_DIR_FSYNC, sqlite3.SQLITE_IOERR_TRUNCATE})


def not_written(path: str | Path, exc: sqlite3.Error) -> OSError | None:
    """The OSError to raise for `exc` if it says that the SQLite file `path` a backup writes could not be
    written (filename `path`, strerror why); None if `exc` is another failure (reading the database).
    SQLITE_FULL is ENOSPC, "No space left on device": SQLite's unix VFS gives it when a write found no
    space or wrote short (or past max_page_count, which a new file does not set)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or (code not in _WRITE_FAILURES and code & 0xFF not in _WRITE_FAILURES):
        return None
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"{exc} ({exc.sqlite_errorname})", str(path))


def seal_file(path: str | Path) -> tuple[int, int]:
    """Make the SQLite file at `path` one self-contained file (rollback journal) and check its integrity.

    Returns (documents, update rows); raises RuntimeError if the check fails.
    """
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        check = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if check != ["ok"]:
            raise RuntimeError(f"the copy failed its integrity check: {'; '.join(check[:5])}")
        return (conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM updates").fetchone()[0])
    finally:
        conn.close()


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL back into the database file and make the next write start it over (the writer thread).

    First PASSIVE, which copies what the WAL holds (and syncs the database
    file) while commits go on. Then RESTART: a passive checkpoint never
    catches up with commits that go on meanwhile, so the WAL would never
    start over and grew without end. RESTART holds writers off while it runs
    (as SQLite's own autocheckpoint does inside a COMMIT), but after the
    passive pass it has only the commits made during that pass to copy (and,
    when there were some, the WAL and the database file to sync again):
    nothing when none came, a few ms when some did, instead of the whole
    copy (4 to 13 ms every 200 commits here, which showed in the typing
    latency's p99). A commit due meanwhile finds the database busy and waits
    in the writer thread, behind it, never on the event loop. RESTART waits
    at most CHECKPOINT_WAIT_MS for readers (a long read, a backup) before it
    gives up until next time, so they never hold writers off longer than
    that.
    """
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _commit_fn(commit: Commit) -> Callable[[sqlite3.Connection], None]:
    return lambda conn: _write_commit(conn, commit)
