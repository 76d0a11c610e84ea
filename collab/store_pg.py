"""The PostgreSQL store: every SQL statement collab runs on PostgreSQL, its migrations and its one writer.

Driver: asyncpg. It speaks PostgreSQL's binary protocol from compiled code and
keeps each connection's prepared statements, so a group commit costs this
process little CPU; CPU per acknowledged edit is what the performance work
(issue 13) is measured by. psycopg 3 with its pool is the alternative; collab
uses one driver, not both.

The interface and its rules are in storage.py; this backend keeps them so:
  * one writer connection (application_name `collab-writer`): whatever is
    queued or `schedule`d while a transaction runs, or in the few event-loop
    turns before it starts (storage.GroupWriter._gather), is committed
    together in the next one (group commit, across documents);
  * a transaction first takes every lock it will need, in one global order:
    advisory locks on the names of documents it creates (by key), then the
    rows of every document it touches (`SELECT ... ORDER BY id FOR UPDATE`).
    Nothing waits after that, so two processes never deadlock. A `Commit`
    whose document's locked version is not `Commit.base` is refused alone with
    `VersionConflict` and the others still commit: the fence that keeps the
    log one line whatever the number of writers (several processes, issue 12);
  * a group of commits alone is one statement in autocommit (_COMMIT_GROUP:
    lock, check, write; one round trip, rows through `unnest`). With queued
    writes (create, salt, delete, snapshot, compaction chunk, copy rows) the
    group is an explicit transaction: locks first, a SAVEPOINT per queued
    write so one that fails fails alone, then the commits in one statement.
    If a statement carrying several commits fails (a row that should not be
    there, a value PostgreSQL refuses), nothing of it was written and the
    group runs again with a savepoint per commit, so only the commit at fault
    hears of it;
  * a caller hears back only after COMMIT returned. An error of the
    connection (killed, server restarting) fails every caller of the
    transaction, even during COMMIT, whose outcome is then unknown: a room
    reloads from the database, which is the truth, and the next transaction
    opens a new connection. A connection found unusable before anything was
    sent (closed while idle: killed, the server restarted) is replaced at once
    and the transaction goes on; new connections are tried with a short,
    doubling pause after a failed one. `ping` (/healthz) goes through the same
    writer, so it fails while the database is unreachable and succeeds again
    after;
  * reads use a pool (application_name `collab-reader`); a read of several
    statements runs in one REPEATABLE READ READ ONLY transaction, and a read
    that meets a dead pooled connection is tried again on a new one. What a
    read of a whole history costs beyond the fetch never runs on the event
    loop: a load parses and replays its updates in a thread, as SQLite's
    reads do; `text_at` has PostgreSQL join its rows into one UTF-8 string (bytea) and
    replays them in a worker process (compute.text_at);
  * `text` cannot hold U+0000. Update rows hold ChangeSetJSON, where it is
    escaped; a snapshot, copied row, client id or author holding it is refused
    with ValueError before anything is written, never stored altered;
  * migrations (migrations/postgres/) run under a session advisory lock, so
    several processes starting at once apply each exactly once; one that
    waits for it says which session holds it, and a wait given up (or a
    migration's statement that waited too long, rolled back) ends in one
    StorageUnavailable line, never a bare timeout;
  * a restore's turn (`restore_turn`) is a session advisory lock of class
    RESTORE_TURNS keyed by the document's id, held on a connection of its
    own (application_name `collab-turns`, at most TURN_CONNECTIONS, opened
    when needed) from before the restore reads the head until its update is
    committed. Waiting for it is bounded by PostgreSQL's `lock_timeout`: the
    server queues the waiters and hands the lock to the next one the moment
    it is let go of (no polling, no waiter overtaken for ever). It is let go
    of on every way out, and a connection that cannot say so is closed
    (asyncpg's pool also resets a connection it gets back, which unlocks
    everything): its session ends, and the lock with it, as when the process
    holding it is killed. Never a reader's connection: a turn waits on other
    processes, and a process whose readers all waited so could not read the
    news those processes committed (nor anything else) meanwhile;
  * the writer's and the turns' sessions ask PostgreSQL for TCP keepalive
    probes (KEEPALIVES), so one whose machine vanished is ended, and its
    locks let go of, in about 25 s rather than the kernel's two hours.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import orjson

from . import resources
from .changes import ChangeSet
from .history import Authorship
from .rebase import Update
from .sequencer import KEEP_BYTES, Accepted, History
from .storage import (COPY_TABLES, DOCUMENT_COLUMNS, DOCUMENT_FIELDS, MAX_FORMER_NAMES, PERSON_KEY, Commit,
                      contiguous_tail, describe, DocumentGone, GroupWriter, history_entry, history_of, Kept, Loaded,
                      NamedWhileCompacting, NameTaken, NoPermission, pending_migrations, redact, StorageUnavailable,
                      StoreClosed, TooManyCheckpoints, TooManyDocuments, TurnLost, VERSION_UNBOUNDED, VersionCompacted,
                      VersionConflict, replayed_bytes)
from .text import Text

READERS = 4             # pooled reader connections
CONNECT_TIMEOUT = 15.0  # seconds to open a connection: a refused one fails at once (/healthz says 503 at
#                        once); this is for a host that does not answer, and long enough that a busy event
#                        loop (seconds of rebasing after a reload) does not fail a connection that was fine
RECONNECT_DELAY = (0.1, 1.0)  # seconds between failed attempts to open the writer's connection (doubling)
COMMAND_TIMEOUT = 60.0  # seconds one statement may take before its connection is given up
MIGRATION_LOCK = 0x636F6C6C61626D69  # session advisory lock key held while migrating
NAME_LOCKS = 0x636F6C6C              # advisory lock class of document names being created ...
COUNT_KEY = -(1 << 31)               # ... and its key held while counting documents before making one
RESTORE_TURNS = 0x636F6C72           # advisory lock class of documents whose restore has its turn (key: the id)
TURN_CONNECTIONS = 4  # connections that hold restores' turns (documents restored at once, in one process)
TURN_SLACK = 1.0      # seconds past a turn's timeout before a server that does not answer is given up on
_BUSY_TURNS = "too many restores are under way at this server at once; try again"
# How soon PostgreSQL finds a connection of ours dead whose machine vanished (power, network) and ends its
# session, letting go of its locks (a restore's turn, a commit's row locks): probes after 10 s of silence,
# 5 s apart, 3 missed: about 25 s, where the kernel's default is over two hours. Set on the writer's and
# the turns' connections (readers hold no lock that matters) with set_config, not as startup parameters,
# which a pooler such as PgBouncer refuses; TCP connections only; the same names in the database URL win.
KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}

Write = Callable[[asyncpg.Connection], Awaitable[object]]
log = logging.getLogger("collab")


# ------------------------------------------------------------------ errors

def _is_connection_error(exc: BaseException) -> bool:
    """An error of the connection or the server, not of a statement: the transaction's outcome is unknown."""
    if isinstance(exc, asyncpg.PostgresError):
        # 08 connection, 57 operator intervention (shutdown, terminated, cancelled), 53 resources, 58 system
        return (getattr(exc, "sqlstate", None) or "")[:2] in ("08", "57", "53", "58")
    if isinstance(exc, asyncpg.InterfaceError):  # "connection is closed", "another operation is in progress"...
        return not isinstance(exc, ValueError)   # ... but not a value the driver refused to send (DataError)
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.exceptions.InternalClientError,
                            StorageUnavailable))


def _unavailable(url: str, exc: BaseException, doing: str) -> StorageUnavailable:
    if isinstance(exc, StorageUnavailable):
        return exc
    reason = redact(str(exc) or type(exc).__name__, url)
    return StorageUnavailable(f"the PostgreSQL database {describe(url)} is unavailable ({doing}): {reason}")


def _keepalives(url: str) -> list[str]:
    """The set_config calls that set KEEPALIVES on a session of ours (but those the URL sets itself)."""
    given = {key for key, _ in parse_qsl(urlsplit(url).query)}
    return [f"set_config('{k}', '{v}', false)" for k, v in KEEPALIVES.items() if k not in given]


async def _connect(url: str, name: str) -> asyncpg.Connection:
    """A new connection named `name` in pg_stat_activity; StorageUnavailable (password-free) when it fails."""
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                     server_settings={"application_name": name})
    except asyncpg.InvalidCatalogNameError:
        raise StorageUnavailable(f"the PostgreSQL database {describe(url)} does not exist "
                                 "(create it first, e.g. with createdb)") from None
    except Exception as exc:  # noqa: BLE001 - every way of failing to connect is "unavailable"
        raise _unavailable(url, exc, "connecting") from None
    try:
        if keepalives := _keepalives(url):
            await conn.execute("SELECT " + ", ".join(keepalives))
        return conn
    except BaseException as exc:
        conn.terminate()
        if isinstance(exc, Exception):
            raise _unavailable(url, exc, "connecting") from None
        raise


# ------------------------------------------------------------------ migrations

