"""Admin commands: `collab backup | export | import | compact | docs`.

What lives here: maintenance a person runs from a shell, next to a running
server or instead of one. Each command is a function `(settings, ...) -> exit
status` that prints one line per thing worth knowing; `cli.py` only parses.

Rules that always hold:
  * the server may be running. Everything here goes through SQLite's own
    locking: in WAL mode readers never block the server's writer, and the few
    writes here are short transactions that wait at most `busy_timeout` for it;
  * everything goes through the store's interface (storage.py): no SQL here;
  * nothing here makes a database by accident: every command but `import`
    refuses a --db that does not exist;
  * a failure leaves what was there before: backups and exported files appear
    under their final names only once complete (written aside, then renamed).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path


from . import protocol
from .changes import utf16_len
from .settings import Settings
from .store import Store


class AdminError(Exception):
    """A command cannot go on; the message says why and what to do (exit status 1)."""


def _say(message: str) -> None:
    print(f"collab: {message}", flush=True)


def _warn(message: str) -> None:
    print(f"collab: {message}", file=sys.stderr, flush=True)


def _existing_db(settings: Settings) -> Path:
    path = Path(settings.db)
    if not path.is_file():
        raise AdminError(f"no database at {path} (give --db or COLLAB_DB)")
    return path


@asynccontextmanager
async def _store(settings: Settings):
    """An open Store on settings.db (pending migrations are applied, as `serve` would)."""
    store = Store(settings.db, synchronous=settings.sync.upper(), snapshot_every=settings.snapshot_every,
                  keep=0)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ backup

def backup(settings: Settings, dest: str, force: bool = False) -> int:
    """A consistent copy of the whole database, taken online with SQLite's backup API.

    The copy is one step of `sqlite3_backup`, which reads every page inside
    one read transaction: it is the database exactly as of one commit, even
    while the server keeps committing (in WAL mode the server is not blocked).
    The copy is written next to FILE, checked with `PRAGMA integrity_check`,
    switched to an ordinary rollback journal (one self-contained file), and
    only then renamed to FILE.
    """
    src_path = _existing_db(settings)
    dest_path = Path(dest)
    if dest_path.resolve() == src_path.resolve():
        raise AdminError(f"the backup file {dest_path} is the database itself")
    if dest_path.exists() and not force:
        raise AdminError(f"{dest_path} exists; pass --force to replace it")
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.with_name(f".{dest_path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        documents, updates = asyncio.run(_backup(settings, tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest_path)
        _fsync_dir(dest_path.parent)
    except (sqlite3.Error, RuntimeError) as exc:
        raise AdminError(f"backup of {src_path} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _say(f"backed up {src_path} to {dest_path} in {time.monotonic() - started:.1f}s: {documents} documents, "
         f"{updates} updates in total, {dest_path.stat().st_size} bytes, integrity ok")
    return 0


async def _backup(settings: Settings, dest: Path) -> tuple[int, int]:
    async with _store(settings) as store:
        return await store.backup(dest)


# ------------------------------------------------------------------ export

def export(settings: Settings, directory: str) -> int:
    """Every document's current text as DIR/name.txt (UTF-8, lines joined by LF).

    Each document is written as of the moment it is read; for one moment
    across all documents, export from a backup (`--db backup.db`).
    """
    _existing_db(settings)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    count, total = asyncio.run(_export(settings, out))
    _fsync_dir(out)
    _say(f"exported {count} documents ({total} characters) to {out}")
    return 0


async def _export(settings: Settings, out: Path) -> tuple[int, int]:
    count = total = 0
    async with _store(settings) as store:
        for entry in await store.list_documents():
            info = await store.document(entry["name"])
            text = await store.text_at(info["id"], info["version"])
            _write_atomically(out / f"{info['name']}.txt", text.encode("utf-8"))
            count += 1
            total += len(text)
    return count, total


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
    files = sorted(p for p in src.iterdir() if p.suffix == ".txt" and p.is_file())
    skipped = sorted(p.name for p in src.iterdir() if p.suffix != ".txt" and not p.name.startswith("."))
    created, refused = asyncio.run(_import(settings, files))
    for name in skipped:
        _warn(f"skipped {name}: only name.txt files are imported")
    for line in refused:
        _warn(f"refused {line}")
    _say(f"imported {len(created)} documents from {src} into {settings.db}"
         + (f"; refused {len(refused)} (see above)" if refused else ""))
    return 1 if refused else 0


def _read_document_file(path: Path, max_doc: int) -> str:
    """The text of one import file; raises AdminError saying why it cannot be a document."""
    name = path.stem
    if not protocol.valid_doc_name(name):
        raise AdminError(f"{path.name}: {name!r} is not a document name (1-100 letters, digits, '-' or '_')")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdminError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if utf16_len(text) > max_doc:
        raise AdminError(f"{path.name}: {utf16_len(text)} characters is more than --max-doc {max_doc}")
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
            doc_id = await store.create_document(name, text, author="import", client_id="import")
            # create_document returns an existing document unchanged: if someone made this one
            # in the instant since the check above, say so rather than claim it was imported.
            info = await store.document(name)
            if info["id"] != doc_id or await store.text_at(doc_id, info["version"]) != text \
                    or info["version"] != (1 if text else 0):
                refused.append(f"{path.name}: a document named {name!r} was created meanwhile (left as it is)")
                continue
            created.append(name)
    return created, refused


# ------------------------------------------------------------------ compact

def compact(settings: Settings) -> int:
    """Drop each document's update rows older than its newest `keep_history`.

    With V the document's version and B = V - keep_history, the rows of
    versions 1..B go. First, in a transaction of its own, a snapshot of the text
    at B (and who wrote it, for the authors view) is stored if there is none,
    so afterwards: the current text and every version >= B are exactly
    readable (snapshot B plus the kept rows), and versions below B only where
    a snapshot was stored (every --snapshot-every updates and whenever the
    document was unloaded). Safe while the server runs: the server only ever
    adds rows above V, and the rows go in short transactions (COMPACT_CHUNK).
    """
    keep = settings.keep_history
    if keep <= 0:
        _say("keep-history is 0, which keeps all history: nothing to do (give --keep-history N)")
        return 0
    _existing_db(settings)
    results = asyncio.run(_compact(settings, keep))
    dropped = 0
    for name, boundary, rows, authors in results:
        dropped += rows
        note = "" if authors else " (authorship could not be rebuilt; the authors view stays unavailable)"
        _say(f"{name}: dropped {rows} updates up to version {boundary}, snapshot kept at {boundary}{note}")
    _say(f"compacted {len(results)} documents, {dropped} updates dropped, keeping {keep} per document")
    return 0


async def _compact(settings: Settings, keep: int) -> list[tuple[str, int, int, bool]]:
    results = []
    async with _store(settings) as store:
        for entry in await store.list_documents():
            info = await store.document(entry["name"])
            boundary = info["version"] - keep
            oldest = await store.oldest_update(info["id"])
            if boundary <= 0 or oldest is None or oldest > boundary:
                continue
            text = await store.text_at(info["id"], boundary)
            try:
                spans = (await store.authorship(info["id"], boundary)).to_list()
            except (RuntimeError, LookupError):  # compacted before authorship was cached
                spans = None
            try:
                rows = await store.compact(info["id"], boundary, text, spans)
            except RuntimeError as exc:
                raise AdminError(str(exc)) from None
            results.append((info["name"], boundary, rows, spans is not None))
    return results


# -------------------------------------------------------------------- docs

def docs(settings: Settings) -> int:
    """One line per document: name, version, length (UTF-16 units), last update (UTC)."""
    _existing_db(settings)
    entries = asyncio.run(_list(settings))
    if not entries:
        _say(f"{settings.db}: no documents")
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
