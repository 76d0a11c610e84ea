"""collab.history and collab.compute: the restore diff, authorship, and the off-loop runner.

Checked with hypothesis against plain models: the diff's ChangeSet turns the
old text into the new one for any texts (astral characters, repeated lines)
and any cutoff, and is minimal when the search finishes; the treap of runs
equals a list of one author per UTF-16 unit; a replay in chunks equals one
pass. Then the runner's budgets (a worker killed past its deadline, a full
queue refused, a worker out of memory) and the budgets as a client meets
them, through the real app: 413 and 503 with a message, the document
unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collab import compute
from collab.app import create_app
from collab.changes import ChangeSet, utf16_len
from collab.errors import CollabError
from collab.history import DIFF_BUDGET, Authorship, diff_changes, myers, replay, spans_json
from collab.settings import Settings
from collab.storage import VersionCompacted
from wsutil import join, push, recv_type

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that matter: ASCII, a line break, a BMP non-ASCII, astral ones (two UTF-16 units).
CHARS = "ab \n" + "é" + "😀🎉"
chars = st.sampled_from(CHARS)
LINES = ["", "x", "row 1", "row 2", "😀 line", "é\u2028"]  # \u2028: a separator that is not a line break here


@st.composite
def texts(draw, max_size=40):
    """Random texts, often made of a few repeated lines (the shape that made difflib quadratic)."""
    if draw(st.booleans()):
        return draw(st.text(alphabet=chars, max_size=max_size))
    lines = draw(st.lists(st.sampled_from(LINES), max_size=12))
    return "\n".join(lines)


@st.composite
def related(draw):
    """(old, new): new is old with a few random edits, or an unrelated text."""
    old = draw(texts())
    if draw(st.integers(0, 4)) == 0:
        return old, draw(texts())
    new = old
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(new)))
        j = draw(st.integers(i, min(len(new), i + 6)))
        new = new[:i] + draw(st.text(alphabet=chars, max_size=5)) + new[j:]
    return old, new


def edit_distance(a: str, b: str) -> int:
    """Insertions plus deletions (no substitutions) turning a into b, in code points: the LCS DP."""
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = prev[j - 1] if a[i - 1] == b[j - 1] else 1 + min(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def code_points_changed(cs: ChangeSet, old: str) -> int:
    """Code points deleted plus inserted by `cs` (positions are UTF-16: walk the old text)."""
    raw = old.encode("utf-16-le", "surrogatepass")
    total = 0
    for start, end, text in cs.changes():
        total += len(raw[2 * start:2 * end].decode("utf-16-le")) + len(text)
    return total


# ------------------------------------------------------------------- the diff

@SETTINGS
@given(related(), st.sampled_from([DIFF_BUDGET, 50, 5, 1, 0]))
@example(("😀a😀", "😀b😀"), DIFF_BUDGET)
@example(("🎉😀", "😀🎉"), 0)
@example(("row 1\nrow 1\nrow 2\n", "row 2\nrow 1\nrow 1\n"), 3)
def test_diff_turns_old_into_new_whatever_the_cutoff(pair, budget):
    old, new = pair
    cs = diff_changes(old, new, budget)
    assert cs.length == utf16_len(old)
    # apply_to_str refuses a change that cuts a surrogate pair, so this also says none does.
    assert cs.apply_to_str(old) == new
    assert ChangeSet.from_json(cs.to_json()).apply_to_str(old) == new  # and it survives the wire


@SETTINGS
@given(related())
def test_diff_is_minimal_when_the_search_finishes(pair):
    old, new = pair
    cs = diff_changes(old, new)
    assert code_points_changed(cs, old) == edit_distance(old, new)


@SETTINGS
@given(st.lists(st.integers(0, 3), max_size=30), st.lists(st.integers(0, 3), max_size=30), st.integers(0, 60))
def test_myers_hunks_rebuild_b_or_give_up_past_the_cutoff(a, b, max_d):
    budget = [10**9]
    hunks = myers(a, b, budget, max_d=max_d)
    distance = edit_distance("".join(map(str, a)), "".join(map(str, b)))
    if distance > max_d:
        assert hunks is None
        return
    assert hunks is not None
    out, pos = [], 0
    for i1, i2, j1, j2 in hunks:
        assert pos <= i1 <= i2 and j1 <= j2 and (i1 < i2 or j1 < j2)
        out += a[pos:i1] + b[j1:j2]
        pos = i2
    assert out + a[pos:] == b
    assert sum(i2 - i1 + j2 - j1 for i1, i2, j1, j2 in hunks) == distance


def test_myers_spends_no_more_than_its_budget():
    a, b = [1, 2] * 500, [2, 1] * 500
    budget = [1000]
    assert myers(a, b, budget) is None
    assert -len(a) - len(b) <= budget[0] <= 0  # over by at most one snake


def test_with_no_budget_only_the_middle_is_replaced():
    cs = diff_changes("head 😀 old tail", "head 😀 new tail", budget=0)
    assert cs.to_json() == [8, [3, "new"], 5]


def crafted(size: int, shift: int) -> str:
    lines, n, i = [], 0, 0
    while n < size:
        lines.append(f"row {(i * shift) % 7}\n")
        n += len(lines[-1])
        i += 1
    return "".join(lines)[:size]


def test_the_crafted_document_is_diffed_correctly_within_the_budget():
    old, new = crafted(32_000, 1), crafted(32_000, 3)
    start = time.perf_counter()
    cs = diff_changes(new, old)
    took = time.perf_counter() - start
    assert cs.apply_to_str(new) == old
    assert took < 10, f"the crafted diff took {took:.1f} s (the budget is about a second of work)"


def test_a_one_line_edit_in_a_large_text_stays_one_small_change():
    lines = [f"line {i % 50} of a long file\n" for i in range(40_000)]  # ~1 MB, lines repeat
    old = "".join(lines)
    lines[20_000] = "line 0 of a long file, edited\n"
    del lines[30_000]
    lines.insert(35_000, "😀 inserted\n")
    new = "".join(lines)
    cs = diff_changes(old, new)
    assert cs.apply_to_str(old) == new
    inserted, deleted = cs.counts()
    assert inserted + deleted < 100, cs.counts()


# ----------------------------------------------------------------- authorship

AUTHORS = ["Ann", "Bob", "Cy"]


@st.composite
def update_log(draw, max_updates=25):
    """A list of (ChangeSetJSON, author) applying in sequence to an empty text."""
    length, log = 0, []
    for _ in range(draw(st.integers(1, max_updates))):
        parts, pos = [], 0
        for _ in range(draw(st.integers(1, 3))):
            if pos > length:
                break
            start = draw(st.integers(pos, length))
            end = draw(st.integers(start, min(length, start + 5)))
            lines = draw(st.lists(st.text(alphabet="ab😀é", max_size=3), min_size=1, max_size=3))
            if draw(st.integers(0, 3)) == 0:
                lines = [""]
            if start > pos:
                parts.append(start - pos)
            parts.append([end - start, *lines] if lines != [""] else [end - start])
            pos = end
        if length > pos:
            parts.append(length - pos)
        cs = ChangeSet.from_json(parts)
        length = cs.new_length
        log.append((parts, draw(st.sampled_from(AUTHORS))))
    return log


def naive_runs(log) -> list:
    """One author per UTF-16 unit, then runs: the model."""
    units: list[str] = []
    for parts, who in log:
        out, pos = [], 0
        for start, end, text in ChangeSet.from_json(parts).changes():
            out += units[pos:start] + [who] * utf16_len(text)
            pos = end
        units = out + units[pos:]
    runs: list = []
    for who in units:
        if runs and runs[-1][1] == who:
            runs[-1][0] += 1
        else:
            runs.append([1, who])
    return runs


@SETTINGS
@given(update_log(), st.lists(st.sampled_from(["apply", "json", "flatten", "stored"]), min_size=1))
def test_authorship_equals_one_author_per_unit(log, ways):
    authors = Authorship()
    for k, (parts, who) in enumerate(log):
        way = ways[k % len(ways)]
        if way == "apply":
            authors.apply(ChangeSet.from_json(parts), who)
        else:
            authors.apply_json(parts, who)
        if way == "flatten":
            authors.to_list()  # back to the flat form; the next apply builds a new tree
        elif way == "stored":
            authors = Authorship.from_json(authors.to_json())
        model = naive_runs(log[:k + 1])
        assert authors.runs == len(model)
        assert authors.length == sum(n for n, _ in model)
    assert authors.to_list() == naive_runs(log)
    assert orjson.loads(spans_json(authors.to_json())) == authors.spans()


@SETTINGS
@given(update_log(max_updates=40), st.integers(1, 7), st.integers(1, 8), st.integers(1, 4))
def test_replay_in_chunks_equals_one_pass_and_checkpoints_are_right(log, chunk, every, spacing):
    rows = [(v, who, orjson.dumps(parts).decode()) for v, (parts, who) in enumerate(log, 1)]
    spans, saved, found = b"[]", 0, []
    for i in range(0, len(rows), chunk):
        spans, checkpoints, runs = replay(spans, rows[i:i + chunk], every, saved, spacing)
        assert runs == len(orjson.loads(spans))
        found += checkpoints
        if checkpoints:
            saved = checkpoints[-1][0]
    assert orjson.loads(spans) == naive_runs(log)
    last = 0
    for version, stored in found:
        assert version % every == 0
        runs = orjson.loads(stored)
        assert runs == naive_runs(log[:version])
        assert (version - last) * spacing >= len(runs)  # spaced by their size: stored bytes stay linear
        last = version


def test_interleaved_insertions_replay_in_n_log_n():
    half = 16_000
    rows = [(n + 1, "Alice", orjson.dumps([n, [0, "a"]] if n else [[0, "a"]]).decode()) for n in range(half)]
    for k in range(half):
        at, length = 2 * k + 1, half + k
        rows.append((half + k + 1, "Bob",
                     orjson.dumps([at, [0, "b"]] + ([length - at] if length > at else [])).decode()))
    start = time.perf_counter()
    spans, _, runs = replay(b"[]", rows, 10**9, 0, 4)
    took = time.perf_counter() - start
    assert runs == 2 * half and orjson.loads(spans)[:3] == [[1, "Alice"], [1, "Bob"], [1, "Alice"]]
    assert took < 10, f"32,000 interleaved insertions took {took:.1f} s to replay (was over 20 s)"


# ------------------------------------------------------------------ the runner

@pytest.fixture
def small_pool(monkeypatch):
    """A pool of one worker and no queue, in place of the process's pool."""
    made = []

    def make(**kw):
        p = compute.Pool(**{"workers": 1, "queue": 0, **kw})
        made.append(p)
        monkeypatch.setattr(compute, "_pool", p)
        return p

    yield make
    for p in made:
        p.close()


