"""Fuzzing the WebSocket endpoint: random frames at a live server, then the invariants.

A fuzzing client ("fuzz") throws hypothesis-made frames at a document: random
JSON, wrong types, huge numbers, deep nesting, random ChangeSetJSON (valid for
the document, wrong lengths, cut surrogate pairs, CR/LF, lone surrogate
escapes), past and future versions, other clients' clientIDs, binary frames,
text that is not UTF-8, frames over the size limit, floods, and fresh
connections that start with anything but a hello. Meanwhile a well-behaved
client ("good") keeps editing and sending its selection.

After every frame: the frame got exactly the answers tests/fuzzgen.py's
oracle (written from the protocol, not from collab's code) allows: one
`error` with an allowed code, or none when the frame may be accepted, or a
protocol close code. Which error belongs to which frame is told by a barrier,
`{"type":"sync"}` sent after every frame, whose fixed error marks the end of
that frame's answers. When nothing else is in flight the oracle knows the
document exactly, and a push it says must be accepted is checked to come back
as the next versions, making exactly the text the pushed changes make; a
presence it says is accepted must reach the other client.

After every example: the server still answers, nothing was logged at ERROR or
with a traceback, the well-behaved client's pushes were all acknowledged, and
its text (replaying every `updates` frame), the fuzzing client's, GET
/api/docs/{doc}, and the text rebuilt from the `updates` rows of the database
are identical, with contiguous versions.

`test_fuzz_in_process` is the big run (>= 10,000 fuzz frames, in-process);
`test_fuzz_subprocess` a smaller one against `python -m collab serve`, whose
log file must hold no traceback and no ERROR line. FUZZ_EXAMPLES scales the
in-process run (e.g. FUZZ_EXAMPLES=2000 for a long local hunt), and
FUZZ_SUBPROCESS_EXAMPLES the other (600 keep the server's RSS near 55 MB). A failure
reports the first failing example as it happened (a live server is not
replayable) with the last steps of its document.

What the fuzzer found is pinned by small tests at the end of this file. One
transport behaviour is tolerated: after a frame over --max-frame, aiohttp
itself fails the connection (1009) and drops TCP without the closing
handshake, so a client still writing may see a reset (1006) instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st
from hypothesis.vendor.pretty import pretty

from collab.app import create_app
from collab.settings import Settings
from fuzzgen import (BARRIER, CLOSE_CODES, CODES, GOOD, ME, OK, Ctx, Expect, Frame, Limits, Template, apply_json,
                     boundaries, canonical, deep, fractions, frame_strategies, hello_value, judge, make_frame,
                     parse_changes, resolve, u16)
from serverproc import ServerProcess
from wsutil import closed, connect, join, push, recv, recv_type, send

LIMITS = Limits(max_frame=64 * 1024, max_doc=5000, max_updates=8, max_ranges=10)
A_FRAMES, FIRST_FRAMES, CLOSING_FRAMES = frame_strategies(LIMITS)
STEPS = st.sampled_from(["frame"] * 10 + ["flood", "good", "good", "good", "presence", "settle", "settle", "fresh",
                         "fresh", "reconnect"])
REJOIN = st.tuples(st.sampled_from(["resume", "resume", "full", "older"]), fractions)
FLOODS = st.lists(A_FRAMES, min_size=5, max_size=30)
FRESH = st.sampled_from(["first"] * 4 + ["hello"] * 3 + ["steal"])
GOOD_INSERTS = st.text(alphabet="xyz 😀é\n", max_size=4)
LINES = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=5)
DOCS = 6  # examples take turns on a few documents, so histories grow long (trimmed logs, snapshots, reloads)
FRAMES_PER_EXAMPLE = int(os.environ.get("FUZZ_FRAMES", "50"))
IN_PROCESS_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "210"))
SUBPROCESS_EXAMPLES = int(os.environ.get("FUZZ_SUBPROCESS_EXAMPLES", "24"))


def time_limit(examples: int) -> float:
    """pytest-timeout's limit for a run of `examples` (about 0.3 s each here): pyproject's 300 s, or more
    for a longer hunt, so that FUZZ_EXAMPLES=2000 runs to its end."""
    return max(300.0, 1.5 * examples)
TIMEOUT = 10.0
# Hypothesis raises the recursion limit while a test runs; the server must meet frames with the limit
# it has in production (a frame nested ~1000 deep is exactly where that matters).
RECURSION_LIMIT = sys.getrecursionlimit()

# Small limits so that the rare paths (history read from disk, snapshots,
# refusals for size) are reached within a few dozen updates.
SERVER_OPTIONS = dict(max_frame=LIMITS.max_frame, max_doc=LIMITS.max_doc, max_updates=LIMITS.max_updates,
                      max_ranges=LIMITS.max_ranges, keep_updates=12, snapshot_every=9, presence_interval=0.01,
                      hello_timeout=5.0, unload_after=0.2, rate=1e6, burst=10 ** 6,
                      update_rate=1e6, update_burst=10 ** 6, doc_update_rate=1e6, doc_update_burst=10 ** 6,
                      snapshot_min_bytes=256, max_conns_per_doc=10 ** 4, max_conns_per_addr=10 ** 4)


def settings_for(**values) -> dict:
    """The options this tree's Settings knows (some, like rate, are newer than others)."""
    known = {f.name for f in dataclasses.fields(Settings)}
    return {k: v for k, v in values.items() if k in known}


class Failure(AssertionError):
    pass


class StopFuzz(BaseException):
    """Ends the hypothesis run at the first failure, as it happened.

    A live server is not deterministic: hypothesis replaying the failing
    example would meet another document and other timings (and complain of
    flakiness). The first failure, with its trace, is the report.
    """


# ----------------------------------------------------------------- the model

