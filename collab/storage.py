"""The storage interface: what rooms, the HTTP API, history and the admin commands may ask of a store.

What lives here: the data shapes that cross into a store (`Commit`) and out of
it (`Loaded`, rows of `COPY_TABLES`), the errors a store raises with a meaning
of their own (`VersionCompacted`, `VersionConflict`, `NameTaken`,
`TooManyDocuments`, `TooManyCheckpoints`, `NamedWhileCompacting`,
`DocumentGone`, `TurnLost`, `StorageUnavailable`, `StoreClosed`, and for
opening a database `DatabaseTooNew`, `AlreadyServing`, `NoPermission` and
`NotOurs`), the
`Storage` protocol every backend implements,
`CommitSource` (what a document must offer the store's writer), and the one
place that turns a `--db` value into a backend: `store_for`, `migrate`,
`database_exists`, and `describe`, which is how a database is named in every
message; and which numbered migrations a database still needs
(`pending_migrations`, for both backends). What never lives here: SQL (each
backend owns its own), sockets.

Backends: a file path is SQLite (store.py, the embedded default); a
`postgresql://` or `postgres://` URL is PostgreSQL (store_pg.py). A URL's
password never leaves this process: messages name the database with
`describe(db)` and pass foreign error text through `redact(text, db)`.

Rules every backend keeps:
  * callers hand a store data, never statements;
  * one writer: everything `schedule`d while a transaction runs goes into the
    next transaction together (group commit, across documents), and a source
    hears `commit_done` only after COMMIT returned (or failed);
  * a document's version and its update rows change in one transaction, and
    a `Commit` is written only if the document is still at `Commit.base`:
    otherwise that commit alone is refused with `VersionConflict` (the others
    in the transaction still commit) and nothing of it is written, so the log
    stays one contiguous line whatever the number of writers;
  * any readable version is one snapshot plus the contiguous update rows
    after it; snapshots are written when the room asks (`Commit.snapshot`,
    `write_snapshot`);
  * a write about a document by its id (a salt, a name, a checkpoint, a
    delete) and a read of what the API answers about it (history,
    checkpoints, former names, people) raise `DocumentGone` when no document
    has that id any more (deleted since its row was read), in the same
    transaction: nothing is written for it, and no empty answer stands for
    what it had. Ids are never given twice (SQLite: since migration 006;
    the id of a newest document deleted before it may come once more), so
    it cannot be another's. A
    salt, a name or a delete given the name the row was read under
    (`name=`) raise it too when the document is called otherwise now
    (renamed since);
  * update rows go only oldest first (`compact`), so those stored are one
    contiguous run up to the head; a version is named (`set_checkpoint`)
    only while it is readable, and `compact` drops no row a named version
    needs before that version has a snapshot of its own (with the rows it
    drops go the authorship checkpoints below them, but at its boundary and
    at named versions: no replay can start from them any more);
  * a document's restore turn (`restore_turn`) is had by one restore at a
    time among every process on the store, for as long as its block runs
    and its database session lives (a process that dies, or whose
    connection is cut, loses it: `held` says so before a restore commits).
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from .changes import ChangeSet
from .errors import CLOSE_GOING_AWAY, SHUTTING_DOWN, ProtocolError, ServerError
from .history import Authorship
from .rebase import Update
from .sequencer import Accepted, History

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("collab.storage")

# What a copy moves besides the documents table, per table: the columns of each
# row, in the order `StorageView.rows` returns them and `add_rows` takes them.
# The first column is the table's key within a document (unique there): rows
# come in its order, and a copy pages on by it. Every table is keyed by version
# but `renamed`, a document's old names, keyed by name, and `people` (the name
# and colour of each person whose updates compaction dropped), keyed by person.
COPY_TABLES: dict[str, tuple[str, ...]] = {
    "updates": ("version", "client_id", "author", "time", "changes", "inserted", "deleted", "restored_from",
                "frame_end", "person", "color"),
    "checkpoints": ("version", "name", "author", "time"),
    "snapshots": ("version", "text", "time"),
    "authorship": ("version", "spans"),
    "renamed": ("name", "time"),
    "people": ("person", "version", "name", "color"),
}
# Above every version a document can reach (a bound that means none, in SQL on both backends).
VERSION_UNBOUNDED = 1 << 62
# A document row as `StorageView.documents` returns it and `add_document` takes it.
DOCUMENT_FIELDS = ("id", "name", "version", "length", "created", "updated", "salt")
DOCUMENT_COLUMNS = ", ".join(DOCUMENT_FIELDS)  # the same, in SQL


@dataclass(slots=True)
class Commit:
    """Updates of one document to make durable, as the room hands them to the store."""

    doc_id: int
    base: int                            # the version the document must be at (entries[0].version - 1)
    entries: list[Accepted]              # contiguous versions base+1 ..
    length: int                          # UTF-16 length of the text after the last entry
    snapshot: tuple[int, str] | None = None  # (version, full text) to store with it
    size: int = field(init=False)        # bytes of the entries' ChangeSetJSON (what a replay reads)

    def __post_init__(self) -> None:
        self.size = sum(len(e.changes_json) for e in self.entries)

    @property
    def version(self) -> int:
        return self.entries[-1].version


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
    frame_ends: list[int] = field(default_factory=list)  # where the log's frames ended (below `version`)
    created: float = 0.0       # when the document was made (protocol.doc_identity: which document it is)
    replay_bytes: int = 0      # bytes of the updates after the snapshot (what a load replays)


# Event-loop turns the writer lets pass before it takes a group (GroupWriter._gather).
GATHER_TURNS = 2
MAX_FORMER_NAMES = 100  # names a document had before that each keeps (its old links redirect); the oldest go
PERSON_KEY = "\x1f"  # authorship keys: PERSON_KEY + person id, else the author's name (never holds it: Cc)


def history_entry(version: int, client_id: str, author: str, time: float, inserted: int, deleted: int,
                  restored_from: int | None, person: str | None, color: str | None) -> dict:
    """One update's summary as the history API gives it (the same from every backend)."""
    entry = {"version": version, "clientID": client_id, "author": author, "time": time, "inserted": inserted,
             "deleted": deleted}
    if restored_from is not None:
        entry["restored"] = restored_from
    if person is not None:
        entry["person"] = person
    if color is not None:
        entry["color"] = color
    return entry


