"""How long a document with a long history takes to open, and to rebuild any version.

Builds a database holding one document with N updates (default 100,000: the
first N edits of the automerge-paper trace, written in batches like the
server's group commits, with snapshots every `--snapshot-every` updates),
then times:
  * open: what a first `hello` costs: read the newest snapshot plus the
    updates after it, replay them, and build the sequencer with its recent log;
  * version reconstruction: the text at random versions (snapshot + replay).

    .venv/bin/python bench/open_doc.py [--updates 100000] [--snapshot-every 1000] [--trace PATH]
                                       [--db sqlite|postgres|FILE|postgresql://...[,...]]

`--db` is a comma-separated list of databases, each measured in turn:
`sqlite` (a temporary file, the default), `postgres` (a temporary PostgreSQL
server started here from Debian's binaries), a SQLite file path or a
`postgresql://` URL of an empty database.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from collab.changes import ChangeSet  # noqa: E402
from collab.rebase import Update  # noqa: E402
from collab.sequencer import Accepted, Sequencer  # noqa: E402
from collab.storage import describe, store_at  # noqa: E402
from collab.text import Text  # noqa: E402
from storeutil import commit  # noqa: E402
from trace_replay import add_trace_argument, load_trace, trace_to_frames  # noqa: E402


async def build(db: str, frames: list[bytes], snapshot_every: int, keep: int) -> tuple[int, list[int]]:
    store = await store_at(db, snapshot_every=snapshot_every, keep=keep).open()
    doc_id = await store.create_document("big")
    text = Text()
    batch, version, last_snap, t = [], 0, 0, 1.7e9
    for frame in frames:
        cs = ChangeSet.from_json(orjson.loads(frame))
        text.apply(cs)
        version += 1
        batch.append(Accepted(version, Update(f"client{version % 7}", cs), f"user{version % 7}", t + version))
        if len(batch) == 50 or version == len(frames):
            snap = None
            if version - last_snap >= snapshot_every:
                snap, last_snap = (version, str(text)), version
            await commit(store, doc_id, batch, text.length, snap)
            batch = []
    await store.close()
    return doc_id, [version]


async def measure(db: str, doc_id: int, versions: int, snapshot_every: int, keep: int,
                  samples: int) -> None:
    store = await store_at(db, snapshot_every=snapshot_every, keep=keep).open()
    opens = []
    for _ in range(5):
        t0 = time.perf_counter()
        loaded = await store.load("big")
        Sequencer(loaded.text, loaded.version, loaded.log, keep=keep)
        opens.append(time.perf_counter() - t0)
    print(f"open (snapshot + replay + recent log of {keep}): "
          f"median {statistics.median(opens) * 1000:.1f} ms, max {max(opens) * 1000:.1f} ms "
          f"(version {loaded.version:,}, {len(loaded.text):,} chars)")
    rnd = random.Random(1)
    times = []
    for _ in range(samples):
        v = rnd.randint(0, versions)
        t0 = time.perf_counter()
        await store.text_at(doc_id, v)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"text at a random version ({samples} samples): median {statistics.median(times) * 1000:.1f} ms, "
          f"p95 {times[int(len(times) * 0.95)] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--snapshot-every", type=int, default=1000)
    ap.add_argument("--keep", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--db", default="sqlite", help="comma-separated: sqlite, postgres, a SQLite file or a "
                    "postgresql:// URL of an empty database (default sqlite)")
    add_trace_argument(ap)
    args = ap.parse_args()
    frames = trace_to_frames(load_trace(args.trace))[:args.updates]
    for spec in (s.strip() for s in args.db.split(",") if s.strip()):
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if spec == "postgres":
                from pgserver import PgServer
                pg = stack.enter_context(PgServer(fsync=True))
                db, label = pg.url(pg.create_database("bench")), "PostgreSQL (temporary server)"
            elif spec == "sqlite":
                db, label = str(tmp / "bench.db"), "SQLite (temporary file)"
            else:
                db, label = spec, describe(spec)
            print(f"== {label}")
            t0 = time.perf_counter()
            doc_id, _ = asyncio.run(build(db, frames, args.snapshot_every, args.keep))
            size = (f"; database {sum(p.stat().st_size for p in tmp.iterdir()) / 1e6:.1f} MB"
                    if spec == "sqlite" else "")
            print(f"built {len(frames):,} updates in {time.perf_counter() - t0:.1f} s{size}")
            asyncio.run(measure(db, doc_id, len(frames), args.snapshot_every, args.keep, args.samples))


if __name__ == "__main__":
    main()
