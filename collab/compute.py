"""Expensive pure computations, run off the event loop under a budget: the runner and its three jobs.

Rules that always hold:
  * the event loop never runs a restore diff, an authorship replay or the
    replay that rebuilds the text of a version; they run in worker processes
    (`Pool`), not in threads of the server: a pure-Python thread holds the
    GIL in 5 ms slices and the loop (and the store's threads) wait for it at
    every socket or SQLite call. Measured on 32,000 interleaved insertions:
    the replay in a thread paused the loop up to 77 ms (and, in the store's
    reader thread, held other documents' acks up to 260 ms and reads up to
    480 ms); in a worker process the loop's worst pause stays under 10 ms,
    as when idle;
  * a version's text (`text_at`: the History's "text at version N", exports,
    restores) is read by its store (the newest snapshot at or below it and the
    update rows after it, their UTF-8 joined by commas: one bytes object
    crosses to the worker in one copy, and nothing of them is decoded in the
    server) and replayed by history.text_after in a worker, within
    REBUILD_TIMEOUT (--history-timeout). Measured on a 1.8 MB text with
    80,000 updates after its snapshot (bench/rebuild.py), six such requests
    at once: /healthz round trips and edit acks of another document waited up
    to 100-170 ms while the replay ran in the store's threads, 10-36 ms since
    (what is left is the reader thread reading 80,000 rows). A rebuild of at
    most REBUILD_INLINE_CHANGES bytes of updates onto a text of at most
    REBUILD_INLINE_TEXT characters runs in a thread instead (measured: 1.4 ms
    there against 2.6 ms through a worker, and too short to hold the loop
    up), and one with no rows is the snapshot itself. Rows that do not replay
    (a damaged database) are Unreplayable (500 `internal`) either way;
  * spans stay JSON bytes in the server process and are parsed only in
    workers: millions of small lists held by a cache make every full garbage
    collection pause the loop (100-200 ms pauses, measured, before this rule).
    The one exception is an /authors answer of at most 32 KB of spans, which
    `authors_json` builds on the loop (about 2 ms for 27 KB, measured, and not kept);
  * budgets, each refused cleanly and never by stalling the server:
      - at most WORKERS jobs run and QUEUE wait; one more is refused at once
        (`unavailable`, 503, "busy");
      - a job has `timeout` seconds from the moment it was asked for, waiting
        included; past it its worker process is killed and the caller hears
        `unavailable` (503) saying what ran out of time;
      - a worker may use WORKER_MEMORY bytes of address space; beyond it the
        job fails with `too-large` (413) and that worker is stopped (the next
        job gets another: one that ran out while reading the job ends by
        itself, and handed the next job before it had, that job failed too);
      - a worker that cannot be started (no file descriptor, process or
        memory left) or that dies answers `unavailable` (503), not a 500;
  * a restore diff is bounded by construction (history.diff_changes stops its
    searches at a cutoff and replaces what is left whole: about a second of
    work at most), so a restore is refused only when the workers are busy or
    the machine is so loaded that DIFF_TIMEOUT passes, or when the text it
    brings back cannot be rebuilt within the budgets (as any `text_at`); the
    document is then unchanged;
  * an /authors request replays its update rows a chunk per job from the
    nearest cached spans: AUTHORS_CHUNK rows, or one row per AUTHORS_SPANS_PER_ROW
    bytes of the spans it starts from if that is more (a job parses, rebuilds
    and dumps the whole spans whatever it replays, so a fixed chunk made a
    long history's replay quadratic: over 220,000 updates of a 2 MB text, 44
    jobs and about 14 s of CPU, against 26 jobs and 10 s so), at most
    AUTHORS_CHUNK_MAX rows and AUTHORS_CHUNK_BYTES of them (a chunk must end
    within the budget; so past 2 MB of spans the overhead's share grows
    again with them); each
    job's result is kept (in memory, and in the store at checkpoints spaced
    by their size), so a request that runs out of AUTHORS_TIMEOUT is refused
    with 503 and the next one goes on from where it stopped; the answer's
    JSON is built in a worker too (above 32 KB of spans), and one of more
    than AUTHORS_MAX_RUNS runs (about 12 MB) is refused with 413. Requests for the authorship of one
    version that arrive while it is being computed wait for that computation
    (`authorship`) instead of replaying its rows beside it (requests for two
    versions at once, even near ones, each replay their own); and a replay
    whose every client went away (their `wanted` says so) stops before its
    next chunk, its queued job never started (GivenUp);
  * workers are fresh interpreters (not copies of the server with its sockets
    and threads) at a lower CPU priority, started on first use and kept; each
    ends on its own when the server's end of its pipe closes, so none
    outlives the server.
What never lives here: SQL (each store reads what a job needs, or hands over
closures that read and write its own tables), the algorithms themselves
(history.py).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Hashable

from .changes import ChangeSet
from .errors import ChangeError, ProtocolError, ServerError
from .history import Authorship, diff_changes, replay, run_count, spans_json, text_after
from .logs import Throttle

log = logging.getLogger("collab")

WORKERS = 1                 # worker processes (the server's other core stays with the event loop)
QUEUE = 8                   # jobs that may wait for a worker; more are refused (busy)
WORKER_MEMORY = 2 << 30     # bytes of address space one worker may use
WORKER_NICE = 10            # workers run (and start) at a lower CPU priority than the server
DIFF_TIMEOUT = 15.0         # seconds for one restore diff, waiting included
REBUILD_TIMEOUT = 15.0      # seconds for one rebuild of a version's text, waiting included
REBUILD_INLINE_CHANGES = 8 << 10  # a rebuild of at most this many bytes of update JSON ...
REBUILD_INLINE_TEXT = 256 << 10   # ... onto a text of at most this many characters runs in a thread (below)
AUTHORS_TIMEOUT = 15.0      # seconds for one /authors request, waiting included
AUTHORS_CHUNK = 5_000       # update rows replayed per job, at least
AUTHORS_SPANS_PER_ROW = 100  # ... or one per this many bytes of the spans the job starts from, if more
AUTHORS_CHUNK_MAX = 20_000  # ... but never more rows than this
AUTHORS_CHUNK_BYTES = 2 << 20  # ... and at most this many bytes of them (a chunk must end within the budget)
AUTHORS_MAX_RUNS = 200_000  # runs one /authors answer may hold
AUTHORS_SPACING = 4         # stored checkpoints at least runs / 4 versions apart (about 4 runs per update)
CACHE_BYTES = 64 << 20      # bytes the authorship cache keeps in memory (per store) ...
ENTRY_OVERHEAD = 400        # ... counting this for each entry besides its spans JSON (keys, tuples, nodes)


class Refused(ServerError):
    """The pool did not finish a job, for a reason of its own (below): nothing is known of the job's input."""


