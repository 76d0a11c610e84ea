"""Durability: SIGKILL the server under load; every update any client saw acknowledged survives.

How it works: headless @codemirror/collab clients (tests/js/client.mjs fuzz)
edit one document as fast as the protocol lets them and reconnect whenever the
socket drops. Each records every update it saw in a welcome or `updates` frame
(version -> clientID + changes). Meanwhile this test kills the server with
SIGKILL a few times and restarts it on the same database. At the end the
server's own log, read back with `hello` at version 0, must contain every
recorded update identically at its version, with versions contiguous from 1,
and replaying it must give the served text. It runs on SQLite and on
PostgreSQL (conftest.BOTH_BACKENDS): the server dies, the database stays.
"""

from __future__ import annotations

import json
import os
import random
import time

from conftest import BOTH_BACKENDS
from loadclients import check_server_log, client_report, fuzz_clients

KILLS = 3
LOAD_MS = 7000


@BOTH_BACKENDS
def test_acknowledged_updates_survive_sigkill(server, node, tmp_path):
    # Mixed edits: the kills make clients pile up hundreds of offline edits that
    # come back as big pushes over big welcomes, which also exercises the
    # frame-by-frame rebase (a composed rebase made clients diverge here).
    seed = int(os.environ.get("COLLAB_SEED", random.randrange(1, 2**31)))
    ctx = f"after SIGKILL (seed {seed})"
    rng = random.Random(seed)
    doc = "durable"
    record_path = tmp_path / "acked.json"
    with fuzz_clients(node, server.ws_url, doc, seed, LOAD_MS, "--interval", "2,5", "--edits", "mixed",
                      "--settle", "25000", "--record-out", str(record_path)) as load:
        time.sleep(1.0)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.6, 1.2))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        r, issues = client_report(load, timeout=LOAD_MS / 1000 + 40)
    for c in r["clients"]:
        # Every client lived through the kills: dropped sockets, reconnects.
        assert c["stats"]["connects"] >= KILLS + 1, (ctx, c)
    assert issues == [], ctx
    assert r["ok"], f"clients did not converge with the server after the kills {ctx}: {r['versions']} vs {r['server']}"
    assert all(t == r["texts"][0] for t in r["texts"]), ctx

    recorded = {int(v): u for v, u in json.loads(record_path.read_text()).items()}
    assert len(recorded) > 300, f"too little load to mean anything: {len(recorded)} updates {ctx}"

    server.restart()  # one more SIGKILL, right after the clients went quiet
    check_server_log(server, doc, recorded, r["texts"][0], ctx)