class VersionCompacted(LookupError):
    """The update rows needed to rebuild `version` were compacted away (and no snapshot is there)."""

    def __init__(self, version: int, below: int | None, above: int | None):
        # Below: its nearest snapshot, or version 0 (the empty text), which is always readable.
        near = [str(v) for v in (0 if below is None else below, above) if v is not None]
        super().__init__(f"version {version} was compacted away; the nearest readable "
                         + (f"versions are {near[0]} and {near[1]}" if len(near) == 2 else f"version is {near[0]}"))
        self.version, self.below, self.above = version, below, above


class VersionConflict(RuntimeError):
    """A commit's document was not at the version the commit was made on (another writer got there)."""

    def __init__(self, doc_id: int, expected: int, found: int | None):
        super().__init__(f"document {doc_id} is at version {found}, not {expected}: another writer committed "
                         "first" if found is not None else f"document {doc_id} no longer exists")
        self.doc_id, self.expected, self.found = doc_id, expected, found


class DocumentGone(ProtocolError, LookupError):
    """No document has the id `doc_id` any more: it was deleted while a request about it was under way
    (after its row was read). Or, for a write about the document a request names (`name`: a rename, a
    reset of its links, a delete), it no longer has that name: renamed meanwhile, so the request's name
    leads nowhere, as it would had it come a moment later. A refusal as it stands, 404 `not-found`:
    nothing was written for it."""

    def __init__(self, doc_id: int, name: str | None = None):
        super().__init__("not-found", "this document was deleted" if name is None
                         else f"no document named {name!r} (it was renamed or deleted meanwhile)")
        self.doc_id = doc_id


class NameTaken(ValueError):
    """A document with that name exists already."""


class TooManyDocuments(RuntimeError):
    """The store holds `limit` documents already (create_document's `max_documents`)."""

    def __init__(self, limit: int):
        super().__init__(f"the server holds {limit} documents, the most it keeps (--max-documents {limit}); "
                         "delete some before making new ones")
        self.limit = limit


