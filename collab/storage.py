"""The storage interface: what rooms, the HTTP API, history and the admin commands may ask of a store.

What lives here: the data shapes that cross into a store (`Commit`) and out of
it (`Loaded`, `DocInfo`), the errors a store raises with a meaning of their own
(`VersionCompacted`, `VersionConflict`, `NameTaken`), the `Storage` protocol
every backend implements, and `CommitSource`, what a document must offer the
store's writer. What never lives here: SQL (each backend owns its own), sockets.

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
    `write_snapshot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .history import Authorship
from .rebase import Update
from .sequencer import Accepted


@dataclass(slots=True)
class Commit:
    """Updates of one document to make durable, as the room hands them to the store."""

    doc_id: int
    base: int                            # the version the document must be at (entries[0].version - 1)
    entries: list[Accepted]              # contiguous versions base+1 ..
    length: int                          # UTF-16 length of the text after the last entry
    snapshot: tuple[int, str] | None = None  # (version, full text) to store with it

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


class VersionCompacted(LookupError):
    """The update rows needed to rebuild `version` were compacted away (and no snapshot is there)."""

    def __init__(self, version: int, below: int | None, above: int | None):
        near = " and ".join(str(v) for v in (below, above) if v is not None)
        super().__init__(f"version {version} was compacted away"
                         + (f"; the nearest readable versions are {near}" if near else ""))
        self.version, self.below, self.above = version, below, above


class VersionConflict(RuntimeError):
    """A commit's document was not at the version the commit was made on (another writer got there)."""

    def __init__(self, doc_id: int, expected: int, found: int | None):
        super().__init__(f"document {doc_id} is at version {found}, not {expected}: another writer committed "
                         "first" if found is not None else f"document {doc_id} no longer exists")
        self.doc_id, self.expected, self.found = doc_id, expected, found


class NameTaken(ValueError):
    """A document with that name exists already."""


class CommitSource(Protocol):
    """What `Storage.schedule` needs from a document: its pending commit, and a reply."""

    def take_commit(self) -> Commit | None: ...

    def commit_done(self, commit: Commit, error: BaseException | None) -> None: ...


class Storage(Protocol):
    """Every backend: SQLite (store_sqlite.SqliteStore) is the embedded default."""

    async def open(self) -> "Storage": ...

    async def close(self) -> None: ...

    # writes
    def schedule(self, source: CommitSource) -> None: ...

    async def create_document(self, name: str, text: str = "", author: str = "", client_id: str = "",
                              exist_ok: bool = True) -> int: ...

    async def new_salt(self, doc_id: int) -> str: ...

    async def delete_document(self, doc_id: int) -> None: ...

    async def write_snapshot(self, doc_id: int, version: int, text: str) -> None: ...

    async def ping(self) -> None: ...

    async def compact(self, doc_id: int, boundary: int, text: str, spans: list | None) -> int: ...

    # reads
    async def load(self, name: str) -> Loaded | None: ...

    async def updates(self, doc_id: int, since: int, until: int) -> list[Update]: ...

    async def list_documents(self) -> list[dict]: ...

    async def document(self, name: str) -> dict | None: ...

    async def text_at(self, doc_id: int, version: int) -> str: ...

    async def history(self, doc_id: int, before: int, limit: int) -> list[dict]: ...

    async def authorship(self, doc_id: int, version: int) -> Authorship: ...

    async def oldest_update(self, doc_id: int) -> int | None: ...

    async def backup(self, dest: Path) -> tuple[int, int]: ...
