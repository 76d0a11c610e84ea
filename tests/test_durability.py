"""Durability: SIGKILL the server under load; every update any client saw acknowledged survives.

How it works: headless @codemirror/collab clients (tests/js/client.mjs fuzz)
edit one document as fast as the protocol lets them and reconnect whenever the
socket drops. Each records every update it saw in a welcome or `updates` frame
(version -> clientID + changes). Meanwhile this test kills the server with
SIGKILL a few times and restarts it on the same database. At the end the
server's own log, read back with `hello` at version 0, must contain every
recorded update identically at its version, with versions contiguous from 1,
and replaying it must give the served text.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time

import aiohttp

from serverproc import ROOT, get_json

JS_DIR = ROOT / "tests" / "js"
KILLS = 3
LOAD_MS = 7000


def apply_changes(text16: bytes, changes: list) -> bytes:
    """Applies ChangeSetJSON to UTF-16-LE bytes (lengths are UTF-16 code units); independent of collab.changes."""
    out = []
    pos = 0
    for part in changes:
        if isinstance(part, int):
            out.append(text16[pos * 2:(pos + part) * 2])
            pos += part
        else:
            pos += part[0]
            if len(part) > 1:
                out.append("\n".join(part[1:]).encode("utf-16-le", "surrogatepass"))
    assert pos * 2 == len(text16), f"changes cover {pos} units, document has {len(text16) // 2}"
    return b"".join(out)


async def server_log(ws_url: str, doc: str) -> tuple[int, list[dict]]:
    """All updates the server holds for `doc`, via a resume from version 0."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{ws_url}/ws/{doc}", protocols=("collab.v1",), max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "hello", "clientID": "durability-check", "version": 0,
                                          "user": {"name": "check", "color": "#000000"}}))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                frame = json.loads(msg.data)
                if frame["type"] == "welcome":
                    break
    assert "doc" not in frame, ("a resume from version 0 was answered with the full text: "
                                "the update log cannot be checked")
    assert frame["from"] == 0 and frame["version"] == len(frame["updates"]), {k: frame[k] for k in ("from", "version")}
    return frame["version"], frame["updates"]


def history_versions(url: str, doc: str) -> list[tuple[int, str]]:
    """(version, clientID) of every history entry, oldest first, following `before` pagination."""
    entries = []
    before = None
    while True:
        q = f"{url}/api/docs/{doc}/history?limit=500" + (f"&before={before}" if before is not None else "")
        page = get_json(q)["entries"]
        if not page:
            break
        entries += page
        before = page[-1]["version"]
        if before <= 1:
            break
    return sorted((e["version"], e["clientID"]) for e in entries)


def test_acknowledged_updates_survive_sigkill(server, node, tmp_path):
    # Mixed edits: the kills make clients pile up hundreds of offline edits that
    # come back as big pushes over big welcomes, which also exercises the
    # frame-by-frame rebase (a composed rebase made clients diverge here).
    seed = int(os.environ.get("COLLAB_SEED", random.randrange(1, 2**31)))
    ctx = f"(seed {seed})"
    rng = random.Random(seed)
    doc = "durable"
    record_path = tmp_path / "acked.json"
    load = subprocess.Popen(
        [node, "client.mjs", "fuzz", "--url", server.ws_url, "--doc", doc, "--clients", "4",
         "--duration", str(LOAD_MS), "--seed", str(seed), "--delay", "0", "--reconnects", "0",
         "--interval", "2,5", "--edits", "mixed", "--settle", "25000", "--record-out", str(record_path)],
        cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.6, 1.2))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        out, err = load.communicate(timeout=LOAD_MS / 1000 + 40)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err[-4000:]
    r = json.loads(out)
    issues = list(r["conflicts"])
    for c in r["clients"]:
        issues += c["violations"] + [f"{c['clientID']}: error {e}" for e in c["errors"]]
        issues += [f"{c['clientID']}: full-text welcome dropped local state {x}" for x in c["resets"]]
        # Every client lived through the kills: dropped sockets, reconnects.
        assert c["stats"]["connects"] >= KILLS + 1, (ctx, c)
    assert issues == [], ctx
    assert r["ok"], f"clients did not converge with the server after the kills {ctx}: {r['versions']} vs {r['server']}"
    assert all(t == r["texts"][0] for t in r["texts"]), ctx

    recorded = {int(v): u for v, u in json.loads(record_path.read_text()).items()}
    assert len(recorded) > 300, f"too little load to mean anything: {len(recorded)} updates {ctx}"

    server.restart()  # one more SIGKILL, right after the clients went quiet
    version, log = asyncio.run(server_log(server.ws_url, doc))
    assert version >= max(recorded), f"server at {version} after restart, clients saw {max(recorded)} acknowledged"
    lost = [v for v, u in sorted(recorded.items()) if log[v - 1] != u]
    assert not lost, (f"{len(lost)} acknowledged updates lost or changed after SIGKILL {ctx}, first at "
                      f"version {lost[0]}: acked {recorded[lost[0]]}, server has {log[lost[0] - 1]}")
    assert set(recorded) == set(range(1, version + 1)), "the clients saw every version from 1 on"

    text16 = b""
    for u in log:
        text16 = apply_changes(text16, u["changes"])
    text = text16.decode("utf-16-le")  # strict: a split surrogate pair raises
    served = get_json(f"{server.url}/api/docs/{doc}")
    assert (served["version"], served["doc"]) == (version, text)
    assert text == r["texts"][0], "the restarted server serves the text the clients converged on"

    hist = history_versions(server.url, doc)
    assert [v for v, _ in hist] == list(range(1, version + 1)), "history versions are contiguous from 1"
    assert [c for _, c in hist] == [u["clientID"] for u in log]