async def test_a_job_past_its_deadline_is_killed_and_the_pool_goes_on(small_pool):
    pool = small_pool()
    assert await pool.run(sum, [1, 2, 3], timeout=20) == 6
    start = time.monotonic()
    with pytest.raises(compute.Overrun) as caught:
        await pool.run(time.sleep, 30, timeout=1.0, what="the nap")
    assert time.monotonic() - start < 5
    assert caught.value.code == "unavailable" and "the nap ran out of its time budget" in caught.value.message
    assert pool.killed == 1
    assert await pool.run(sum, [4], timeout=20) == 4 and pool.started == 2 and pool.pending == 0


async def test_a_full_pool_refuses_at_once(small_pool):
    pool = small_pool()
    nap = asyncio.create_task(pool.run(time.sleep, 1.5, timeout=20))
    await asyncio.sleep(0.2)
    with pytest.raises(compute.Busy) as caught:
        await pool.run(sum, [1], timeout=20)
    assert caught.value.code == "unavailable" and "busy" in caught.value.message
    await nap
    assert await pool.run(sum, [1], timeout=20) == 1


async def test_a_cancelled_caller_leaves_the_job_to_finish_and_the_worker_to_the_pool(small_pool):
    pool = small_pool(queue=1)
    nap = asyncio.create_task(pool.run(time.sleep, 0.5, timeout=20))
    await asyncio.sleep(0.1)
    nap.cancel()
    assert await pool.run(sum, [2], timeout=20) == 2  # waited for the worker, did not start another
    assert pool.started == 1


