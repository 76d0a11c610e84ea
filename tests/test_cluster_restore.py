"""Restores of one document at several processes on one PostgreSQL database take turns (storage.restore_turn).

Everything is real (tests/clusterproc.py): the session's PostgreSQL (a fresh
database per test), two `collab serve` processes on it, with or without a
`redis-server`, restores sent over HTTP (POST /api/docs/{doc}/restore) and each
process stopped by its pid. The history worker of a process (collab.compute,
its child) is paused with SIGSTOP to keep a restore inside its turn for as long
as a test needs; it is killed by its pid at the end.

What is shown:
  * two restores of one document sent at the same moment to two processes end
    as the later one brings the text back, never as a mixture of both versions
    (each was diffed against its own process's text, and the second commit was
    rebased over the first: a mixture, before);
  * a restore waits for one under way at another process, at most
    --history-timeout (503 after), and goes on at once when that process is
    killed (its turn goes with its database connection), or when that restore
    fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import asyncpg
import orjson
import pytest

from clusterproc import Cluster
from collab.store_pg import RESTORE_TURNS

DOC = "doc"
# Three versions, each line of each its own: concurrent diffs from C to A and to B merge line by line.
C = "".join(f"line {k}: the text everyone started from\n" for k in range(12))
A = "".join(f"line {k}: apples, as version A says\n" for k in range(12))
B = "".join(f"line {k}: bananas, as version B says\n" for k in range(12))
V_C, V_A, V_B = 1, 2, 3
TEXTS = {V_C: C, V_A: A, V_B: B}


@pytest.fixture
def two(pg_server, pg_database, tmp_path):
    """make(redis_url=None, per_process=[[...], [...]]) -> two processes started on the database, no write
    rate limit; each process gets its own extra options too. Killed at the end."""
    made = []

    def make(redis_url: str | None = None, per_process: list[list[str]] | None = None) -> Cluster:
        c = Cluster(pg_server.url(pg_database), 2, redis_url=redis_url, logs=tmp_path / "logs",
                    extra_args=["--write-rate", "0"])
        for proc, extra in zip(c.procs, per_process or []):
            proc.extra_args += extra
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.kill()


async def made_versions(http: aiohttp.ClientSession, url: str, ws_url: str, made: bool = False) -> None:
    """The document, with C at version 1, A at 2 and B at 3 (one push of three updates); `made`: it
    exists already, empty."""
    if not made:
        async with http.post(f"{url}/api/docs", json={"name": DOC}) as r:
            assert r.status == 201, await r.text()
    async with http.ws_connect(f"{ws_url}/ws/{DOC}", protocols=["collab.v1"]) as ws:
        await ws.send_str(orjson.dumps({"type": "hello", "clientID": "maker", "version": None,
                                        "user": {"name": "Maker", "color": "#3366ff"}}).decode())
        updates, before = [], ""
        for text in (C, A, B):
            updates.append({"clientID": "maker", "changes": [[len(before), *text.split("\n")]]})
            before = text
        await ws.send_str(orjson.dumps({"type": "push", "version": 0, "updates": updates}).decode())
        version = 0
        async with asyncio.timeout(10):
            while version < V_B:
                frame = orjson.loads((await ws.receive()).data)
                assert frame["type"] in ("welcome", "updates", "presences", "leave"), frame
                if frame["type"] == "updates":
                    version = frame["from"] + len(frame["updates"])
    for version, text in TEXTS.items():
        async with http.get(f"{url}/api/docs/{DOC}/versions/{version}") as r:
            assert (await r.json())["doc"] == text


async def restore(http: aiohttp.ClientSession, url: str, version: int) -> tuple[int, dict]:
    async with http.post(f"{url}/api/docs/{DOC}/restore", json={"version": version, "author": url}) as r:
        return r.status, await r.json()


async def head(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/api/docs/{DOC}") as r:
        assert r.status == 200
        return await r.json()


async def turns(pg: asyncpg.Connection) -> list[bool]:
    """Whether each restore turn held or waited for on the server is granted (pg_locks), granted first."""
    rows = await pg.fetch("SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid "
                          "AND objsubid = 2 ORDER BY granted DESC", RESTORE_TURNS)
    return [r[0] for r in rows]


async def eventually(predicate, timeout: float) -> bool:
    """Whether `await predicate()` came true within `timeout` seconds (the caller asserts it when it
    matters: first what a person would see, so the code before this change fails there)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def history_worker(pid: int) -> int:
    """The pid of collab process `pid`'s history worker (a child running collab.compute)."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    workers = [int(child) for child in children if b"collab.compute" in _cmdline(int(child))]
    assert len(workers) == 1, children
    return workers[0]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def kill_quietly(pid: int | None) -> None:
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------- at once

ROUNDS = 30


@pytest.mark.parametrize("bus", ["redis", "no-redis"])
def test_two_restores_at_two_processes_at_once_end_as_the_later_one_never_a_mixture(two, request, bus):
    """Was: each process diffed against the text it had, and the later commit was rebased over the
    earlier one, so the document ended a mixture of A and B (without Redis, a process also diffed
    against a text it had not yet heard was replaced). Each round brings C back at one process, then
    sends a restore of A to one process and of B to the other at the same moment: the text must end
    exactly as the restore answered last (the higher version) brought it back."""
    redis_url = request.getfixturevalue("redis").url if bus == "redis" else None
    c = two(redis_url)
    urls = c.urls

    async def run() -> list[str]:
        problems = []
        async with aiohttp.ClientSession() as http:
            await made_versions(http, urls[0], c.ws_urls[0])
            for r in range(ROUNDS):
                status, reset = await restore(http, urls[r % 2], V_C)
                assert status == 200, reset
                first, second = (V_A, V_B) if r % 3 else (V_B, V_A)
                answers = await asyncio.gather(restore(http, urls[0], first), restore(http, urls[1], second))
                assert [s for s, _ in answers] == [200, 200], answers
                (_, x), (_, y) = answers
                later, version = max(((first, x), (second, y)), key=lambda a: a[1]["version"])
                now = await head(http, urls[0] if later == first else urls[1])
                if now["doc"] != TEXTS[later]:
                    kind = "a mixture" if now["doc"] not in (A, B) else "the earlier one"
                    problems.append(f"round {r}: restores of {first} and {second} answered {x} and {y}; "
                                    f"the text is {kind}: {now['doc'][:80]!r}...")
                elif sorted([x["version"], y["version"]]) != [reset["version"] + 1, reset["version"] + 2] \
                        or x["unchanged"] or y["unchanged"] or now["version"] != version["version"]:
                    problems.append(f"round {r}: after {reset}, restores answered {x} and {y}, head {now['version']}")
        return problems

    problems = asyncio.run(run())
    assert not problems, f"{len(problems)} of {ROUNDS} rounds went wrong:\n" + "\n".join(problems)


def test_a_version_made_at_another_process_can_be_read_and_restored_before_its_news_comes(two):
    """Process 1 has the document open (a client on it) and checks the database only once a minute, no
    Redis: versions 1 to 3 made at process 0 have not reached its room. It still shows and restores
    them: a version is in range up to the database's head, not only its room's (was: 400 "version
    must be at most 0" until the news came, up to --check-every later)."""
    c = two(per_process=[[], ["--check-every", "60", "--poll-every", "60"]])

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{c.urls[0]}/api/docs", json={"name": DOC}) as r:
                assert r.status == 201, await r.text()
            async with http.ws_connect(f"{c.ws_urls[1]}/ws/{DOC}", protocols=["collab.v1"]) as watcher:
                await watcher.send_str(orjson.dumps({"type": "hello", "clientID": "watcher", "version": None}).decode())
                welcome = orjson.loads((await asyncio.wait_for(watcher.receive(), 10)).data)
                assert welcome["type"] == "welcome" and welcome["version"] == 0, welcome
                await made_versions(http, c.urls[0], c.ws_urls[0], made=True)
                assert (await head(http, c.urls[1]))["version"] == 0  # process 1's room has not heard of them
                async with http.get(f"{c.urls[1]}/api/docs/{DOC}/versions/{V_A}") as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["doc"] == A
                status, body = await restore(http, c.urls[1], V_A)
                assert status == 200 and body == {"version": V_B + 1, "unchanged": False}, body
                assert (await head(http, c.urls[1]))["doc"] == A  # the restore brought process 1's room up to date

                async def at_process_0() -> bool:
                    return (await head(http, c.urls[0]))["doc"] == A
                assert await eventually(at_process_0, 10)  # its news, by its checks (0.3 s without Redis)

    asyncio.run(run())


# ------------------------------------------------------------ waits and ends

async def warmed_up(http: aiohttp.ClientSession, url: str) -> None:
    """An unchanged restore at the process at `url`, which starts its history worker: asked again while it
    is refused for its budget (a test's --history-timeout of 1 s can be shorter than starting a worker
    on a loaded machine), for at most 30 s."""
    deadline = time.monotonic() + 30
    while True:
        status, body = await restore(http, url, V_B)
        if status != 503 or time.monotonic() > deadline:
            assert status == 200, body
            return
        await asyncio.sleep(0.2)


def with_paused_worker(c: Cluster, pg_url: str, scenario) -> None:
    """The three versions made at process 0 and each process's history worker started (an unchanged
    restore is diffed too), then process 0's worker paused (SIGSTOP), so that a restore there stays
    inside its turn: `await scenario(http, pg, worker)`, with `pg` a connection to the database. The
    worker is killed by its pid at the end, however the scenario ends."""
    worker = None

    async def run() -> None:
        nonlocal worker
        pg = await asyncpg.connect(pg_url)
        try:
            async with aiohttp.ClientSession() as http:
                await made_versions(http, c.urls[0], c.ws_urls[0])
                for url in c.urls:
                    await warmed_up(http, url)
                worker = history_worker(c[0].proc.pid)
                os.kill(worker, signal.SIGSTOP)
                await scenario(http, pg, worker)
        finally:
            await pg.close()

    try:
        asyncio.run(run())
    finally:
        kill_quietly(worker)


def test_a_restore_waits_for_one_at_another_process_and_goes_on_when_that_process_is_killed(two, pg_server,
                                                                                           pg_database):
    """A restore at process 0 is held inside its turn (its history worker paused); one at process 1
    waits for it instead of being diffed at once (before: it was, and the two merged). Process 0 is
    killed with SIGKILL: its turn goes with its connection, and process 1's restore ends well within
    its budget, the text as it restores."""
    c = two(per_process=[["--history-timeout", "20"], ["--history-timeout", "10"]])

    async def scenario(http: aiohttp.ClientSession, pg: asyncpg.Connection, worker: int) -> None:
        held = asyncio.ensure_future(restore(http, c.urls[0], V_A))
        holding = await eventually(lambda: _equal(turns(pg), [True]), 5)
        waiting = asyncio.ensure_future(restore(http, c.urls[1], V_C))
        queued = await eventually(lambda: _equal(turns(pg), [True, False]), 5)
        await asyncio.sleep(1.0)
        assert not waiting.done(), f"process 1's restore went on while process 0's was under way: " \
                                   f"{waiting.result()}"
        assert holding and queued, "process 0's restore holding its turn, process 1's waiting for it"
        killed = time.monotonic()
        c[0].kill()
        kill_quietly(worker)
        status, body = await asyncio.wait_for(waiting, 10)
        assert status == 200 and body["unchanged"] is False, body
        assert time.monotonic() - killed < 5
        assert (await head(http, c.urls[1]))["doc"] == C
        assert await turns(pg) == []
        with pytest.raises(aiohttp.ClientError):
            await held

    with_paused_worker(c, pg_server.url(pg_database), scenario)


def test_a_restore_that_waits_too_long_is_refused_and_one_that_fails_in_its_turn_lets_go(two, pg_server, pg_database):
    """Process 0's restore is held inside its turn (its history worker paused) until its diff runs out of
    its budget (--history-timeout 3: 503). Process 1's restore, with a budget of 1 s, is refused with 503
    after waiting that long (before: it went on at once). Once process 0's restore failed, its turn is
    free: process 1 restores at once. A restore of a version that does not exist is refused before any
    turn is taken, and leaves none."""
    c = two(per_process=[["--history-timeout", "3"], ["--history-timeout", "1"]])

    async def scenario(http: aiohttp.ClientSession, pg: asyncpg.Connection, worker: int) -> None:
        status, body = await restore(http, c.urls[1], 99)
        assert status == 400, body
        assert await turns(pg) == []
        started = time.monotonic()
        held = asyncio.ensure_future(restore(http, c.urls[0], V_A))
        holding = await eventually(lambda: _equal(turns(pg), [True]), 2)
        asked = time.monotonic()
        status, body = await restore(http, c.urls[1], V_C)
        assert status == 503 and body["error"]["code"] == "unavailable", body
        assert holding, "process 0's restore holding its turn"
        assert "another restore" in body["error"]["message"], body
        assert 0.8 < time.monotonic() - asked < 4  # its 1 s budget, and the machine's slowness
        status, body = await asyncio.wait_for(held, 10)
        assert status == 503 and "time budget" in body["error"]["message"], body
        assert 2.5 < time.monotonic() - started < 8
        assert await turns(pg) == []
        assert (await head(http, c.urls[1]))["doc"] == B  # neither restore changed anything
        status, body = await restore(http, c.urls[1], V_C)  # within its 1 s budget: the turn is free
        assert status == 200 and body["unchanged"] is False, body
        assert await turns(pg) == []

    with_paused_worker(c, pg_server.url(pg_database), scenario)


def test_a_restore_whose_turn_is_lost_while_it_is_diffed_commits_nothing(two, pg_server, pg_database):
    """Process 0's restore holds its turn, its diff held up (history worker paused), when the turn's
    database connection is cut (pg_terminate_backend, as a pooler, a firewall or idle_session_timeout
    would): the turn is free for another process's restore at once, so the first one must not commit
    (before: it did, and the two merged). It is refused with 503, the text stays as process 1's restore
    made it, and asked again it restores."""
    c = two(per_process=[["--history-timeout", "20"], []])

    async def scenario(http: aiohttp.ClientSession, pg: asyncpg.Connection, worker: int) -> None:
        held = asyncio.ensure_future(restore(http, c.urls[0], V_A))
        assert await eventually(lambda: _equal(turns(pg), [True]), 5), "process 0's restore in its turn"
        assert pg_server.terminate(pg_database, "collab-turns") >= 1
        status, body = await restore(http, c.urls[1], V_C)  # the turn is free
        assert status == 200 and body["unchanged"] is False, body
        os.kill(worker, signal.SIGCONT)
        status, body = await asyncio.wait_for(held, 15)
        assert status == 503 and "lost its turn" in body["error"]["message"], body

        async def settled() -> bool:
            return (await head(http, c.urls[0]))["doc"] == C
        assert await eventually(settled, 5), (await head(http, c.urls[0]))["doc"][:80]
        assert (await head(http, c.urls[1]))["doc"] == C
        status, body = await restore(http, c.urls[0], V_A)
        assert status == 200 and body["unchanged"] is False, body
        assert (await head(http, c.urls[0]))["doc"] == A

    with_paused_worker(c, pg_server.url(pg_database), scenario)


async def _equal(value, expected) -> bool:
    return await value == expected