class TooManyCheckpoints(RuntimeError):
    """The document has `count` named versions, `limit` or more (set_checkpoint's `max_checkpoints`)."""

    def __init__(self, limit: int, count: int):
        super().__init__(f"this document has {count} named versions and keeps at most {limit} "
                         f"(--max-checkpoints {limit}); take a name away before naming another version")
        self.limit, self.count = limit, count


@dataclass(frozen=True)
class Kept:
    """A version `compact` keeps readable below its boundary: a named one (a checkpoint), with its
    text and, when it could be rebuilt, who wrote what (authorship spans)."""
    version: int
    text: str
    spans: list | None


class NamedWhileCompacting(RuntimeError):
    """`compact` stopped before dropping the update rows that `version`, named after the compaction read
    the document's checkpoints, needs; `dropped` rows had gone by then. Running it again keeps it."""

    def __init__(self, version: int, dropped: int):
        super().__init__(f"version {version} was named while the document was compacted; "
                         f"{dropped} update rows were dropped before it, the rest are kept: run the command again")
        self.version, self.dropped = version, dropped


Turn = Callable[[], Awaitable[None]]  # restore_turn's `held`


class TurnLost(ServerError):
    """A restore's turn (`Storage.restore_turn`) went while the restore ran: the database session holding
    it ended (cut by the server or the network), so another process's restore may have gone ahead. The
    restore is refused before it commits anything (503 `unavailable`); asked again, it takes a new turn.
    `str(exc)` says why, for the log."""

    def __init__(self, detail: str):
        super().__init__("this restore lost its turn to another (its database connection ended); try again")
        self.args = (detail,)


class StorageUnavailable(ServerError, RuntimeError):
    """The database cannot be reached or refused the connection.

    `str(exc)` says which database and why, without its password (for logs and
    commands); clients get only `exc.message` with the code `unavailable`
    (HTTP 503, an error frame): where the database lives is not theirs to know.
    """

    def __init__(self, detail: str):
        super().__init__("the database cannot be reached right now; try again later")
        self.args = (detail,)


class StoreClosed(ServerError, RuntimeError):
    """The store was closed: the server is shutting down. A request still running then gets 503
    `unavailable` (it was 500 `internal`), a WebSocket frame close 1001 (reconnect and resume)."""

    def __init__(self):
        super().__init__(SHUTTING_DOWN + "; try again in a moment", close=CLOSE_GOING_AWAY)
        self.args = ("store is closed",)


def parse_update(client_id: str, changes: str) -> Update:
    """An update as a store keeps it (its ChangeSetJSON as text) made an Update again."""
    return Update(client_id, ChangeSet.from_json(orjson.loads(changes)))


def history_of(since: int, rows: list, max_bytes: int | None = None) -> History:
    """(version, client_id, changes, frame_end[, bytes of changes]) rows in version order, from since+1
    on, as a History (empty if since+1 is not among them: compacted away); cut if their bytes reach
    `max_bytes` (the bound the read stopped at)."""
    if not rows or rows[0][0] != since + 1:
        return History(since, [], [])
    cut = max_bytes is not None and sum(row[4] for row in rows) >= max_bytes
    return History(since, [parse_update(row[1], row[2]) for row in rows], [row[0] for row in rows if row[3]], cut)


def replayed_bytes(rows: list, after: int) -> int:
    """Of (version, client_id, changes) rows, the bytes of the changes past version `after` (the snapshot's):
    what a load replays, counted as commits count them (Commit.size)."""
    return sum(len(row[2].encode()) for row in rows if row[0] > after)


def contiguous_tail(rows: list, version: int) -> list[Update]:
    """Of (version, client_id, changes) rows in version order, the unbroken run ending at `version`, parsed."""
    start = len(rows)
    expect = version
    while start > 0 and rows[start - 1][0] == expect:
        start -= 1
        expect -= 1
    return [parse_update(row[1], row[2]) for row in rows[start:]]