async def test_a_worker_out_of_memory_answers_too_large_and_a_bug_answers_its_error(small_pool):
    pool = small_pool(memory=400 << 20)
    with pytest.raises(CollabError) as caught:
        await pool.run(bytearray, 2 << 30, timeout=20, what="the hog")
    assert caught.value.code == "too-large" and "the hog needs more memory" in caught.value.message
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        await pool.run(divmod, 1, 0, timeout=20)
    assert await pool.run(sum, [5], timeout=20) == 5


async def test_a_worker_out_of_memory_reading_its_job_is_not_handed_the_next_one(small_pool):
    """Was: a worker that ran out of memory while reading a job (its arguments too large) says so and
    ends, but the pool kept it among the idle ones: the next job, handed to it before it had ended, read
    the end of its pipe and failed with 503 "its worker process ended" (so `collab compact` stopped at
    the document after one whose authorship needs more than --history-memory). A race: tried a few
    times."""
    probe = small_pool()
    assert await probe.run(sum, [1], timeout=20) == 1
    with open(f"/proc/{probe._idle[0].proc.pid}/status") as f:
        idle_size = int(f.read().split("VmSize:")[1].split()[0]) << 10
    pool = small_pool(memory=idle_size + (1 << 20))
    for attempt in range(5):
        with pytest.raises(CollabError) as caught:
            await pool.run(len, b"x" * (8 << 20), timeout=20, what="the big job")
        assert caught.value.code == "too-large", caught.value.message
        assert await pool.run(sum, [attempt, 1], timeout=20) == attempt + 1