class World:
    """Every update any client saw, by version, and the document at each version."""

    def __init__(self):
        self.texts = [""]                           # texts[v]: the document at version v
        self.entries: dict[int, tuple[str, list]] = {}   # version -> (clientID, changes as sent by the server)
        self.a_versions: list[int] = []             # versions made by the fuzzing client
        self.welcomes: list[tuple[int, str, str]] = []   # (version, doc, who) to check once known
        self.trace: list[str] = []                  # what happened, for the failure report
        self.unsettled = False                      # an example on it ended before its final settle

    @property
    def head(self) -> int:
        return len(self.texts) - 1

    def record(self, version: int, client_id: str, changes, who: str) -> None:
        parsed = parse_changes(changes)
        if parsed is None or canonical(parsed) != changes:
            raise Failure(f"{who} got update {version} with changes that are not canonical ChangeSetJSON: "
                          f"{str(changes)[:300]}")
        known = self.entries.get(version)
        if known is not None:
            if known != (client_id, changes):
                raise Failure(f"divergence at version {version}: {who} got {(client_id, changes)!r:.300}, "
                              f"another client got {known!r:.300}")
            return
        self.entries[version] = (client_id, changes)
        if client_id == ME:
            self.a_versions.append(version)
        while len(self.texts) in self.entries:
            v = len(self.texts)
            try:
                self.texts.append(apply_json(self.entries[v][1], self.texts[-1]))
            except ValueError as exc:
                raise Failure(f"update {v} does not apply to the text at {v - 1}: {exc}") from None


class Stream:
    """One connection and the document as the frames it received make it."""

    def __init__(self, world: World, ws, who: str, client_id: str):
        self.world = world
        self.ws = ws
        self.who = who
        self.client_id = client_id
        self.session = ""
        self.version = 0
        self.text: str | None = ""
        self.presence_from: set[str] = set()
        self.inflight = False          # (the good client) a push not yet acknowledged
        self.acked = 0
        self.closed_by_us = False

    def welcome(self, frame: dict, asked) -> None:
        if frame.get("type") != "welcome":
            raise Failure(f"{self.who} expected welcome, got {str(frame)[:300]}")
        if frame.get("role") != "edit" or type(frame.get("session")) is not str \
                or type(frame.get("version")) is not int:
            raise Failure(f"{self.who}: malformed welcome {str(frame)[:300]}")
        self.session = frame["session"]
        for p in frame.get("peers", []):
            if p.get("type") != "presence" or p.get("version", 0) > frame["version"]:
                raise Failure(f"{self.who}: welcome peer {p} is newer than the welcome")
        if "doc" in frame:
            self.version, self.text = frame["version"], frame["doc"]
            self.world.welcomes.append((frame["version"], frame["doc"], self.who))
            return
        start = frame.get("from")
        if type(asked) is not int or start != asked or type(frame.get("updates")) is not list:
            raise Failure(f"{self.who} asked to resume from {asked}, got {str(frame)[:300]}")
        if start != self.version or self.text is None:
            self.text = self.world.texts[start] if start <= self.world.head else None
        self.version = start
        self.updates({"from": start, "updates": frame["updates"]})
        if self.version != frame["version"]:
            raise Failure(f"{self.who}: welcome resumes from {start} with {len(frame['updates'])} updates "
                          f"but says version {frame['version']}")

    def handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "updates":
            self.updates(frame)
        elif kind == "presences":
            peers = frame.get("peers")
            if type(peers) is not list or not peers:
                raise Failure(f"{self.who}: malformed presences {str(frame)[:300]}")
            for peer in peers:
                if type(peer) is dict and peer.get("session") == self.session:
                    continue  # our own cursor comes back in the batch everyone gets
                self.presence(peer)
        elif kind == "leave":
            if type(frame.get("session")) is not str:
                raise Failure(f"{self.who}: malformed leave {frame}")
        else:
            raise Failure(f"{self.who}: unexpected frame {str(frame)[:300]}")

    def updates(self, frame: dict) -> None:
        start, updates = frame.get("from"), frame.get("updates")
        if start != self.version or type(updates) is not list or (not updates and frame.get("type") == "updates"):
            raise Failure(f"{self.who} at version {self.version} got updates from {start} "
                          f"({'empty' if not updates else len(updates)}): gap, repeat or malformed")
        for k, u in enumerate(updates):
            cid, changes = u.get("clientID"), u.get("changes")
            self.world.record(start + k + 1, cid, changes, self.who)
            if self.text is not None:
                try:
                    self.text = apply_json(changes, self.text)
                except ValueError as exc:
                    raise Failure(f"{self.who}: update {start + k + 1} does not apply: {exc}") from None
            if cid == self.client_id and self.inflight:
                self.inflight = False
                self.acked += 1
        self.version = start + len(updates)

    def presence(self, frame: dict) -> None:
        version, ranges, session = frame.get("version"), frame.get("ranges"), frame.get("session")
        if type(version) is not int or version > self.version:
            raise Failure(f"{self.who} at version {self.version} got a presence at version {version}")
        if session == self.session or type(ranges) is not list or type(frame.get("user")) is not dict:
            raise Failure(f"{self.who}: malformed presence {str(frame)[:300]}")
        if version <= self.world.head:
            length = u16(self.world.texts[version])
            for r in ranges:
                if not (0 <= r.get("anchor", -1) <= length and 0 <= r.get("head", -1) <= length):
                    raise Failure(f"{self.who}: presence range {r} outside the text ({length}) at {version}")
        self.presence_from.add(session)


# ------------------------------------------------------------------ the fuzzer