class GroupWriter:
    """The part of a store's one writer that every backend shares: what waits for the next transaction.

    Queued writes (`_enqueue`) and documents with updates to make durable
    (`schedule`) wait; the backend's `_write_loop` takes them all at the start
    of each transaction (`_take`): everything that arrived while one
    transaction ran goes into the next (group commit, across documents), and
    what arrives in the turns just before it (`_gather`).
    """

    def _init_writer(self) -> None:
        self._queue: list = []
        self._sources: dict[int, CommitSource] = {}
        self._writer: asyncio.Task | None = None

    def _writer_open(self) -> bool:
        raise NotImplementedError

    def schedule(self, source: "CommitSource") -> None:
        """`source` has updates to make durable: the next transaction takes them from it.

        Pull, not push: the writer asks each waiting source for everything it
        has at the moment a transaction starts, so updates that arrive while
        one commits all go into the next (group commit), and the source hears
        back in the same loop iteration that the commit finished.
        """
        if not self._writer_open():
            raise StoreClosed()
        self._sources[id(source)] = source
        self._wake_writer()

    def _enqueue(self, item) -> None:
        self._queue.append(item)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _gather(self) -> None:
        """Let the event loop turn GATHER_TURNS times before the writer takes a group.

        Clients answering the same broadcast push within a few turns of each
        other: a turn reads what has arrived, the next one sequences it. The
        group taken after them commits them together, in one transaction and
        one frame to every peer, instead of one of each per push (four clients
        pushing as fast as acknowledged: 1.4 -> 3.8 updates a commit; the CPU
        it saves is in bench/README.md). A lone push waits the two turns, some
        microseconds.
        """
        for _ in range(GATHER_TURNS):
            await asyncio.sleep(0)

    def _take(self) -> tuple[list, list[tuple["CommitSource", Commit]]]:
        """What waits now: the queued writes, and each waiting source's commit (if it has one)."""
        batch, self._queue = self._queue, []
        sources, self._sources = list(self._sources.values()), {}
        taken = []
        for source in sources:
            try:
                commit = source.take_commit()
            except Exception:  # a bug in one document: the writer goes on with the others
                log.exception("taking a document's pending commit failed; it is left out")
                continue
            if commit is not None:
                taken.append((source, commit))
        return batch, taken

    @staticmethod
    def _answer(taken: list[tuple["CommitSource", Commit]], outcomes: list[tuple[bool, object]]) -> None:
        """Tell each source how its commit went (`outcomes` in `taken`'s order)."""
        for (source, commit), (ok, value) in zip(taken, outcomes):
            try:
                source.commit_done(commit, None if ok else value)
            except Exception:  # a bug in one document: the others still hear, and the writer goes on
                log.exception("document %d: handling the outcome of its commit failed", commit.doc_id)

    async def _write_loop(self) -> None:
        raise NotImplementedError


class CommitSource(Protocol):
    """What `Storage.schedule` needs from a document: its pending commit, and a reply."""

    def take_commit(self) -> Commit | None: ...

    def commit_done(self, commit: Commit, error: BaseException | None) -> None: ...


class StorageView(Protocol):
    """One consistent moment of a whole store (`Storage.view()`): what copies and backups read."""

    async def documents(self) -> list[dict]: ...  # DOCUMENT_FIELDS, by id

    async def rows(self, doc_id: int, table: str, after: int | str, limit: int,
                   max_bytes: int | None = None) -> list[tuple]: ...
    # up to `limit` rows of `table` (a COPY_TABLES key) whose key (its first column) is above `after`, the key
    # of the last row read (-1: from the first row, whatever the key), in key order. With `max_bytes`, the row
    # that brings the page's text (its str values: characters, or their bytes, never fewer) to max_bytes is
    # its last: a page holds at least one row, and less than max_bytes characters before its last row. So
    # a page shorter than `limit` may not be the last: an empty one is.