class Busy(Refused):
    """Every worker is taken and the queue is full."""


class Overrun(Refused):
    """A job ran out of its time budget (its worker was killed)."""


class NoWorker(Refused):
    """No worker process could be started (out of file descriptors, processes or memory)."""


class GivenUp(Refused):
    """Nobody waits for the job's result any more (every client that asked for it went away)."""


class WorkerEnded(Refused):
    """The worker running the job ended (killed from outside, or out of memory)."""


class Unreplayable(ServerError):
    """The stored updates of a version do not replay onto its snapshot: a damaged database, not a request
    to refuse (500 `internal`), the same whether the rebuild ran in a thread or in a worker."""

    def __init__(self, message: str):
        super().__init__(message, code="internal")


def refused(exc: BaseException) -> bool:
    """Whether `exc` is the pool's refusal of a job: `Refused`, or `too-large` (over a worker's memory)."""
    return isinstance(exc, Refused) or (isinstance(exc, ProtocolError) and exc.code == "too-large")


# --------------------------------------------------------------------- runner
#
# A worker is `python -c "import collab.compute; collab.compute.worker_main()"`
# talking length-prefixed pickles over its stdin and stdout (both ends are
# ours: nothing from outside is ever unpickled). Not multiprocessing: its
# children import the parent's __main__ script again, whatever embeds collab.