async def test_an_idle_worker_that_died_is_replaced_not_handed_the_next_job(small_pool):
    """Was: a worker killed while idle (the OOM killer, an operator) was handed the next job, which failed
    with 503 "its worker process ended (Broken pipe)"."""
    pool = small_pool()
    assert await pool.run(sum, [1, 2], timeout=20) == 3
    (idle,) = pool._idle
    idle.proc.kill()
    idle.proc.wait()
    assert await pool.run(sum, [3, 4], timeout=20) == 7 and pool.started == 2


async def test_a_worker_that_cannot_start_answers_unavailable_and_the_pool_recovers(small_pool, monkeypatch,
                                                                                    caplog):
    """No file descriptor left (EMFILE) when a worker process is started: the caller hears 503 with why
    (every time; the log, once), nothing is counted as running, and the next job, with descriptors back,
    runs."""
    pool = small_pool(memory=400 << 20)
    real_popen = compute.subprocess.Popen

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(compute.subprocess, "Popen", no_descriptors)
    with caplog.at_level(logging.WARNING, logger="collab"):
        for _ in range(3):
            with pytest.raises(compute.NoWorker) as caught:
                await pool.run(sum, [1], timeout=20, what="the sum")
    assert (caught.value.code, caught.value.status) == ("unavailable", 503)
    assert "the sum could not start a worker process" in caught.value.message
    assert "Too many open files" in caught.value.message
    assert (pool.pending, pool.started) == (0, 0)
    assert len([r for r in caplog.records if "could not start a history worker" in r.getMessage()]) == 1
    monkeypatch.setattr(compute.subprocess, "Popen", real_popen)
    assert await pool.run(sum, [1, 2], timeout=20) == 3 and pool.started == 1
    with pytest.raises(CollabError) as caught:  # the message names this pool's limit, not the default's
        await pool.run(bytearray, 2 << 30, timeout=20, what="the hog")
    assert caught.value.code == "too-large" and "(400 MB)" in caught.value.message


def test_the_cache_keeps_the_newest_version_below_and_drops_the_least_recently_used():
    each = compute.ENTRY_OVERHEAD  # what an entry counts besides its spans
    cache = compute.AuthorshipCache(max_bytes=20 + 2 * each)  # two entries of 9 bytes, or one of 9 and one of 10
    cache.put("d", 10, b"[[1,\"a\"]]", 1)
    cache.put("d", 20, b"[[2,\"a\"]]", 1)
    assert cache.best("d", 15)[:2] == (10, b"[[1,\"a\"]]") and cache.best("d", 9) is None
    assert cache.best("e", 15) is None
    cache.best("d", 10)                     # 10 is now the most recently used
    cache.put("e", 5, b"[[3,\"bb\"]]", 1)   # over 20 bytes: 20, the least recently used, goes
    assert cache.best("d", 25)[0] == 10 and cache.best("e", 5)[0] == 5 and cache.size == 19 + 2 * each


