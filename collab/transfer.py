"""Moving documents between two stores through the storage interface: `collab copy` and PostgreSQL backups.

Rules that always hold:
  * only `Storage` methods are used (no SQL here), so any backend copies to
    any other;
  * the source is read from one `view()`: one consistent moment, even while a
    server goes on writing to it;
  * a document's row goes first, as it is (version, length, times and the
    salt, so share links made before the move keep working), then its update
    rows, snapshots and authorship cache, in chunks of CHUNK rows: memory
    stays bounded however long a history is;
  * `verify` reads both stores back through their ordinary reads: every
    document's version, salt, oldest kept update, newest history entries and
    current text, and the text at a sample of older versions, must be equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from .storage import COPY_TABLES, Storage, StorageUnavailable, StorageView, VersionCompacted

CHUNK = 2000


@dataclass
class Copied:
    """One document as copied: where it came from, where it went, what it holds."""

    name: str
    source_id: int
    target_id: int
    version: int
    salt: str
    rows: dict[str, int] = field(default_factory=dict)       # rows copied per table
    readable: list[int] = field(default_factory=list)        # versions a sample may read (see readable_versions)


def readable_versions(version: int, first_update: int | None, snapshots: list[int]) -> list[int]:
    """Versions that must read back: the head, every snapshot, and everything the kept update rows rebuild."""
    out = set(snapshots) | {version}
    if first_update is not None:
        out |= set(range(first_update - 1, version + 1))
    return sorted(v for v in out if 0 <= v <= version)


async def copy_view(view: StorageView, target: Storage,
                    progress: Callable[[Copied], None] | None = None) -> list[Copied]:
    """Copy every document of `view` into `target` (which must not hold their names); what was copied."""
    copied = []
    for doc in await view.documents():
        new_id = await target.add_document(doc)
        c = Copied(doc["name"], doc["id"], new_id, doc["version"], doc["salt"])
        first_update, snapshots = None, []
        for table in COPY_TABLES:
            after, count = -1, 0
            while True:
                rows = await view.rows(doc["id"], table, after, CHUNK)
                if not rows:
                    break
                await target.add_rows(new_id, table, rows)
                if table == "updates" and first_update is None:
                    first_update = rows[0][0]
                elif table == "snapshots":
                    snapshots += [r[0] for r in rows]
                count += len(rows)
                after = rows[-1][0]
                if len(rows) < CHUNK:
                    break
            c.rows[table] = count
        c.readable = readable_versions(c.version, first_update, snapshots)
        copied.append(c)
        if progress is not None:
            progress(c)
    return copied


async def _read(store: Storage, doc_id: int, version: int) -> tuple[str, str | None]:
    """("text", the text at `version`), ("compacted", None), or ("unreadable", why)."""
    try:
        return "text", await store.text_at(doc_id, version)
    except VersionCompacted:
        return "compacted", None
    except StorageUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a log that does not replay: a difference to report
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
        others = [v for v in c.readable if v != c.version]
        for v in [c.version, *rng.sample(others, min(samples, len(others)))]:
            compared += 1
            theirs, ours = await _read(source, c.source_id, v), await _read(target, info["id"], v)
            if theirs != ours:
                why = f" ({ours[1]})" if ours[0] == "unreadable" else ""
                problems.append(f"{c.name}: version {v} reads differently in the copy{why}")
                break
    return problems, compared