_HEADER = struct.Struct("!Q")


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    poller = None
    if deadline is not None:
        poller = select.poll()  # not select.select: a busy server's descriptors pass FD_SETSIZE
        poller.register(fd, select.POLLIN)
    while left:
        if poller is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send(fd: int, value) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(data)) + data)


def _receive(fd: int, deadline: float | None = None):
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, n, deadline))


def worker_main() -> None:  # pragma: no cover - runs in the worker process
    """A worker's life: take (fn, args), answer (status, value), until the server's end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    memory = int(os.environ.get("COLLAB_WORKER_MEMORY", WORKER_MEMORY))
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ValueError, OSError):
        pass
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    while True:
        try:
            fn, args = _receive(0)
        except (EOFError, OSError):
            return
        except MemoryError:
            fn = None
        if fn is None:  # reading the job alone went over the memory limit (freed by now): said so, and it ends
            _send(out, ("memory", ""))
            return
        try:
            answer = ("ok", fn(*args))
        except MemoryError:
            answer = ("memory", "")
        except Exception as exc:  # noqa: BLE001 - a bug: reported to the caller, who raises it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            _send(out, answer)
        except MemoryError:
            _send(out, ("memory", ""))
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self, memory: int):
        import collab
        root = os.path.dirname(os.path.dirname(os.path.abspath(collab.__file__)))
        self.memory = memory
        env = dict(os.environ, COLLAB_WORKER_MEMORY=str(memory),
                   PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.nice({WORKER_NICE}); import collab.compute as c; c.worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)

    def call(self, fn, args, deadline: float, what: str):
        """fn(*args) in this worker; raises Overrun (the caller then kills it) past `deadline`."""
        try:
            _send(self.proc.stdin.fileno(), (fn, args))
        except BrokenPipeError:  # it ended while reading the job: it says why first (out of memory), if it can
            pass
        try:
            status, value = _receive(self.proc.stdout.fileno(), deadline)
        except TimeoutError:
            raise Overrun(f"{what} ran out of its time budget; try again later") from None
        if status == "memory":
            raise ProtocolError("too-large", f"{what} needs more memory than a worker may use "
                                             f"({self.memory >> 20} MB)")
        if status == "error":
            raise RuntimeError(f"{what} failed in its worker: {value}")
        return value

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class Pool:
    """Runs picklable pure functions in worker processes, each job under a time budget.

    `run` may be awaited from any event loop. A caller that is cancelled
    while its job waits for a thread cancels the job (it never runs); once a
    thread runs it, the job ends by its deadline whatever the caller does.
    """

    def __init__(self, workers: int = WORKERS, queue: int = QUEUE, memory: int = WORKER_MEMORY):
        self.workers, self.queue, self.memory = workers, queue, memory
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collab-compute")
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.pending = 0  # jobs asked for and not finished
        self.started = 0  # worker processes started (for tests)
        self.jobs = 0     # jobs handed to a worker process (for tests)
        self.killed = 0   # worker processes killed for running out of time (for tests)
        self._start_failures = Throttle(log)  # one warning now and then while workers cannot be started

    async def run(self, fn: Callable, *args, timeout: float, what: str = "the computation",
                  wanted: Callable[[], bool] | None = None):
        """fn(*args) in a worker; with `wanted`, asked when a thread takes the job: false (whoever asked
        went away meanwhile) and it never runs (GivenUp)."""
        with self._lock:
            if self.pending >= self.workers + self.queue:
                raise Busy(f"the server is busy with {self.pending} history computations; "
                           "try again in a moment")
            self.pending += 1
        deadline = time.monotonic() + timeout
        try:
            job = self._threads.submit(self._call, fn, args, deadline, what, wanted)
        except BaseException:
            self._release()
            raise
        # Counted out when the job ends, or when it is cancelled before a thread takes it (its caller
        # cancelled meanwhile: then _call never runs).
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _release(self, _job=None) -> None:
        with self._lock:
            self.pending -= 1

    def _call(self, fn, args, deadline: float, what: str, wanted=None):  # in one of our threads
        if time.monotonic() >= deadline:
            raise Overrun(f"{what} waited too long for a worker; the server is busy, try again later")
        if wanted is not None and not wanted():  # (it reads an attribute: a stale answer only runs the job)
            raise GivenUp(f"{what} was given up by whoever asked for it")
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            while worker is not None and worker.proc.poll() is not None:  # it died while idle (killed)
                worker.kill()
                worker = self._idle.pop() if self._idle else None
        if worker is None:
            try:
                worker = _Worker(self.memory)
            except OSError as exc:  # out of file descriptors, processes or memory: try again later
                self._start_failures.warning("could not start a history worker process: %s", exc)
                reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__  # no paths for clients
                raise NoWorker(f"{what} could not start a worker process ({reason}); try again later") from None
            self.started += 1
        with self._lock:
            self.jobs += 1
        try:
            result = worker.call(fn, args, deadline, what)
        except Overrun:
            self.killed += 1
            worker.kill()
            raise
        except (EOFError, OSError) as exc:  # the worker died (killed from outside, or out of memory)
            worker.kill()
            raise WorkerEnded(f"{what} failed: its worker process ended ({exc})") from None
        except ProtocolError:  # out of memory: a worker that ran out reading the job ends right after saying
            worker.kill()      # so, and one that ran out running it keeps what it grew to; neither gets another
            raise
        except BaseException:
            with self._lock:
                self._idle.append(worker)  # the job raised, the worker answered: it is fine
            raise
        with self._lock:
            self._idle.append(worker)
        return result

    def close(self) -> None:
        """Stop every idle worker (running jobs end by their deadline)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_pool: Pool | None = None
