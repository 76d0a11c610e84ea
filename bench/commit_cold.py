"""What one small SQLite commit costs from Python, back to back and after the process slept (for bench/README).

    .venv/bin/python bench/commit_cold.py [--commits 600] [--sleep-ms 5]

docs20x5 commits each edit alone, about 5 ms after the last: the process
sleeps between two, and finds the CPU's caches cold. This times, in the
thread's own CPU clock (time.thread_time: user and system), a few ways of
writing one update row to a fresh database made by collab's migrations,
in WAL mode with `synchronous=NORMAL` (the server's default), the WAL
checkpointed every 200 commits as the server does:

  * collab's commit: BEGIN IMMEDIATE, the guarded UPDATE of the document's
    row, one INSERT into updates, COMMIT (store._write_commit's statements);
  * one INSERT in autocommit (no document row written);
  * the same INSERT on a connection in `locking_mode=EXCLUSIVE` (no `fcntl`
    on the WAL index: what SQLite's locking costs);
  * the system calls of one commit alone (six `fcntl` locks, four `pwrite`
    of a WAL frame's header and page), on a scratch file;
  * no SQLite at all: parsing and checking one push frame of one keystroke
    (protocol.parse), to show that the sleep makes all the process's work
    dearer, not SQLite's alone;
  * nothing (the clock reads).

Each once back to back and once with `--sleep-ms` of sleep before every
commit. Nothing here is a test; it prints microseconds per commit.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's collab

from collab import protocol, store  # noqa: E402

DOCS = 20


def _row(doc_id: int, version: int) -> tuple:
    return (doc_id, version, "client-abcdef", "author", time.time(), '[[12,"a"],3]', 1, 0, None, 1, None, None)


def _database(folder: str, exclusive: bool = False):
    path = os.path.join(folder, f"commit-{time.monotonic_ns()}.db")
    store.migrate(path, "NORMAL")
    conn = store.connect_sync(path, "NORMAL")
    if exclusive:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for k in range(DOCS):
        conn.execute("INSERT INTO documents(name, version, length, created, updated, salt) VALUES (?,0,0,0,0,'s')",
                     (f"d{k}",))
    conn.commit()
    return conn, [row[0] for row in conn.execute("SELECT id FROM documents")]


def collab_commit(conn, doc_id: int, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE documents SET version = ?, length = ?, updated = ? WHERE id = ? AND version = ?",
                 (version, version, time.time(), doc_id, version - 1))
    conn.execute(store._INSERT_UPDATE, _row(doc_id, version))
    conn.execute("COMMIT")


def insert_only(conn, doc_id: int, version: int) -> None:
    conn.execute(store._INSERT_UPDATE, _row(doc_id, version))


_PUSH = b'{"type":"push","version":1234,"updates":[{"clientID":"abc123xyz","changes":[523,[0,"a"],1200]}]}'


def parse_push(conn, doc_id: int, version: int) -> None:
    protocol.parse(_PUSH)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=600)
    p.add_argument("--sleep-ms", type=float, default=5.0)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="collab-commit-") as folder:
        scratch = os.open(os.path.join(folder, "scratch"), os.O_RDWR | os.O_CREAT)

        def system_calls(conn, doc_id: int, version: int) -> None:
            for k in range(6):
                fcntl.lockf(scratch, fcntl.LOCK_UN if k % 2 else fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 120)
            for frame in range(2):
                os.pwrite(scratch, b"h" * 24, 4120 * frame)
                os.pwrite(scratch, b"p" * 4096, 4120 * frame + 24)

        ways = [("collab's commit (BEGIN IMMEDIATE, UPDATE, INSERT, COMMIT)", collab_commit, False),
                ("one INSERT, autocommit", insert_only, False),
                ("one INSERT, autocommit, locking_mode=EXCLUSIVE", insert_only, True),
                ("its system calls alone (6 fcntl, 4 pwrite)", system_calls, False),
                ("no commit: parsing one push frame (protocol.parse)", parse_push, False),
                ("nothing (the clock reads)", lambda conn, doc_id, version: None, False)]
        print(f"CPU us per commit (time.thread_time), {a.commits} commits over {DOCS} documents")
        print(f"{'':58}{'back to back':>14}{f'after {a.sleep_ms:g} ms asleep':>24}")
        for title, way, exclusive in ways:
            figures = []
            for sleep in (0.0, a.sleep_ms / 1000):
                conn, ids = _database(folder, exclusive)
                spent = 0.0
                for k in range(a.commits):
                    if sleep:
                        time.sleep(sleep)
                    doc_id, version = ids[k % DOCS], k // DOCS + 1
                    start = time.thread_time()
                    way(conn, doc_id, version)
                    spent += time.thread_time() - start
                    if k % 200 == 199:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
                conn.close()
                figures.append(spent / a.commits * 1e6)
            print(f"{title:58}{figures[0]:>14.1f}{figures[1]:>24.1f}")
        os.close(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