# ------------------------------------------- the driver, fed by plain closures

async def test_authorship_that_runs_out_of_time_keeps_its_progress(monkeypatch):
    log = [([k, [0, "x"]] if k else [[0, "x"]], AUTHORS[k % 3]) for k in range(120)]
    rows = [(v, who, orjson.dumps(parts).decode()) for v, (parts, who) in enumerate(log, 1)]
    asked = []
    slow = [0.0, 1.5]  # the second read of rows outlasts the request's budget

    async def read_rows(after, upto, max_bytes):
        asked.append(after)
        await asyncio.sleep(slow[min(len(asked), len(slow)) - 1])
        return rows[after:upto]

    async def nothing(*_):
        return None

    closures = dict(checkpoint=lambda v: asyncio.sleep(0, ("doc", 0)), spans_at=nothing, rows=read_rows,
                    save=nothing)
    owner = type("Owner", (), {})()
    await compute.pool().run(sum, [], timeout=20)  # a worker is up
    monkeypatch.setattr(compute, "AUTHORS_CHUNK", 50)
    monkeypatch.setattr(compute, "AUTHORS_TIMEOUT", 1.0)
    with pytest.raises(compute.Overrun, match="done up to version 50"):
        await compute.authorship(owner, 1, 120, 1000, **closures)
    monkeypatch.setattr(compute, "AUTHORS_TIMEOUT", 20)
    asked.clear()
    slow[:] = [0.0]
    authors = await compute.authorship(owner, 1, 120, 1000, **closures)
    assert asked == [50, 100]  # went on from the cached version 50
    assert authors.to_list() == naive_runs(log)
    asked.clear()
    assert (await compute.authorship(owner, 1, 120, 1000, **closures)).to_list() == naive_runs(log)
    assert asked == []  # the answer itself was cached


# ------------------------------------------------------- through the real app

@pytest.fixture
async def client(aiohttp_client, tmp_path):
    settings = Settings(db=str(tmp_path / "h.db"), snapshot_every=10, unload_after=60)
    return await aiohttp_client(create_app(settings))


async def two_authors(client, doc="d", rounds=30):
    a, _ = await join(client, doc, "alice", user={"name": "Alice", "color": "#aa0000"})
    b, _ = await join(client, doc, "bob", user={"name": "Bob", "color": "#0000aa"})
    version = 0
    for k in range(rounds):
        ws, cid = (a, "alice") if k % 2 == 0 else (b, "bob")
        await push(ws, version, cid, [version, [0, "x"]] if version else [[0, "x"]])
        await recv_type(a, "updates"), await recv_type(b, "updates")
        version += 1
    return version


async def test_authors_answers_runs_and_refuses_cleanly_over_its_budgets(client, monkeypatch, small_pool):
    version = await two_authors(client)
    resp = await client.get("/api/docs/d/authors")
    assert resp.status == 200
    body = await resp.json()
    assert body["version"] == version and len(body["spans"]) == version
    assert body["spans"][:2] == [{"from": 0, "to": 1, "author": "Alice"}, {"from": 1, "to": 2, "author": "Bob"}]
    monkeypatch.setattr(compute, "AUTHORS_MAX_RUNS", 10)
    resp = await client.get("/api/docs/d/authors?version=25")
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "too-large" and "has 25 runs; one answer holds at most 10" in error["message"]
    monkeypatch.setattr(compute, "AUTHORS_MAX_RUNS", 10**6)
    small_pool()
    nap = asyncio.create_task(compute.pool().run(time.sleep, 1.0, timeout=20))
    await asyncio.sleep(0.2)
    resp = await client.get("/api/docs/d/authors?version=23")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "unavailable" and "busy" in error["message"]
    await nap
    resp = await client.get("/api/docs/d/authors?version=23")
    assert resp.status == 200 and len((await resp.json())["spans"]) == 23


