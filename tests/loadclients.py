"""Headless @codemirror/collab clients under load, and the checks the restart tests share.

test_durability.py (SIGKILL) and test_graceful.py (SIGTERM) both run
tests/js/client.mjs fuzz against a server they keep stopping, then check the
same things: the clients reported no problem and converged, and the server's
update log holds every update a client saw acknowledged, at its version,
contiguous from 1, replaying to the served text.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from contextlib import contextmanager

import aiohttp

from conftest import JS_DIR
from serverproc import get_json


@contextmanager
def fuzz_clients(node: str, ws_url: str, doc: str, seed: int, duration_ms: int, *options: str):
    """`client.mjs fuzz` running in the background (4 clients); killed if still running at the end."""
    load = subprocess.Popen(
        [node, "client.mjs", "fuzz", "--url", ws_url, "--doc", doc, "--clients", "4",
         "--duration", str(duration_ms), "--seed", str(seed), "--delay", "0", "--reconnects", "0", *options],
        cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield load
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()


def client_report(load: subprocess.Popen, timeout: float) -> tuple[dict, list[str]]:
    """The clients' final report, and every problem they met (conflicts, violations, errors, resets)."""
    out, err = load.communicate(timeout=timeout)
    assert load.returncode == 0, err[-4000:]
    r = json.loads(out)
    issues = list(r["conflicts"])
    for c in r["clients"]:
        issues += c["violations"] + [f"{c['clientID']}: error {e}" for e in c["errors"]]
        issues += [f"{c['clientID']}: full-text welcome dropped local state {x}" for x in c["resets"]]
    return r, issues


def check_server_log(server, doc: str, recorded: dict[int, dict], converged: str, ctx: str) -> int:
    """The server's log holds every recorded (acknowledged) update unchanged at its version, versions
    are contiguous from 1 in the log and the history, and replaying the log gives the text the server
    serves and the clients converged on. Returns the server's version."""
    version, log = asyncio.run(server_log(server.ws_url, doc))
    assert version >= max(recorded), f"server at {version} after restart, clients saw {max(recorded)} acknowledged"
    lost = [v for v, u in sorted(recorded.items()) if log[v - 1] != u]
    assert not lost, (f"{len(lost)} acknowledged updates lost or changed {ctx}, first at "
                      f"version {lost[0]}: acked {recorded[lost[0]]}, server has {log[lost[0] - 1]}")
    assert set(recorded) == set(range(1, version + 1)), f"the clients saw every version from 1 on {ctx}"

    text16 = b""
    for u in log:
        text16 = apply_changes(text16, u["changes"])
    text = text16.decode("utf-16-le")  # strict: a split surrogate pair raises
    served = get_json(f"{server.url}/api/docs/{doc}")
    assert (served["version"], served["doc"]) == (version, text)
    assert text == converged, "the restarted server serves the text the clients converged on"

    hist = history_versions(server.url, doc)
    assert [v for v, _ in hist] == list(range(1, version + 1)), "history versions are contiguous from 1"
    assert [c for _, c in hist] == [u["clientID"] for u in log]
    return version


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
    """All updates the server holds for `doc`, via a resume from version 0.

    A resume comes in the frames the updates were broadcast in (docs/protocol.md): the welcome
    carries the first, `updates` frames the rest, up to the head the HTTP API reports.
    """
    head = get_json(ws_url.replace("ws://", "http://", 1) + f"/api/docs/{doc}")["version"]
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
            assert frame["from"] == 0 and frame["version"] == len(frame["updates"]), {
                k: frame[k] for k in ("from", "version")}
            updates = list(frame["updates"])
            while len(updates) < head:
                msg = await asyncio.wait_for(ws.receive(), 10)
                frame = json.loads(msg.data)
                if frame["type"] == "updates":
                    assert frame["from"] == len(updates), (frame["from"], len(updates))
                    updates += frame["updates"]
    return len(updates), updates


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
