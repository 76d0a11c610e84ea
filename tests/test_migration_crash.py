"""A database upgrade survives a crash and two processes starting at once (the migration audit).

Old databases (tests/fixtures/upgrade/, SQLite schema 3 and 5, PostgreSQL schema 3) are upgraded by real
`collab migrate` and `collab serve` processes that are killed with SIGKILL in the middle of the upgrade, or
that run two at a time; afterwards `collab migrate` must finish, and the database must hold exactly what an
uninterrupted upgrade of the same fixture holds: the same tables, columns and indexes, the same rows of
every table, each migration recorded once.

How a kill lands in the middle, reliably: the migrations take milliseconds, after a Python start of about
0.3 s, so a kill after a random delay would nearly always land before or after them. Instead the process
runs under strace, which sends it SIGKILL on entry to its N-th write of a given kind (`-e
inject=SYSCALL:signal=KILL:when=N`): pwrite64 for SQLite (every page written to the journal or the
database), sendto for PostgreSQL (every message to the server: BEGIN, a migration's script, its
schema_version row, COMMIT...). N is taken from an uninterrupted run traced the same way: for SQLite
spread over its count of writes, for PostgreSQL at the COMMITs of the last two migrations and after them
(counted in the thread that sends them: strace counts per thread); each test checks the kills landed at
several schema versions. For PostgreSQL a kill also lands while a migration's statement waits for a table
lock another session holds.
Two processes are made to overlap: on SQLite strace pauses one as it opens a migration file; on PostgreSQL
another session's table lock holds the first inside migration 004 while the second is seen waiting for the
migration lock.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serverproc import ROOT, free_port
from test_upgrade_audit import load_postgres, load_sqlite, schema_of

PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
SECRET = "s" * 32


@pytest.fixture(scope="module")
def strace() -> str:
    exe = shutil.which("strace")
    if not exe:
        pytest.fail("strace is not installed: these tests kill collab at its N-th write through it "
                    "(apt-get install strace)")
    tried = subprocess.run([exe, "-f", "-qq", "-o", "/dev/null", "-e", "inject=write:delay_enter=1", "true"],
                           capture_output=True, text=True, timeout=30)
    if tried.returncode != 0:
        pytest.fail(f"strace cannot trace here (ptrace not permitted in this container?): {tried.stderr.strip()}")
    return exe


def collab(*args, prefix=(), timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, PY, "-m", "collab", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def spawn(*args, prefix=(), cwd=ROOT, **kw) -> subprocess.Popen:
    return subprocess.Popen([*prefix, PY, "-m", "collab", *map(str, args)], cwd=cwd, env=ENV, text=True, **kw)


def kill_at(strace: str, call: str, n: int) -> tuple:
    return (strace, "-f", "-qq", "-o", "/dev/null", "-e", f"inject={call}:signal=KILL:when={n}")


def traced_calls(strace: str, call: str, *args, tmp: Path) -> list[str]:
    """The `call`s one uninterrupted `collab ARGS` makes (it must succeed), as strace shows them."""
    out = tmp / f"count-{call}.txt"
    run = collab(*args, prefix=(strace, "-f", "-qq", "-e", f"trace={call}", "-o", out))
    assert run.returncode == 0, run.stderr
    return [line for line in out.read_text().splitlines() if f"{call}(" in line]


def count_calls(strace: str, call: str, *args, tmp: Path) -> int:
    """How many `call`s one uninterrupted `collab ARGS` makes."""
    return len(traced_calls(strace, call, *args, tmp=tmp))


def applied(run: subprocess.CompletedProcess) -> list[str]:
    m = re.search(r"applied (.*)$", run.stdout.strip())
    return m.group(1).split(", ") if m else []


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` (and, if it is strace, the collab it traces, first) by pid; wait for both."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def healthy(proc: subprocess.Popen, port: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ what a database holds

def sqlite_state(path) -> dict:
    """Schema and every row (schema_version without its `applied` time), for comparing two upgrades."""
    conn = sqlite3.connect(path)
    try:
        state = {"integrity": conn.execute("PRAGMA integrity_check").fetchall(),
                 "foreign keys": conn.execute("PRAGMA foreign_key_check").fetchall()}
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        state["schema"] = [(t, n, re.sub(r"\s+", " ", sql or "")) for t, n, sql in objects]
        for kind, table, _ in objects:
            if kind == "table":
                cols = "version, name" if table == "schema_version" else "*"
                state[table] = sorted(map(repr, conn.execute(f'SELECT {cols} FROM "{table}"')))
        return state
    finally:
        conn.close()


async def _pg_state(url: str) -> dict:
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        state = {}
        for key, query in (
                ("columns", "SELECT table_name, column_name, data_type, is_nullable, column_default, collation_name "
                            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"),
                ("indexes", "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                            "ORDER BY 1, 2"),
                ("constraints", "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2")):
            state[key] = [tuple(r) for r in await conn.fetch(query)]
        tables = [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            # schema_version without its time; deployment: its random id's length, not the id; what a
            # starting server writes there (last_start) is compared by the tests that start servers
            query = {"schema_version": "SELECT version, name FROM schema_version",
                     "deployment": "SELECT one, length(id) FROM deployment"}.get(table, f'SELECT * FROM "{table}"')
            state[table] = sorted(repr(tuple(r)) for r in await conn.fetch(query))
        return state
    finally:
        await conn.close()


def pg_state(url: str) -> dict:
    return asyncio.run(_pg_state(url))


def differs(got: dict, want: dict) -> list[str]:
    return sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))


@pytest.fixture
def old_sqlite(tmp_path):
    """make(case) -> the path of a fresh copy of that fixture's old database; clean(case) -> what an
    uninterrupted `collab migrate` of it holds."""
    made = {}

    def make(case: str) -> Path:
        if case not in made:
            made[case] = tmp_path / f"{case}.db"
            load_sqlite(case, made[case])
        made.setdefault("n", 0)
        made["n"] += 1
        folder = tmp_path / f"run{made['n']}"
        folder.mkdir()
        shutil.copy(made[case], folder / "collab.db")
        return folder / "collab.db"

    def clean(case: str) -> dict:
        path = make(case)
        run = collab("migrate", "--db", path)
        assert run.returncode == 0 and applied(run), (run.stdout, run.stderr)
        return sqlite_state(path)

    make.clean = clean
    return make


@pytest.fixture
def old_postgres(pg_server):
    """make() -> the URL of a new database holding the PostgreSQL fixture (schema 3); clean() -> what an
    uninterrupted `collab migrate` of it holds. Dropped at the end."""
    made = []

    def make() -> str:
        made.append(pg_server.create_database("mig"))
        url = pg_server.url(made[-1])
        asyncio.run(load_postgres("postgres-c8b79a3", url))
        return url

    def clean() -> dict:
        url = make()
        run = collab("migrate", "--db", url)
        assert run.returncode == 0 and applied(run) == ["004_people_kept.sql", "005_deployment.sql"], run
        return pg_state(url)

    make.clean = clean
    yield make
    for name in made:
        pg_server.drop_database(name)


# ------------------------------------------------------------------ 1. SIGKILL during the upgrade

def test_sqlite_migrate_killed_at_any_write_is_finished_by_the_next(strace, old_sqlite, tmp_path):
    case = "sqlite-635650f"  # schema 3: migrations 004-007, 006 making the documents table again
    want = old_sqlite.clean(case)
    total = count_calls(strace, "pwrite64", "migrate", "--db", old_sqlite(case), tmp=tmp_path)
    landed = set()
    for n in (total // 4, total // 2, 3 * total // 4):  # the last writes come after the last migration
        db = old_sqlite(case)
        killed = collab("migrate", "--db", db, prefix=kill_at(strace, "pwrite64", n))
        assert killed.returncode == -signal.SIGKILL or killed.returncode == 137, (n, killed.returncode, killed.stderr)
        landed.add(max(schema_of(str(db))))
        again = collab("migrate", "--db", db)
        assert again.returncode == 0, (n, again.stderr)
        assert differs(sqlite_state(db), want) == [], n
    assert len(landed) >= 3, f"the kills did not land inside the upgrade: schema versions after them {landed}"


def test_sqlite_serve_killed_while_it_migrates_then_migrate_finishes(strace, old_sqlite, tmp_path):
    case = "sqlite-635650f"
    want = old_sqlite.clean(case)
    total = count_calls(strace, "pwrite64", "migrate", "--db", old_sqlite(case), tmp=tmp_path)
    landed = set()
    for n in (total // 4, total // 2):  # serve writes fewer pages
        db = old_sqlite(case)
        port = free_port()
        with open(db.parent / "server.log", "w") as log:
            proc = spawn("serve", "--host", "127.0.0.1", "--port", port, "--db", db, "--secret", SECRET,
                         prefix=kill_at(strace, "pwrite64", n), cwd=db.parent, stdout=log, stderr=subprocess.STDOUT)
            try:
                up = healthy(proc, port)
            finally:
                stop(proc)
        if not up:
            landed.add(max(schema_of(str(db))))
        again = collab("migrate", "--db", db)
        assert again.returncode == 0, (n, again.stderr)
        assert differs(sqlite_state(db), want) == [], n
    assert len(landed) >= 2, landed


def test_postgres_migrate_killed_at_any_message_is_finished_by_the_next(strace, old_postgres, tmp_path):
    want = old_postgres.clean()
    sent = traced_calls(strace, "sendto", "migrate", "--db", old_postgres(), tmp=tmp_path)
    # strace counts `when=N` per thread: the calls of the thread that sends the COMMITs (`-f` lines
    # begin with the pid)
    sender = next(line.split()[0] for line in sent if "COMMIT" in line)
    sent = [line for line in sent if line.split()[0] == sender]
    commits = [k + 1 for k, line in enumerate(sent) if "COMMIT" in line]  # N counts from 1
    assert len(commits) >= 2 and commits[-1] < len(sent), sent  # 004's, 005's, then the lock let go of
    landed = set()
    # killed as 004's COMMIT goes (none of it stands), as 005's goes (004 stands), after it (all stands)
    for n in (commits[-2], commits[-1], commits[-1] + 1):
        url = old_postgres()
        killed = collab("migrate", "--db", url, prefix=kill_at(strace, "sendto", n))
        assert killed.returncode != 0, (n, killed.stdout)
        landed.add(max(schema_of(url)))
        again = collab("migrate", "--db", url, timeout=30)
        assert again.returncode == 0, (n, again.stderr)
        assert differs(pg_state(url), want) == [], n
    assert landed >= {3, 4, 5}, landed


def test_postgres_migrate_killed_while_its_migration_waits_for_a_lock(old_postgres):
    """Killed inside migration 004's transaction (its CREATE TABLE waits for a lock on documents another
    session holds): the next migrate waits for the killed one's session to end, then does the whole upgrade."""
    import asyncpg
    want = old_postgres.clean()
    url = old_postgres()

    async def scenario():
        holder, watch = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            await holder.execute("BEGIN")
            await holder.execute("LOCK TABLE documents IN ROW EXCLUSIVE MODE")
            first = spawn("migrate", "--db", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await seen(watch, WAITS_INSIDE_004, "migrate waiting inside migration 004", "collab-migrate")
            finally:
                stop(first)
            second = spawn("migrate", "--db", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                # the killed one's session goes on waiting, holding the migration lock
                await seen(watch, WAITS_FOR_THE_MIGRATION_LOCK, "the next migrate waiting for the migration lock",
                           "collab-migrate")
                await holder.execute("ROLLBACK")
                out, err = await asyncio.get_running_loop().run_in_executor(None, lambda: second.communicate(timeout=30))
            finally:
                stop(second)
            assert second.returncode == 0, err
            assert "applied 004_people_kept.sql, 005_deployment.sql" in out, out
        finally:
            await holder.close()
            await watch.close()

    asyncio.run(scenario())
    assert differs(pg_state(url), want) == []


# ------------------------------------------------------------------ 2. two processes at once

def test_sqlite_two_migrates_interleaved_apply_each_migration_once(strace, old_sqlite):
    """One migrate pauses (strace delays its opening of 006's file) after applying 004 and 005; the other
    starts meanwhile. Both succeed, every migration is applied by exactly one of them, the data is the
    clean upgrade's."""
    case = "sqlite-635650f"
    want = old_sqlite.clean(case)
    db = old_sqlite(case)
    pause = (strace, "-f", "-qq", "-o", "/dev/null", "-P", ROOT / "migrations" / "sqlite" /
             "006_document_ids_never_reused.sql", "-e", "trace=openat", "-e", "inject=openat:delay_enter=6000000")
    first = spawn("migrate", "--db", db, prefix=pause, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and first.poll() is None:
            if max(schema_of(str(db))) == 5:
                break
            time.sleep(0.02)
        assert max(schema_of(str(db))) == 5 and first.poll() is None, "the first migrate was not seen paused after 005"
        second = collab("migrate", "--db", db)
        assert first.poll() is None, "the second migrate did not run while the first was paused (machine too slow?)"
        out, err = first.communicate(timeout=30)
    finally:
        stop(first)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    both = applied(subprocess.CompletedProcess([], 0, out, err)) + applied(second)
    assert sorted(both) == ["004_frames_people_checkpoints.sql", "005_renamed_by_document.sql",
                            "006_document_ids_never_reused.sql", "007_people_kept.sql"], (out, second.stdout)
    assert differs(sqlite_state(db), want) == []


def test_sqlite_two_serves_on_one_old_file_one_refuses(old_sqlite):
    case = "sqlite-935e54b"
    want = old_sqlite.clean(case)
    db = old_sqlite(case)
    ports = [free_port(), free_port()]
    procs = [spawn("serve", "--host", "127.0.0.1", "--port", port, "--db", db, "--secret", SECRET,
                   cwd=db.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for port in ports]
    try:
        up = [healthy(p, port) for p, port in zip(procs, ports)]
        assert sorted(up) == [False, True], up
        refused = procs[up.index(False)]
        output = refused.communicate(timeout=10)[0]
        assert refused.returncode != 0 and "already serving" in output and "Traceback" not in output, output
    finally:
        for p in procs:
            stop(p)
    assert differs(sqlite_state(db), want) == []


async def seen(watch, query: str, what: str, *args) -> None:
    """Wait (at most 20 s) until `query` on the `watch` connection finds a row."""
    for _ in range(400):
        if await watch.fetchval(query, *args):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} was not seen in pg_stat_activity within 20 s")


WAITS_INSIDE_004 = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' "
                    "AND query LIKE '%people%'")
WAITS_FOR_THE_MIGRATION_LOCK = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                                "AND wait_event = 'advisory'")


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_postgres_two_upgrades_at_once_apply_each_migration_once(old_postgres, tmp_path, command):
    """Two `collab migrate` (or two `collab serve`) on one old database, truly at once: the first is held
    inside migration 004 (its CREATE TABLE waits for a table lock another session holds) while the second
    waits for the migration lock, saying so; then the table lock goes. Both end well, each migration is
    applied once, the data is the clean upgrade's."""
    import asyncpg
    want = old_postgres.clean()
    url = old_postgres()
    app = "collab-migrate" if command == "migrate" else "collab-writer"
    ports = [free_port(), free_port()]

    def start(k: int) -> subprocess.Popen:
        if command == "migrate":
            return spawn("migrate", "--db", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return spawn("serve", "--host", "127.0.0.1", "--port", ports[k], "--db", url, "--secret", SECRET,
                     cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def scenario():
        holder, watch = await asyncpg.connect(url), await asyncpg.connect(url)
        procs = []
        try:
            await holder.execute("BEGIN")
            await holder.execute("LOCK TABLE documents IN ROW EXCLUSIVE MODE")
            procs.append(start(0))
            await seen(watch, WAITS_INSIDE_004, "the first one waiting inside migration 004", app)
            procs.append(start(1))
            await seen(watch, WAITS_FOR_THE_MIGRATION_LOCK, "the second one waiting for the migration lock", app)
            await holder.execute("ROLLBACK")
            if command == "migrate":
                return [await asyncio.to_thread(p.communicate, timeout=30) for p in procs], procs
            ups = [await asyncio.to_thread(healthy, p, port) for p, port in zip(procs, ports)]
            assert ups == [True, True], ups
            for p in procs:
                stop(p)
            return [p.communicate(timeout=10) for p in procs], procs
        finally:
            for p in procs:
                stop(p)
            await holder.close()
            await watch.close()

    outputs, procs = asyncio.run(scenario())
    if command == "migrate":
        assert [p.returncode for p in procs] == [0, 0], outputs
        runs = [subprocess.CompletedProcess([], 0, out, err) for out, err in outputs]
        assert applied(runs[0]) == ["004_people_kept.sql", "005_deployment.sql"] and applied(runs[1]) == [], outputs
    assert "waiting for the migration lock, which the session of pid" in outputs[1][1], outputs[1][1]
    assert differs(pg_state(url), want) == []  # deployment: one row (its last_start is the last server's)
    assert sorted(schema_of(url)) == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ 3. what an operator is told

def test_postgres_a_migration_that_cannot_go_on_says_why_in_one_line(old_postgres):
    """Was: a migration that waited for a lock (the migration lock another session holds, or a table lock a
    migration's statement needs) said nothing while it waited, and when the wait ended (PostgreSQL's
    lock_timeout, set in the URL here; or collab's 60 s statement limit) `collab migrate` died with a bare
    traceback (`TimeoutError`, `LockNotAvailableError`) and `collab serve` said that the database "is
    unavailable (migrating): TimeoutError". Even a migrate killed while its statement waits leaves its session
    holding the migration lock until that wait ends (test above), so the next one waits in silence.
    Now: while it waits it says for which session, and giving up is one line naming that session or the
    migration, which was rolled back."""
    import asyncpg

    from collab.store_pg import MIGRATION_LOCK
    url = old_postgres()
    bounded = url + "?lock_timeout=1500"

    async def scenario():
        holder, watch = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
            # A migration's statement waits for a table lock: rolled back, said in one line.
            await holder.execute("BEGIN")
            await holder.execute("LOCK TABLE documents IN ROW EXCLUSIVE MODE")
            run = await asyncio.to_thread(collab, "migrate", "--db", bounded)
            await holder.execute("ROLLBACK")
            assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
            assert run.stderr.startswith("collab migrate: error: ") and run.stderr.count("\n") == 1, run.stderr
            assert "004_people_kept.sql" in run.stderr and "rolled back" in run.stderr, run.stderr
            assert sorted(await asyncio.to_thread(schema_of, url)) == [1, 2, 3]
            # The same with a statement_timeout (a role's, on a managed server) instead: was a bare
            # QueryCanceledError.
            await holder.execute("BEGIN")
            await holder.execute("LOCK TABLE documents IN ROW EXCLUSIVE MODE")
            run = await asyncio.to_thread(collab, "migrate", "--db", url + "?statement_timeout=1500")
            await holder.execute("ROLLBACK")
            assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
            assert "004_people_kept.sql was cancelled" in run.stderr and "rolled back" in run.stderr, run.stderr
            assert sorted(await asyncio.to_thread(schema_of, url)) == [1, 2, 3]
            # The migration lock is held by another session: named, in one line, with what to do.
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            for ends in ("lock_timeout=1500", "statement_timeout=1500"):
                run = await asyncio.to_thread(collab, "migrate", "--db", f"{url}?{ends}")
                assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
                last = run.stderr.splitlines()[-1]
                assert last.startswith("collab migrate: error: ") and "migration lock" in last, run.stderr
                assert f"the session of pid {holder_pid}" in last, run.stderr
                assert f"pg_terminate_backend({holder_pid})" in last, run.stderr
            # Without a bound it waits, saying for whom, and goes on once the lock is let go of.
            waiting = spawn("migrate", "--db", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await seen(watch, WAITS_FOR_THE_MIGRATION_LOCK, "migrate waiting for the migration lock",
                           "collab-migrate")
                await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
                out, err = await asyncio.to_thread(waiting.communicate, timeout=30)
            finally:
                stop(waiting)
            assert waiting.returncode == 0 and "applied 004_people_kept.sql, 005_deployment.sql" in out, err
            assert f"pid {holder_pid}" in err and "Traceback" not in err, err
        finally:
            await holder.close()
            await watch.close()

    asyncio.run(scenario())
    assert sorted(schema_of(url)) == [1, 2, 3, 4, 5]
