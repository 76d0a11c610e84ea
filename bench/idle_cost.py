"""What one SQLite commit costs in CPU when the process was idle before it: why docs20x5 pays more per edit.

    .venv/bin/python bench/idle_cost.py [--commits 400] [--gaps 0,0.001,0.005] [--repeat 2]

Commits the way the server does on the event loop with `--sync normal`
(store._group_transaction and store._write_commit on a connection set up like
the store's inline one, one keystroke-sized update of one of 20 documents per
commit, round robin) and between two commits lets a gap pass, either asleep
(`time.sleep`: the process is idle, as a server between two keystrokes) or
spinning in a loop of Python (busy, but on nothing of SQLite's). The figure is
the thread's CPU time (`time.thread_time`: user and system) per commit,
without the gaps. docs20x5 gives the server one push about every 5 ms, push4
one every 0.1 to 0.2 ms: compare the rows for those gaps. Nothing here opens a
socket; the database is a temporary file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collab.changes import ChangeSet  # noqa: E402
from collab.rebase import Update  # noqa: E402
from collab.sequencer import Accepted  # noqa: E402
from collab.storage import Commit  # noqa: E402
from collab.store import _group_transaction, _write_commit, apply_migrations, connect_sync  # noqa: E402

DOCUMENTS = 20


def run(commits: int, gap: float, spin: bool) -> float:
    """CPU microseconds per commit, gaps left out."""
    with tempfile.TemporaryDirectory(prefix="collab-idle-") as folder:
        path = Path(folder) / "bench.db"
        setup = connect_sync(path, "NORMAL")
        apply_migrations(setup)
        now = time.time()
        for k in range(DOCUMENTS):
            setup.execute("INSERT INTO documents(name, created, updated) VALUES (?, ?, ?)", (f"d{k}", now, now))
        ids = [row[0] for row in setup.execute("SELECT id FROM documents ORDER BY id")]
        setup.close()
        conn = connect_sync(path, "NORMAL")  # as Store.open sets up its inline connection
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        versions = [0] * DOCUMENTS
        changes = ChangeSet.from_json([7, [0, "x"], 120])
        spent = 0.0
        for n in range(commits):
            k = n % DOCUMENTS
            entry = Accepted(versions[k] + 1, Update("client-1", changes), "author", time.time(), person="p1",
                             color="#336699")
            commit = Commit(ids[k], versions[k], [entry], changes.new_length)
            start = time.thread_time()
            conn.execute("BEGIN IMMEDIATE")
            [(ok, error)] = _group_transaction(conn, [lambda c: _write_commit(c, commit)], begun=True)
            spent += time.thread_time() - start
            if not ok:
                raise error
            versions[k] += 1
            if spin:
                until = time.perf_counter() + gap
                while time.perf_counter() < until:
                    pass
            elif gap:
                time.sleep(gap)
        conn.close()
    return spent / commits * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=400)
    ap.add_argument("--gaps", default="0,0.001,0.005", help="seconds between two commits, comma-separated")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    gaps = [float(g) for g in a.gaps.split(",")]
    print(f"CPU us per SQLite commit (one update of one of {DOCUMENTS} documents), median of {a.repeat} "
          f"(range), {a.commits} commits each")
    print(f"{'gap between commits':>22} {'asleep':>22} {'spinning':>22}")
    for gap in gaps:
        cells = []
        for spin in (False, True):
            if gap == 0 and spin:
                cells.append("")
                continue
            runs = [run(a.commits, gap, spin) for _ in range(a.repeat)]
            cells.append(f"{statistics.median(runs):.1f} ({min(runs):.1f}-{max(runs):.1f})")
        print(f"{gap * 1000:>19g} ms {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()
