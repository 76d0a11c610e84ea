"""End to end against a real server subprocess: stock @codemirror/collab clients converge; resume; no duplicates.

What these tests rely on:
- The Node side (tests/js/client.mjs) is the real `@codemirror/state` +
  `@codemirror/collab` driven headless, so "converges" means what it means for
  the browser editor, not for a re-implementation of it.
- The protocol cases (resume, re-push) are driven from Python with raw frames,
  so the exact frames the server sends can be asserted.
- Every test runs on SQLite and on PostgreSQL (conftest.BOTH_BACKENDS).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess

import aiohttp
import pytest

from conftest import BOTH_BACKENDS
from serverproc import ROOT, get_json

pytestmark = BOTH_BACKENDS

JS_DIR = ROOT / "tests" / "js"
WS_PROTOCOL = "collab.v1"
RECV_TIMEOUT = 5.0


def run_node(node: str, args: list[str], timeout: float) -> dict:
    proc = subprocess.run([node, "client.mjs", *args], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"node client.mjs {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def problems(result: dict) -> list:
    """Everything the clients saw that the protocol does not allow, plus server error frames."""
    out = list(result.get("conflicts", []))
    for c in result["clients"]:
        out += c["violations"]
        out += [f"{c['clientID']}: error frame {e}" for e in c["errors"]]
        out += [f"{c['clientID']}: full-text welcome dropped local state {r}" for r in c["resets"]]
    return out


@pytest.mark.parametrize("edits", ["inserts", "mixed"])
def test_five_headless_clients_converge_through_reconnects_and_a_restart(server, node, edits):
    """5 stock clients, random edits (astral chars, newlines), random frame delays, one forced reconnect each.

    "inserts" makes many concurrent insertions at one position (tie-breaking,
    rebasing) and maps identically however updates are grouped. "mixed" adds
    deletions and replacements: then CodeMirror's mapping depends on grouping
    (see randomChange in tests/js/client.mjs), and a stock client converges
    only if the server rebases a push over the updates in the grouping that
    connection received them (one welcome, then frame by frame).
    """
    seed = int(os.environ.get("COLLAB_SEED", random.randrange(1, 2**31)))
    doc = "converge"
    r = run_node(node, ["fuzz", "--url", server.ws_url, "--doc", doc, "--clients", "5",
                        "--duration", "4000", "--seed", str(seed), "--delay", "30", "--edits", edits,
                        "--reconnects", "1", "--interval", "5,40", "--settle", "20000"],
                 timeout=60)
    ctx = f"(seed {seed}; rerun with COLLAB_SEED={seed})"
    texts = r["texts"]
    assert len(set(texts)) == 1, (
        f"stock clients diverged into {len(set(texts))} different texts {ctx}; "
        f"first problems: {problems(r)[:3]}")
    assert problems(r) == [], ctx
    assert r["ok"], (f"clients did not settle on the server's version {ctx}: "
                     f"versions {r['versions']}, server {r['server']}")
    for c in r["clients"]:
        # Each client really went through a forced reconnect and resumed with from+updates.
        assert c["stats"]["connects"] >= 2 and c["stats"]["welcomesResume"] >= 1, c
        assert c["stats"]["localEdits"] > 20, c
    final = texts[0]
    final.encode("utf-8")  # a split surrogate pair would raise here
    assert "\n" in final and any(ord(ch) > 0xFFFF for ch in final), "random edits must cover newlines and astral chars"

    http = get_json(f"{server.url}/api/docs/{doc}")
    assert http["name"] == doc
    assert http["version"] == r["versions"][0]
    assert http["doc"] == final

    server.restart()  # SIGKILL, then start on the same database
    after = get_json(f"{server.url}/api/docs/{doc}")
    assert (after["version"], after["doc"]) == (http["version"], final)

    # A fresh stock client sees the same text.
    shown = run_node(node, ["show", "--url", server.ws_url, "--doc", doc], timeout=20)
    assert (shown["version"], shown["text"]) == (http["version"], final)


# ---- raw protocol sessions from Python -------------------------------------------


class Session:
    """One WebSocket connection speaking collab.v1 with raw frames."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, welcome: dict):
        self.http = http
        self.ws = ws
        self.welcome = welcome

    @classmethod
    async def open(cls, http, server, doc: str, client_id: str, version: int | None) -> "Session":
        ws = await http.ws_connect(f"{server.ws_url}/ws/{doc}", protocols=(WS_PROTOCOL,),
                                   max_msg_size=0, autoping=True)
        assert ws.protocol == WS_PROTOCOL
        await ws.send_str(json.dumps({"type": "hello", "clientID": client_id, "version": version,
                                      "user": {"name": client_id, "color": "#123456"}}))
        s = cls(http, ws, {})
        s.welcome = await s.recv("welcome")
        return s

    async def recv(self, want: str, timeout: float = RECV_TIMEOUT) -> dict:
        """Next frame of type `want`, skipping presence/leave; any other frame fails the test."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg}"
            frame = json.loads(msg.data)
            if frame["type"] in ("presences", "leave"):
                continue
            assert frame["type"] == want, f"expected {want}, got {frame}"
            return frame

    async def no_frame(self, seconds: float) -> None:
        """Asserts nothing but presence/leave arrives for `seconds`."""
        try:
            while True:
                msg = await asyncio.wait_for(self.ws.receive(), seconds)
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] in ("presences", "leave"):
                    continue
                pytest.fail(f"unexpected frame {msg}")
        except asyncio.TimeoutError:
            pass

    async def resumed(self, until: int) -> list[dict]:
        """The updates of a resume up to `until`: the welcome's, then the frames that follow it
        (a resume comes in the frames the updates were broadcast in)."""
        updates, version = list(self.welcome["updates"]), self.welcome["version"]
        while version < until:
            frame = await self.recv("updates")
            assert frame["from"] == version, frame
            updates += frame["updates"]
            version += len(frame["updates"])
        return updates

    async def push(self, version: int, updates: list[dict]) -> None:
        await self.ws.send_str(json.dumps({"type": "push", "version": version, "updates": updates}))

    async def push_acked(self, version: int, updates: list[dict]) -> dict:
        await self.push(version, updates)
        frame = await self.recv("updates")
        assert frame["from"] == version and frame["updates"] == updates, frame
        return frame

    async def close(self) -> None:
        await self.ws.close()


def upd(client_id: str, changes: list) -> dict:
    return {"clientID": client_id, "changes": changes}


async def test_resume_gets_exactly_the_missed_updates(server):
    doc = "resume"
    async with aiohttp.ClientSession() as http:
        a = await Session.open(http, server, doc, "A", None)
        assert a.welcome["doc"] == "" and a.welcome["version"] == 0
        assert a.welcome["role"] == "edit"
        a1 = upd("A", [[0, "hello"]])
        await a.push_acked(0, [a1])
        await a.close()

        b = await Session.open(http, server, doc, "B", None)
        assert (b.welcome["doc"], b.welcome["version"]) == ("hello", 1)
        missed = [upd("B", [5, [0, " world"]]), upd("B", [[0, "😀", ""], 11])]
        await b.push_acked(1, missed[:1])
        await b.push_acked(2, missed[1:])

        # A comes back with its synced version: the welcome carries exactly what it missed.
        a = await Session.open(http, server, doc, "A", 1)
        w = a.welcome
        assert "doc" not in w, f"resume answered with the full text although the server holds the updates: {w}"
        assert w["from"] == 1 and await a.resumed(3) == missed

        # Resuming at the current version gets an empty list, and live updates flow after either resume.
        c = await Session.open(http, server, doc, "C", 3)
        assert (c.welcome["from"], c.welcome["version"], c.welcome["updates"]) == (3, 3, [])
        live = upd("B", [[0, "!"], 14])
        await b.push_acked(3, [live])
        for s in (a, c):
            f = await s.recv("updates")
            assert (f["from"], f["updates"]) == (3, [live])

        # Resuming from 0 replays the whole history.
        z = await Session.open(http, server, doc, "Z", 0)
        assert z.welcome["from"] == 0 and await z.resumed(4) == [a1, *missed, live]
        for s in (a, b, c, z):
            await s.close()
    got = get_json(f"{server.url}/api/docs/{doc}")
    assert (got["version"], got["doc"]) == (4, "!😀\nhello world")


async def test_repush_of_an_acknowledged_update_is_not_duplicated(server):
    doc = "repush"
    async with aiohttp.ClientSession() as http:
        a = await Session.open(http, server, doc, "A", None)
        ua = upd("A", [[0, "AAA"]])
        await a.push_acked(0, [ua])
        await a.close()

        b = await Session.open(http, server, doc, "B", None)
        ub = upd("B", [3, [0, "bb"]])
        await b.push_acked(1, [ub])

        # Same clientID, new connection, same update at the old version: already accepted, dropped.
        a = await Session.open(http, server, doc, "A", 0)
        assert await a.resumed(2) == [ua, ub]
        await a.push(0, [ua])
        await a.no_frame(0.5)
        await b.no_frame(0.1)
        assert get_json(f"{server.url}/api/docs/{doc}")["doc"] == "AAAbb"

        # The already-accepted update followed by a new one: only the new one is accepted, rebased over B's.
        ua2 = upd("A", [3, [0, "!"]])  # written on top of "AAA" in A's view
        await a.push(0, [ua, ua2])
        for s in (a, b):
            f = await s.recv("updates")
            # Rebased exactly like @codemirror/collab's rebaseUpdates([ua, ua2], [ua, ub]).
            assert (f["from"], f["updates"]) == (2, [upd("A", [5, [0, "!"]])]), f
        await a.close()
        await b.close()
    got = get_json(f"{server.url}/api/docs/{doc}")
    assert got["version"] == 3
    assert got["doc"] == "AAAbb!"


async def test_repush_after_an_unread_ack_is_not_duplicated(server):
    """The client pushes and drops the connection before reading anything, then re-pushes from a new one."""
    doc = "unread"
    async with aiohttp.ClientSession() as http:
        watcher = await Session.open(http, server, doc, "W", None)
        version = 0
        text = ""
        for i in range(6):
            cid = f"C{i}"
            c = await Session.open(http, server, doc, cid, None)
            assert c.welcome["version"] == version
            mark = f"<{i}>"
            u1 = upd(cid, [[0, mark], len(text)] if text else [[0, mark]])
            await c.push(version, [u1])
            if i % 2:
                await c.close()
            else:  # no close handshake at all: the TCP connection just goes away
                c.ws._conn.transport.abort()
            # Reconnect "blind" at the old version and re-push, plus one new update on top.
            c = await Session.open(http, server, doc, cid, version)
            seen = c.welcome["updates"]
            assert seen in ([], [u1]), seen
            u2 = upd(cid, [len(mark), [0, "+"], len(text)] if text else [len(mark), [0, "+"]])
            await c.push(version, [u1, u2])
            got = []
            while len(seen) + len(got) < 2:
                got += (await c.recv("updates"))["updates"]
            assert all(u["clientID"] == cid for u in got), got
            assert len(seen) + len(got) == 2, (seen, got)
            await c.close()
            version += 2
            text = mark + "+" + text
            # The watcher saw every update exactly once, in order.
            w = []
            while len(w) < 2:
                w += (await watcher.recv("updates"))["updates"]
            assert [u["clientID"] for u in w] == [cid, cid]
            await asyncio.sleep(0.05)
            cur = get_json(f"{server.url}/api/docs/{doc}")
            assert (cur["version"], cur["doc"]) == (version, text), f"round {i}: {cur}"
        await watcher.no_frame(0.3)
        await watcher.close()
    cur = get_json(f"{server.url}/api/docs/{doc}")
    assert (cur["version"], cur["doc"]) == (version, text)