class Fuzzer:
    def __init__(self, session: ClientSession, base: str, db: Path, stats: dict):
        self.http = session
        self.base = base
        self.db = db
        self.stats = stats
        self.barrier_message: str | None = None
        self.docs = 0
        self.worlds: dict[str, World] = {}

    def ws_url(self, doc: str) -> str:
        return f"{self.base.replace('http', 'ws', 1)}/ws/{doc}"

    async def connect(self, doc: str):
        return await self.http.ws_connect(self.ws_url(doc), protocols=["collab.v1"], autoping=True,
                                          max_msg_size=0)

    async def receive(self, ws, what: str):
        try:
            return await ws.receive(timeout=TIMEOUT)
        except asyncio.TimeoutError:
            raise Failure(f"no answer from the server within {TIMEOUT}s while waiting for {what}") from None

    async def join(self, world: World, doc: str, client_id: str, who: str, version=None) -> Stream:
        ws = await self.connect(doc)
        stream = Stream(world, ws, who, client_id)
        await ws.send_str(orjson.dumps({"type": "hello", "clientID": client_id, "version": version,
                                        "user": {"name": who, "color": "#3366ff"}}).decode())
        while True:
            msg = await self.receive(ws, f"{who}'s welcome")
            if msg.type != WSMsgType.TEXT:
                raise Failure(f"{who}: the server closed instead of welcoming: {msg.type} {msg.data} {msg.extra}")
            frame = orjson.loads(msg.data)
            if frame.get("type") in ("presences", "leave"):
                continue
            stream.welcome(frame, version)
            return stream

    # ------------------------------------------------------------ one example

    async def example(self, data) -> None:
        doc = f"fz{self.docs % DOCS}"
        self.docs += 1
        world = self.worlds.setdefault(doc, World())
        del world.trace[:-100]
        world.trace.append(f"--- example {self.docs} on {doc} (version {world.head})")
        self.world = world
        self.a_pending = 0          # upper bound of the fuzzer's accepted updates not yet seen
        self.effect_sessions: set[str] = set()
        self.good_pushed = self.good_refused = 0
        t0 = time.perf_counter()
        # The fuzzer resumes from the last version seen. An earlier example that hypothesis ended at
        # a draw (before its final settle) may have left pushes in flight that the resume does not
        # show yet (accepted, not yet durable): the model learns of them by a settle first.
        a = await self.join(world, doc, ME, "fuzz", version=world.head if world.head else None)
        b = await self.join(world, doc, GOOD, "good")
        reader = asyncio.ensure_future(self.good_reader(b))
        self.stats["time"]["join"] = self.stats["time"].get("join", 0.0) + time.perf_counter() - t0
        self.a, self.b, self.doc = a, b, doc
        try:
            if self.barrier_message is None:
                await a.ws.send_str(BARRIER)
                frame = orjson.loads((await self.receive(a.ws, "the barrier's error")).data)
                assert frame["type"] == "error" and frame["code"] == "bad-message", frame
                self.barrier_message = frame["message"]
            if world.unsettled:
                await self.settle()
            world.unsettled = True  # until this example's final settle
            # Every draw below depends on earlier draws only, never on what the server did: see
            # fuzzgen's templates. `planned` counts frames drawn; stats["frames"] those sent.
            planned = 0
            while planned < FRAMES_PER_EXAMPLE:
                step = data.draw(STEPS)
                rejoin = data.draw(REJOIN)
                t0 = time.perf_counter()
                planned += await getattr(self, "step_" + step)(data, rejoin)
                self.stats["time"][step] = self.stats["time"].get(step, 0.0) + time.perf_counter() - t0
                if self.a.ws.closed:
                    await self.rejoin(rejoin)
                if reader.done():
                    reader.result()
            t0 = time.perf_counter()
            await self.final_checks()
            world.unsettled = False
            self.stats["time"]["final"] = self.stats["time"].get("final", 0.0) + time.perf_counter() - t0
        except Failure as exc:
            trace = "\n  ".join(world.trace[-40:])
            raise Failure(f"{exc}\n\ndocument {doc}, last steps:\n  {trace}") from None
        finally:
            for s in (self.a, b):
                s.closed_by_us = True
            reader.cancel()
            for s in (self.a, b):
                await s.ws.close()

    def ctx(self) -> Ctx:
        w = self.world
        return Ctx(w.texts, w.a_versions, w.head + (1 if self.b.inflight else 0) + self.a_pending,
                   self.a_pending > 0, LIMITS)

    # ------------------------------------------------------------- the steps

    async def step_frame(self, data, rejoin) -> int:
        template = data.draw(A_FRAMES)
        ctx = self.ctx()
        frame = make_frame(template, ctx)
        await self.send_batch([(frame, judge(frame, ctx))], ctx)
        return 1

    async def step_flood(self, data, rejoin) -> int:
        """Frames sent back to back, their answers read afterwards (so later frames race earlier ones)."""
        templates = data.draw(FLOODS)
        if data.draw(st.integers(0, 7)) == 0:
            templates.append(data.draw(CLOSING_FRAMES))
        ctx = self.ctx()
        frames = [make_frame(t, ctx) for t in templates]
        grow = sum(len(f.value["updates"]) for f in frames
                   if isinstance(f.value, dict) and isinstance(f.value.get("updates"), list))
        loose = Ctx(ctx.texts, ctx.a_versions, ctx.head_hi + grow, True, LIMITS)
        await self.send_batch([(f, judge(f, loose)) for f in frames], loose)
        return len(frames)

    async def step_good(self, data, rejoin) -> int:
        i, j = data.draw(fractions), data.draw(st.integers(0, 60))
        ins = data.draw(GOOD_INSERTS)
        b = self.b
        if b.inflight or b.text is None:
            return 0
        text = b.text
        bounds = boundaries(text)
        i %= len(bounds)
        if u16(text) > LIMITS.max_doc - 300:
            ins = ""  # make room
        else:
            j %= 4
        j = min(len(bounds) - 1, i + j)
        start, end, length = bounds[i], bounds[j], bounds[-1]
        changes = ([start] if start else []) + [[end - start, *ins.split("\n")]] \
            + ([length - end] if end < length else [])
        b.inflight = True
        await b.ws.send_str(orjson.dumps({"type": "push", "version": b.version,
                                          "updates": [{"clientID": GOOD, "changes": changes}]}).decode())
        self.stats["good_pushes"] += 1
        self.good_pushed += 1
        self.world.trace.append(f"good pushes at {b.version}: {changes}")
        return 0

    async def step_presence(self, data, rejoin) -> int:
        x, y = data.draw(fractions), data.draw(fractions)
        b = self.b
        if b.text is None:
            return 0
        length = u16(b.text)
        anchor, head = length * x // 10 ** 6, length * y // 10 ** 6
        await b.ws.send_str(orjson.dumps({"type": "presence", "version": b.version,
                                          "ranges": [{"anchor": anchor, "head": head}]}).decode())
        return 0

    async def step_settle(self, data, rejoin) -> int:
        await self.settle()
        return 0

    async def step_reconnect(self, data, rejoin) -> int:
        self.a.closed_by_us = True
        await self.a.ws.close()
        await self.rejoin(rejoin)
        return 0

    async def step_fresh(self, data, rejoin) -> int:
        """A new connection: a bad first frame, a hello (maybe a push), or a hello taking the fuzzer's clientID."""
        kind = data.draw(FRESH)
        ctx = self.ctx()
        if kind == "first":
            frame = make_frame(data.draw(FIRST_FRAMES), ctx)
            expect = judge(frame, ctx, first=True)
            ws = await self.connect(self.doc)
            try:
                await self.send(ws, frame)
                self.world.trace.append(f"fresh connection, first frame {frame!r} expecting {expect!r}")
                msg = await self.receive(ws, "the answer to a first frame")
                if msg.type == WSMsgType.TEXT:
                    answer = orjson.loads(msg.data)
                    if answer.get("type") == "welcome":
                        if not expect.welcome:
                            raise Failure(f"first frame {frame!r} was welcomed; expected {expect!r}")
                        return 1
                    self.check_error(answer, frame, expect)
                    msg = await self.receive(ws, "the close after a refused first frame")
                    if msg.type == WSMsgType.TEXT:
                        raise Failure(f"after refusing first frame {frame!r} the server sent {msg.data[:200]}")
                elif OK not in expect.allowed:
                    raise Failure(f"first frame {frame!r}: closed without an error frame")
                code = msg.data if msg.type == WSMsgType.CLOSE else ws.close_code
                refused = len(frame.payload()) > LIMITS.max_frame
                if code not in expect.closes and not (refused and code == 1006):  # (see send_batch)
                    raise Failure(f"first frame {frame!r} closed with {code} ({msg.extra}); expected {expect!r}")
                self.stats["closes"][int(code)] = self.stats["closes"].get(int(code), 0) + 1
            finally:
                await ws.close()
            return 1
        if kind == "hello":
            hello = make_frame(Template("hello", data.draw(hello_value(True))), ctx)
            push, extra = data.draw(st.booleans()), data.draw(LINES)
            value = hello.value
            ws = await self.connect(self.doc)
            stream = Stream(self.world, ws, f"fresh {value['clientID']!r}", value["clientID"])
            try:
                await self.send(ws, hello)
                frame = await self.next_frame(stream, "the fresh hello's welcome")
                asked = value.get("version")
                if type(asked) is int and asked <= self.world.head:
                    stream.text = self.world.texts[asked]
                    stream.version = asked
                stream.welcome(frame, asked)
                self.world.trace.append(f"fresh hello {str(value)[:120]} welcomed at {frame['version']}")
                if stream.text is not None and push:
                    length = u16(stream.text)
                    changes = [[0, "[", extra]] + ([length] if length else [])
                    await ws.send_str(orjson.dumps({"type": "push", "version": stream.version, "updates": [
                        {"clientID": value["clientID"], "changes": changes}]}).decode())
                    stream.inflight = True
                    while stream.inflight:
                        stream.handle(await self.next_frame(stream, "the fresh client's ack"))
            finally:
                await ws.close()
            return 1
        # steal: the same clientID as the fuzzer replaces its connection (4001)
        ws = await self.connect(self.doc)
        try:
            await ws.send_str(orjson.dumps({"type": "hello", "clientID": ME, "version": None}).decode())
            stream = Stream(self.world, ws, "thief", ME)
            stream.welcome(await self.next_frame(stream, "the thief's welcome"), None)
            code = await self.read_until_closed(self.a)
            if code != 4001:
                raise Failure(f"a hello with the fuzzer's clientID should close its connection with 4001, got {code}")
            self.world.trace.append("a fresh connection took the fuzzer's clientID: 4001")
        finally:
            await ws.close()
        return 0

    # ------------------------------------------------------------ frame I/O

    async def send(self, ws, frame: Frame) -> None:
        if frame.binary:
            await ws.send_bytes(frame.data)
        elif frame.bad_utf8:
            await ws.send_frame(frame.data, WSMsgType.TEXT)
        else:
            await ws.send_str(frame.data)
        self.stats["frames"] += 1
        self.stats["labels"][frame.label] = self.stats["labels"].get(frame.label, 0) + 1

    async def next_frame(self, stream: Stream, what: str) -> dict:
        """The next text frame (presence and leave are handled on the way)."""
        while True:
            msg = await self.receive(stream.ws, what)
            if msg.type != WSMsgType.TEXT:
                raise Failure(f"{stream.who}: closed ({msg.type} {msg.data} {msg.extra}) while waiting for {what}")
            frame = orjson.loads(msg.data)
            if frame.get("type") in ("presences", "leave"):
                stream.handle(frame)
                continue
            return frame

    async def read_until_closed(self, stream: Stream):
        while True:
            msg = await self.receive(stream.ws, f"{stream.who}'s close")
            if msg.type == WSMsgType.TEXT:
                frame = orjson.loads(msg.data)
                if frame.get("type") == "error":
                    raise Failure(f"{stream.who}: unexpected error {frame}")
                stream.handle(frame)
                continue
            return msg.data if msg.type == WSMsgType.CLOSE else stream.ws.close_code

    def check_error(self, answer: dict, frame: Frame, expect: Expect) -> str:
        code, message = answer.get("code"), answer.get("message")
        if answer.get("type") != "error" or code not in CODES or type(message) is not str or not message:
            raise Failure(f"frame {frame!r}: malformed answer {str(answer)[:300]}")
        if code not in expect.allowed:
            raise Failure(f"frame {frame!r} got error {code!r} ({message[:200]}); expected {expect!r}")
        self.stats["codes"][code] = self.stats["codes"].get(code, 0) + 1
        return code

    async def send_batch(self, items: list[tuple[Frame, Expect]], ctx: Ctx) -> int:
        """Send each frame followed by a barrier, then read and check every frame's answers."""
        a = self.a
        head_before = ctx.head_lo
        sent = 0
        for frame, expect in items:
            self.world.trace.append(f"fuzz sends {frame!r} expecting {expect!r}")
            try:
                await self.send(a.ws, frame)
                sent += 1
                await a.ws.send_str(BARRIER)
            except ConnectionError as exc:  # the server dropped the connection while we were writing
                self.world.trace.append(f"  sending failed: {exc!r}")
                break
        answers: list[list[dict]] = [[] for _ in items]
        closed_at = close_code = None
        i = 0
        while i < sent:
            msg = await self.receive(a.ws, f"the answer to {items[i][0]!r}")
            if msg.type == WSMsgType.TEXT:
                frame = orjson.loads(msg.data)
                if frame.get("type") == "error":
                    if frame.get("code") == "bad-message" and frame.get("message") == self.barrier_message:
                        i += 1
                    else:
                        answers[i].append(frame)
                else:
                    a.handle(frame)
            else:
                closed_at, close_code = i, (msg.data if msg.type == WSMsgType.CLOSE else a.ws.close_code)
                break
        for k, (frame, expect) in enumerate(items[:sent]):
            if closed_at is not None and k > closed_at:
                break  # never read: the connection closed on an earlier frame
            got = answers[k]
            if len(got) > 1:
                raise Failure(f"frame {frame!r} got {len(got)} errors: {[g.get('code') for g in got]}")
            code = self.check_error(got[0], frame, expect) if got else OK
            if k == closed_at:
                transport_refused = any(len(f.payload()) > LIMITS.max_frame for f, _ in items[k:sent])
                # aiohttp fails the connection on a frame over its size limit: it sends 1009, then
                # drops TCP without the closing handshake, so frames queued before it may go
                # unanswered, and the client may get a reset (1006) instead of the close frame.
                # The server's own closes must always arrive whole (with their error frame):
                # test_close_code_reaches_a_client_that_is_still_sending.
                racing = transport_refused and close_code in (1006, 1009)
                if racing and close_code == 1006:
                    self.stats["resets"] += 1
                if close_code not in expect.closes and not racing:
                    raise Failure(f"frame {frame!r}: the server closed with {close_code}; expected {expect!r}")
                if close_code not in CLOSE_CODES and not racing:
                    raise Failure(f"frame {frame!r}: close code {close_code} is not a protocol close code")
                self.stats["closes"][int(close_code)] = self.stats["closes"].get(int(close_code), 0) + 1
                self.world.trace.append(f"  closed with {close_code}")
                break
            if expect.must_close:
                raise Failure(f"frame {frame!r} should have closed the connection ({expect!r}), got {code}")
            if code == OK and OK not in expect.allowed:
                raise Failure(f"frame {frame!r} got no error; expected {expect!r}")
            if code != OK:
                self.world.trace.append(f"  -> {code}")
                continue
            self.stats["accepted_frames"] += 1
            if expect.effect:
                self.effect_sessions.add(a.session)
            value = resolve(frame.value) if frame.value is not None else None
            pushed = value.get("updates") if isinstance(value, dict) and value.get("type") == "push" else None
            if not isinstance(pushed, list) or not pushed:
                continue
            if expect.accepted is None:
                self.a_pending += len(pushed)
                continue
            if expect.accepted:
                await self.expect_accepted(head_before, expect)
        return sent

    async def expect_accepted(self, head_before: int, expect: Expect) -> None:
        """A push the oracle said must be accepted: its updates come back as the next versions."""
        target = head_before + expect.accepted
        await self.read_until(self.a, lambda: self.world.head >= target, "the fuzzer's acknowledgement")
        for k in range(expect.accepted):
            cid, changes = self.world.entries[head_before + 1 + k]
            if cid != ME:
                raise Failure(f"version {head_before + 1 + k} should be the fuzzer's update, is {cid!r}'s")
            # The server may normalise the JSON (e.g. drop a no-op [0]); the effect must be the same.
            if expect.texts is not None and self.world.texts[head_before + 1 + k] != expect.texts[k]:
                raise Failure(f"version {head_before + 1 + k} ({changes}) does not make the text the fuzzer's "
                              f"update {k} made")
        self.stats["checked_accepts"] += 1
        self.world.trace.append(f"  accepted as versions {head_before + 1}..{target}")

    async def read_until(self, stream: Stream, done, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            if stream is self.b:
                if time.monotonic() > deadline:
                    raise Failure(f"timed out waiting for {what}")
                await asyncio.sleep(0.002)
                continue
            msg = await self.receive(stream.ws, what)
            if msg.type != WSMsgType.TEXT:
                raise Failure(f"{stream.who} closed ({msg.data}) while waiting for {what}")
            frame = orjson.loads(msg.data)
            if frame.get("type") == "error":
                raise Failure(f"{stream.who}: unexpected error {frame} while waiting for {what}")
            stream.handle(frame)

    async def settle(self) -> None:
        """Wait until nothing is in flight and the server's version is the highest one seen.

        Black-box: the good client's push is acknowledged, then an empty push
        one past the known head must be refused with bad-version (the server
        has nothing newer); if it is accepted, newer updates are on their way.
        """
        await self.read_until(self.b, lambda: not self.b.inflight, "the good client's acknowledgement")
        a = self.a
        for _ in range(200):
            head = self.world.head
            await a.ws.send_str(orjson.dumps({"type": "push", "version": head + 1, "updates": []}).decode())
            await a.ws.send_str(BARRIER)
            answer = None
            while True:
                msg = await self.receive(a.ws, "the settle probe's answer")
                if msg.type != WSMsgType.TEXT:
                    raise Failure(f"the fuzzer's connection closed ({msg.data}) during a settle probe")
                frame = orjson.loads(msg.data)
                if frame.get("type") != "error":
                    a.handle(frame)
                elif frame.get("code") == "bad-message" and frame.get("message") == self.barrier_message:
                    break
                else:
                    answer = frame.get("code")
            if answer == "bad-version":
                self.a_pending = 0
                self.world.trace.append(f"settled at version {head}")
                return
            if answer is not None:
                raise Failure(f"settle probe at {head + 1}: unexpected {answer}")
            await self.read_until(a, lambda: self.world.head > head, "updates the server has and we do not")
        raise Failure("the document never settled")

    async def rejoin(self, rejoin) -> None:
        old = self.a
        asked = None
        choice, x = rejoin
        if old.text is not None and old.version <= self.world.head:
            if choice == "resume":
                asked = old.version
            elif choice == "older":
                asked = x % (old.version + 1)
        ws = await self.connect(self.doc)
        stream = Stream(self.world, ws, "fuzz", ME)
        if asked is not None:
            stream.version, stream.text = asked, self.world.texts[asked]
        await ws.send_str(orjson.dumps({"type": "hello", "clientID": ME, "version": asked}).decode())
        stream.welcome(await self.next_frame(stream, "the fuzzer's welcome"), asked)
        self.world.trace.append(f"fuzz reconnected asking for {asked}, welcomed at {stream.version}")
        self.a = stream
        self.stats["reconnects"] += 1

    async def good_reader(self, b: Stream) -> None:
        async for msg in b.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            if frame.get("type") == "error":
                if frame.get("code") == "too-large" and b.inflight:
                    b.inflight = False  # the document is full: a fair refusal
                    self.stats["good_refused"] += 1
                    self.good_refused += 1
                    continue
                raise Failure(f"the good client got an error: {frame}")
            b.handle(frame)
        if not b.closed_by_us:
            raise Failure(f"the good client's connection closed: {b.ws.close_code}")

    # ------------------------------------------------------------- at the end

    async def final_checks(self) -> None:
        world, a, b = self.world, self.a, self.b
        await self.settle()
        await self.read_until(a, lambda: a.version >= world.head, "the fuzzer to catch up")
        await self.read_until(b, lambda: b.version >= world.head, "the good client to catch up")
        head, text = world.head, world.texts[-1]
        if a.version != head or b.version != head or a.text != text or b.text != text:
            raise Failure(f"clients disagree: fuzz at {a.version}, good at {b.version}, head {head}; "
                          f"texts equal: {a.text == text}, {b.text == text}")
        if b.acked + self.good_refused != self.good_pushed:
            raise Failure(f"the good client pushed {self.good_pushed} times, {b.acked} acknowledged, "
                          f"{self.good_refused} refused as too-large")
        async with self.http.get(f"{self.base}/api/docs/{self.doc}") as resp:
            body = await resp.json()
        if resp.status != 200 or body.get("version") != head or body.get("doc") != text:
            raise Failure(f"GET /api/docs/{self.doc}: {resp.status} version {body.get('version')}, "
                          f"text equal: {body.get('doc') == text}; clients at {head}")
        self.check_database(head, text)
        for version, doc, who in world.welcomes:
            if version > head or world.texts[version] != doc:
                raise Failure(f"{who} was welcomed with a text that is not the document at version {version}")
        if a.session in self.effect_sessions:
            await self.read_until(b, lambda: a.session in b.presence_from, "the fuzzer's presence at the good client")
        self.stats["versions"] = sum(w.head for w in self.worlds.values())

    def check_database(self, head: int, text: str) -> None:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT id, version FROM documents WHERE name = ?", (self.doc,)).fetchone()
            if row is None or row[1] != head:
                raise Failure(f"database: document row {row}, expected version {head}")
            rows = conn.execute("SELECT version, client_id, changes FROM updates WHERE doc_id = ? ORDER BY version",
                                (row[0],)).fetchall()
            snaps = conn.execute("SELECT version, text FROM snapshots WHERE doc_id = ?", (row[0],)).fetchall()
        conn.close()
        if [r[0] for r in rows] != list(range(1, head + 1)):
            raise Failure(f"database: update versions are not 1..{head}: {[r[0] for r in rows][:50]}")
        replay = ""
        for version, cid, changes in rows:
            changes = orjson.loads(changes)
            if self.world.entries.get(version) != (cid, changes):
                raise Failure(f"database: update {version} is {(cid, changes)!r:.300}, clients got "
                              f"{self.world.entries.get(version)!r:.300}")
            replay = apply_json(changes, replay)
        if replay != text:
            raise Failure("database: replaying the stored updates does not give the clients' text")
        for version, snap in snaps:
            if version > head or self.world.texts[version] != snap:
                raise Failure(f"database: snapshot at {version} is not the text at that version")


# ---------------------------------------------------------------- harness

class LogRecorder(logging.Handler):
    """Every record at ERROR or above, or with a traceback, from any logger (and asyncio's loop)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.bad.append(f"{record.name} {record.levelname}: {text}")

    def loop_exception(self, loop, context: dict) -> None:
        self.bad.append(f"asyncio: {context.get('message')} {context.get('exception')!r}")


def new_stats() -> dict:
    return {"frames": 0, "labels": {}, "codes": {}, "closes": {}, "resets": 0, "accepted_frames": 0,
            "checked_accepts": 0, "good_pushes": 0, "good_refused": 0, "reconnects": 0, "versions": 0,
            "examples": 0, "time": {}}


def run_examples(fuzzer: Fuzzer, loop, examples: int, recorder: LogRecorder | None) -> None:
    failure: list[BaseException] = []

    @hsettings(max_examples=examples, deadline=None, derandomize=True, database=None,
               phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("FUZZ_SHRINK") else []),
               suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        fuzzer.stats["examples"] += 1
        raised = sys.getrecursionlimit()
        sys.setrecursionlimit(RECURSION_LIMIT)
        try:
            loop.run_until_complete(fuzzer.example(data))
            if recorder is not None and recorder.bad:
                raise Failure("the server logged errors:\n" + "\n".join(recorder.bad[:5]))
        except Exception as exc:
            failure.append(exc)
            raise StopFuzz() from None
        finally:
            sys.setrecursionlimit(raised)

    try:
        fuzz()
    except BaseException:
        # (hypothesis may wrap our StopFuzz in a complaint that the run stopped drawing early)
        if failure:
            raise failure[0] from None
        raise


def fuzz_run(name: str, loop, base: str, db: Path, examples: int, recorder: LogRecorder | None) -> dict:
    stats = new_stats()
    started = time.monotonic()
    session = loop.run_until_complete(_session())
    try:
        run_examples(Fuzzer(session, base, db, stats), loop, examples, recorder)
    finally:
        loop.run_until_complete(session.close())
        report(name, stats, time.monotonic() - started)
    return stats


async def _session() -> ClientSession:
    return ClientSession()


def report(name: str, stats: dict, seconds: float) -> None:
    print(f"\n{name}: {stats['frames']} fuzz frames in {stats['examples']} examples, {seconds:.1f}s; "
          f"{stats['accepted_frames']} frames with no error ({stats['checked_accepts']} pushes checked as "
          f"accepted exactly), {stats['versions']} versions, {stats['good_pushes']} good pushes "
          f"({stats['good_refused']} refused as too-large), {stats['reconnects']} reconnects")
    print(f"  error codes: {dict(sorted(stats['codes'].items()))}; closes: {stats['closes']} "
          f"({stats['resets']} of them resets instead of the close frame)")
    print(f"  frame kinds: {dict(sorted(stats['labels'].items()))}")
    print(f"  seconds per step: { {k: round(v, 2) for k, v in sorted(stats['time'].items())} }")


@pytest.mark.timeout(time_limit(IN_PROCESS_EXAMPLES))
def test_fuzz_in_process(tmp_path):
    """The big run: >= 10,000 fuzz frames at an in-process server, and nothing logged at ERROR."""
    recorder = LogRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(recorder.loop_exception)
    db = tmp_path / "fuzz.db"
    server = TestServer(create_app(Settings(db=str(db), **settings_for(**SERVER_OPTIONS))), host="127.0.0.1")
    try:
        loop.run_until_complete(server.start_server())
        stats = fuzz_run("in-process", loop, str(server.make_url("")).rstrip("/"), db, IN_PROCESS_EXAMPLES, recorder)
    finally:
        try:  # (closing also stops the store's thread, which would keep Python alive)
            loop.run_until_complete(asyncio.wait_for(server.close(), 30))
        except asyncio.TimeoutError:
            recorder.bad.append("the server did not shut down within 30s")
        finally:
            loop.close()
            root.removeHandler(recorder)
    assert not recorder.bad, "the server logged errors:\n" + "\n".join(recorder.bad[:5])
    if "FUZZ_EXAMPLES" not in os.environ:
        assert stats["frames"] >= 10_000, stats["frames"]


@pytest.mark.timeout(time_limit(SUBPROCESS_EXAMPLES))
def test_fuzz_subprocess(tmp_path):
    """A smaller run against `python -m collab serve`: its log must hold no traceback and no ERROR line."""
    args = []
    for name, value in settings_for(**SERVER_OPTIONS).items():
        args += ["--" + name.replace("_", "-"), str(value)]
    proc = ServerProcess(tmp_path / "fuzz.db", extra_args=args)
    proc.start()
    loop = asyncio.new_event_loop()
    failure = None
    try:
        stats = fuzz_run("subprocess", loop, proc.url, proc.db, SUBPROCESS_EXAMPLES, None)
    except Exception as exc:
        failure = exc
    finally:
        loop.close()
        code = proc.stop()  # SIGTERM: the graceful shutdown must not log errors either
    lines = proc.log().splitlines()
    bad = [k for k, line in enumerate(lines) if "Traceback" in line or " ERROR " in line or "Logging error" in line]
    excerpt = "\n".join("\n".join(lines[k:k + 14]) for k in bad[:3])
    if failure is not None:
        raise Failure(f"{failure}\n\nserver log:\n{excerpt or '(no errors logged)'}") from None
    assert not bad, "the server's log has errors:\n" + excerpt
    assert code == 0, f"the server exited with {code} on SIGTERM"
    assert stats["frames"] >= SUBPROCESS_EXAMPLES * FRAMES_PER_EXAMPLE // 2


# ------------------------------------------------------- found by the fuzzer
#
# Each failing case the fuzzer found, as a small test of its own.

@pytest.fixture
async def client(aiohttp_client, tmp_path):
    settings = Settings(db=str(tmp_path / "r.db"), **settings_for(max_frame=64 * 1024, hello_timeout=2.0))
    return await aiohttp_client(create_app(settings))


def _no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


async def _still_served(ws, client_id: str) -> None:
    """`ws` can push and gets its acknowledgement."""
    await push(ws, 0, client_id, [[0, client_id]])
    while True:
        frame = await recv_type(ws, "updates")
        if any(u["clientID"] == client_id for u in frame["updates"]):
            return


# 1020 lists inside the frame's object: 1021 levels, within orjson's limit of 1024.
DEEP = "[" * 1020 + "]" * 1020


@pytest.mark.parametrize("field", ["push.version", "presence.version"])
async def test_deeply_nested_version_is_refused_not_a_crash(client, caplog, field):
    """A version nested ~1000 deep: the server put repr(version) in its error message, Python's repr
    overflowed the stack (RecursionError), and the connection died with 1011 and a traceback.

    Reproduction: after hello, send
    {"type":"push","version":[[[...1000 levels...]]],"updates":[]} (or the same as a presence).
    """
    a, _ = await join(client, "deep", "A")
    b, _ = await join(client, "deep", "B")
    kind = field.split(".")[0]
    await send(a, '{"type":"%s","version":%s,"updates":[],"ranges":[]}' % (kind, DEEP))
    answer = await recv(a)
    assert answer["type"] == "error" and answer["code"] in ("bad-message", "bad-json"), answer
    await _still_served(a, "A")
    await _still_served(b, "B")
    _no_errors_logged(caplog)


async def test_deeply_nested_hello_version_is_refused_not_a_crash(client, caplog):
    """The same as the first frame: {"type":"hello","clientID":"C","version":[[[...]]]}."""
    b, _ = await join(client, "deep", "B")
    c = await connect(client, "deep")
    await send(c, '{"type":"hello","clientID":"C","version":%s}' % DEEP)
    answer = await recv(c)
    assert answer["type"] == "error" and answer["code"] in ("bad-message", "bad-json"), answer
    assert (await closed(c))[0] == 4000
    await _still_served(b, "B")
    _no_errors_logged(caplog)


async def test_text_frame_that_is_not_utf8_is_answered_by_the_protocol(client, caplog):
    """A text frame whose bytes are not UTF-8 (b'{"type":"push","x":"\xff"}') is unreadable JSON: bad-json.

    Found by the fuzzer: aiohttp used to fail the connection itself with 1007, a close code the
    protocol does not list, before ws.py could answer. The server now takes text frames as bytes
    (decode_text=False) and orjson checks their UTF-8, so the connection stays open and usable.
    """
    a, _ = await join(client, "utf8", "A")
    b, _ = await join(client, "utf8", "B")
    await a.send_frame(b'{"type":"push","x":"\xff"}', WSMsgType.TEXT)
    answer = await recv(a)
    assert answer["type"] == "error" and answer["code"] == "bad-json", answer
    await _still_served(a, "A")
    await _still_served(b, "B")
    _no_errors_logged(caplog)


async def test_first_frame_that_is_not_utf8_is_bad_json_then_4000(client, caplog):
    c = await connect(client, "utf8")
    await c.send_frame(b'{"type":"hello","clientID":"\xc3"}', WSMsgType.TEXT)
    answer = await recv(c)
    assert answer["type"] == "error" and answer["code"] == "bad-json", answer
    assert (await closed(c))[0] == 4000
    _no_errors_logged(caplog)


async def _write_without_reading(ws, during=None) -> None:
    """Send presence frames for about 0.2 s without reading (blocking the loop between writes on
    purpose); `during` runs after the third write."""
    for k in range(20):
        time.sleep(0.01)
        try:
            await send(ws, {"type": "presence", "version": 0, "ranges": []})
        except ConnectionError:
            return
        if k == 2 and during is not None:
            await during()


async def _errors_then_close(ws) -> tuple[list[str], int]:
    """The codes of the error frames `ws` reads until it closes (nothing else may come but the presence
    batches, which carry our own cursor too), and the close code."""
    codes = []
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type != WSMsgType.TEXT:
            break
        frame = orjson.loads(msg.data)
        if frame["type"] == "presences":
            continue
        assert frame["type"] == "error", frame
        codes.append(frame["code"])
    return codes, (msg.data if msg.type == WSMsgType.CLOSE else ws.close_code)


async def test_flood_is_rate_limited_then_closed_4429(aiohttp_client, tmp_path, caplog):
    """A client sending far over the rate: each frame is answered (its own error or rate-limited), then 4429."""
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "f.db"), rate=20.0, burst=30)))
    a, _ = await join(client, "flood", "A")
    b, _ = await join(client, "flood", "B")
    try:
        for k in range(300):
            await send(a, {"type": "junk", "k": k})
    except ConnectionError:
        pass  # the server already closed
    codes, code = await _errors_then_close(a)
    assert code == 4429
    assert set(codes) == {"bad-message", "rate-limited"}, codes
    assert 30 <= codes.count("bad-message") <= 40 and codes[:30] == ["bad-message"] * 30
    await _still_served(b, "B")
    _no_errors_logged(caplog)


async def test_close_code_reaches_a_client_that_is_still_sending(server):
    """When the server ends a connection itself, a client still writing must get the error and the code.

    Found by the fuzzer (a flood with an invalid second hello in it, on a busy machine): the server
    dropped TCP without finishing the closing handshake, the client's frames in flight were answered
    with a reset, and the client never read the error or the close code (it saw 1006). A browser that
    misses 4000 or 4429 cannot tell a refusal from a network error and reconnects at once. Here the
    client sends a hello with an empty clientID (bad-message, 4000) and keeps writing.
    """
    async with ClientSession() as session:
        ws = await session.ws_connect(server.ws_url + "/ws/d", protocols=["collab.v1"])
        await send(ws, {"type": "hello", "clientID": "A", "version": None})
        assert (await recv_type(ws, "welcome"))["version"] == 0
        await send(ws, {"type": "hello", "clientID": ""})
        await _write_without_reading(ws)
        codes, code = await _errors_then_close(ws)
        assert (codes[:1], code) == (["bad-message"], 4000)


async def test_close_decided_elsewhere_reaches_a_client_that_is_still_sending(server):
    """The same when another connection's task ends this one: a newer connection with the same
    clientID takes over (4001) while the old client is writing and its handler waits in receive().
    aiohttp closes the socket at once when ws.close() runs beside a pending receive(), so the
    handler itself must run the closing handshake."""
    async with ClientSession() as session:
        old = await session.ws_connect(server.ws_url + "/ws/d", protocols=["collab.v1"])
        await send(old, {"type": "hello", "clientID": "A", "version": None})
        assert (await recv_type(old, "welcome"))["version"] == 0
        newer = []

        async def take_over():
            ws = await session.ws_connect(server.ws_url + "/ws/d", protocols=["collab.v1"])
            await send(ws, {"type": "hello", "clientID": "A", "version": None})
            newer.append(ws)

        await _write_without_reading(old, take_over)
        _, code = await _errors_then_close(old)
        assert code == 4001
        assert (await recv_type(newer[0], "welcome"))["version"] == 0


@pytest.mark.parametrize("after_hello", [False, True])
async def test_close_reason_is_valid_utf8(client, caplog, after_hello):
    """The close frame's reason must stay UTF-8 when the error message quotes a client's text.

    Found by the fuzzer (a first frame {"type":"presence","version":"😀😀…"}): the reason was the
    error message's bytes cut at 120, a message quoting an emoji was cut inside its four bytes, the
    close frame was invalid, and the client failed the connection (aiohttp reports 1007, browsers
    1006) instead of seeing 4000. protocol.close_reason now cuts at a character boundary.
    """
    emoji = "\U0001F600" * 20
    if after_hello:
        ws, _ = await join(client, "reason", "A")
        await send(ws, {"type": "hello", "clientID": "A", "version": emoji})
    else:
        ws = await connect(client, "reason")
        await send(ws, {"type": "push", "version": emoji, "updates": []})
    answer = await recv(ws)
    assert answer["type"] == "error" and answer["code"] == "bad-message", answer
    assert (await closed(ws))[0] == 4000
    _no_errors_logged(caplog)


def test_a_deep_frame_prints_in_a_failure_report():
    """Hypothesis prints what an example drew when it reports a failure. Was: a frame holding JSON
    nested 1,000 deep overflowed the stack of its printer, and a RecursionError hid the real failure
    (seen when a long hunt ran into pytest-timeout)."""
    assert pretty(deep(1000)).startswith("Raw('[[[[")
    assert pretty([deep(5000, obj=True)]).startswith("[Raw('{\"a\":")