async def test_authorship_asked_for_twice_at_once_is_replayed_once(client, monkeypatch):
    # Two readers opening the authorship of the same version at once used to replay the same rows side by
    # side in two workers; the second now waits for the first's answer.
    from collab.app import STORE
    store = client.server.app[STORE]
    version = await two_authors(client, doc="twice", rounds=6)
    info = await store.document("twice")
    replays = []
    real_run = compute.Pool.run

    async def counted(self, fn, *args, **kw):
        if fn is compute.replay:
            replays.append(args[1][-1][0])
            await asyncio.sleep(0.2)  # long enough for the second request to arrive meanwhile
        return await real_run(self, fn, *args, **kw)

    monkeypatch.setattr(compute.Pool, "run", counted)
    first, second = await asyncio.gather(store.authorship(info["id"], version),
                                         store.authorship(info["id"], version))
    assert first.to_list() == second.to_list() == [[1, "Alice"], [1, "Bob"]] * 3
    assert replays == [version]
    # Once answered, it is not under way any more: a later request is served from the cache, no replay.
    assert (await store.authorship(info["id"], version)).to_list() == first.to_list()
    assert replays == [version]


async def test_an_authorship_whose_only_caller_left_fails_quietly(client, monkeypatch):
    # The computation goes on for the others when a caller stops waiting; with nobody left, its failure
    # (the document deleted meanwhile, an overrun) is expected, not a "Task exception was never retrieved".
    from collab.app import STORE
    store = client.server.app[STORE]
    version = await two_authors(client, doc="left", rounds=4)
    info = await store.document("left")
    real_run = compute.Pool.run

    async def slow_then_fail(self, fn, *args, **kw):
        if fn is compute.replay:
            await asyncio.sleep(0.3)
            raise compute.Overrun("the authorship replay ran out of its time budget")
        return await real_run(self, fn, *args, **kw)

    monkeypatch.setattr(compute.Pool, "run", slow_then_fail)
    loop = asyncio.get_running_loop()
    reported = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context.get("message")))
    try:
        asker = asyncio.ensure_future(store.authorship(info["id"], version))
        await asyncio.sleep(0.1)
        asker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asker
        await asyncio.sleep(0.5)  # the computation fails meanwhile
        import gc
        gc.collect()  # a task whose exception nobody retrieved says so when it is collected
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


async def test_authors_at_a_stored_checkpoint_is_refused_over_its_budget_too(client, monkeypatch, tmp_path):
    """Was: asked for exactly a version whose spans were stored (a checkpoint), nothing was replayed, the
    run count stayed unknown, and the answer went out however many runs it held."""
    version = await two_authors(client)
    assert (await client.get("/api/docs/d/authors")).status == 200  # the replay stores checkpoints
    with sqlite3.connect(tmp_path / "h.db") as db:
        stored = [v for (v,) in db.execute("SELECT version FROM authorship ORDER BY version")]
    assert [v for v in stored if 4 < v < version], stored
    monkeypatch.setattr(compute, "AUTHORS_MAX_RUNS", 3)
    for v in stored:
        if 4 < v < version:
            resp = await client.get(f"/api/docs/d/authors?version={v}")
            assert resp.status == 413, (v, await resp.text())
            assert f"has {v} runs" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/docs/d/authors?version=3")  # within the budget: answered
    assert resp.status == 200 and len((await resp.json())["spans"]) == 3


async def test_a_refused_restore_leaves_the_document_as_it_was(client, small_pool, monkeypatch):
    await two_authors(client, rounds=6)
    before = await (await client.get("/api/docs/d")).json()
    small_pool()
    nap = asyncio.create_task(compute.pool().run(time.sleep, 1.0, timeout=20))
    await asyncio.sleep(0.2)
    resp = await client.post("/api/docs/d/restore", json={"version": 2})
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "unavailable" and "busy" in error["message"]
    await nap
    monkeypatch.setattr(compute, "DIFF_TIMEOUT", 0.0)
    resp = await client.post("/api/docs/d/restore", json={"version": 2})
    assert resp.status == 503 and "restore diff" in (await resp.json())["error"]["message"]
    assert await (await client.get("/api/docs/d")).json() == before
    monkeypatch.setattr(compute, "DIFF_TIMEOUT", 15.0)
    resp = await client.post("/api/docs/d/restore", json={"version": 2})
    assert resp.status == 200
    assert (await (await client.get("/api/docs/d")).json())["doc"] == "xx"


