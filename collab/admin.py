"""Admin commands: `collab backup | export | import | compact | docs | copy`.

What lives here: maintenance a person runs from a shell, next to a running
server or instead of one. Each command is a function `(settings, ...) -> exit
status` that prints one line per thing worth knowing; `cli.py` only parses.

Rules that always hold:
  * the server may be running. On SQLite everything goes through SQLite's own
    locking (in WAL mode readers never block the server's writer, and the few
    writes here are short transactions that wait at most `busy_timeout` for
    it); on PostgreSQL, through its transactions and the store's row locks;
  * everything goes through the store's interface (storage.py): no SQL here,
    and the same command works on either backend;
  * nothing here makes a database by accident: every command but `import`
    (and the target of `copy`) refuses a --db that does not exist or is
    empty (a zero-byte file, a PostgreSQL database with no tables), a SQLite
    file or a PostgreSQL database alike (collab never creates PostgreSQL
    databases: `createdb` does); and none writes into another program's
    database (`import` and `copy`'s target included);
  * nor upgrades one by accident (`migrate` and `serve` do, on purpose):
    every command refuses a database whose migrations are pending (an older
    collab made it, and could not open it again once upgraded), but for
    `backup` on SQLite, which copies it as it is;
  * a database is named by `storage.describe`: a URL's password never
    appears in what a command prints;
  * a failure leaves what was there before: backups and exported files appear
    under their final names only once complete (written aside, then renamed;
    a backup never replaces a file a server is serving, and takes the
    replaced file's journals with it; an export's renames, its last step
    once every text is written, are not undone if an I/O error stops them,
    and it says so). A copy cannot be undone on PostgreSQL:
    one that stops part way says that its target holds part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shlex
import sqlite3
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path


from . import compute, protocol, transfer
from .changes import utf16_len
from .errors import ProtocolError, ServerError
from .settings import Settings
from .storage import (DocumentGone, Kept, NamedWhileCompacting, NotOurs, StorageUnavailable, TooManyDocuments,
                      VersionCompacted, check_ours, database_exists, describe, is_postgres, not_a_database,
                      schema_behind, store_at, store_for)


class AdminError(Exception):
    """A command cannot go on; the message says why and what to do (exit status 1)."""


def _say(message: str) -> None:
    print(f"collab: {message}", flush=True)


def _warn(message: str) -> None:
    print(f"collab: {message}", file=sys.stderr, flush=True)


def _require_database(db: str, which: str = "give --db or COLLAB_DB", empty_ok: bool = False,
                      older_ok: bool = False) -> tuple[int, int] | None:
    """Raise AdminError unless the database `db` exists (a SQLite file, a PostgreSQL database) and is
    collab's, or, with `empty_ok` (a command that makes a database there), empty: a command never writes
    its tables into another program's database, and one that only reads one makes none.

    Nor does a command upgrade a database an older collab made (only `migrate` and `serve` do): that
    collab could not open it again, and a backup taken "before the upgrade" would have been taken
    after it. Such a database is refused, saying how to upgrade it, unless `older_ok` (backup, which
    copies it as it is on SQLite): then (its schema version, this collab's) is returned, else None."""
    try:
        there = database_exists(db)
    except StorageUnavailable as exc:
        raise AdminError(str(exc)) from None
    if not there:
        hint = "create it first (createdb), " if is_postgres(db) else ""
        raise AdminError(f"no database at {describe(db)} ({hint}{which})")
    try:
        ours = check_ours(db)
    except (NotOurs, StorageUnavailable) as exc:
        raise AdminError(str(exc)) from None
    if not ours:
        if not empty_ok:
            raise AdminError(f"{describe(db)} is empty, not a collab database ({which}; `collab migrate` makes "
                             "one there)")
        return None
    try:
        behind = schema_behind(db)
    except StorageUnavailable as exc:
        raise AdminError(str(exc)) from None
    if behind is not None and not older_ok:
        if is_postgres(db):
            how = ("back it up as it is with pg_dump, then run `collab migrate` with the same --db (starting "
                   "the servers does the same)")
        else:
            how = (f"back it up as it is with `collab backup FILE --db {shlex.quote(db)}`, then run "
                   f"`collab migrate --db {shlex.quote(db)}` (starting the server on it does the same)")
        raise AdminError(f"{describe(db)} has schema version {behind[0]}, older than this collab's ({behind[1]}): "
                         "this command would upgrade it first, and the collab that made it could not open it "
                         f"again. Upgrade it on purpose: {how}")
    return behind


def _existing_db(settings: Settings) -> str:
    _require_database(settings.db)
    return describe(settings.db)


@asynccontextmanager
async def _store(settings: Settings, migrate: bool = True):
    """An open store on settings.db (pending migrations are applied, as `serve` would, unless not `migrate`:
    see store_at). It logs nothing when the database cannot be used: the command's error says it, in its
    one line."""
    store = store_for(settings, keep=0, log_unavailable=False, migrate=migrate)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _history_budgets(settings: Settings) -> None:
    """The history workers' budgets (compute.py), from --history-*: texts of versions (store.text_at) and
    authorship are rebuilt there. With no bound on an answer's runs: a command answers nobody."""
    compute.configure(settings.history_workers, settings.history_queue, settings.history_memory,
                      settings.history_timeout, sys.maxsize)


async def _text_at(store, info: dict, version: int) -> str:
    """store.text_at; the history workers' refusal (compute.refused) is the command's error, naming the
    document and what gives them more, and so is a log that does not replay (compute.Unreplayable)."""
    try:
        return await store.text_at(info["id"], version)
    except compute.Unreplayable as exc:
        raise AdminError(f"{info['name']}: {exc}") from None
    except (ServerError, ProtocolError) as exc:
        if not compute.refused(exc):
            raise
        raise AdminError(f"{info['name']}: its text at version {version} could not be rebuilt ({exc}); run "
                         "again later, or with a larger --history-timeout or --history-memory") from None


def _aside(path: Path) -> Path:
    """Where what becomes `path` is written first: beside it, a dot file of this process's."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_aside(path: Path, data: bytes) -> Path:
    """`data` written and synced beside `path`, under a name of its own (`_aside`); that file."""
    tmp = _aside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _served(path: Path) -> bool:
    """Whether a collab server is serving the SQLite file `path` now (it holds `<path>.lock`: store.Store)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except OSError:  # no lock file: no server ever served it here
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and the lock taken to look, with it


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ backup

def backup(settings: Settings, dest: str, force: bool = False) -> int:
    """A consistent copy of the whole database in one SQLite file, taken online.

    SQLite: one step of `sqlite3_backup`, which reads every page inside one
    read transaction. PostgreSQL: every row read inside one REPEATABLE READ
    transaction and written into a new SQLite database (pg_dump makes
    PostgreSQL's own backups). Either way the copy is the database exactly as
    of one commit, even while the server keeps committing, and `collab serve
    --db FILE` serves it. The copy is written next to FILE, checked with
    `PRAGMA integrity_check`, switched to an ordinary rollback journal (one
    self-contained file), and only then renamed to FILE.
    """
    # An older SQLite database is copied as it is; PostgreSQL is read only at this collab's schema, so an
    # older one is refused as every other command refuses it (saying pg_dump).
    behind = _require_database(settings.db, older_ok=not is_postgres(settings.db))
    src_name = describe(settings.db)
    dest_path = Path(dest)
    try:
        itself = not is_postgres(settings.db) and dest_path.resolve() == Path(settings.db).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise AdminError(f"cannot write the backup file {dest_path}: {exc}") from None
    if itself:
        raise AdminError(f"the backup file {dest_path} is the database itself")
    if dest_path.exists() and not force:
        raise AdminError(f"{dest_path} exists; pass --force to replace it")
    if _served(dest_path):
        raise AdminError(f"a collab server is serving {dest_path}: stop it before replacing that file")
    tmp = _aside(dest_path)
    started = time.monotonic()
    try:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:  # where the copy goes, tried first: a failure there is not the database's
            open(tmp, "xb").close()
            tmp.unlink()
        except OSError as exc:
            raise AdminError(f"cannot write the backup file {dest_path}: {exc.strerror or exc}") from None
        documents, updates = asyncio.run(_backup(settings, tmp, migrate=behind is None))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        for journal in ("-wal", "-shm", "-journal"):  # the replaced database's: SQLite would read them into the copy
            Path(f"{dest_path}{journal}").unlink(missing_ok=True)
        os.replace(tmp, dest_path)
        _fsync_dir(dest_path.parent)
    except OSError as exc:  # where the copy goes (a full disk: the stores say so with an OSError too)
        raise AdminError(f"cannot write the backup file {dest_path}: {exc.strerror or exc}") from None
    except (sqlite3.Error, RuntimeError, ValueError) as exc:
        raise AdminError(f"backup of {src_name} failed: {exc}") from None
    finally:
        for left in ("", "-journal", "-wal", "-shm"):  # the copy, and what SQLite kept beside it, if it stopped
            with contextlib.suppress(OSError):  # a folder that could not be made holds no copy to remove
                Path(f"{tmp}{left}").unlink(missing_ok=True)
    _say(f"backed up {src_name} to {dest_path} in {time.monotonic() - started:.1f}s: {documents} documents, "
         f"{updates} updates, {dest_path.stat().st_size} bytes, integrity ok"
         + (f"; schema version {behind[0]} as it was (`collab migrate` upgrades the database to {behind[1]})"
            if behind else ""))
    return 0


async def _backup(settings: Settings, dest: Path, migrate: bool) -> tuple[int, int]:
    async with _store(settings, migrate) as store:
        return await store.backup(dest)


# ------------------------------------------------------------------ export

def export(settings: Settings, directory: str) -> int:
    """Every document's current text as DIR/name.txt (UTF-8, lines joined by LF); says their total length
    in UTF-16 units, the protocol's (and `docs`') length.

    Each document is written as of the moment it is read; for one moment
    across all documents, export from a backup (`--db backup.db`). DIR is
    made only once the database is open. Every text is written aside first
    (so a re-export needs room for the new files beside the old ones); an
    export that stops while it writes them (a full disk, Ctrl-C, the
    database) removes what it wrote, and the folders it made, and leaves
    the files that were there as they were. Then each is renamed to its
    name: the last step, which needs no room. An I/O error among the
    renames leaves those done so far (each a whole text) and says so.
    """
    _existing_db(settings)
    out = Path(directory)
    try:
        count, total, gone, aside = asyncio.run(_export(settings, out))
    except OSError as exc:
        raise AdminError(f"cannot write to {out}: {exc.strerror or exc}") from None
    renamed = 0
    try:
        for path, tmp in list(aside.items()):
            os.replace(tmp, path)
            del aside[path]
            renamed += 1
        _fsync_dir(out)
    except OSError as exc:
        left = f" ({renamed} of the {count} files were renamed into place, the others are not there)" if aside else ""
        raise AdminError(f"cannot write to {out}: {exc.strerror or exc}{left}") from None
    finally:
        _take_back(aside.values(), [])
    for name in gone:
        _warn(f"left out {name}: renamed or deleted while the export ran")
    _say(f"exported {count} documents ({total} UTF-16 units of text) to {out}")
    return 0


async def _export(settings: Settings, out: Path) -> tuple[int, int, list[str], dict[Path, Path]]:
    """(documents, their total length, names left out, {DIR/name.txt: where its text was written aside})."""
    _history_budgets(settings)
    count = total = 0
    gone = []
    async with _store(settings) as store:  # opened, so the database is one this collab can read, before DIR is made
        made: list[Path] = []  # folders this run made, the shallowest first
        aside: dict[Path, Path] = {}
        try:
            _make_folders(out, made)
            for entry in await store.list_documents():
                info = await store.document(entry["name"])
                text = None
                if info is not None:  # else renamed or deleted since the list was read
                    try:
                        text = await _text_at(store, info, info["version"])
                    except (VersionCompacted, DocumentGone):  # deleted in between
                        pass
                if text is None:
                    gone.append(entry["name"])
                    continue
                path = out / f"{info['name']}.txt"
                if path.is_dir() and not path.is_symlink():  # a rename cannot replace it: said now, not last
                    raise AdminError(f"cannot write {path}: a folder of that name is there")
                aside[path] = _write_aside(path, text.encode("utf-8"))
                count += 1
                total += utf16_len(text)  # the protocol's length, as `docs` lists it
        except BaseException:  # a full disk, the database, Ctrl-C: take back what this run wrote
            _take_back(aside.values(), made)
            raise
    return count, total, gone, aside


def _make_folders(out: Path, made: list[Path]) -> None:
    """Make the folder `out` and those above it that are missing; each one made goes into `made` (one
    that was there, or that appears meanwhile, does not: only ours are taken back)."""
    for folder in (*reversed(out.parents), out):
        try:
            folder.mkdir()
        except OSError:
            if folder.is_dir():  # there already (perhaps in a folder we may not write in)
                continue
            raise  # a file of that name, a folder we may not make
        made.append(folder)


def _take_back(files, made: list[Path]) -> None:
    """Remove `files`, then the folders of `made` (the deepest first), each if it can be."""
    for path in list(files):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


# ------------------------------------------------------------------ import

def import_(settings: Settings, directory: str) -> int:
    """Make a document from each DIR/name.txt whose name is not taken yet.

    A name that already exists is a clash: that file is refused and the
    document is left alone, as are files that are not UTF-8, whose name is not
    a document name, or that are longer than --max-doc. Line ends become LF
    (a document holds no CR). Exit status 1 when anything was refused.
    """
    src = Path(directory)
    if not src.is_dir():
        raise AdminError(f"{src} is not a directory")
    if is_postgres(settings.db) or Path(settings.db).exists():  # a new SQLite file is made; anything else is checked
        _require_database(settings.db, empty_ok=True)
    entries = sorted(p for p in src.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.suffix == ".txt" and p.is_file()]
    skipped = [(p.name, "only name.txt files are imported" if p.suffix != ".txt" else "not a regular file")
               for p in entries if p not in files]
    created, refused = asyncio.run(_import(settings, files))
    for name, why in skipped:
        _warn(f"skipped {name}: {why}")
    for line in refused:
        _warn(f"refused {line}")
    _say(f"imported {len(created)} document{'' if len(created) == 1 else 's'} from {src} into {describe(settings.db)}"
         + (f"; refused {len(refused)}" if refused else "") + (f"; skipped {len(skipped)}" if skipped else "")
         + (" (see above)" if refused or skipped else ""))
    return 1 if refused or skipped else 0


def _read_document_file(path: Path, max_doc: int) -> str:
    """The text of one import file; raises AdminError saying why it cannot be a document."""
    name = path.stem
    if not protocol.valid_doc_name(name):
        raise AdminError(f"{path.name}: {name!r} is not a document name (1-100 letters, digits, '-' or '_')")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdminError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text.removeprefix("\ufeff")  # a byte order mark says the file is UTF-8; it is not text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise AdminError(f"{path.name}: holds U+0000 (a NUL character), which a document may not hold")
    if utf16_len(text) > max_doc:
        raise AdminError(f"{path.name}: {utf16_len(text)} UTF-16 units of text is more than --max-doc {max_doc}")
    return text


async def _import(settings: Settings, files: list[Path]) -> tuple[list[str], list[str]]:
    created, refused = [], []
    async with _store(settings) as store:
        for path in files:
            try:
                text = _read_document_file(path, settings.max_doc)
            except AdminError as exc:
                refused.append(str(exc))
                continue
            name = path.stem
            if await store.document(name) is not None:
                refused.append(f"{path.name}: a document named {name!r} exists already (left as it is)")
                continue
            try:
                doc_id = await store.create_document(name, text, author="import", client_id="import",
                                                     max_documents=settings.max_documents or None)
            except TooManyDocuments as exc:
                refused.append(f"{path.name}: {exc}")
                continue
            # create_document returns an existing document unchanged: if someone made this one
            # in the instant since the check above, say so rather than claim it was imported. Its one
            # update is read, not its text rebuilt: that may be refused (the history workers' budgets)
            # and would say nothing of the import.
            info = await store.document(name)
            made_here = info is not None and info["id"] == doc_id and info["version"] == (1 if text else 0) \
                and (not text or await _imported_update(store, doc_id, text))
            if not made_here:
                refused.append(f"{path.name}: a document named {name!r} was created (or deleted) meanwhile "
                               "(left as it is)")
                continue
            created.append(name)
    return created, refused


async def _imported_update(store, doc_id: int, text: str) -> bool:
    """Whether the document's first update is the one an import of `text` makes (False if it is gone)."""
    try:
        first = await store.history(doc_id, 2, 1)
    except DocumentGone:
        return False
    return bool(first) and first[0]["version"] == 1 and first[0]["clientID"] == "import" \
        and first[0]["author"] == "import" and first[0]["inserted"] == utf16_len(text) and first[0]["deleted"] == 0


# ------------------------------------------------------------------ compact

def compact(settings: Settings) -> int:
    """Drop each document's update rows older than its newest `keep_history`.

    With V the document's version and B = V - keep_history, the rows of
    versions 1..B go. First, in a transaction of its own, a snapshot of the text
    at B and at every named version below it (and who wrote each, for the
    authors view) is stored if there is none, so afterwards: the current text,
    every version >= B and every named version are exactly readable, and the
    other versions below B only where a snapshot was stored (by
    --snapshot-ratio, and whenever the document was unloaded). Safe while the
    server runs: the server only ever adds rows above V, the rows go in short
    transactions (COMPACT_CHUNK), and a version named meanwhile stops the
    deletes before the rows it needs. A document renamed or deleted meanwhile,
    or whose text or authorship at the boundary takes longer than
    --history-timeout (or more memory than --history-memory) to rebuild, or
    whose boundary an earlier run that
    stopped part way made unreadable, is
    left as it was and said (all but the first, and a version named
    meanwhile, make the exit status 1: the message says what to run).
    """
    keep = settings.keep_history
    if keep <= 0:
        _say("keep-history is 0, which keeps all history: nothing to do (give --keep-history N)")
        return 0
    _existing_db(settings)
    results = asyncio.run(_compact(settings, keep))
    dropped = compacted = partly = skipped = 0
    again = False
    for name, boundary, rows, note in results:
        dropped += rows
        if boundary is None:
            _say(f"{name}: {note}")
            partly += note.startswith(_NAMED_MEANWHILE)
            skipped += not note.startswith(_NAMED_MEANWHILE)
            again |= note.startswith((_TOO_SLOW, _TEXT_TOO_SLOW, _NAMED_MEANWHILE, _UNREADABLE))
            continue
        compacted += 1
        _say(f"{name}: dropped {rows} updates up to version {boundary}, snapshot kept at {boundary}{note}")
    _say(f"compacted {compacted} documents, {dropped} updates dropped, keeping {keep} per document"
         + (f"; {partly} partly compacted (above)" if partly else "")
         + (f"; {skipped} left as they were (above)" if skipped else ""))
    return 1 if again else 0


_TOO_SLOW = "left as it was: who wrote what"
_TEXT_TOO_SLOW = "left as it was: its text"
_NAMED_MEANWHILE = "left partly compacted:"
_UNREADABLE = "left as it was: version"


class _LeftAsItWas(Exception):
    """One document of `_compact` is not compacted this time; the message says why."""


async def _compact(settings: Settings, keep: int) -> list[tuple[str, int | None, int, str]]:
    """(name, boundary, rows dropped, note) per document compacted; boundary None: left as it was, and why."""
    # --authors-max-runs bounds an /authors answer; compact answers nobody but stores the spans, and
    # without them the document's authors view would be gone for good (at every version from then on).
    _history_budgets(settings)
    results = []
    async with _store(settings) as store:
        for entry in await store.list_documents():
            info = await store.document(entry["name"])
            if info is None:
                continue  # deleted, or renamed (then it is compacted under its new name by the next run)
            try:
                result = await _compact_one(store, info, keep)
            except Exception:
                now = await store.document(info["name"])
                if now is not None and now["id"] == info["id"]:
                    raise
                result = (info["name"], None, 0, "left as it was: deleted or renamed while it was compacted")
            if result is not None:
                results.append(result)
    return results


async def _compact_one(store, info: dict, keep: int) -> tuple[str, int | None, int, str] | None:
    """One document's line of `_compact` (None: nothing to drop)."""
    boundary = info["version"] - keep
    oldest = await store.oldest_update(info["id"])
    if boundary <= 0 or oldest is None or oldest > boundary:
        return None
    try:
        at_boundary = await _kept(store, info, boundary)
        named = await _named_below(store, info, oldest, boundary)
    except VersionCompacted as exc:  # the boundary: an earlier run stopped part way, its boundary further on
        keep_at_most = "a smaller --keep-history" if exc.above is None else \
            f"--keep-history {info['version'] - exc.above} or less (a snapshot is at version {exc.above})"
        return (info["name"], None, 0, f"{_UNREADABLE} {boundary} cannot be read any more ({exc}): an "
                f"earlier run stopped part way; finish it with {keep_at_most}")
    except _LeftAsItWas as exc:
        return info["name"], None, 0, str(exc)
    try:
        rows = await store.compact(info["id"], boundary, at_boundary.text, at_boundary.spans, named)
    except NamedWhileCompacting as exc:
        return info["name"], None, exc.dropped, f"{_NAMED_MEANWHILE} {exc}"
    except RuntimeError as exc:
        raise AdminError(str(exc)) from None
    note = f" and at the {len(named)} named versions below it" if named else ""
    if at_boundary.spans is None:
        note += (" (its authorship could not be rebuilt: the authors view is unavailable from there on, the "
                 "current version included)")
    elif any(k.spans is None for k in named):
        note += " (the authorship of some named versions could not be rebuilt: the authors view is unavailable at them)"
    return info["name"], boundary, rows, note


async def _named_below(store, info: dict, oldest: int, boundary: int) -> list[Kept]:
    """What `compact` keeps of each named version from `oldest` (below it, only its own snapshot can be
    read) up to `boundary`; one unreadable already (a run that stopped part way) has nothing to keep."""
    named = []
    for checkpoint in await store.checkpoints(info["id"]):
        if oldest <= checkpoint["version"] < boundary:
            try:
                named.append(await _kept(store, info, checkpoint["version"]))
            except VersionCompacted:
                pass
    return named


async def _kept(store, info: dict, version: int) -> Kept:
    """The text at `version` and who wrote it (spans None when that cannot be had any more)."""
    text = await _rebuilt(info, version, _TEXT_TOO_SLOW, store.text_at(info["id"], version))
    try:
        spans = (await _rebuilt(info, version, _TOO_SLOW, store.authorship(info["id"], version))).to_list()
    except (RuntimeError, LookupError):  # compacted before it was cached: it cannot be had
        spans = None
    return Kept(version, text, spans)


async def _rebuilt(info: dict, version: int, what: str, work):
    """`await work`, a rebuild in the history workers (compute.py), its refusals said as `compact` says
    them: `what` (its note's start) left as it was over a budget, the command to run again otherwise."""
    try:
        return await work
    except compute.Unreplayable as exc:  # a damaged log: running again changes nothing
        raise AdminError(f"{info['name']}: {exc}; nothing of it was compacted") from None
    except (compute.Overrun, compute.Busy) as exc:  # over the time budget: the same, for this document
        raise _LeftAsItWas(f"{what} took longer to rebuild than --history-timeout allows (at version "
                           f"{version}: {exc}); its history is kept: run again with a larger --history-timeout")
    except ServerError as exc:
        # A passing failure (the database, a worker that could not start or that ended: killed, out of
        # memory): dropping the rows without the spans would lose the authors view for good.
        raise AdminError(f"{info['name']}: {exc}; nothing of it was compacted, run the command "
                         "again later") from None
    except ProtocolError as exc:
        if exc.code != "too-large":  # not-found: the document was deleted meanwhile (see _compact)
            raise
        # Over the workers' memory (compact sets no limit on runs): it can be had with more.
        raise _LeftAsItWas(f"{what} needs more memory to rebuild than --history-memory allows (at version "
                           f"{version}: {exc}); its history is kept: run again with a larger --history-memory")


# -------------------------------------------------------------------- docs

def docs(settings: Settings) -> int:
    """One line per document: name, version, length (UTF-16 units), last update (UTC)."""
    _existing_db(settings)
    entries = asyncio.run(_list(settings))
    if not entries:
        _say(f"{describe(settings.db)}: no documents")
        return 0
    width = max(4, *(len(e["name"]) for e in entries))
    print(f"{'name':<{width}}  {'version':>9}  {'length':>10}  updated (UTC)")
    for e in entries:
        updated = datetime.fromtimestamp(e["updated"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{e['name']:<{width}}  {e['version']:>9}  {e['length']:>10}  {updated}")
    return 0


async def _list(settings: Settings) -> list[dict]:
    async with _store(settings) as store:
        return await store.list_documents()


# -------------------------------------------------------------------- copy

def copy(settings: Settings, source: str, target: str) -> int:
    """Copy every document, whole, from database SOURCE into the empty database TARGET, then check it.

    Each of SOURCE and TARGET is a SQLite file or a PostgreSQL URL, so an
    install moves from one backend to the other. Everything a document is
    goes across: its update log (whole history, authors and times), its named
    versions, snapshots and authorship cache, its share-link salt, so links
    made before the move keep working, its old names, so links to a name it
    had before a rename still lead to it, and the names and colours of people
    whose updates compaction dropped. SOURCE is read from one
    consistent moment (a server may go on running on it; what it commits
    after that moment is not copied). TARGET must hold no document (a SQLite
    file is created if missing; a PostgreSQL database must exist). Afterwards
    every document's version, salt, newest history, authors' names and
    colours (as of the copied version) and current text, and a sample of
    older versions, are read back from both and compared, and its old names
    must lead to it in TARGET.
    """
    for which, db in (("SOURCE", source), ("TARGET", target)):
        if (why := not_a_database(db)) is not None:
            raise AdminError(f"{which}: {why}")
    if describe(source) == describe(target) and (is_postgres(source)
                                                 or Path(source).resolve() == Path(target).resolve()):
        raise AdminError("SOURCE and TARGET are the same database")
    _require_database(source, "check SOURCE")
    if is_postgres(target) or Path(target).exists():
        _require_database(target, "check TARGET", empty_ok=True)
    started = time.monotonic()
    copied, problems, compared = asyncio.run(_copy(settings, source, target))
    updates = sum(c.rows["updates"] for c in copied)
    snapshots = sum(c.rows["snapshots"] for c in copied)
    authorship = sum(c.rows["authorship"] for c in copied)
    old_names = sum(c.rows["renamed"] for c in copied)
    for line in problems:
        _warn(f"copy check: {line}")
    if problems:
        raise AdminError(f"the copy in {describe(target)} does not match {describe(source)} "
                         f"({len(problems)} problems, see above); do not switch to it")
    _say(f"copied {len(copied)} documents ({updates} updates, {snapshots} snapshots, {authorship} authorship "
         f"entries, {old_names} old names, share-link salts) from {describe(source)} to {describe(target)} in "
         f"{time.monotonic() - started:.1f}s; checked: every version and current text equal, "
         f"{compared} versions read back from both")
    return 0


_PARTIAL = ("now holds part of the copy: empty it (delete the SQLite file, or drop and create the PostgreSQL "
            "database again) before trying again")


async def _open(db: str, which: str, options: dict):
    """An open store on `db`, SOURCE or TARGET of a copy; a failure names which."""
    try:
        return await store_at(db, **options).open()
    except (StorageUnavailable, sqlite3.Error, OSError) as exc:
        raise AdminError(f"cannot use {which} {describe(db)}: {exc}") from None


async def _copy(settings: Settings, source: str, target: str):
    _history_budgets(settings)  # the check's texts
    options = {"synchronous": settings.sync, "snapshot_every": settings.snapshot_every, "keep": 0,
               "log_unavailable": False}  # an unusable database is said once, in the command's error
    src = await _open(source, "SOURCE", options)
    try:
        dst = await _open(target, "TARGET", options)
        try:
            if await dst.list_documents():
                raise AdminError(f"{describe(target)} already holds documents: copy only into an empty database")

            def progress(c: transfer.Copied) -> None:
                _say(f"{c.name}: version {c.version}, {c.rows['updates']} updates, {c.rows['snapshots']} "
                     f"snapshots, {c.rows['authorship']} authorship entries"
                     + (f", {c.rows['renamed']} old names" if c.rows["renamed"] else ""))

            async with src.view() as view:
                try:
                    copied = await transfer.copy_view(view, dst, progress)
                except ValueError as exc:  # a value the target cannot hold (PostgreSQL and U+0000)
                    raise AdminError(f"cannot copy into {describe(target)}: {exc}; it {_PARTIAL}") from None
                except (StorageUnavailable, sqlite3.Error, OSError) as exc:  # a full disk, a lost server, ...
                    raise AdminError(f"the copy stopped: {exc}; {describe(target)} {_PARTIAL}") from None
                except asyncio.CancelledError:  # Ctrl-C
                    _warn(f"copy interrupted: {describe(target)} {_PARTIAL}")
                    raise
            problems, compared = await transfer.verify(src, dst, copied, rng=random.Random(len(copied)))
            return copied, problems, compared
        finally:
            await dst.close()
    finally:
        await src.close()