_pool_lock = threading.Lock()


def configure(workers: int, queue: int, memory: int, timeout: float, max_runs: int) -> None:
    """The budgets from the server's settings (--history-*); before the pool starts."""
    global WORKERS, QUEUE, WORKER_MEMORY, DIFF_TIMEOUT, REBUILD_TIMEOUT, AUTHORS_TIMEOUT, AUTHORS_MAX_RUNS
    WORKERS, QUEUE, WORKER_MEMORY = workers, queue, memory
    DIFF_TIMEOUT = REBUILD_TIMEOUT = AUTHORS_TIMEOUT = timeout
    AUTHORS_MAX_RUNS = max_runs


def pool() -> Pool:
    """The process's pool, started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool(WORKERS, QUEUE, WORKER_MEMORY)
        return _pool


# -------------------------------------------------------------- restore diff

async def restore_changes(current: str, target: str) -> ChangeSet:
    """The ChangeSet turning `current` into `target` (history.diff_changes), computed in a worker."""
    return await pool().run(diff_changes, current, target, timeout=DIFF_TIMEOUT, what="the restore diff")


# ------------------------------------------------------------ version texts

async def text_at(text: str, changes: bytes, count: int, version: int,
                  wanted: Callable[[], bool] | None = None) -> str:
    """The text of `version`: `text` (a snapshot's) with the `count` update rows after it applied
    (`changes`: their ChangeSetJSON joined by commas, history.text_after), in a worker; a small rebuild in a
    thread (`wanted` is not asked there), and none at all without rows. With `wanted`, asked when a
    thread takes the job: false and it never runs (GivenUp). Rows that do not replay raise Unreplayable,
    wherever they ran."""
    if not count:
        return text
    try:
        if len(changes) <= REBUILD_INLINE_CHANGES and len(text) <= REBUILD_INLINE_TEXT:
            return await asyncio.to_thread(text_after, text, changes, count)
        return await pool().run(text_after, text, changes, count, timeout=REBUILD_TIMEOUT,
                                what=f"the rebuild of version {version}", wanted=wanted)
    except (ChangeError, ValueError, RuntimeError) as exc:  # RuntimeError: what text_after raised in a worker
        raise Unreplayable(f"version {version} cannot be rebuilt: the stored updates after its snapshot do "
                           f"not replay ({exc}); the database is damaged (restore it from a backup)") from None


# ---------------------------------------------------------------- authorship

class AuthorshipCache:
    """Spans (stored JSON, as bytes) by (document, version), least recently used dropped first,
    at most `max_bytes` in all: each entry counts its spans' bytes and ENTRY_OVERHEAD for what holds
    them (measured: about 350 bytes an entry), so many small entries stay within it too."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[tuple, tuple[bytes, int]] = OrderedDict()
        self._versions: dict[Hashable, list[int]] = {}

    def best(self, doc: Hashable, version: int) -> tuple[int, bytes, int] | None:
        """The newest cached (version, spans, runs) at or below `version`."""
        versions = self._versions.get(doc)
        if not versions:
            return None
        i = bisect.bisect_right(versions, version)
        if i == 0:
            return None
        key = (doc, versions[i - 1])
        self._entries.move_to_end(key)
        return (versions[i - 1], *self._entries[key])

    def put(self, doc: Hashable, version: int, spans: bytes, runs: int) -> None:
        key = (doc, version)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if len(spans) > self.max_bytes:
            return
        self._entries[key] = (spans, runs)
        bisect.insort(self._versions.setdefault(doc, []), version)
        self.size += len(spans) + ENTRY_OVERHEAD
        while self.size > self.max_bytes:
            (old_doc, old_version), (old_spans, _) = self._entries.popitem(last=False)
            versions = self._versions[old_doc]
            versions.pop(bisect.bisect_left(versions, old_version))
            if not versions:
                del self._versions[old_doc]
            self.size -= len(old_spans) + ENTRY_OVERHEAD


_caches: "weakref.WeakKeyDictionary[object, AuthorshipCache]" = weakref.WeakKeyDictionary()


def authorship_cache(owner: object) -> AuthorshipCache:
    """The cache kept for `owner` (a store): it lives as long as the store does."""
    cache = _caches.get(owner)
    if cache is None:
        cache = _caches[owner] = AuthorshipCache()
    return cache


Rows = list[tuple[int, str, str]]  # (version, author, stored ChangeSetJSON text)

# The authorship computations under way, by store and (document, version): a request for one already under
# way waits for it instead of replaying the same rows again beside it.
# (the task, and the `wanted` of each caller)
_running: "weakref.WeakKeyDictionary[object, dict[tuple[int, int], tuple[asyncio.Future, list]]]" = \
    weakref.WeakKeyDictionary()


def chunk_rows(spans_bytes: int) -> int:
    """Update rows one authorship job replays, starting from spans of `spans_bytes` bytes of JSON: enough
    that the job's cost of parsing, rebuilding and dumping those spans is a small share of it."""
    return min(max(AUTHORS_CHUNK, spans_bytes // AUTHORS_SPANS_PER_ROW), max(AUTHORS_CHUNK, AUTHORS_CHUNK_MAX))


async def authorship(owner: object, doc_id: int, version: int, every: int,
                     wanted: Callable[[], bool] | None = None, **io) -> Authorship:
    """Who wrote each character at `version` (`_authorship`), computed once for all who ask at once.

    A caller that stops waiting (cancelled) does not stop the computation for the
    others; it ends by its own deadline, and what it computed is cached. But
    `wanted` (a caller's client still waits: api.py) is asked between chunks:
    once every caller that gave one says false and none came without one, the
    computation stops there (GivenUp), what it computed cached. (Scrubbing the
    authors view over 8 versions of a document of 220,000 updates queued 8
    replays of seconds each in the worker, the one still asked for behind
    them: it ran out of its 15 s.)
    """
    running = _running.setdefault(owner, {})
    key = (doc_id, version)
    entry = running.get(key)
    if entry is None or entry[0].done():  # (one that just ended, given up say, is no computation to join)
        wanters: list = []
        task = asyncio.ensure_future(_authorship(owner, doc_id, version, every,
                                                 still_wanted=lambda: any(w is None or w() for w in wanters), **io))
        entry = running[key] = (task, wanters)
        task.add_done_callback(lambda done: _finished(running, key, done))
    entry[1].append(wanted)
    return await asyncio.shield(entry[0])


def _finished(running: dict, key: tuple[int, int], done: asyncio.Future) -> None:
    if key in running and running[key][0] is done:
        del running[key]
    if not done.cancelled():
        done.exception()  # retrieved here: every caller may have stopped waiting (no "never retrieved" log)


async def _authorship(owner: object, doc_id: int, version: int, every: int, *,
                      checkpoint: Callable[[int], Awaitable[tuple[Hashable, int]]],
                      spans_at: Callable[[int], Awaitable[str | bytes | None]],
                      rows: Callable[[int, int, int], Awaitable[Rows]],
                      save: Callable[[list[tuple[int, str]]], Awaitable[None]],
                      still_wanted: Callable[[], bool] = lambda: True) -> Authorship:
    """Who wrote each character at `version`: the replay loop and its caching, for any store.

    The store hands over four closures over its own tables:
      checkpoint(version) -> (identity, v): something that tells this document
          from a later one with the same id (SQLite: its creation time), and the
          newest stored checkpoint v <= version (0 if none);
      spans_at(v) -> the stored spans JSON of checkpoint v, as stored (not parsed),
          or None if it is gone (compacted away since `checkpoint` read it);
      rows(after, upto, max_bytes) -> the update rows after+1 .., contiguous,
          at least one, stopping early only past max_bytes; raises
          VersionCompacted if one of after+1 .. upto is gone;
      save([(v, spans JSON), ...]) -> stores checkpoints (existing ones kept).
    The replay starts from the newest of the cached and stored spans, runs in
    the worker pool chunk by chunk, and caches every chunk's end. The spans
    stay JSON bytes in this process: they are parsed only in workers.
    """
    deadline = time.monotonic() + AUTHORS_TIMEOUT
    identity, stored = await checkpoint(version)
    doc = (doc_id, identity)
    cache = authorship_cache(owner)
    hit = cache.best(doc, version)
    runs = None
    if hit is not None and hit[0] >= stored:
        start, spans, runs = hit
    else:
        start, spans = stored, (await spans_at(stored) if stored else b"[]")
        if spans is None:  # compacted away since `checkpoint` read it: with the rows after it (store.compact)
            await rows(stored, stored + 1, AUTHORS_CHUNK_BYTES)  # so this raises VersionCompacted (404)
            raise ServerError(f"the authorship of version {version} changed while it was read; try again")
    saved = stored

    def time_left() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Overrun(f"the authorship of version {version} is still being computed (done up to version "
                          f"{start}, from {stored}); ask again to continue")
        return left

    while start < version:
        time_left()
        if not still_wanted():
            raise GivenUp(f"the authorship of version {version} was given up by whoever asked for it (done up "
                          f"to version {start})")
        batch = await rows(start, min(version, start + chunk_rows(len(spans))), AUTHORS_CHUNK_BYTES)
        spans, checkpoints, runs = await pool().run(replay, spans, batch, every, saved, AUTHORS_SPACING,
                                                    timeout=time_left(), what="the authorship replay",
                                                    wanted=still_wanted)
        if checkpoints:
            await save(checkpoints)
            saved = checkpoints[-1][0]
        start = batch[-1][0]
        cache.put(doc, start, spans, runs)
    if runs is None and len(spans) > 7 * AUTHORS_MAX_RUNS:
        # The stored spans of this very version, nothing replayed: their count is not known. A run takes
        # 7 bytes of JSON at least ([1,""] and a comma), so only spans this long can hold too many.
        runs = await pool().run(run_count, spans, timeout=time_left(), what="the authorship count")
    authors = Authorship.from_json(spans, runs)
    if runs is not None and runs > AUTHORS_MAX_RUNS:
        raise ProtocolError("too-large", f"the authorship of version {version} has {runs:,} runs; "
                                         f"one answer holds at most {AUTHORS_MAX_RUNS:,}")
    return authors


async def authors_json(authors: Authorship) -> bytes:
    """The /authors spans as JSON ([{"from", "to", "author"}, ...]), built in a worker when large."""
    stored = authors.to_json()
    if len(stored) <= 32 << 10:
        return spans_json(stored)
    return await pool().run(spans_json, stored, timeout=AUTHORS_TIMEOUT, what="the authors answer")