def migration_files(directory: Path | None = None) -> list[tuple[int, Path]]:
    from .store import migration_files as numbered
    return numbered(resources.migrations_dir("postgres") if directory is None else Path(directory))


_LOCK_HOLDERS = """
SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event, a.xact_start IS NOT NULL AS in_xact,
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::bigint AS seconds
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
   AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.database = (SELECT oid FROM pg_database
                                                                     WHERE datname = current_database())
"""
# What ends a wait of ours for a lock or a statement of a migration: collab's own COMMAND_TIMEOUT, the
# URL's (or the role's) lock_timeout, or a statement_timeout / pg_cancel_backend.
_WAITED_TOO_LONG = (asyncio.TimeoutError, asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError)


def _why_it_ended(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return "waited for a lock past the lock_timeout"
    if isinstance(exc, asyncpg.QueryCanceledError):
        return "was cancelled (a statement_timeout, or pg_cancel_backend)"
    return f"did not finish in {COMMAND_TIMEOUT:g} s"


async def _migration_lock_holder(conn: asyncpg.Connection) -> tuple[str, int | None]:
    """Who holds MIGRATION_LOCK, for a message: ("the session of pid N (application, state, ...)", N)."""
    try:
        rows = await conn.fetch(_LOCK_HOLDERS, MIGRATION_LOCK >> 32, MIGRATION_LOCK & 0xFFFFFFFF, timeout=5)
    except Exception:  # noqa: BLE001 - the message goes without it
        rows = []
    if not rows:
        return "another session", None
    r = rows[0]
    waiting = r["wait_event_type"] == "Lock"  # (an idle session waits for its client: not worth saying)
    what = ", ".join(str(x) for x in (r["application_name"] or None, r["state"],
                                      waiting and f"itself waiting for a lock ({r['wait_event']})",
                                      r["seconds"] is not None and (f"in a transaction for {r['seconds']} s"
                                                                    if r["in_xact"] else
                                                                    f"connected for {r['seconds']} s")) if x)
    return f"the session of pid {r['pid']}" + (f" ({what})" if what else ""), r["pid"]


async def _take_migration_lock(conn: asyncpg.Connection, where: str) -> None:
    """MIGRATION_LOCK; when another session holds it, say which, then wait (up to COMMAND_TIMEOUT, or the
    URL's lock_timeout, or a statement_timeout): then StorageUnavailable naming that session, not a bare
    TimeoutError."""
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK):
        return
    holder, _ = await _migration_lock_holder(conn)
    log.warning("%s: waiting for the migration lock, which %s holds: another process is migrating the database",
                where, holder)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    except _WAITED_TOO_LONG as exc:
        # A lock granted just as the wait was given up goes too (this connection holds nothing else yet;
        # unlock_all says nothing when there is none). A connection that cannot say so is ended: its
        # session's locks go with it.
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()", timeout=5)
        except Exception:  # noqa: BLE001 - the message below is what matters
            conn.terminate()
        holder, pid = await _migration_lock_holder(conn)
        raise StorageUnavailable(
            f"{where}: gave up waiting for collab's migration lock ({_why_it_ended(exc)}), which {holder} holds: "
            "another process is migrating the database (or was, and was stopped while its statement waited: "
            "PostgreSQL ends its session when that statement ends); nothing was changed. If no collab is "
            f"migrating it, end that session (SELECT pg_terminate_backend({pid or 'PID'})) and try again") from None


async def apply_migrations(conn: asyncpg.Connection, directory: Path | None = None,
                           where: str = "the database") -> list[str]:
    """Apply the migrations not yet in `schema_version`, each in its own transaction, under an advisory lock.

    A migration whose statement waits too long (for a lock another session holds on collab's tables, say) is
    rolled back, and StorageUnavailable says which one, rather than a bare TimeoutError."""
    files = migration_files(directory)
    await _take_migration_lock(conn, where)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                           "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)")
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
        applied = []
        for number, path in pending_migrations(files, done):
            stands = f"; {', '.join(applied)} stand" if applied else ""
            try:
                async with conn.transaction():
                    try:
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_version (version, name, applied) "
                                           "VALUES ($1, $2, $3)", number, path.name, time.time())
                    except _WAITED_TOO_LONG as exc:  # raised inside: rolled back on the way out
                        raise StorageUnavailable(
                            f"{where}: migration {path.name} {_why_it_ended(exc)}, most likely waiting for a "
                            "lock another session holds on collab's tables (an open transaction, a pg_dump, a "
                            "server of the older collab...; see pg_locks), and was rolled back, nothing of it "
                            f"applied{stands}: try again") from None
            except (*_WAITED_TOO_LONG, asyncpg.InterfaceError, OSError) as exc:  # (not the StorageUnavailable above)
                # Its COMMIT (or the ROLLBACK after a statement given up) got no answer, or the connection
                # went: the session is ended, which rolls back what was not committed; schema_version says
                # what was.
                conn.terminate()
                why = _why_it_ended(exc) if isinstance(exc, _WAITED_TOO_LONG) else \
                    f"its connection failed: {type(exc).__name__}: {exc}"
                raise StorageUnavailable(
                    f"{where}: migration {path.name} ended with no answer to its COMMIT or ROLLBACK ({why})"
                    f"{stands}; whether it stands is not known: run collab migrate again, which applies it "
                    "if it does not") from None
            applied.append(path.name)
        return applied
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _migrate_at(conn: asyncpg.Connection, url: str) -> list[str]:
    """apply_migrations; NoPermission, saying what to do, when the user may not make tables there."""
    try:
        return await apply_migrations(conn, where=describe(url))
    except asyncpg.InsufficientPrivilegeError as exc:
        # Since PostgreSQL 15 only the database's owner may create tables in its schema `public`.
        raise NoPermission(f"the PostgreSQL user may not create collab's tables in {describe(url)} ({exc}): "
                           "make it the database's owner (createdb --owner USER DB, or ALTER DATABASE DB "
                           "OWNER TO USER)") from None


async def migrate(url: str) -> list[str]:
    """Apply pending migrations to the database at `url` (which must exist)."""
    conn = await _connect(url, "collab-migrate")
    try:
        return await _migrate_at(conn, url)
    finally:
        await conn.close()


async def _connect_if_there(url: str) -> asyncpg.Connection | None:
    """A connection for a command, or None if the database does not exist."""
    try:
        return await _connect(url, "collab-admin")
    except StorageUnavailable as exc:
        if "does not exist" in str(exc):
            return None
        raise


async def database_exists(url: str) -> bool:
    conn = await _connect_if_there(url)
    if conn is None:
        return False
    await conn.close()
    return True


async def tables(url: str) -> set[str]:
    """The tables of the database's schema, whoever owns them (pg_class shows them all); none if the
    database does not exist."""
    conn = await _connect_if_there(url)
    if conn is None:
        return set()
    try:
        rows = await conn.fetch("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')")
    finally:
        await conn.close()
    return {row[0] for row in rows}


