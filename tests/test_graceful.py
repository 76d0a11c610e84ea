"""Graceful restarts: SIGTERM under load finishes the commits in flight and closes clients with 1001.

Headless @codemirror/collab clients (tests/js/client.mjs fuzz) edit one
document and reconnect by themselves; meanwhile the server gets SIGTERM a few
times and is started again on the same database. Unlike the SIGKILL test
(test_durability.py), the shutdown itself is checked: the process exits 0
promptly, every client was closed with 1001 (not a dropped connection), and
the database was left with a snapshot at its last version, which only the
shutdown flush writes. Then, as there: nothing acknowledged was lost, the
versions are contiguous, everyone converged.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import time

from collab import cli
from loadclients import check_server_log, client_report, fuzz_clients
from serverproc import ServerProcess

STOPS = 2
LOAD_MS = 8000


def head_and_snapshot(db) -> tuple[int, int]:
    """The document's version on disk and its newest snapshot's version (read with the server stopped)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT d.version, MAX(s.version) FROM documents d JOIN snapshots s "
                            "ON s.doc_id = d.id WHERE d.name = 'restarts'").fetchone()
    finally:
        conn.close()


def test_sigterm_under_load_loses_nothing_and_clients_come_back(server, node, tmp_path):
    seed = int(os.environ.get("COLLAB_SEED", random.randrange(1, 2**31)))
    ctx = f"across SIGTERM (seed {seed})"
    rng = random.Random(seed)
    record = tmp_path / "acked.json"
    heads = []
    with fuzz_clients(node, server.ws_url, "restarts", seed, LOAD_MS, "--interval", "15,30",
                      "--settle", "20000", "--record-out", str(record)) as load:
        for _ in range(STOPS):
            time.sleep(rng.uniform(1.2, 1.6))  # long enough for every client to be back and typing
            t0 = time.monotonic()
            code = server.stop(timeout=15)
            took = time.monotonic() - t0
            assert code == 0, f"collab exited {code} on SIGTERM {ctx}:\n{server.log()[-3000:]}"
            assert took < 5, f"SIGTERM took {took:.1f}s: shutdown waited for connections {ctx}"
            version, snapshot = head_and_snapshot(server.db)
            assert version > 0 and snapshot == version, (
                f"after SIGTERM the document is at {version} on disk but its newest snapshot is {snapshot}: "
                f"the shutdown flush did not run {ctx}")
            heads.append(version)
            server.start()
        r, issues = client_report(load, timeout=LOAD_MS / 1000 + 35)
    for c in r["clients"]:
        going_away = [x for x in c["closes"] if x["code"] == 1001]
        assert len(going_away) == STOPS, f"{c['clientID']} closes {c['closes']} {ctx}"
        assert all(x["reason"] == "server shutting down" for x in going_away), going_away
        assert c["stats"]["welcomesResume"] >= STOPS, f"clients resume after a restart {c['stats']} {ctx}"
    assert issues == [], ctx
    assert r["ok"], f"no convergence after the restarts {ctx}: {r['versions']} vs {r['server']}"
    assert all(t == r["texts"][0] for t in r["texts"]), ctx

    recorded = {int(v): u for v, u in json.loads(record.read_text()).items()}
    assert heads[0] < heads[-1] < max(recorded), f"edits went on across the restarts: {heads}, {max(recorded)}"
    server.stop()
    server.start()
    check_server_log(server, "restarts", recorded, r["texts"][0], ctx)


def test_serve_says_which_database_and_logs_a_graceful_stop(tmp_path):
    """Was: `collab serve` said only where it listens, and a SIGTERM or Ctrl-C left nothing in the log, so in
    the journal a stop could not be told from a crash (found by an operator's audit)."""
    db = tmp_path / "data" / "collab.db"
    db.parent.mkdir()
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = ServerProcess(db, log_path=tmp_path / f"{sig.name}.log").start()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                # One open connection, idle once answered (so surely accepted and counted).
                conn.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
                assert conn.recv(65536).startswith(b"HTTP/1.1 200"), "the server answered"
                os.kill(server.proc.pid, sig)
                assert server.proc.wait(15) == 0, server.log()
        finally:
            server.stop()
        log = server.log()
        assert f"collab: database {db.resolve()}\n" in log, log
        assert f"collab: stopping ({sig.name}): finishing commits, closing 1 connection\n" in log, log
        assert log.rstrip().endswith("collab: stopped"), log


def test_a_postgresql_database_is_named_with_its_password_masked():
    assert cli.database("postgresql://collab:s3cret@db:5432/collab") == "postgresql://collab:***@db:5432/collab"
    assert cli.database("postgres://collab:s3cret@db/?dbname=x") == "postgres://collab:***@db/?dbname=x"
    assert cli.database("postgresql://collab:s3cret@db") == ("postgresql://collab:***@db (no database name: "
                                                             "PostgreSQL's default, $PGDATABASE or the user's name)")
