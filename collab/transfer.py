"""Moving documents between two stores through the storage interface: `collab copy` and PostgreSQL backups.

Rules that always hold:
  * only `Storage` methods are used (no SQL here), so any backend copies to
    any other;
  * the source is read from one `view()`: one consistent moment, even while a
    server goes on writing to it;
  * a document's row goes first, as it is (version, length, times and the
    salt, so share links made before the move keep working), then its update
    rows, named versions, snapshots, authorship cache, old names (the
    `renamed` rows: links to a name it had before lead to it) and the names of
    people whose updates compaction dropped, every table of
    COPY_TABLES, a page at a time: CHUNK rows, or fewer once their text
    reaches CHUNK_BYTES (StorageView.rows' max_bytes). Memory stays bounded
    however long a history is and however large the texts in it: a page
    holds at most CHUNK_BYTES of text and one row more (a document's every
    snapshot is a whole text);
  * `verify` reads both stores back through their ordinary reads: every
    document's version, salt, oldest kept update, newest history entries,
    authors' names and colours (as of the copied version: a server may go on
    on the source) and current text, and the text at a sample of older
    versions, must be equal, and each of its old names must lead to it in the
    copy. Texts are rebuilt by the history workers (compute.py) within their
    budgets: one they did not rebuild is a problem too, never taken as equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from . import compute
from .storage import COPY_TABLES, Storage, StorageUnavailable, StorageView, VersionCompacted

CHUNK = 2000           # rows read and written at a time, at most
CHUNK_BYTES = 4 << 20  # characters of text read and written at a time, at most (and one row more)


@dataclass
class Copied:
    """One document as copied: where it came from, where it went, what it holds."""

    name: str
    source_id: int
    target_id: int
    version: int
    salt: str
    rows: dict[str, int] = field(default_factory=dict)       # rows copied per table
    first_update: int | None = None  # the oldest kept update row's version (None: no rows)
    snapshots: list[int] = field(default_factory=list)       # the versions of its snapshots (one per many updates)
    renamed: list[str] = field(default_factory=list)         # its old names (one per rename)


def sample_readable(c: Copied, k: int, rng: random.Random) -> list[int]:
    """Up to `k` distinct versions below the head that must read back, drawn evenly: every snapshot, and
    everything the kept update rows rebuild. The kept range is never listed (a long history would hold
    a Python int per version): a draw is an index into it, or into the snapshots outside it."""
    lo = max(0, c.first_update - 1) if c.first_update is not None else c.version
    extra = sorted({v for v in c.snapshots if 0 <= v < c.version and not lo <= v < c.version})
    span, n = c.version - lo, c.version - lo + len(extra)
    return [lo + i if i < span else extra[i - span] for i in rng.sample(range(n), min(k, n))]


async def copy_view(view: StorageView, target: Storage,
                    progress: Callable[[Copied], None] | None = None) -> list[Copied]:
    """Copy every document of `view` into `target` (which must not hold their names); what was copied."""
    copied = []
    for doc in await view.documents():
        new_id = await target.add_document(doc)
        c = Copied(doc["name"], doc["id"], new_id, doc["version"], doc["salt"])
        first_update, snapshots = None, []  # what reads back: the kept update rows' range, and snapshots
        for table in COPY_TABLES:
            after, count = -1, 0
            while True:
                rows = await view.rows(doc["id"], table, after, CHUNK, max_bytes=CHUNK_BYTES)
                if not rows:
                    break
                await target.add_rows(new_id, table, rows)
                if table == "updates" and first_update is None:
                    first_update = rows[0][0]
                elif table == "snapshots":
                    snapshots += [r[0] for r in rows]
                elif table == "renamed":
                    c.renamed += [r[0] for r in rows]
                count += len(rows)
                after = rows[-1][0]  # a page under CHUNK rows may have been cut by CHUNK_BYTES: only an empty one ends
            c.rows[table] = count
        c.first_update, c.snapshots = first_update, snapshots
        copied.append(c)
        if progress is not None:
            progress(c)
    return copied


async def _read(store: Storage, doc_id: int, version: int) -> tuple[str, str | None]:
    """("text", the text at `version`), ("compacted", None), ("unreadable", why), or ("unchecked", why):
    the history workers did not rebuild it (compute.refused: out of time or memory, none to start), which
    says nothing of the log, so it is no difference but no match either."""
    try:
        return "text", await store.text_at(doc_id, version)
    except VersionCompacted:
        return "compacted", None
    except StorageUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a log that does not replay: a difference to report
        if compute.refused(exc):
            return "unchecked", str(exc)
        return "unreadable", f"{type(exc).__name__}: {exc}"


async def verify(source: Storage, target: Storage, copied: list[Copied], samples: int = 8,
                 rng: random.Random | None = None) -> tuple[list[str], int]:
    """Compare each copied document in both stores; (problems, versions compared)."""
    rng = rng or random.Random(0)
    problems, compared = [], 0
    for c in copied:
        info = await target.document(c.name)
        if info is None:
            problems.append(f"{c.name}: missing from the copy")
            continue
        if (info["version"], info["salt"]) != (c.version, c.salt):
            problems.append(f"{c.name}: version {info['version']} in the copy, {c.version} copied "
                            "(or its share-link salt differs)")
            continue
        if await source.oldest_update(c.source_id) != await target.oldest_update(info["id"]):
            problems.append(f"{c.name}: the oldest kept update differs")
        newest = (await source.history(c.source_id, c.version + 1, 50), await target.history(info["id"], c.version + 1, 50))
        if newest[0] != newest[1]:
            problems.append(f"{c.name}: its newest history entries differ")
        if await source.people(c.source_id, c.version) != await target.people(info["id"], c.version):
            problems.append(f"{c.name}: the names and colours of its authors differ")
        for old in c.renamed:
            if (now := await target.renamed_to(old)) != c.name:
                problems.append(f"{c.name}: its old name {old!r} leads to "
                                f"{'nothing' if now is None else repr(now)} in the copy")
        for v in [c.version, *sample_readable(c, samples, rng)]:
            compared += 1
            theirs, ours = await _read(source, c.source_id, v), await _read(target, info["id"], v)
            if "unchecked" in (theirs[0], ours[0]):  # (both unchecked for the same reason are no match)
                why = theirs[1] if theirs[0] == "unchecked" else ours[1]
                problems.append(f"{c.name}: version {v} could not be read back to compare ({why}; "
                                "--history-timeout and --history-memory give the check more)")
                break
            if theirs != ours:
                why = f" ({ours[1]})" if ours[0] == "unreadable" else ""
                problems.append(f"{c.name}: version {v} reads differently in the copy{why}")
                break
    return problems, compared
