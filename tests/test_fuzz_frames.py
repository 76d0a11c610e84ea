"""Fuzz the WebSocket protocol: random frames at a live server, then check nothing broke.

Hypothesis draws batches of frames (random JSON, wrong types, huge numbers,
deep nesting, random ChangeSetJSON, stale/future versions, foreign
clientIDs, broken JSON text, binary frames) without looking at the server's
answers, so every run is reproducible. Each batch goes to a fresh server on
127.0.0.1 through one "fuzz" connection, while a well-behaved client shares
the document. After each batch:
  * every answer to the fuzz connection is a protocol error code, an
    accepted update, or a protocol close code (never 1011, never a drop);
  * no ERROR record or traceback was logged;
  * the well-behaved client still gets its push acknowledged, and its text
    (replayed from the `updates` frames it saw), GET /api/docs/{doc}, and the
    text rebuilt from the database's update rows are identical, with
    contiguous versions.
At least 10,000 frames are sent per run.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import orjson
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab.app import STORE, create_app
from collab.changes import ChangeSet, utf16_len
from collab.settings import Settings

CODES = {"bad-json", "bad-message", "bad-changes", "bad-version", "read-only", "too-large", "rate-limited"}
CLOSES = {1009, 4000, 4429}
FRAMES_SENT = []

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
           | st.text(alphabet="ab\n\r😀é\x00", max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
lengths = st.integers(-3, 14) | st.sampled_from([2**31, 2**53, 2**63])
lines = st.text(alphabet="ab\n\r😀é", max_size=5)
changes = (st.lists(lengths | st.lists(lengths | lines, min_size=0, max_size=4), max_size=6) | json_values)
versions = st.integers(-2, 40) | json_values
client_ids = st.sampled_from(["fuzz", "fuzz", "fuzz", "other", ""]) | json_values
update = st.fixed_dictionaries({"clientID": client_ids, "changes": changes}) | json_values
push = st.fixed_dictionaries({"type": st.just("push"), "version": versions,
                              "updates": st.lists(update, max_size=4) | json_values})
ranges = st.lists(st.fixed_dictionaries({"anchor": lengths | json_values, "head": lengths}), max_size=3)
presence = st.fixed_dictionaries({"type": st.just("presence"), "version": versions, "ranges": ranges | json_values})
hello = st.fixed_dictionaries({"type": st.just("hello"), "clientID": client_ids, "version": versions})
typed = st.fixed_dictionaries({"type": json_values | st.sampled_from(["welcome", "updates", "x"])})


def deep(n: int) -> str:
    return '{"type":"push","version":' + "[" * n + "]" * n + ',"updates":[]}'


raw = (st.text(max_size=30) | st.integers(1, 1200).map(deep)
       | st.sampled_from(['{"type":', "null", "[]", '{"type":"push"}', '"\\ud800"', "{}" * 3]))
def dumps(value) -> bytes:
    """JSON text as a client might write it; the stdlib writes integers of any size (and Infinity)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


frame = (push.map(dumps) | presence.map(dumps) | hello.map(dumps)
         | typed.map(dumps) | json_values.map(dumps) | raw.map(lambda t: t.encode("utf-8", "surrogatepass"))
         | st.binary(max_size=16).map(lambda b: ("binary", b)))


class ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


async def run_batch(batch: list, tmp: str) -> None:
    settings = Settings(db=f"{tmp}/fuzz.db", rate=1e6, burst=10**6, max_frame=64 * 1024, hello_timeout=5)
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws/doc"
    try:
        async with aiohttp.ClientSession() as session:
            good = await session.ws_connect(url, protocols=["collab.v1"])
            await good.send_str('{"type":"hello","clientID":"good","version":null}')
            welcome = orjson.loads((await good.receive(timeout=5)).data)
            text, version = welcome["doc"], welcome["version"]
            fuzz = await session.ws_connect(url, protocols=["collab.v1"])
            await fuzz.send_str('{"type":"hello","clientID":"fuzz","version":null}')
            await fuzz.receive(timeout=5)
            for item in batch:
                if isinstance(item, tuple):
                    await fuzz.send_bytes(item[1])
                else:
                    await fuzz.send_str(item.decode("utf-8", "replace"))
            FRAMES_SENT.append(len(batch))
            await fuzz.send_str('{"type":"presence","version":0,"ranges":[]}')  # a sentinel
            # Everything the fuzz connection got: errors with protocol codes, updates, presence, or a close.
            while True:
                try:
                    msg = await fuzz.receive(timeout=0.5)
                except asyncio.TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    assert msg.data in CLOSES, f"closed with {msg.data}: {msg.extra}"
                    break
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                answer = orjson.loads(msg.data)
                if answer["type"] == "error":
                    assert answer["code"] in CODES, answer
                    assert len(answer["message"]) < 500
                else:
                    assert answer["type"] in ("updates", "presence", "leave"), answer
            # The well-behaved client: catch up, push, and agree with the server and the disk.
            await good.send_str(orjson.dumps({"type": "push", "version": version, "updates": [
                {"clientID": "good", "changes": ([utf16_len(text)] if text else []) + [[0, "ok"]]}]}).decode())
            while True:
                frame_ = orjson.loads((await good.receive(timeout=5)).data)
                if frame_["type"] != "updates":
                    continue
                assert frame_["from"] == version, "versions must be contiguous"
                for u in frame_["updates"]:
                    text = ChangeSet.from_json(u["changes"]).apply_to_str(text)
                    version += 1
                if frame_["updates"][-1]["clientID"] == "good":
                    break
            async with session.get(f"http://127.0.0.1:{port}/api/docs/doc") as resp:
                assert await resp.json() == {"name": "doc", "version": version, "doc": text}
            store = app[STORE]
            info = await store.document("doc")
            assert info["version"] == version
            assert await store.text_at(info["id"], version) == text
    finally:
        await runner.cleanup()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(frame, min_size=180, max_size=260))
def test_random_frames_never_break_the_server(batch, tmp_path_factory):
    log = ErrorLog()
    for name in ("collab", "aiohttp", "asyncio"):
        logging.getLogger(name).addHandler(log)
    try:
        asyncio.run(run_batch(batch, str(tmp_path_factory.mktemp("fuzz"))))
    finally:
        for name in ("collab", "aiohttp", "asyncio"):
            logging.getLogger(name).removeHandler(log)
    assert not log.records, [r.getMessage() for r in log.records]


def test_enough_frames_were_sent():
    """Runs after the fuzz test in this file (pytest keeps file order)."""
    assert sum(FRAMES_SENT) >= 10_000, sum(FRAMES_SENT)