class Storage(Protocol):
    """Every backend: SQLite (store.Store) is the embedded default, PostgreSQL (store_pg.PgStore) the shared one."""

    async def open(self) -> "Storage": ...

    async def close(self) -> None: ...

    # writes
    def schedule(self, source: CommitSource) -> None: ...

    async def create_document(self, name: str, text: str = "", author: str = "", client_id: str = "",
                              exist_ok: bool = True, max_documents: int | None = None,
                              person: str | None = None, color: str | None = None) -> int: ...

    async def new_salt(self, doc_id: int, name: str | None = None) -> str: ...

    async def delete_document(self, doc_id: int, name: str | None = None) -> None: ...

    async def write_snapshot(self, doc_id: int, version: int, text: str) -> None: ...

    async def ping(self) -> None: ...

    async def compact(self, doc_id: int, boundary: int, text: str, spans: list | None,
                      named: Sequence[Kept] = ()) -> int: ...  # NamedWhileCompacting

    # reads
    async def load(self, name: str) -> Loaded | None: ...

    async def updates(self, doc_id: int, since: int, until: int, max_bytes: int | None = None) -> History: ...

    async def list_documents(self) -> list[dict]: ...

    async def document(self, name: str) -> dict | None: ...

    async def documents_named(self, names: list[str]) -> dict[str, dict]: ...  # document() of each that exists

    async def text_at(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> str: ...
    # (replayed in a worker process: compute.text_at; `wanted` as there)

    async def history(self, doc_id: int, before: int, limit: int) -> list[dict]: ...

    async def authorship(self, doc_id: int, version: int, wanted: Callable[[], bool] | None = None) -> Authorship: ...
    # (`wanted`: compute.authorship stops once it says no one waits any more)

    async def oldest_update(self, doc_id: int) -> int | None: ...

    async def rename_document(self, doc_id: int, new_name: str, name: str | None = None) -> str: ...

    async def renamed_to(self, name: str) -> str | None: ...

    async def former_names(self, doc_id: int, limit: int = 20) -> list[tuple[str, float]]:
        """(name, when it was left) of the names the document had before, newest first, at most `limit`;
        only those no document has now (another document's since is not this one's)."""
        ...

    async def set_checkpoint(self, doc_id: int, version: int, name: str | None, author: str,
                             max_checkpoints: int | None = None) -> None: ...  # TooManyCheckpoints, VersionCompacted

    async def checkpoints(self, doc_id: int) -> list[dict]: ...

    async def heads(self, doc_ids: list[int]) -> dict[int, tuple[int, str, str]]: ...  # (version, salt, name)

    def restore_turn(self, doc_id: int, timeout: float) -> AbstractAsyncContextManager[Turn]:
        """Held by a restore of document `doc_id` from before it reads the head it diffs against until its
        update is committed, so that restores of one document take turns across every process on this
        store: the later one reads the text the earlier one made (rooms.Rooms.restore).

        Raises TimeoutError (nothing held) when the turn does not come within `timeout` seconds (its
        message, if any, is for the client: the turns themselves were all busy), and StorageUnavailable
        when the store cannot be reached. Let go of on every way out of the block, cancellation
        included; a process that dies holding it loses it with its database connection.

        The block is given `held`: `await held()` raises TurnLost if the turn went meanwhile (its
        database session ended), so a restore checks it just before it commits.

        PostgreSQL: a session advisory lock on a connection of its own for as long as it is held.
        SQLite: nothing (`held` never raises). One process serves a SQLite file (`<db>.lock`), so the
        room's own lock (room.Room.restore_turn), taken first, is already the only turn there is.
        """
        ...

    async def deployment(self) -> str: ...  # what the processes on this database name their Redis channels after

    async def swap_last_start(self, start: dict, now: float) -> tuple[dict, float] | None: ...
    # records what the starting process runs with (a small JSON object); what the process before it recorded, and when

    async def people(self, doc_id: int, upto: int | None = None) -> dict[str, dict]: ...
    # each person's name and colour as of version `upto` (None: the head), by person id

    async def backup(self, dest: Path) -> tuple[int, int]: ...
    # (documents, update rows) copied into the new SQLite file `dest`; OSError (filename `dest`, strerror
    # why: "No space left on device") when `dest` cannot be written, StorageUnavailable when the store cannot be read

    # copies
    def view(self) -> AbstractAsyncContextManager[StorageView]: ...

    async def add_document(self, info: dict) -> int: ...  # NameTaken if the name exists; returns the new id

    async def add_rows(self, doc_id: int, table: str, rows: list[tuple]) -> None: ...


# ------------------------------------------------------------------ choosing a backend

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str) -> bool:
    """Whether `db` (a --db value) names a PostgreSQL database rather than a SQLite file."""
    return str(db).lower().startswith(_SCHEMES)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# postgresql:/u:p@h/db, postgres:u:p@h/db, postgresql//u@h/db; not postgres.db, postgres-2024/a@b.db, Postgres:1.db
_MISTYPED = re.compile(r"(?i)postgres(?:ql)?(?::/|:[^/]*@|//)")


