"""Scale audit 49: what a document with a year of history (200,000+ updates, a 2 MB text) costs.

Finding 1: the /authors replay (and `collab compact`, which needs the
authorship at its boundary) sent the worker a fixed 5,000 update rows per
job, and every job parses, rebuilds and dumps the whole spans it starts from,
whatever it replays. So the replay of a long history was quadratic: over
220,000 updates of a 2 MB text, 44 jobs and about 14 s of CPU, a third
of it that per-job overhead; a first /authors took longer than the 15 s
budget (503) and `collab compact --keep-history 1000` left the document as
it was. Now a job replays at least one row per AUTHORS_SPANS_PER_ROW bytes of
the spans it starts from (26 jobs and about 10 s on the same document), within
AUTHORS_CHUNK_MAX rows and AUTHORS_CHUNK_BYTES of them.
"""

from __future__ import annotations

import asyncio

import orjson

from collab import compute


async def test_authorship_jobs_grow_with_the_spans_they_start_from(monkeypatch):
    """Replaying 960 rows from stored spans of 33 KB takes a few jobs, not one per AUTHORS_CHUNK rows."""
    runs = [[1, "alice" if k % 2 else "bob"] for k in range(3000)]
    stored = orjson.dumps(runs)
    length = 3000
    rows = []
    for v in range(3001, 3961):  # carol types at the start, one character an update
        rows.append((v, "carol", orjson.dumps([[0, "x"], length]).decode()))
        length += 1
    asked = []

    async def read_rows(after, upto, max_bytes):
        asked.append((after, upto))
        return rows[after - 3000:upto - 3000]

    async def stored_at(v):
        assert v == 3000
        return stored

    async def nothing(*_):
        return None

    closures = dict(checkpoint=lambda v: asyncio.sleep(0, ("doc", 3000)), spans_at=stored_at, rows=read_rows,
                    save=nothing)
    monkeypatch.setattr(compute, "AUTHORS_CHUNK", 50)
    owner = type("Owner", (), {})()
    authors = await compute.authorship(owner, 1, 3960, 1000, **closures)
    assert authors.to_list() == [[960, "carol"], *runs]
    # 33 KB of spans: at least 330 rows a job, so 3 jobs, not 960 / AUTHORS_CHUNK = 20
    assert len(stored) // 100 >= 320 and len(asked) <= 3, asked
    per_job = len(stored) // compute.AUTHORS_SPANS_PER_ROW
    assert all(upto - after >= min(per_job, 3960 - after) for after, upto in asked), asked


def test_a_job_never_replays_more_than_its_bounds():
    assert compute.chunk_rows(0) == compute.AUTHORS_CHUNK
    assert compute.chunk_rows(10 ** 9) == compute.AUTHORS_CHUNK_MAX
    middle = compute.AUTHORS_CHUNK * compute.AUTHORS_SPANS_PER_ROW * 2
    assert compute.chunk_rows(middle) == 2 * compute.AUTHORS_CHUNK