async def schema_versions(url: str) -> set[int]:
    """The migrations the database records as applied (none if it has no `schema_version`, or is not there)."""
    conn = await _connect_if_there(url)
    if conn is None:
        return set()
    try:
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            return set()
        return {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
    finally:
        await conn.close()


# ------------------------------------------------------------------ statements

_LOCK_DOCUMENTS = "SELECT id, version FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"

# One statement writes every accepted commit of a transaction: their update
# rows, the documents' new heads and any snapshots (data-modifying CTEs).
_WRITE_COMMITS = """
WITH u AS (
    INSERT INTO updates (doc_id, version, client_id, author, time, changes, inserted, deleted, restored_from,
                         frame_end, person, color)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::bigint[], $18::bool[], $19::text[], $20::text[])
), d AS (
    UPDATE documents AS doc SET version = h.version, length = h.length, updated = h.updated
    FROM unnest($10::bigint[], $11::bigint[], $12::bigint[], $13::float8[]) AS h(id, version, length, updated)
    WHERE doc.id = h.id
), s AS (
    INSERT INTO snapshots (doc_id, version, text, time)
    SELECT * FROM unnest($14::bigint[], $15::bigint[], $16::text[], $17::float8[])
    ON CONFLICT DO NOTHING
)
SELECT 1
"""

# A group of commits alone (no queued write) is this one statement in autocommit: its own
# transaction, one round trip. It locks the documents' rows in id order, and writes the
# commits whose document is at their base; it returns each locked row's version as found,
# so the caller knows which commits were refused (VersionConflict).
_COMMIT_GROUP = """
WITH locked AS (
    SELECT id, version FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
), ok AS (
    SELECT c.id FROM unnest($1::bigint[], $2::bigint[]) AS c(id, base) JOIN locked USING (id)
    WHERE locked.version = c.base
), u AS (
    INSERT INTO updates (doc_id, version, client_id, author, time, changes, inserted, deleted, restored_from,
                         frame_end, person, color)
    SELECT * FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::float8[], $8::text[],
                         $9::bigint[], $10::bigint[], $11::bigint[], $20::bool[], $21::text[], $22::text[])
        AS r(doc_id, version, client_id, author, time, changes, inserted, deleted, restored_from,
             frame_end, person, color)
    WHERE r.doc_id IN (SELECT id FROM ok)
), d AS (
    UPDATE documents AS doc SET version = h.version, length = h.length, updated = h.updated
    FROM unnest($12::bigint[], $13::bigint[], $14::bigint[], $15::float8[]) AS h(id, version, length, updated)
    WHERE doc.id = h.id AND h.id IN (SELECT id FROM ok)
), s AS (
    INSERT INTO snapshots (doc_id, version, text, time)
    SELECT * FROM unnest($16::bigint[], $17::bigint[], $18::text[], $19::float8[]) AS x(doc_id, version, text, time)
    WHERE x.doc_id IN (SELECT id FROM ok)
    ON CONFLICT DO NOTHING
)
SELECT id, version FROM locked
"""

_INSERT_SNAPSHOT = ("INSERT INTO snapshots (doc_id, version, text, time) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT DO NOTHING")
_SNAPSHOT_AT = ("SELECT version, text FROM snapshots WHERE doc_id = $1 AND version <= $2 "
                "ORDER BY version DESC LIMIT 1")
_HISTORY = ("SELECT version, client_id, changes, frame_end FROM updates "
            "WHERE doc_id = $1 AND version > $2 AND version <= $3 ORDER BY version")
_HISTORY_PAGE = ("SELECT version, client_id, changes, frame_end, octet_length(changes) FROM updates "
                 "WHERE doc_id = $1 AND version > $2 "
                 "AND version <= (SELECT max(version) FROM (SELECT version, sum(octet_length(changes)) OVER "
                 "(ORDER BY version ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM updates "
                 "WHERE doc_id = $1 AND version > $2 AND version <= $3) page WHERE before IS NULL OR before < $4) "
                 "ORDER BY version")
_UPDATE_ROWS = ("SELECT version, client_id, changes FROM updates "
                "WHERE doc_id = $1 AND version > $2 AND version <= $3 ORDER BY version")
# The same rows' count and their changes joined by commas in version order, as UTF-8 bytes: nothing of
# them is decoded on the event loop (history.text_after).
_UPDATE_CHANGES = ("SELECT count(*), convert_to(coalesce(string_agg(changes, ',' ORDER BY version), ''), 'UTF8') "
                   "FROM updates WHERE doc_id = $1 AND version > $2 AND version <= $3")


def _int_or_none(v) -> int | None:
    return None if v is None else int(v)


def _str_or_none(v) -> str | None:
    return None if v is None else str(v)


_COPY_KINDS = {  # how each column is normalised before it is sent (SQLite's columns are loosely typed)
    "updates": (int, str, str, float, str, int, int, _int_or_none, bool, _str_or_none, _str_or_none),
    "checkpoints": (int, str, str, float),
    "snapshots": (int, str, float),
    "authorship": (int, str),
    "renamed": (str, float),
    "people": (str, int, str, _str_or_none),
}


def _copy_read(table: str, first: bool, bounded: bool) -> str:
    """The query of one page of a copied table (`_PgView.rows`): $1 the document, then (unless `first`)
    the key to read on from, the most rows and (if `bounded`) the most bytes of text.

    Bounded, the page is cut in the database: a running sum of the octet_length of its text columns
    (a toasted value's is in its header: nothing is decompressed to count it) finds the last row
    whose predecessors hold less than the bound, and only the rows up to it are read and sent."""
    columns = COPY_TABLES[table]
    key = columns[0]
    where = "doc_id = $1" + ("" if first else f" AND {key} > $2")
    n = 2 if first else 3
    page = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
    if not bounded:
        return f"{page} ORDER BY {key} LIMIT ${n}"
    size = " + ".join(f"coalesce(octet_length({column}), 0)" for column, kind in zip(columns, _COPY_KINDS[table])
                      if kind in (str, _str_or_none))
    return (f"{page} AND {key} <= (SELECT max({key}) FROM (SELECT {key}, sum({size}) OVER (ORDER BY {key} "
            f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM {table} WHERE {where} "
            f"ORDER BY {key} LIMIT ${n}) page WHERE before IS NULL OR before < ${n + 1}) ORDER BY {key}")


_COPY_READ = {(table, first, bounded): _copy_read(table, first, bounded)
              for table in COPY_TABLES for first in (True, False) for bounded in (True, False)}
_COPY_WRITE = {
    "updates": "INSERT INTO updates (doc_id, version, client_id, author, time, changes, inserted, deleted, "
               "restored_from, frame_end, person, color) SELECT $1, * FROM unnest($2::bigint[], $3::text[], "
               "$4::text[], $5::float8[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bool[], "
               "$11::text[], $12::text[])",
    "checkpoints": "INSERT INTO checkpoints (doc_id, version, name, author, time) "
                   "SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::float8[])",
    "snapshots": "INSERT INTO snapshots (doc_id, version, text, time) "
                 "SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::float8[])",
    "authorship": "INSERT INTO authorship (doc_id, version, spans) SELECT $1, * FROM unnest($2::bigint[], $3::text[])",
    "renamed": "INSERT INTO renamed (doc_id, name, time) SELECT $1, * FROM unnest($2::text[], $3::float8[])",
    "people": "INSERT INTO people (doc_id, person, version, name, color) "
              "SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[])",
}


def _name_key(name: str) -> int:
    """The advisory lock key of a document name (a signed 32-bit number; collisions only serialise more)."""
    key = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    return key - (1 << 32) if key >= 1 << 31 else key


def _turn_key(doc_id: int) -> int:
    """The advisory lock key of a document's restore turn: its id as a signed 32-bit number (ids past
    2**31 wrap; collisions only serialise more)."""
    return (doc_id + (1 << 31)) % (1 << 32) - (1 << 31)


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A turn's connection back to its pool, which resets the session first (asyncpg: `RESET ALL`,
    `pg_advisory_unlock_all()`), shielded from cancellation, within CONNECT_TIMEOUT (by default the
    reset would get what was left of the acquire's timeout, often nothing after a wait for the turn). One
    it cannot reset it closes, and raises: that session ended, and every lock with it, so that is not an
    error here."""
    with suppress(Exception):
        await pool.release(conn, timeout=CONNECT_TIMEOUT)


def _refuse_nul(what: str, *texts: str) -> None:
    for text in texts:
        if "\x00" in text:
            raise ValueError(f"{what} holds U+0000, which PostgreSQL text cannot store; nothing was written")


def _check_commit(commit: Commit) -> None:
    for e in commit.entries:
        if "\x00" in e.author or "\x00" in e.update.client_id:
            _refuse_nul(f"document {commit.doc_id} version {e.version} (client id or author)",
                        e.author, e.update.client_id)
    if commit.snapshot is not None:
        _refuse_nul(f"the snapshot of document {commit.doc_id} at version {commit.snapshot[0]}", commit.snapshot[1])


def _commit_arrays(commits: list[Commit]) -> list[list]:
    """The 20 arrays of _WRITE_COMMITS ($1..$20, and $3..$22 of _COMMIT_GROUP): update rows, heads, snapshots,
    then the update rows' frame ends, person ids and colours."""
    doc, ver, cid, author, when, changes, ins, dels, restored = [], [], [], [], [], [], [], [], []
    frame_end, person, color = [], [], []
    heads: dict[int, tuple[int, int, float]] = {}
    s_doc, s_ver, s_text, s_time = [], [], [], []
    now = time.time()
    for c in commits:
        d = c.doc_id
        for e in c.entries:
            i, x = e.update.changes.counts()
            doc.append(d)
            ver.append(e.version)
            cid.append(e.update.client_id)
            author.append(e.author)
            when.append(e.time)
            changes.append(e.changes_json.decode())
            ins.append(i)
            dels.append(x)
            restored.append(e.restored_from)
            frame_end.append(e is c.entries[-1])  # a commit is broadcast as one frame: it ends there
            person.append(e.person)
            color.append(e.color)
        heads[d] = (c.version, c.length, c.entries[-1].time)  # two commits of one document: the later wins
        if c.snapshot is not None:
            s_doc.append(d)
            s_ver.append(c.snapshot[0])
            s_text.append(c.snapshot[1])
            s_time.append(now)
    return [doc, ver, cid, author, when, changes, ins, dels, restored,
            list(heads), [h[0] for h in heads.values()], [h[1] for h in heads.values()],
            [h[2] for h in heads.values()], s_doc, s_ver, s_text, s_time, frame_end, person, color]


async def _write_commits(conn: asyncpg.Connection, commits: list[Commit]) -> None:
    """Insert every commit's update rows, move the documents' heads, store the snapshots: one statement."""
    await conn.execute(_WRITE_COMMITS, *_commit_arrays(commits))


async def _snapshot_at(conn: asyncpg.Connection, doc_id: int, version: int) -> tuple[int, str]:
    row = await conn.fetchrow(_SNAPSHOT_AT, doc_id, version)
    return (row[0], row[1]) if row else (0, "")


async def _keep_version(conn: asyncpg.Connection, doc_id: int, kept: Kept) -> None:
    """A snapshot (and authorship, if given) at `kept.version` for `compact`; a snapshot already there must
    be the same text."""
    await conn.execute(_INSERT_SNAPSHOT, doc_id, kept.version, kept.text, time.time())
    stored = await conn.fetchval("SELECT text FROM snapshots WHERE doc_id = $1 AND version = $2",
                                 doc_id, kept.version)
    if stored != kept.text:
        raise RuntimeError(f"document {doc_id}: the stored snapshot of version {kept.version} differs "
                           "from its update log; nothing was compacted (restore from a backup?)")
    if kept.spans is not None:
        await conn.execute("INSERT INTO authorship (doc_id, version, spans) VALUES ($1, $2, $3) "
                           "ON CONFLICT DO NOTHING", doc_id, kept.version, orjson.dumps(kept.spans).decode())


# For compact: the first named version below the boundary that deleting the rows from `low` ($2) to
# `upto` ($4) would make unreadable (see store.py's _NAMED_LOSING_ROWS).
_NAMED_LOSING_ROWS = (
    "SELECT MIN(version) FROM (SELECT c.version, (SELECT COALESCE(MAX(s.version), 0) FROM snapshots s "
    "WHERE s.doc_id = c.doc_id AND s.version <= c.version) AS snap FROM checkpoints c "
    "WHERE c.doc_id = $1 AND c.version >= $2 AND c.version < $3) named "
    "WHERE snap < version AND snap >= $2 - 1 AND snap < $4")

# For compact, before it drops a document's update rows up to $2: each person's latest name and colour
# among them, kept in `people` unless a later one is there already (see store.py's _KEEP_PEOPLE).
_KEEP_PEOPLE = (
    "INSERT INTO people (doc_id, person, version, name, color) SELECT DISTINCT ON (person) doc_id, person, "
    "version, author, color FROM updates WHERE doc_id = $1 AND version <= $2 AND person IS NOT NULL "
    "ORDER BY person, version DESC ON CONFLICT (doc_id, person) DO UPDATE SET version = EXCLUDED.version, "
    "name = EXCLUDED.name, color = EXCLUDED.color WHERE EXCLUDED.version > people.version")


async def _exists(conn: asyncpg.Connection, doc_id: int, name: str | None = None) -> str:
    """The name of the document with the id `doc_id`; DocumentGone if there is none (it was deleted since
    its row was read) or, with `name`, if it is called otherwise (renamed since)."""
    found = await conn.fetchval("SELECT name FROM documents WHERE id = $1", doc_id)
    if found is None or name not in (None, found):
        raise DocumentGone(doc_id, name)
    return found


async def _rows_of(conn: asyncpg.Connection, doc_id: int, query: str, *args) -> list:
    """`query`'s rows about document `doc_id`, or DocumentGone (in one snapshot: `_read(..., snapshot=True)`)."""
    await _exists(conn, doc_id)
    return await conn.fetch(query, *args)


async def _readable(conn: asyncpg.Connection, doc_id: int, version: int) -> None:
    """Raise VersionCompacted unless `version` (at most the head) can be rebuilt: its newest snapshot is
    itself, or the row after that snapshot is stored (stored rows are one run up to the head)."""
    snap = await conn.fetchval("SELECT MAX(version) FROM snapshots WHERE doc_id = $1 AND version <= $2",
                               doc_id, version) or 0
    if snap < version and await conn.fetchval("SELECT 1 FROM updates WHERE doc_id = $1 AND version = $2",
                                              doc_id, snap + 1) is None:
        raise await _compacted(conn, doc_id, version, snap or None)


async def _compacted(conn: asyncpg.Connection, doc_id: int, version: int, below: int | None) -> VersionCompacted:
    above = await conn.fetchval("SELECT MIN(version) FROM snapshots WHERE doc_id = $1 AND version > $2",
                                doc_id, version)
    return VersionCompacted(version, below, above)


class _Queued:
    """A write waiting for the next transaction: what it locks, what it does, who waits for it."""

    __slots__ = ("fn", "fut", "doc_ids", "keys")

    def __init__(self, fn: Write, fut: asyncio.Future, doc_ids: Iterable[int], keys: Iterable[int]):
        self.fn, self.fut, self.doc_ids, self.keys = fn, fut, tuple(doc_ids), tuple(keys)


class _PgView:
    """`StorageView` over one connection inside a REPEATABLE READ READ ONLY transaction.

    A lost connection or server (a timeout, a reset, the backend terminated)
    is StorageUnavailable, as from every other read of the store; what the
    caller does with the rows (writes a copy) raises its own errors.
    """

    def __init__(self, conn: asyncpg.Connection, url: str):
        self.conn, self.url = conn, url

    async def read(self, step: Awaitable):
        """What `step` (a call on this view's connection) gives; a lost connection is StorageUnavailable."""
        try:
            return await step
        except Exception as exc:  # noqa: BLE001 - sorted just below
            if _is_connection_error(exc):
                raise _unavailable(self.url, exc, "reading") from None
            raise

    async def _fetch(self, query: str, *args) -> list:
        return await self.read(self.conn.fetch(query, *args))

    async def documents(self) -> list[dict]:
        rows = await self._fetch(f"SELECT {DOCUMENT_COLUMNS} FROM documents ORDER BY id")
        return [dict(zip(DOCUMENT_FIELDS, row)) for row in rows]

    async def rows(self, doc_id: int, table: str, after: int | str, limit: int,
                   max_bytes: int | None = None) -> list[tuple]:
        first, bounded = after == -1, max_bytes is not None
        args = (doc_id, *(() if first else (after,)), limit, *((max_bytes,) if bounded else ()))
        return [tuple(r) for r in await self._fetch(_COPY_READ[table, first, bounded], *args)]


class PgStore(GroupWriter):
    """PostgreSQL backend of `storage.Storage`."""

    def __init__(self, url: str, snapshot_every: int = 1000, keep: int = 2000, readers: int = READERS):
        self.url = url
        self.snapshot_every = snapshot_every
        self.keep = keep
        self.readers = readers
        self._pool: asyncpg.Pool | None = None
        self._turns: asyncpg.Pool | None = None  # restores' turns (restore_turn); no connection until one is taken
        # Connections of that pool given to turns (taken, or waiting for the lock): with fewer than
        # TURN_CONNECTIONS, an acquire that timed out was connecting, and the database did not answer.
        self._turns_out = 0
        self._keepalives = _keepalives(url)  # set with each turn's lock_timeout
        self._w: asyncpg.Connection | None = None
        self._open = False
        self._init_writer()  # storage.GroupWriter: queued writes (_Queued) and waiting documents
        self.commits = 0      # transactions committed (for tests and benchmarks)
        self.reconnects = 0   # writer connections opened after the first
        self.retries = 0      # transactions run again with a savepoint per commit (a statement failed)
        self._retry_at = 0.0  # loop time before which the writer does not try to connect again
        self._delay = RECONNECT_DELAY[0]

    def __repr__(self) -> str:
        return f"PgStore({describe(self.url)!r})"

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> "PgStore":
        self._w = await _connect(self.url, "collab-writer")
        try:
            await _migrate_at(self._w, self.url)
        except Exception as exc:
            await self._w.close()
            self._w = None
            if _is_connection_error(exc):
                raise _unavailable(self.url, exc, "migrating") from None
            raise
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.readers, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, server_settings={"application_name": "collab-reader"})
            self._turns = await asyncpg.create_pool(
                self.url, min_size=0, max_size=TURN_CONNECTIONS, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, server_settings={"application_name": "collab-turns"})
        except Exception as exc:  # noqa: BLE001
            await self._w.close()
            self._w = None
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise _unavailable(self.url, exc, "opening the reader pool") from None
        self._open = True
        return self

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        self._open = False
        if self._w is not None:
            self._w.terminate() if self._w.is_closed() else await self._close_quietly(self._w)
            self._w = None
        await asyncio.gather(*(self._close_pool(pool) for pool in (self._pool, self._turns) if pool is not None))
        self._pool = self._turns = None

    @staticmethod
    async def _close_pool(pool: asyncpg.Pool) -> None:
        """Close `pool` once its connections are given back, at most 10 s; then end them regardless."""
        try:
            async with asyncio.timeout(10):
                await pool.close()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()

    @staticmethod
    async def _close_quietly(conn: asyncpg.Connection) -> None:
        try:
            async with asyncio.timeout(5):
                await conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that is going anyway
            conn.terminate()

    # --------------------------------------------------------------- writer

    async def _write(self, fn: Write, doc_ids: Iterable[int] = (), names: Iterable[str] = (), count: bool = False):
        """Run `fn(conn)` inside the next group transaction; return its result after COMMIT.

        `doc_ids` and `names` are every document row it touches and every
        name it creates, `count` whether it counts the documents: the
        transaction takes those locks first (see the header).
        """
        if not self._open:
            raise StoreClosed()
        fut = asyncio.get_running_loop().create_future()
        keys = [_name_key(n) for n in names] + ([COUNT_KEY] if count else [])
        self._enqueue(_Queued(fn, fut, doc_ids, keys))
        return await fut

    def _writer_open(self) -> bool:
        return self._open

    async def _write_loop(self) -> None:
        while self._queue or self._sources:
            await self._gather()
            batch, taken = self._take()
            if not batch and not taken:
                continue
            try:
                outcomes = await self._group(batch, [c for _, c in taken])
            except Exception as exc:  # the whole group failed (or its outcome is unknown); every caller learns it
                error = _unavailable(self.url, exc, "committing") if _is_connection_error(exc) else exc
                outcomes = [(False, error)] * (len(batch) + len(taken))
            else:
                self.commits += 1
            for q, (ok, value) in zip(batch, outcomes):
                if not q.fut.done():
                    q.fut.set_result(value) if ok else q.fut.set_exception(value)
            self._answer(taken, outcomes[len(batch):])

    async def _writer_connection(self) -> asyncpg.Connection:
        """The writer's connection, opened again if it is gone.

        After a failed attempt the next one waits a little (RECONNECT_DELAY,
        doubling): a database that is down is not hammered, and asyncio runs
        the clean-up of the failed attempt's socket first (in CPython a
        cancelled `sock_connect` unregisters its descriptor a loop iteration
        late, and a connection opened at once on the same descriptor number
        then never hears back).
        """
        if self._w is None or self._w.is_closed():
            if self._w is not None:
                self._w.terminate()
                self._w = None
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, self._retry_at - loop.time()))
            try:
                self._w = await _connect(self.url, "collab-writer")
            except BaseException:
                self._retry_at = loop.time() + self._delay
                self._delay = min(2 * self._delay, RECONNECT_DELAY[1])
                raise
            self._delay = RECONNECT_DELAY[0]
            self.reconnects += 1
        return self._w

    async def _commit_group(self, commits: list[Commit]) -> list[tuple[bool, object]]:
        """Commits of distinct documents, and nothing else: _COMMIT_GROUP, one statement, one round trip.

        A connection found unusable before the statement was sent (closed, or
        left mid-operation by a kill) is replaced and the statement sent again;
        one that fails once the statement is out is an unknown outcome (raised).
        """
        out: list[tuple[bool, object] | None] = []
        for c in commits:  # refused here: nothing of them is sent
            try:
                _check_commit(c)
                out.append(None)
            except ValueError as exc:
                out.append((False, exc))
        sent = [c for c, o in zip(commits, out) if o is None]
        if sent:
            args = ([c.doc_id for c in sent], [c.base for c in sent], *_commit_arrays(sent))
            conn = await self._writer_connection()
            try:
                rows = await conn.fetch(_COMMIT_GROUP, *args)
            except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
                if isinstance(exc, ValueError):  # a value the driver refused: a statement error
                    raise
                conn.terminate()  # refused before anything was sent: a new connection, once
                conn = await self._writer_connection()
                rows = await conn.fetch(_COMMIT_GROUP, *args)
            except BaseException as exc:
                if not conn.is_closed() and (not isinstance(exc, Exception) or _is_connection_error(exc)):
                    conn.terminate()  # its state is unknown: the next transaction opens a new connection
                raise
            found = {r[0]: r[1] for r in rows}
            it = iter(sent)
            for k, o in enumerate(out):
                if o is None:
                    c = next(it)
                    v = found.get(c.doc_id)
                    out[k] = (True, None) if v == c.base else (False, VersionConflict(c.doc_id, c.base, v))
        return out

    async def _begin(self) -> asyncpg.Connection:
        """BEGIN on the writer connection. A connection that died while idle (the server restarted, it was
        killed) fails here, before anything was written: then once more on a new connection."""
        conn = await self._writer_connection()
        try:
            await conn.execute("BEGIN")
        except Exception:  # noqa: BLE001 - whatever it was, nothing was written: a new connection
            conn.terminate()
            conn = await self._writer_connection()
            try:
                await conn.execute("BEGIN")
            except BaseException:
                conn.terminate()
                raise
        return conn

    @staticmethod
    async def _end_failed(conn: asyncpg.Connection, exc: BaseException) -> None:
        """After a transaction failed: ROLLBACK if the connection is sound (a statement failed), else drop it."""
        if conn.is_closed():
            return
        if isinstance(exc, Exception) and not _is_connection_error(exc):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await conn.execute("ROLLBACK")
                return
            except BaseException:  # noqa: BLE001 - then its state is unknown after all
                pass
        conn.terminate()  # the next transaction opens a new connection

    async def _group(self, batch: list[_Queued], commits: list[Commit]) -> list[tuple[bool, object]]:
        careful = False
        if not batch and len({c.doc_id for c in commits}) == len(commits):
            try:
                return await self._commit_group(commits)
            except Exception as exc:
                if _is_connection_error(exc):
                    raise
            # A value PostgreSQL refused, a row that should not be there: nothing was written (one
            # statement). Again in a transaction that gives each commit a savepoint of its own.
            self.retries += 1
            careful = True
        conn = await self._begin()
        if not careful:
            try:
                return await self._transaction(conn, batch, commits, careful=False)
            except Exception as exc:
                if _is_connection_error(exc) or conn.is_closed():
                    raise
            # One statement carried every commit and failed (rolled back): again, one savepoint per commit.
            self.retries += 1
            try:
                await conn.execute("BEGIN")
            except BaseException as exc:
                await self._end_failed(conn, exc)
                raise
        return await self._transaction(conn, batch, commits, careful=True)

    async def _transaction(self, conn: asyncpg.Connection, batch: list[_Queued], commits: list[Commit],
                           careful: bool) -> list[tuple[bool, object]]:
        """The rest of a transaction the caller began: locks, queued writes, commits, COMMIT."""
        out: list[tuple[bool, object]] = []
        try:
            for key in sorted({k for q in batch for k in q.keys}):
                await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", NAME_LOCKS, key)
            ids = sorted({i for q in batch for i in q.doc_ids} | {c.doc_id for c in commits})
            versions = {r[0]: r[1] for r in await conn.fetch(_LOCK_DOCUMENTS, ids)} if ids else {}
            for q in batch:
                out.append(await self._savepoint(conn, q.fn))
            if batch and commits and any(q.doc_ids for q in batch):
                ids = [c.doc_id for c in commits]  # the writes above may have moved or deleted them
                versions = {r[0]: r[1] for r in await conn.fetch(
                    "SELECT id, version FROM documents WHERE id = ANY($1::bigint[])", ids)}
            out += await (self._commits_careful if careful else self._commits_at_once)(conn, commits, versions)
            await conn.execute("COMMIT")
        except BaseException as exc:
            await self._end_failed(conn, exc)
            raise
        return out

    @staticmethod
    async def _savepoint(conn: asyncpg.Connection, fn: Write) -> tuple[bool, object]:
        await conn.execute("SAVEPOINT w")
        try:
            result = await fn(conn)
        except Exception as exc:  # noqa: BLE001 - handed back to that caller
            if _is_connection_error(exc):
                raise
            await conn.execute("ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w")
            return False, exc
        await conn.execute("RELEASE SAVEPOINT w")
        return True, result

    @staticmethod
    def _admit(commit: Commit, versions: dict[int, int]) -> BaseException | None:
        found = versions.get(commit.doc_id)
        if found != commit.base:
            return VersionConflict(commit.doc_id, commit.base, found)
        try:
            _check_commit(commit)
        except ValueError as exc:
            return exc
        return None

    async def _commits_at_once(self, conn, commits: list[Commit], versions: dict[int, int]) -> list:
        out, ok = [], []
        for c in commits:
            refused = self._admit(c, versions)
            if refused is None:
                versions[c.doc_id] = c.version
                ok.append(c)
            out.append((refused is None, refused))
        if ok:
            await _write_commits(conn, ok)
        return out

    async def _commits_careful(self, conn, commits: list[Commit], versions: dict[int, int]) -> list:
        out = []
        for c in commits:
            refused = self._admit(c, versions)
            if refused is None:
                ok, refused = await self._savepoint(conn, lambda conn, c=c: _write_commits(conn, [c]))
                if ok:
                    versions[c.doc_id] = c.version
                    refused = None
            out.append((refused is None, refused))
        return out

    # ---------------------------------------------------------------- writes

    async def create_document(self, name: str, text: str = "", author: str = "", client_id: str = "",
                              exist_ok: bool = True, max_documents: int | None = None,
                              person: str | None = None, color: str | None = None) -> int:
        """Make a document; with `text`, it starts with one update inserting it (by `author`, and
        `person` and `color` when given, as a hello's).

        A name that exists already gives that document's id back unchanged,
        or raises NameTaken when `exist_ok` is false. With `max_documents`, a
        new document is refused (TooManyDocuments) when that many exist; the
        transaction holds the counting lock (COUNT_KEY) from its start, so
        count-and-insert is one step for every process sharing the database.
        """
        _refuse_nul(f"document {name!r} (author or client id)", author, client_id)
        now = time.time()
        salt = secrets.token_urlsafe(12)

        async def fn(conn: asyncpg.Connection) -> int:
            if max_documents is not None:
                if await conn.fetchval("SELECT id FROM documents WHERE name = $1", name) is None and \
                        await conn.fetchval("SELECT COUNT(*) FROM documents") >= max_documents:
                    raise TooManyDocuments(max_documents)
            doc_id = await conn.fetchval(
                "INSERT INTO documents (name, version, length, created, updated, salt) VALUES ($1, 0, 0, $2, $2, $3) "
                "ON CONFLICT (name) DO NOTHING RETURNING id", name, now, salt)
            if doc_id is None:
                if not exist_ok:
                    raise NameTaken(f"a document named {name!r} already exists")
                return await conn.fetchval("SELECT id FROM documents WHERE name = $1", name)
            if text:
                changes = ChangeSet.from_json([[0, *text.split("\n")]])
                first = Accepted(1, Update(client_id, changes), author, now, person=person, color=color)
                await _write_commits(conn, [Commit(doc_id, 0, [first], changes.new_length)])
            return doc_id

        return await self._write(fn, names=(name,), count=max_documents is not None)

    async def new_salt(self, doc_id: int, name: str | None = None) -> str:
        """Give the document a new salt: every share link made before stops working (DocumentGone if it
        was deleted, or is no longer called `name`)."""
        salt = secrets.token_urlsafe(12)

        async def fn(conn: asyncpg.Connection) -> None:
            if await conn.execute("UPDATE documents SET salt = $1 WHERE id = $2 AND ($3::text IS NULL OR name = $3)",
                                  salt, doc_id, name) == "UPDATE 0":
                raise DocumentGone(doc_id, name)

        await self._write(fn, doc_ids=(doc_id,))
        return salt

    async def delete_document(self, doc_id: int, name: str | None = None) -> None:
        """Remove a document with its whole history (its rows go by ON DELETE CASCADE); DocumentGone if it
        was deleted already, or is no longer called `name`."""
        async def fn(conn: asyncpg.Connection) -> None:
            if await conn.execute("DELETE FROM documents WHERE id = $1 AND ($2::text IS NULL OR name = $2)",
                                  doc_id, name) == "DELETE 0":
                raise DocumentGone(doc_id, name)

        await self._write(fn, doc_ids=(doc_id,))

    async def ping(self) -> None:
        """Prove the database can take a write transaction right now (through the writer, like every write)."""
        async def fn(conn: asyncpg.Connection) -> None:
            if await conn.fetchval("SELECT current_setting('transaction_read_only')") == "on":
                raise RuntimeError("the database is read-only (a standby?)")

        await self._write(fn)

    async def write_snapshot(self, doc_id: int, version: int, text: str) -> None:
        _refuse_nul(f"the snapshot of document {doc_id} at version {version}", text)
        await self._write(lambda conn: conn.execute(_INSERT_SNAPSHOT, doc_id, version, text, time.time()),
                          doc_ids=(doc_id,))

    COMPACT_CHUNK = 5000  # update rows deleted per transaction: the writer never waits long

    async def compact(self, doc_id: int, boundary: int, text: str, spans: list | None,
                      named: Sequence[Kept] = ()) -> int:
        """Keep a snapshot (and authorship) at `boundary` and at each `named` version below it, then drop
        the update rows up to `boundary`, and the authorship checkpoints below it but those (see store.Store)."""
        kept = (Kept(boundary, text, spans), *named)
        for k in kept:
            _refuse_nul(f"the snapshot of document {doc_id} at version {k.version}", k.text)

        async def keep(conn: asyncpg.Connection) -> int | None:
            for k in kept:
                await _keep_version(conn, doc_id, k)
            return await conn.fetchval("SELECT MIN(version) FROM updates WHERE doc_id = $1", doc_id)

        async def drop(conn: asyncpg.Connection, low: int, upto: int, dropped: int) -> int:
            unkept = await conn.fetchval(_NAMED_LOSING_ROWS, doc_id, low, boundary, upto)
            if unkept is not None:
                raise NamedWhileCompacting(unkept, dropped)
            await conn.execute(_KEEP_PEOPLE, doc_id, upto)
            # the authorship checkpoints no replay can start from any more (store.py, _DROP_AUTHORSHIP)
            await conn.execute("DELETE FROM authorship WHERE doc_id = $1 AND version < $2 AND version <> $3 AND "
                               "version NOT IN (SELECT version FROM checkpoints WHERE doc_id = $1)",
                               doc_id, upto, boundary)
            status = await conn.execute("DELETE FROM updates WHERE doc_id = $1 AND version <= $2", doc_id, upto)
            return int(status.rsplit(" ", 1)[-1])

        low = await self._write(keep, doc_ids=(doc_id,))
        dropped = 0
        while low is not None and low <= boundary:
            upto = min(boundary, low + self.COMPACT_CHUNK - 1)
            dropped += await self._write(lambda conn, low=low, upto=upto, dropped=dropped:
                                         drop(conn, low, upto, dropped), doc_ids=(doc_id,))
            low = upto + 1
        return dropped

    # ----------------------------------------------------------------- reads

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable], snapshot: bool = False):
        """`fn(conn)` on a pooled connection (in one REPEATABLE READ transaction with `snapshot`)."""
        for attempt in range(3):
            pool = self._pool
            if pool is None or not self._open:
                raise StoreClosed()
            try:
                async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                    if not snapshot:
                        return await fn(conn)
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        return await fn(conn)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                if attempt == 2:  # a dead pooled connection is replaced on the next acquire
                    raise _unavailable(self.url, exc, "reading") from None
                await asyncio.sleep(RECONNECT_DELAY[0] * (attempt + 1))  # see _writer_connection

    async def load(self, name: str) -> Loaded | None:
        """The document's head text and its last `keep` updates; None if it does not exist."""
        keep = self.keep

        async def fn(conn: asyncpg.Connection):
            row = await conn.fetchrow("SELECT id, version, salt, created FROM documents WHERE name = $1", name)
            if row is None:
                return None
            doc_id, version, salt, created = row
            snap_version, text = await _snapshot_at(conn, doc_id, version)
            # The log keeps at most `keep` updates and KEEP_BYTES of their ChangeSetJSON (sequencer.py).
            log_start = max(0, version - keep)
            heavy = await conn.fetchval(
                "SELECT max(version) FROM (SELECT version, sum(octet_length(changes)) OVER (ORDER BY version "
                "DESC) AS newer FROM updates WHERE doc_id = $1 AND version > $2 AND version <= $3) AS tail "
                "WHERE newer > $4", doc_id, log_start, version, KEEP_BYTES)
            log_start = log_start if heavy is None else heavy
            rows = await conn.fetch(_UPDATE_ROWS, doc_id, min(snap_version, log_start), version)
            ends = [r[0] for r in await conn.fetch(
                "SELECT version FROM updates WHERE doc_id = $1 AND version > $2 AND version < $3 AND frame_end",
                doc_id, log_start, version)]
            return doc_id, version, salt, snap_version, text, rows, ends, version - log_start, created

        read = await self._read(fn, snapshot=True)
        if read is None:
            return None

        def replay(doc_id, version, salt, snap_version, text, rows, ends, in_log, created) -> Loaded:
            log = contiguous_tail(rows, version)
            log_from = version - len(log)
            if log_from > snap_version:
                raise RuntimeError(f"document {name!r}: updates {snap_version + 1}..{log_from} are missing")
            doc = Text(text)
            for u in log[snap_version - log_from:]:
                doc.apply(u.changes)
            log = log[max(0, len(log) - in_log):] if in_log else []
            log_from = version - len(log)
            return Loaded(doc_id, name, version, str(doc), log, snap_version, salt, [v for v in ends if v > log_from],
                          created, replayed_bytes(rows, snap_version))

        return await asyncio.to_thread(replay, *read)  # parsing and replaying a long history: off the loop

    async def updates(self, doc_id: int, since: int, until: int, max_bytes: int | None = None) -> History:
        """Updates producing versions since+1 .. until (fewer if history was compacted away: none if
        since+1 is gone), with their frame ends. With `max_bytes`, the one that brings their
        ChangeSetJSON to that many bytes is the last (at least one is read; cut in the database, as
        `_copy_read` cuts a page)."""
        async def fn(conn: asyncpg.Connection) -> History:
            if max_bytes is None:
                return history_of(since, await conn.fetch(_HISTORY, doc_id, since, until))
            return history_of(since, await conn.fetch(_HISTORY_PAGE, doc_id, since, until, max_bytes), max_bytes)

        return await self._read(fn)

    async def list_documents(self) -> list[dict]:
        rows = await self._read(lambda conn: conn.fetch(
            "SELECT name, version, length, updated, created FROM documents ORDER BY updated DESC, name"))
        return [{"name": n, "version": v, "length": ln, "updated": u, "created": c} for n, v, ln, u, c in rows]

    async def document(self, name: str) -> dict | None:
        row = await self._read(lambda conn: conn.fetchrow(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE name = $1", name))
        return None if row is None else dict(zip(DOCUMENT_FIELDS, row))

    async def documents_named(self, names: list[str]) -> dict[str, dict]:
        """`document(name)` of each of these names that has a document (one query however many)."""
        if not names:
            return {}
        rows = await self._read(lambda conn: conn.fetch(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE name = ANY($1::text[])", list(names)))
        return {row[1]: dict(zip(DOCUMENT_FIELDS, row)) for row in rows}

    async def text_at(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> str:
        """The text at `version`: the newest snapshot at or below it plus the updates after it
        (VersionCompacted if they are gone, DocumentGone if the document is), read here (the rows joined
        by commas, as UTF-8 bytes, by PostgreSQL: nothing of them is decoded on the event loop) and replayed by
        compute.text_at (in a worker process; `wanted` as there)."""
        from . import compute  # the replay runs there, off the event loop and its threads

        async def fn(conn: asyncpg.Connection) -> tuple[str, bytes, int]:
            snap_version, text = await _snapshot_at(conn, doc_id, version)
            count, changes = await conn.fetchrow(_UPDATE_CHANGES, doc_id, snap_version, version)
            if count != version - snap_version:
                await _exists(conn, doc_id)
                raise await _compacted(conn, doc_id, version, snap_version if snap_version or count else None)
            return text, changes, count

        return await compute.text_at(*await self._read(fn, snapshot=True), version, wanted)

    async def history(self, doc_id: int, before: int, limit: int) -> list[dict]:
        """Update summaries with version < `before`, newest first."""
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT version, client_id, author, time, inserted, deleted, restored_from, person, color "
            "FROM updates WHERE doc_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3", doc_id, before, limit),
            snapshot=True)
        return [history_entry(*row) for row in rows]

    async def rename_document(self, doc_id: int, new_name: str, name: str | None = None) -> str:
        """Give the document a new name (NameTaken if it is someone's); the old one is remembered.
        DocumentGone if it was deleted, or is no longer called `name` (renamed by someone else since)."""
        async def fn(conn: asyncpg.Connection) -> str:
            old = await _exists(conn, doc_id, name)
            if await conn.fetchval("SELECT 1 FROM documents WHERE name = $1", new_name):
                raise NameTaken(f"a document named {new_name!r} already exists")
            await conn.execute("UPDATE documents SET name = $1 WHERE id = $2", new_name, doc_id)
            await conn.execute("DELETE FROM renamed WHERE name = $1", new_name)
            await conn.execute("INSERT INTO renamed (name, doc_id, time) VALUES ($1, $2, $3) "
                               "ON CONFLICT (name) DO UPDATE SET doc_id = excluded.doc_id, time = excluded.time",
                               old, doc_id, time.time())
            await conn.execute("DELETE FROM renamed WHERE doc_id = $1 AND name NOT IN (SELECT name FROM renamed "
                               "WHERE doc_id = $1 ORDER BY time DESC LIMIT $2)", doc_id, MAX_FORMER_NAMES)
            return old

        return await self._write(fn, names=(new_name,), doc_ids=(doc_id,))

    async def renamed_to(self, name: str) -> str | None:
        """The name the document once called `name` has now (None if there was none)."""
        return await self._read(lambda conn: conn.fetchval(
            "SELECT d.name FROM renamed r JOIN documents d ON d.id = r.doc_id WHERE r.name = $1", name))

    async def former_names(self, doc_id: int, limit: int = 20) -> list[tuple[str, float]]:
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT r.name, r.time FROM renamed r WHERE r.doc_id = $1 AND NOT EXISTS "
            "(SELECT 1 FROM documents d WHERE d.name = r.name) ORDER BY r.time DESC LIMIT $2", doc_id, limit),
            snapshot=True)
        return [(r[0], float(r[1])) for r in rows]

    async def set_checkpoint(self, doc_id: int, version: int, name: str | None, author: str,
                             max_checkpoints: int | None = None) -> None:
        """Name `version` (a checkpoint shown in the history), or with `name` None take the name away.
        Naming a version not named yet is refused (TooManyCheckpoints) when `max_checkpoints` are, and
        (VersionCompacted) when it was compacted away; renaming a named one never is. The transaction
        holds the document's row lock, so check-count-and-insert is one step for every process (and for
        `compact`, whose deletes take the same lock). DocumentGone if the document was deleted."""
        if name is None:
            async def unname(conn: asyncpg.Connection) -> None:
                await _exists(conn, doc_id)
                await conn.execute("DELETE FROM checkpoints WHERE doc_id = $1 AND version = $2", doc_id, version)

            await self._write(unname, doc_ids=(doc_id,))
            return
        _refuse_nul("a checkpoint's name or author", name, author)

        async def fn(conn: asyncpg.Connection) -> None:
            await _exists(conn, doc_id)
            if await conn.fetchval("SELECT 1 FROM checkpoints WHERE doc_id = $1 AND version = $2",
                                   doc_id, version) is None:
                await _readable(conn, doc_id, version)
                if max_checkpoints is not None:
                    count = await conn.fetchval("SELECT COUNT(*) FROM checkpoints WHERE doc_id = $1", doc_id)
                    if count >= max_checkpoints:
                        raise TooManyCheckpoints(max_checkpoints, count)
            await conn.execute(
                "INSERT INTO checkpoints (doc_id, version, name, author, time) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (doc_id, version) DO UPDATE SET name = excluded.name, author = excluded.author, "
                "time = excluded.time", doc_id, version, name, author, time.time())

        await self._write(fn, doc_ids=(doc_id,))

    async def checkpoints(self, doc_id: int) -> list[dict]:
        """Every named version of the document, oldest first."""
        rows = await self._read(lambda conn: _rows_of(
            conn, doc_id, "SELECT version, name, author, time FROM checkpoints WHERE doc_id = $1 ORDER BY version",
            doc_id), snapshot=True)
        return [{"version": v, "name": n, "author": a, "time": t} for v, n, a, t in rows]

    async def oldest_update(self, doc_id: int) -> int | None:
        """The lowest version whose update row is still stored (None if there is none)."""
        return await self._read(lambda conn: conn.fetchval("SELECT MIN(version) FROM updates WHERE doc_id = $1",
                                                           doc_id))

    async def people(self, doc_id: int, upto: int | None = None) -> dict[str, dict]:
        """Each person who edited the document (up to version `upto`, if given): the name and colour of
        their latest update (one compaction dropped: kept in `people`; a stored one is later than any of
        those)."""
        upto = VERSION_UNBOUNDED if upto is None else upto

        async def fn(conn: asyncpg.Connection) -> list:
            dropped = await _rows_of(conn, doc_id, "SELECT person, name, color FROM people WHERE doc_id = $1 "
                                     "AND version <= $2", doc_id, upto)
            return [*dropped, *await conn.fetch(
                "SELECT DISTINCT ON (person) person, author, color FROM updates WHERE doc_id = $1 "
                "AND version <= $2 AND person IS NOT NULL ORDER BY person, version DESC", doc_id, upto)]

        rows = await self._read(fn, snapshot=True)
        return {person: {"name": name, "color": color} for person, name, color in rows}

    async def deployment(self) -> str:
        """This database's deployment id (migration 005): what every process on it names its Redis channels after."""
        return await self._read(lambda conn: conn.fetchval("SELECT id FROM deployment"))

    async def swap_last_start(self, start: dict, now: float) -> tuple[dict, float] | None:
        """Record what the process starting now runs with (`start`); what the one before it recorded, and when."""
        async def fn(conn: asyncpg.Connection):
            async with conn.transaction():
                before = await conn.fetchrow("SELECT last_start, last_start_at FROM deployment FOR UPDATE")
                await conn.execute("UPDATE deployment SET last_start = $1, last_start_at = $2",
                                   orjson.dumps(start).decode(), now)
            return None if before["last_start"] is None else (orjson.loads(before["last_start"]), before["last_start_at"])
        return await self._read(fn)

    async def heads(self, doc_ids: list[int]) -> dict[int, tuple[int, str, str]]:
        """(committed version, salt, name) of each of these documents (one query; deleted ones are missing)."""
        if not doc_ids:
            return {}
        rows = await self._read(lambda conn: conn.fetch(
            "SELECT id, version, salt, name FROM documents WHERE id = ANY($1::bigint[])", list(doc_ids)))
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    @asynccontextmanager
    async def restore_turn(self, doc_id: int, timeout: float):
        """The document's restore turn across every process on this database (storage.Storage.restore_turn):
        a session advisory lock (RESTORE_TURNS, the id) on a connection of the turns' pool, waited for at
        most `timeout` seconds (PostgreSQL's lock_timeout), held until the block ends, however it ends."""
        pool = self._turns
        if pool is None or not self._open:
            raise StoreClosed()
        key = _turn_key(doc_id)
        conn = await self._take_turn(pool, key, timeout)

        async def held() -> None:
            """Raise TurnLost unless the turn is still had: its session is (only the end of the session lets
            go of a session lock besides our own unlock), so one round trip on its connection tells."""
            try:
                async with asyncio.timeout(TURN_SLACK):
                    await conn.fetchval("SELECT 1", timeout=TURN_SLACK)
            except Exception as exc:  # noqa: BLE001 - gone, stuck or refused: the turn may be another's now
                raise TurnLost(f"the restore's turn was lost while it ran ({type(exc).__name__}: {exc})") from None

        try:
            yield held
        finally:
            try:
                await self._end_turn(conn, key)
            finally:
                await self._give_turn_back(pool, conn)

    async def _take_turn(self, pool: asyncpg.Pool, key: int, timeout: float) -> asyncpg.Connection:
        """A connection of `pool` holding the turn `key`, within `timeout` seconds (TimeoutError after).
        A pooled connection found dead (the server restarted, or ended it) is replaced, as for reads."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in range(3):
            try:  # all TURN_CONNECTIONS busy with other documents' turns: wait for one, within the same budget
                conn = await pool.acquire(timeout=max(deadline - loop.time(), 0.001))
            except TimeoutError:
                if self._turns_out < TURN_CONNECTIONS:  # one was free: what it opened did not answer in time
                    raise _unavailable(self.url, TimeoutError(f"no connection within {timeout:g} s"),
                                       "taking a restore's turn") from None
                raise TimeoutError(_BUSY_TURNS) from None
            except Exception as exc:  # noqa: BLE001 - every way of failing to connect is "unavailable"
                raise _unavailable(self.url, exc, "taking a restore's turn") from None
            self._turns_out += 1
            left = deadline - loop.time()
            if left <= 0:
                await self._give_turn_back(pool, conn)
                raise TimeoutError(_BUSY_TURNS)
            try:
                # Each statement is bounded (a server that does not answer at all, and the pool's command
                # timeout, which is not this budget). lock_timeout 0 would mean no bound: a millisecond at
                # least. The pool RESETs it when it has the connection back, and KEEPALIVES, set with it.
                async with asyncio.timeout(left + TURN_SLACK):
                    await conn.execute(", ".join(["SELECT set_config('lock_timeout', $1, false)", *self._keepalives]),
                                       f"{max(1, int(left * 1000))}ms", timeout=left + TURN_SLACK)
                    await conn.execute("SELECT pg_advisory_lock($1::int, $2::int)", RESTORE_TURNS, key,
                                       timeout=left + TURN_SLACK)
                return conn
            except BaseException as exc:
                await self._give_turn_back(pool, conn)  # a lock granted just as its statement was cancelled goes too
                # Our lock_timeout, or a statement_timeout of the server's that is shorter: waited long enough.
                if isinstance(exc, (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError)):
                    raise TimeoutError() from None
                if not isinstance(exc, Exception) or not _is_connection_error(exc):
                    raise
                if attempt == 2 or isinstance(exc, TimeoutError) or deadline - loop.time() <= RECONNECT_DELAY[0]:
                    raise _unavailable(self.url, exc, "taking a restore's turn") from None
            await asyncio.sleep(RECONNECT_DELAY[0] * (attempt + 1))  # see _writer_connection
        raise AssertionError("unreachable")

    async def _give_turn_back(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        """A turn's connection back to its pool (`_give_back`), no longer counted in `_turns_out`."""
        self._turns_out -= 1
        await _give_back(pool, conn)

    @staticmethod
    async def _end_turn(conn: asyncpg.Connection, key: int) -> None:
        """Let go of a restore's turn; a connection that cannot say so (gone, stuck) is closed instead, which
        ends its session and the lock with it. Never an error: the restore itself is done by now."""
        try:
            async with asyncio.timeout(TURN_SLACK):
                await conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", RESTORE_TURNS, key)
        except BaseException as exc:
            with suppress(Exception):  # a connection the server ended is back in the pool already
                conn.terminate()
            if not isinstance(exc, Exception):
                raise

    async def authorship(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> Authorship:
        """Who wrote each character of the text at `version`: compute.authorship replays the update
        rows off the event loop; this hands it the SQL (checkpoints in the authorship table), as store.Store."""
        from . import compute  # the replay and its caching policy live there, for every store

        async def checkpoint(conn: asyncpg.Connection, at: int) -> tuple[float | None, int]:
            created = await conn.fetchval("SELECT created FROM documents WHERE id = $1", doc_id)
            stored = await conn.fetchval("SELECT MAX(version) FROM authorship WHERE doc_id = $1 AND version <= $2",
                                         doc_id, at)
            return created, stored or 0

        async def rows(conn: asyncpg.Connection, after: int, upto: int, max_bytes: int) -> list:
            out, size = [], 0
            # Who: the person id when the update has one, else the name (updates made before person ids).
            for row in await conn.fetch("SELECT version, COALESCE($4 || person, author), changes FROM updates "
                                        "WHERE doc_id = $1 AND version > $2 AND version <= $3 ORDER BY version",
                                        doc_id, after, upto, PERSON_KEY):
                if row[0] != after + len(out) + 1:
                    break
                out.append(tuple(row))
                size += len(row[2])
                if size >= max_bytes:
                    return out
            if len(out) != upto - after:
                raise await _compacted(conn, doc_id, version, after or None)
            return out

        return await compute.authorship(
            self, doc_id, version, self.snapshot_every, wanted=wanted,
            checkpoint=lambda at: self._read(lambda conn: checkpoint(conn, at), snapshot=True),
            spans_at=lambda at: self._read(lambda conn: conn.fetchval(
                "SELECT spans FROM authorship WHERE doc_id = $1 AND version = $2", doc_id, at)),
            rows=lambda after, upto, max_bytes: self._read(lambda conn: rows(conn, after, upto, max_bytes),
                                                           snapshot=True),
            save=lambda found: self._write(lambda conn: conn.execute(
                "INSERT INTO authorship (doc_id, version, spans) SELECT $1, * FROM unnest($2::bigint[], $3::text[]) "
                "ON CONFLICT DO NOTHING", doc_id, [v for v, _ in found], [spans for _, spans in found]),
                doc_ids=(doc_id,)))

    # ---------------------------------------------------------------- copies

    @asynccontextmanager
    async def view(self):
        """One consistent moment of the whole database: a REPEATABLE READ READ ONLY transaction."""
        if self._pool is None or not self._open:
            raise StoreClosed()
        try:
            conn = await self._pool.acquire(timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(self.url, exc, "reading") from None
        try:
            view = _PgView(conn, self.url)
            transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            await view.read(transaction.start())
            await view.read(conn.fetchval("SELECT count(*) FROM documents"))  # the snapshot is taken at the first query
            try:
                yield view
            finally:
                # Read only: ending it is all there is to do, and a connection lost by now takes nothing
                # from what was read (the body's own error, if any, is the one to report).
                with suppress(Exception):
                    await transaction.rollback()
        finally:
            await self._pool.release(conn)

    async def add_document(self, info: dict) -> int:
        """A copied document's row, as given (name, version, length, created, updated, salt); its new id."""
        name = info["name"]

        async def fn(conn: asyncpg.Connection) -> int:
            doc_id = await conn.fetchval(
                "INSERT INTO documents (name, version, length, created, updated, salt) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (name) DO NOTHING RETURNING id", name, int(info["version"]), int(info["length"]),
                float(info["created"]), float(info["updated"]), str(info["salt"]))
            if doc_id is None:
                raise NameTaken(f"a document named {name!r} already exists")
            return doc_id

        return await self._write(fn, names=(name,))

    async def add_rows(self, doc_id: int, table: str, rows: list[tuple]) -> None:
        """Copied rows of `table` (columns as in storage.COPY_TABLES), inserted as given."""
        kinds = _COPY_KINDS[table]
        columns: list[list] = [[] for _ in kinds]
        for row in rows:
            for column, kind, value in zip(columns, kinds, row):
                if kind in (str, _str_or_none) and isinstance(value, str) and "\x00" in value:
                    _refuse_nul(f"document {doc_id}: {table} row of {COPY_TABLES[table][0]} {row[0]!r}", value)
                column.append(kind(value))
        await self._write(lambda conn: conn.execute(_COPY_WRITE[table], doc_id, *columns), doc_ids=(doc_id,))

    async def backup(self, dest: Path) -> tuple[int, int]:
        """One consistent moment of the database copied into a new SQLite file `dest`; (documents, updates).

        The copy is read inside one REPEATABLE READ transaction, written
        through the SQLite store, then made one self-contained file and
        integrity-checked: `collab serve --db dest` serves it as it was.
        For PostgreSQL's own backups use pg_dump.
        """
        import sqlite3

        from .store import Store, not_written, seal_file
        from .transfer import copy_view
        try:
            target = await Store(dest, synchronous="OFF", snapshot_every=self.snapshot_every, keep=0,
                                 log_unavailable=False).open()
            try:
                async with self.view() as view:
                    await copy_view(view, target)
            finally:
                await target.close()
            return await asyncio.get_running_loop().run_in_executor(None, seal_file, Path(dest))
        except (StorageUnavailable, sqlite3.Error) as exc:  # writing `dest` (a full disk) is not this database's
            cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__  # SQLite's, or PostgreSQL's (None)
            if isinstance(cause, sqlite3.Error) and (unwritten := not_written(dest, cause)) is not None:
                raise unwritten from exc
            raise