def not_a_database(db: str | Path) -> str | None:
    """Why `db` (a --db value) names no database collab can use, or None: a URL that is not PostgreSQL's, a
    value with :// elsewhere in it, or one that starts like a mistyped PostgreSQL URL (postgresql:/ with a
    slash missing). Taken for a SQLite path, it would make folders named after the URL, its password among
    them. The message starts with the value, its password replaced by ***."""
    db = str(db)
    if is_postgres(db):
        return None
    shown = repr(masked(db))
    if _URL.match(db):
        return (f"{shown}: a {db.split('://', 1)[0]}:// URL is no database collab can use: give a SQLite file "
                "path or a postgresql:// URL")
    if _MISTYPED.match(db):
        return f"{shown} is no PostgreSQL URL (those start with postgresql:// or postgres://) nor a SQLite file path"
    if "://" in db:
        return f"{shown} is no postgresql:// URL nor a SQLite file path (a :// in its middle)"
    return None


_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:/*")


def masked(value: str) -> str:
    """`value`, which may be a URL that cannot be read (a --db or a --redis value), with what may be a
    password replaced by ***: what comes between the user's name and the last @, and password= parameters.
    Never raises."""
    head, at, tail = value.rpartition("@")
    if at:
        m = _SCHEME.match(head) or re.search(r".*?:/+", head)  # the scheme, or what ends at a :// in the middle
        scheme = m.group() if m else ""
        user, colon, _ = head[len(scheme):].partition(":")
        value = f"{scheme}{user}{':***' if colon else ''}@{tail}"
    return re.sub(r"(?i)((?:ssl)?password|passfile)=[^&]*", r"\1=***", value)


def describe(db: str | Path) -> str:
    """`db` as it may appear in messages and logs: a URL with its password replaced by ***."""
    db = str(db)
    if not is_postgres(db):
        return db
    try:
        parts = urlsplit(db)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}{':***' if colon else ''}@{hostport}"
        query = "&".join(f"{k}=***" if k.lower() in ("password", "passfile", "sslpassword") else f"{k}={v}"
                         for k, v in parse_qsl(parts.query, keep_blank_values=True))
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return f"{db.split(':', 1)[0]}://(a URL that cannot be read)"


def _passwords(db: str) -> list[str]:
    """Every spelling of the secrets in `db` (a URL: PostgreSQL's or Redis's), longest first (for `redact`)."""
    if "://" not in db:
        return []
    found = []
    netloc = db.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    if "?" in db:
        found += [v for k, v in parse_qsl(db.split("?", 1)[1], keep_blank_values=True)
                  if k.lower() in ("password", "sslpassword")]
    spelled = {p for raw in found for p in (raw, unquote(raw)) if p}
    return sorted(spelled, key=len, reverse=True)


def redact(text: str, db: str | Path) -> str:
    """`text` (an error message from a driver, say) with the password of `db` (a database's or a Redis
    URL) replaced by ***."""
    text = str(text)
    for secret in _passwords(str(db)):
        text = text.replace(secret, "***")
    return text


class DatabaseTooNew(RuntimeError):
    """The database was migrated by a newer collab than this one."""


class AlreadyServing(RuntimeError):
    """Another collab server holds this SQLite database (one server per file)."""


class NoPermission(RuntimeError):
    """The database's user may not make collab's tables there (PostgreSQL: not the database's owner)."""


class NotOurs(RuntimeError):
    """A SQLite file that is not a database, or a database with tables that are not collab's."""


def check_ours(db: str | Path) -> bool:
    """Raise NotOurs if `db` holds tables but no `schema_version`: another program's database (or, for
    SQLite, a file that is not a database), which no command writes collab's tables into. Read, never
    written; a database that is not there yet, or is empty (no tables: a zero-byte file, a new PostgreSQL
    database), passes. Returns whether `db` holds collab's schema. StorageUnavailable if a PostgreSQL
    server cannot be asked."""
    if is_postgres(str(db)):
        import asyncio

        from . import store_pg
        tables, kind = asyncio.run(store_pg.tables(str(db))), "a database"
    else:
        tables, kind = _sqlite_tables(Path(db)), "a SQLite database"
    if tables and "schema_version" not in tables:
        raise NotOurs(f"{describe(db)} is {kind} of something else (tables {', '.join(sorted(tables)[:5])}); "
                      "collab leaves it alone")
    return bool(tables)


def schema_behind(db: str | Path) -> tuple[int, int] | None:
    """(the schema version `db` has, this collab's) when an older collab made it and migrations are pending,
    which `migrate` or `serve` would apply; None when it is up to date, newer (opening it says so), empty,
    or not there. Read, never written. StorageUnavailable if a PostgreSQL server cannot be asked."""
    if is_postgres(str(db)):
        import asyncio

        from . import store_pg
        done, files = asyncio.run(store_pg.schema_versions(str(db))), store_pg.migration_files()
    else:
        from . import store
        done = store.schema_versions(Path(db)) if "schema_version" in _sqlite_tables(Path(db)) else set()
        files = store.migration_files()
    try:
        pending = pending_migrations(files, done)
    except DatabaseTooNew:
        return None
    return (max(done), max(n for n, _ in files)) if done and pending else None


def _sqlite_tables(path: Path) -> set[str]:
    """The tables of the SQLite file at `path` (none if there is no file); NotOurs if it is not a database."""
    import sqlite3
    if not path.is_file():
        return set()
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise NotOurs(f"{path} is not a SQLite database ({exc})") from None


def pending_migrations(files: list[tuple[int, Path]], done: set[int]) -> list[tuple[int, Path]]:
    """Of `files` (from `migration_files`), those not yet in `done`, the versions a database records as
    applied; raises if the database is newer than every file (a newer collab migrated it)."""
    newest = max(n for n, _ in files)
    if done and max(done) > newest:
        raise DatabaseTooNew(f"the database has schema version {max(done)}, newer than this collab knows "
                           f"({newest}): upgrade collab")
    return [(number, path) for number, path in files if number not in done]


def store_at(db: str | Path, *, synchronous: str = "NORMAL", snapshot_every: int = 1000, keep: int = 2000,
             exclusive: bool = False, log_unavailable: bool = True, migrate: bool = True) -> "Storage":
    """An unopened store for `db`: a PostgreSQL URL or a SQLite file path.

    `synchronous` is SQLite's; `exclusive` is SQLite's one-server lock
    (PostgreSQL is made for several processes and ignores it);
    `log_unavailable=False` keeps the SQLite store from logging that the
    database cannot be used, for a caller that says so itself (the
    PostgreSQL store never logs it: its callers do). Opening a store applies
    the pending migrations; `migrate=False` (SQLite only) leaves the schema
    as it is, for `backup` alone: nothing else reads an older schema.
    """
    if is_postgres(str(db)):
        if not migrate:
            raise ValueError("a PostgreSQL store always brings its schema up to date")
        from .store_pg import PgStore
        return PgStore(str(db), snapshot_every=snapshot_every, keep=keep)
    from .store import Store
    return Store(db, synchronous=synchronous.upper(), snapshot_every=snapshot_every, keep=keep,
                 exclusive=exclusive, log_unavailable=log_unavailable, migrate=migrate)


def store_for(settings: "Settings", *, keep: int | None = None, exclusive: bool = False,
              log_unavailable: bool = True, migrate: bool = True) -> "Storage":
    """An unopened store for `settings.db`, with the settings' options (`keep` updates per loaded document)."""
    return store_at(settings.db, synchronous=settings.sync, snapshot_every=settings.snapshot_every,
                    keep=settings.keep_updates if keep is None else keep, exclusive=exclusive,
                    log_unavailable=log_unavailable, migrate=migrate)


def migrate(db: str | Path, synchronous: str = "NORMAL") -> list[str]:
    """Create the schema or bring it up to date (SQLite: creating the file); returns the migrations applied."""
    if is_postgres(str(db)):
        import asyncio

        from . import store_pg
        return asyncio.run(store_pg.migrate(str(db)))
    from . import store
    return store.migrate(db, synchronous.upper())


def database_exists(db: str | Path) -> bool:
    """Whether `db` is there to be opened (a file; a database the PostgreSQL server has).

    Raises StorageUnavailable when a PostgreSQL server cannot be asked.
    """
    if is_postgres(str(db)):
        import asyncio

        from . import store_pg
        return asyncio.run(store_pg.database_exists(str(db)))
    return Path(db).is_file()