async def test_authorship_of_a_new_document_made_after_a_delete_is_its_own(client):
    """SQLite gave a deleted newest document's id to the next one (before 006_document_ids_never_reused):
    the new document gets an id of its own, and the memory cache serves it no old spans."""
    from collab.app import ROOMS, STORE
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    await two_authors(client, doc="old", rounds=4)
    old = await store.document("old")
    assert len((await store.authorship(old["id"], 4)).to_list()) == 4
    await rooms.delete("old")
    ws, _ = await join(client, "new", "carol", user={"name": "Carol", "color": "#00aa00"})
    for v in range(4):
        await push(ws, v, "carol", [v, [0, "y"]] if v else [[0, "y"]])
        await recv_type(ws, "updates")
    new = await store.document("new")
    assert new["id"] > old["id"]
    assert (await store.authorship(new["id"], 4)).to_list() == [[4, "Carol"]]


async def test_a_replay_whose_document_was_deleted_meanwhile_stores_nothing_for_the_next_one(
        client, monkeypatch):
    """Was (SQLite, before 006_document_ids_never_reused): a replay of a document deleted while it ran,
    its id given to a new document, stored its checkpoints under that id: the new document's /authors then
    began from another's spans, for good. Now the id is not given again and the spans are not stored."""
    from collab.app import ROOMS, STORE
    store, rooms = client.server.app[STORE], client.server.app[ROOMS]
    monkeypatch.setattr(store, "snapshot_every", 1)  # a checkpoint at every version: there is one to store
    await two_authors(client, doc="old", rounds=4)
    old = await store.document("old")
    real = compute.authorship

    async def deleted_and_remade_first(owner, doc_id, version, every, **io):
        real_save = io["save"]
        remade = []

        async def save(found):  # the old document's spans, computed: it goes, and a new one is made
            if not remade:
                remade.append(True)
                await rooms.delete("old")
                ws, _ = await join(client, "new", "carol", user={"name": "Carol", "color": "#00aa00"})
                for v in range(4):
                    await push(ws, v, "carol", [v, [0, "y"]] if v else [[0, "y"]])
                    await recv_type(ws, "updates")
            return await real_save(found)

        return await real(owner, doc_id, version, every, **{**io, "save": save})

    monkeypatch.setattr(compute, "authorship", deleted_and_remade_first)
    await store.authorship(old["id"], 4)  # what it answers about a deleted document does not matter
    monkeypatch.setattr(compute, "authorship", real)
    new = await store.document("new")
    assert new["id"] > old["id"]
    assert (await store.authorship(new["id"], 4)).to_list() == [[4, "Carol"]]


async def test_authorship_of_compacted_history_says_so_and_a_stored_checkpoint_still_answers(tmp_path):
    from collab.store import Store
    store = await Store(tmp_path / "c.db", snapshot_every=10).open()
    try:
        doc_id = await store.create_document("c", text="hello", author="Ann")  # version 1
        assert (await store.authorship(doc_id, 1)).to_list() == [[5, "Ann"]]
        assert await store.compact(doc_id, 1, "hello", None) == 1  # no spans kept at 1
        store2 = await Store(tmp_path / "c.db", snapshot_every=10).open()  # no memory cache
        try:
            with pytest.raises(VersionCompacted):
                await store2.authorship(doc_id, 1)
        finally:
            await store2.close()
    finally:
        await store.close()


async def test_a_caller_cancelled_while_its_job_waits_gives_its_place_back(small_pool):
    # The job never starts (the one thread is busy and the caller goes first), so nothing in the worker
    # thread can count it out: the pool must, or each such cancel would take a place for good and the
    # pool end up refusing everything as busy.
    pool = small_pool(queue=1)
    nap = asyncio.create_task(pool.run(time.sleep, 1.0, timeout=20))
    await asyncio.sleep(0.2)
    waiting = asyncio.create_task(pool.run(sum, [1], timeout=20))
    await asyncio.sleep(0.2)
    assert pool.pending == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await nap
    await asyncio.sleep(0.1)
    assert pool.pending == 0
    assert await pool.run(sum, [2], timeout=20) == 2
    assert pool.pending == 0
