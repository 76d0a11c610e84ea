"""Commands given what they cannot use say so in one line and exit 1, without a traceback, and touch nothing.

Each runs as `python -m collab ...` in a subprocess, as a person would run it (SQLite files: what a
wrong path or a wrong file can be, and a full disk: a small tmpfs, `full_disk`; PostgreSQL's own
refusals are in test_admin.py and test_pg_*.py, but for a user that may not make tables, here).
"""

from __future__ import annotations

import os
import random
import sqlite3
import string
import subprocess
import sys

import pytest

from pgserver import USER
from serverproc import ROOT, ServerProcess, free_port


def collab(*args, timeout: float = 60, cwd=ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    # the checkout's collab, from any folder (not whichever one the venv has installed)
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "collab", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def refused(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 1, (result.args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def tables(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_another_programs_sqlite_database_is_refused_and_left_as_it_was(tmp_path):
    """Was: every command (even `docs`, which only lists) wrote collab's tables into any SQLite file it was
    pointed at, switched it to WAL, and said "no documents"; `import` still did, after the others were
    mended (found by an audit)."""
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "doc.txt").write_text("text")
    for args in (["docs"], ["migrate"], ["export", tmp_path / "out"], ["compact", "--keep-history", 5],
                 ["backup", tmp_path / "b.db"], ["import", tmp_path / "in"],
                 ["serve", "--port", free_port()]):
        refused(collab(*args, "--db", foreign), "a SQLite database of something else")
    refused(collab("copy", foreign, tmp_path / "target.db"), "a SQLite database of something else")
    assert foreign.read_bytes() == before and tables(foreign) == {"t"}


@pytest.mark.parametrize("what", ["text file", "folder", "newer collab"])
def test_a_database_collab_cannot_use_is_one_line(tmp_path, what):
    """Was: a file that is not a database, a folder, or a database a newer collab migrated stopped each
    command with a traceback."""
    db = tmp_path / "x.db"
    if what == "text file":
        db.write_text("hello, not a database\n")
        words = "is not a SQLite database"
    elif what == "folder":  # not a database file: `docs` finds none, `migrate` cannot make one there
        db.mkdir()
        refused(collab("docs", "--db", db), "no database at")
        refused(collab("migrate", "--db", db), "cannot use the SQLite database")
        return
    else:
        assert collab("migrate", "--db", db).returncode == 0
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO schema_version(version, name, applied) VALUES (99, '099_future', 0)")
        conn.commit()
        conn.close()
        words = "newer than this collab knows"
    for args in (["migrate"], ["docs"]):
        refused(collab(*args, "--db", db), words)
    refused(collab("copy", db, tmp_path / "t.db"), words)


def test_serve_says_what_is_wrong_in_one_line(tmp_path):
    """Was: a missing secret file, a second server on one SQLite file, or a port in use: a traceback."""
    port = free_port()
    result = collab("serve", "--db", tmp_path / "a.db", "--port", port, "--secret-file", tmp_path / "nope")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot read the secret file" in result.stderr
    short = collab("serve", "--db", tmp_path / "a.db", "--port", port, "--secret", "short")
    assert short.returncode == 2 and "secret must be 16 characters at least" in short.stderr, short.stderr
    server = ServerProcess(tmp_path / "a.db", log_path=tmp_path / "server.log").start()
    try:
        second = collab("serve", "--db", tmp_path / "a.db", "--port", free_port(), timeout=30)
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        assert "another collab server is already serving" in second.stderr
        taken = collab("serve", "--db", tmp_path / "b.db", "--port", server.port, timeout=30)
        assert taken.returncode == 1 and "Traceback" not in taken.stderr, taken.stderr
        assert f"cannot listen on 127.0.0.1:{server.port}" in taken.stderr
    finally:
        server.kill()


def test_export_and_backup_say_when_they_cannot_write(tmp_path):
    db = tmp_path / "a.db"
    assert collab("migrate", "--db", db).returncode == 0
    (tmp_path / "file").write_text("x")
    refused(collab("export", tmp_path / "file", "--db", db), "cannot write to")
    # A folder that cannot be made: the backup file is named, not the database (was: "backup of a.db
    # failed: [Errno 20] Not a directory: ...").
    refused(collab("backup", tmp_path / "file" / "sub" / "b.db", "--db", db),
            f"cannot write the backup file {tmp_path / 'file' / 'sub' / 'b.db'}: Not a directory")
    # A folder it may not write in (even root may not make files in /proc): the backup file is named,
    # not the database (was: "the SQLite database a.db cannot be used right now", and a second line).
    refused(collab("backup", "/proc/collab-backup-test.db", "--db", db),
            "cannot write the backup file /proc/collab-backup-test.db")
    loop = tmp_path / "loop.db"
    loop.symlink_to(loop)  # was: a traceback (RuntimeError: Symlink loop)
    refused(collab("backup", loop, "--force", "--db", db), f"cannot write the backup file {loop}")


def test_import_holds_to_max_documents_strips_a_byte_order_mark_and_counts_what_it_skipped(tmp_path):
    """Was: import made documents past --max-documents, kept a UTF-8 byte order mark as text, and exited 0
    with files left out (a Notes.TXT, a folder named x.txt)."""
    db = tmp_path / "a.db"
    src = tmp_path / "in"
    src.mkdir()
    (src / "bom.txt").write_bytes(b"\xef\xbb\xbfbom file")
    for name in ("one", "two", "three"):
        (src / f"{name}.txt").write_text(name)
    (src / "folder.txt").mkdir()
    (src / "Notes.TXT").write_text("upper-case suffix")
    result = collab("import", src, "--db", db, "--max-documents", 3)
    assert result.returncode == 1, result
    assert "skipped folder.txt: not a regular file" in result.stderr and "skipped Notes.TXT" in result.stderr
    assert "imported 3 documents" in result.stdout and "refused 1" in result.stdout, result.stdout
    assert "--max-documents" in result.stderr
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 3
        (changes,) = conn.execute("SELECT u.changes FROM updates u JOIN documents d ON d.id = u.doc_id "
                                  "WHERE d.name = 'bom'").fetchone()
    finally:
        conn.close()
    assert changes == '[[0,"bom file"]]'
    backup = collab("backup", tmp_path / "b.db", "--db", db)
    assert backup.returncode == 0 and "3 documents, 3 updates" in backup.stdout, backup.stdout


def test_another_programs_postgresql_database_is_refused_and_left_as_it_was(pg_server):
    """As for SQLite files: a PostgreSQL database with tables of its own and no schema_version is refused
    by every command and by serve, and nothing is written into it."""
    name = pg_server.create_database()
    try:
        pg_server.sql("CREATE TABLE t (x int)", db=name)
        url = pg_server.url(name)
        for args in (["docs"], ["migrate"], ["compact", "--keep-history", 5], ["serve", "--port", free_port()]):
            refused(collab(*args, "--db", url), "a database of something else")
        listed = pg_server.sql("SELECT string_agg(table_name, ',') FROM information_schema.tables "
                               "WHERE table_schema = 'public'", db=name)
        assert listed.strip() == "t", listed
    finally:
        pg_server.drop_database(name)


def test_a_postgresql_user_that_may_not_make_tables_is_told_what_to_do(pg_server, tmp_path):
    """Was: a database the user does not own (PostgreSQL 15+ lets only the owner create tables in schema
    public: `createdb collab` as postgres, say) stopped migrate, serve and the commands with asyncpg's
    traceback (found by a newcomer following the README)."""
    name = pg_server.create_database("notowned")
    pg_server.sql(f"ALTER DATABASE {name} OWNER TO postgres")
    pg_server.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", db=name)  # as PostgreSQL 15+ has it
    url = pg_server.url(name)
    try:
        words = "may not create collab's tables in"
        refused(collab("migrate", "--db", url), words)
        refused(collab("serve", "--db", url, "--port", free_port()), words)
        assert "createdb --owner USER DB" in collab("migrate", "--db", url).stderr
        pg_server.sql(f"ALTER DATABASE {name} OWNER TO {USER}")
        assert collab("migrate", "--db", url).returncode == 0  # as the owner, it may
    finally:
        pg_server.drop_database(name)


def test_a_mistyped_option_or_value_is_one_line_naming_the_command(tmp_path):
    """Was: argparse's whole usage (about 45 lines) above the error, for every command."""
    db = tmp_path / "a.db"
    for args, words in ((["compact", "--db", db, "--keep-history", "abc"],
                         "argument --keep-history: invalid int value"),
                        (["compact", "--db", db, "--keep-history", "-3"], "--keep-history must not be negative"),
                        (["backup", "--db", db], "the following arguments are required: FILE"),
                        (["serve", "--db", db, "--secret", "hunter2hunter2"], "--secret must be 16 characters at least"),
                        (["compact", "--db", db, "--history-timeout", "nan"],
                         "--history-timeout must be a finite number"),
                        (["docs", "--db", ""],
                         "--db must be a SQLite file path or a postgresql:// URL (got nothing)"),
                        # Were "collab: error: ... (collab --help lists the options)": `collab --help` lists the
                        # commands, not their options.
                        (["docs", "--db", db, "--bogus"], "unrecognized arguments: --bogus"),
                        (["export", "--db", db, "out", "stray"], "unrecognized arguments: stray"),
                        (["bogus"], "invalid choice: 'bogus'"),
                        # Was "collab serve: error: ...": an option before the command is `collab`'s.
                        (["--bogus", "serve", "--db", db], "unrecognized arguments: --bogus")):
        result = collab(*args)
        who = "collab" if args[0] in ("bogus", "--bogus") else f"collab {args[0]}"
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "usage:" not in result.stderr, result.stderr
        assert words in result.stderr and result.stderr.startswith(f"{who}: error: "), result.stderr
        assert result.stderr.rstrip().endswith(f"({who} --help lists the options)"), result.stderr
    assert not db.exists()


def test_a_url_that_is_not_postgresql_is_refused_not_taken_for_a_file(tmp_path):
    """Was: a mistyped postgresql:// URL (or any other scheme) was taken for a SQLite path: `migrate` made
    folders named after the URL, its password among them, a database inside, printed the URL with the
    password, and exited 0."""
    url = "postgressql://collab:s3cret-pw@127.0.0.1/collab"
    for args in (["migrate", "--db", url], ["docs", "--db", url]):
        result = collab(*args, cwd=tmp_path)
        assert result.returncode == 2 and "a postgressql:// URL is no database collab can use" in result.stderr, \
            result.stderr
        assert "s3cret-pw" not in result.stderr + result.stdout
    source = tmp_path / "a.db"
    assert collab("migrate", "--db", source).returncode == 0
    result = collab("copy", source, "mysql://u:s3cret-pw@h/x", cwd=tmp_path)
    refused(result, "TARGET: 'mysql://u:***@h/x': a mysql:// URL is no database collab can use")
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [], "no folder was made after a URL"


def test_copy_without_target_copies_into_the_database_of_db_or_collab_db_and_else_says_it_is_missing(tmp_path):
    """TARGET may be left out, for --db or COLLAB_DB (deploy.md reads a PostgreSQL URL from cluster.env so
    that its password stays off the command line); left out with neither, it is missing, not ./data/collab.db."""
    source = tmp_path / "a.db"
    assert collab("migrate", "--db", source).returncode == 0
    result = collab("copy", source, cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "COLLAB_DB"})
    assert result.returncode == 2 and "TARGET is missing: name it, or give the database with --db or COLLAB_DB" \
        in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()
    assert collab("copy", source, "--db", tmp_path / "b.db").returncode == 0 and (tmp_path / "b.db").is_file()
    result = collab("copy", source, env=dict(os.environ, COLLAB_DB=str(tmp_path / "c.db")))
    assert result.returncode == 0 and (tmp_path / "c.db").is_file(), result.stderr
    result = collab("copy", source, cwd=tmp_path, env=dict(os.environ, COLLAB_DB=""))  # set, to nothing
    assert result.returncode == 2 and "COLLAB_DB must be a SQLite file path or a postgresql:// URL (got nothing)" \
        in result.stderr, result.stderr


@pytest.mark.parametrize("url", ["postgresql:/collab:s3cret-pw@127.0.0.1:5432/collab",  # one slash missing
                                 "Postgres:collab:s3cret-pw@127.0.0.1/collab",
                                 "postgresql//collab:s3cret-pw@127.0.0.1/collab",
                                 " postgresql://collab:s3cret-pw@127.0.0.1/collab",  # :// not at the start
                                 "./postgresql://collab:s3cret-pw@127.0.0.1/collab"])
def test_a_mistyped_postgresql_url_is_refused_not_served_as_a_sqlite_file(tmp_path, url):
    """Was: `collab serve --db postgresql:/collab:secret@...` (a slash missing: no scheme collab knew) made a
    folder `./postgresql:/collab:secret@...` and served a SQLite database in it (found by an operator's
    audit). The refusal names the value, its password masked."""
    for args in (["serve", "--port", free_port()], ["migrate"], ["docs"]):
        result = collab(*args, "--db", url, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--db " + repr(url.replace("s3cret-pw", "***")) in result.stderr, result.stderr
        assert "s3cret-pw" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == [], "nothing was made after the URL"


def documents_in(db) -> list[str]:
    result = collab("docs", "--db", db)
    assert result.returncode == 0, result.stderr
    return sorted(line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip())


def test_backup_force_refuses_a_served_file_and_leaves_no_old_journal_behind(tmp_path):
    """Was: `backup --force` onto a file a server was serving said it worked, and that server went on
    writing into the replaced file; onto one whose server had crashed, its write-ahead log stayed beside
    the new file and SQLite read it into the copy."""
    source, dest = tmp_path / "source.db", tmp_path / "dest.db"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "from-source.txt").write_text("the backup's text")
    assert collab("import", tmp_path / "in", "--db", source).returncode == 0
    (tmp_path / "in" / "from-source.txt").unlink()
    (tmp_path / "in" / "old-dest.txt").write_text("the replaced file's text " * 200)
    server = ServerProcess(dest, log_path=tmp_path / "server.log").start()
    try:
        assert collab("import", tmp_path / "in", "--db", dest).returncode == 0  # committed to the server's WAL
        refused(collab("backup", dest, "--force", "--db", source), f"a collab server is serving {dest}")
    finally:
        server.kill()  # a crash: its write-ahead log stays
    assert (tmp_path / "dest.db-wal").stat().st_size > 0
    result = collab("backup", dest, "--force", "--db", source)
    assert result.returncode == 0, result.stderr
    assert documents_in(dest) == ["from-source"] and documents_in(source) == ["from-source"]


def test_copy_names_the_side_it_cannot_use_and_says_a_stopped_copy_left_part_of_itself(tmp_path, monkeypatch):
    """Was: a target it could not open was reported as the default --db (./data/collab.db), and a copy that
    stopped part way (a full disk) left a target that looked whole, with no word of it."""
    from collab import admin
    from collab.settings import Settings
    from collab.storage import StorageUnavailable

    source = tmp_path / "source.db"
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "in" / f"{name}.txt").write_text(name * 10)
    assert collab("import", tmp_path / "in", "--db", source).returncode == 0
    (tmp_path / "file").write_text("x")
    refused(collab("copy", source, tmp_path / "file" / "cp.db"), f"cannot use TARGET {tmp_path / 'file' / 'cp.db'}")

    calls = []

    async def full_after_one(self, doc_id, table, rows):
        calls.append(table)
        if len(calls) > 1:
            raise StorageUnavailable("the SQLite database cannot be used right now (committing): database or "
                                     "disk is full (SQLITE_FULL)")
        return await original(self, doc_id, table, rows)

    from collab.store import Store
    original = Store.add_rows
    monkeypatch.setattr(Store, "add_rows", full_after_one)
    with pytest.raises(admin.AdminError, match="the copy stopped: .*disk is full.* now holds part of the copy: "
                                               "empty it"):
        admin.copy(Settings(), str(source), str(tmp_path / "cp.db"))
    assert calls == ["updates", "updates"], "one document's rows went in, the next one's failed"


# ---------------------------------------------------------------- a full disk, an empty file, lengths

SMALL_DISK = 256 << 10  # bytes of the file system `full_disk` mounts: less than `big_source` takes


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a file system of its own of SMALL_DISK bytes (a tmpfs), where what is larger cannot be
    written: ENOSPC, "No space left on device", as on a full disk. Mounting needs root, as the tests run
    (in CI too); a test that cannot mount it fails, it is never skipped."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs to stand for a full disk (the tests run as root): "
                    f"{mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        # A process of the test still in there (a server it left) keeps the mount busy: it is detached
        # then, and goes once that process does; never left mounted.
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=True)


def big_source(tmp_path):
    """A collab database (SQLite) of about 700 KB, well over SMALL_DISK: 20 documents of 30,000 letters."""
    rng = random.Random(7)
    src, db = tmp_path / "big-in", tmp_path / "big.db"
    src.mkdir()
    for k in range(20):
        (src / f"doc{k}.txt").write_text("".join(rng.choice(string.ascii_letters) for _ in range(30_000)))
    assert collab("import", src, "--db", db).returncode == 0
    assert db.stat().st_size > 2 * SMALL_DISK
    return db


def listing(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else "a folder" for p in sorted(folder.iterdir())}


def test_a_backup_onto_a_full_disk_names_the_file_it_could_not_write_once_and_leaves_what_was_there(
        tmp_path, full_disk):
    """Was: two lines (the store's warning, then the error), both blaming the source database ("the
    SQLite database big.db cannot be used right now (reading): database or disk is full")."""
    source = big_source(tmp_path)
    dest = full_disk / "b.db"
    refused(collab("backup", dest, "--db", source), f"cannot write the backup file {dest}: No space left on device")
    assert listing(full_disk) == {}, "no partial backup file, nothing written aside"
    # --force onto a backup that is there: it stays, whole, when the new one cannot be written.
    (tmp_path / "small-in").mkdir()
    (tmp_path / "small-in" / "small.txt").write_text("a small database")
    assert collab("import", tmp_path / "small-in", "--db", tmp_path / "small.db").returncode == 0
    assert collab("backup", dest, "--db", tmp_path / "small.db").returncode == 0
    before = listing(full_disk)
    refused(collab("backup", dest, "--force", "--db", source),
            f"cannot write the backup file {dest}: No space left on device")
    assert listing(full_disk) == before and documents_in(dest) == ["small"]
    assert len(documents_in(source)) == 20


def test_a_postgresql_backup_onto_a_full_disk_names_the_file_it_could_not_write_once(pg_server, tmp_path,
                                                                                       full_disk):
    """The same from PostgreSQL, whose backup writes the SQLite file through a SQLite store (was: that
    store's warning, then the error naming the file written aside, '.b.db.tmp-PID')."""
    name = pg_server.create_database()
    try:
        url = pg_server.url(name)
        assert collab("copy", big_source(tmp_path), url).returncode == 0
        dest = full_disk / "b.db"
        refused(collab("backup", dest, "--db", url), f"cannot write the backup file {dest}: No space left on device")
        assert listing(full_disk) == {}
    finally:
        pg_server.drop_database(name)


def test_a_postgresql_backup_whose_connection_is_lost_blames_the_database_in_one_line(pg_server, tmp_path,
                                                                                        monkeypatch):
    """The server ends the backup's connection part way (pg_terminate_backend: a restart, an admin, a
    timeout alike). Was: a traceback (asyncpg's InterfaceError leaving the transaction), or, for a timeout
    or a reset, "cannot write the backup file" blaming the file. Now the database is named, once, and no
    file is left."""
    from collab import admin, store_pg
    from collab.settings import Settings

    name = pg_server.create_database()
    try:
        url = pg_server.url(name)
        (tmp_path / "in").mkdir()
        for doc in ("a", "b", "c"):
            (tmp_path / "in" / f"{doc}.txt").write_text(doc * 10)
        assert collab("import", tmp_path / "in", "--db", url).returncode == 0
        original, ended = store_pg._PgView.rows, []

        async def terminated_once(self, *args, **kwargs):
            if not ended:
                ended.append(pg_server.sql(f"SELECT pg_terminate_backend({self.conn.get_server_pid()})", db=name).strip())
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(store_pg._PgView, "rows", terminated_once)
        dest = tmp_path / "b.db"
        with pytest.raises(admin.AdminError, match=f"backup of .*/{name} failed: the PostgreSQL database .* is "
                                                   "unavailable \\(reading\\)") as refused_:
            admin.backup(Settings(db=url), str(dest))
        assert ended == ["t"], ended
        assert "backup file" not in str(refused_.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], "no backup file, nothing written aside"
    finally:
        pg_server.drop_database(name)


def test_a_copy_onto_a_full_disk_says_so_once(tmp_path, full_disk):
    """Was: the store's warning ("the SQLite database ... cannot be used right now (committing)"), then the
    error saying the same."""
    refused(collab("copy", big_source(tmp_path), full_disk / "copy.db"),
            f"the copy stopped: the SQLite database {full_disk / 'copy.db'} cannot be used right now")


def test_an_export_onto_a_full_disk_takes_back_what_it_wrote(tmp_path, full_disk):
    """Was: the files written before the disk filled stayed, and so did the folder it had made."""
    source = big_source(tmp_path)
    out = full_disk / "made" / "here"
    refused(collab("export", out, "--db", source), f"cannot write to {out}: No space left on device")
    assert listing(full_disk) == {}, "neither the files written nor the folders made stay"
    there = full_disk / "there"  # a folder of an earlier export: left exactly as it was
    there.mkdir()
    (there / "doc3.txt").write_text("an earlier export of doc3")
    (there / "notes.md").write_text("not an export")
    refused(collab("export", there, "--db", source), f"cannot write to {there}: No space left on device")
    assert listing(there) == {"doc3.txt": b"an earlier export of doc3", "notes.md": b"not an export"}


def test_an_export_takes_back_only_the_folders_it_made_and_refuses_a_folder_in_a_files_place(tmp_path,
                                                                                              full_disk):
    """Was: a folder that was there, named through one the export made (`new/../there`), was removed with
    it when the disk filled; and a folder where a document's file goes (doc2.txt/) was found only when the
    files were renamed, after earlier ones had replaced the files that were there."""
    source = big_source(tmp_path)
    (full_disk / "there").mkdir()
    out = full_disk / "new" / ".." / "there"
    refused(collab("export", out, "--db", source), f"cannot write to {out}: No space left on device")
    assert listing(full_disk) == {"there": "a folder"}, "the folder that was there stays, the one made goes"
    small = tmp_path / "small"
    small.mkdir()
    (small / "doc1.txt").write_text("an earlier export of doc1")
    (small / "doc2.txt").mkdir()
    refused(collab("export", small, "--db", source), f"cannot write {small / 'doc2.txt'}: a folder of that name is there")
    assert listing(small) == {"doc1.txt": b"an earlier export of doc1", "doc2.txt": "a folder"}


def test_an_export_checks_the_database_before_it_makes_its_folder(tmp_path):
    """Was: DIR was made, then the database was found to be one a newer collab migrated."""
    db = tmp_path / "newer.db"
    assert collab("migrate", "--db", db).returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version(version, name, applied) VALUES (99, '099_future', 0)")
    conn.commit()
    conn.close()
    refused(collab("export", tmp_path / "out", "--db", db), "newer than this collab knows")
    assert not (tmp_path / "out").exists()


def test_an_empty_file_is_no_database_to_list_export_back_up_compact_or_copy(tmp_path):
    """Was: `docs` (and export, backup, compact, copy's SOURCE) turned an empty file into a collab
    database (ran the migrations on it) and listed no documents."""
    empty = tmp_path / "empty.db"
    empty.touch()
    for args in (["docs"], ["export", tmp_path / "out"], ["backup", tmp_path / "b.db"],
                 ["compact", "--keep-history", 5]):
        refused(collab(*args, "--db", empty), f"{empty} is empty")
    refused(collab("copy", empty, tmp_path / "copy.db"), f"{empty} is empty, not a collab database (check SOURCE")
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    # Import makes a database, and so does copy in its TARGET: an empty file is where they may.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "doc.txt").write_text("text")
    assert collab("import", tmp_path / "in", "--db", empty).returncode == 0 and documents_in(empty) == ["doc"]
    target = tmp_path / "target.db"
    target.touch()
    assert collab("copy", empty, target).returncode == 0 and documents_in(target) == ["doc"]


def test_an_empty_postgresql_database_is_no_database_to_list(pg_server):
    """As an empty file: a database with no tables (made by createdb, never migrated) is left as it was."""
    name = pg_server.create_database()
    try:
        url = pg_server.url(name)
        for args in (["docs"], ["export", "/nonexistent/collab-export-test"]):
            refused(collab(*args, "--db", url), f"/{name} is empty, not a collab database")
        listed = pg_server.sql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                               db=name)
        assert listed.strip() == "0", listed
    finally:
        pg_server.drop_database(name)


def test_export_counts_lengths_in_utf16_units_as_docs_lists_them(tmp_path):
    """Was: export counted code points ("2 characters" for an emoji and a letter), docs UTF-16 units (3),
    and import called UTF-16 units characters."""
    db = tmp_path / "a.db"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "emoji.txt").write_text("\N{GRINNING FACE}a")
    assert collab("import", tmp_path / "in", "--db", db).returncode == 0
    listed = collab("docs", "--db", db).stdout.splitlines()
    assert listed[1].split()[:3] == ["emoji", "1", "3"], listed
    exported = collab("export", tmp_path / "out", "--db", db)
    assert exported.returncode == 0 and "exported 1 documents (3 UTF-16 units of text)" in exported.stdout, \
        exported.stdout
    # import's --max-doc counts the same units, and says so (was: "3 characters is more than --max-doc 2").
    refused_import = collab("import", tmp_path / "in", "--db", tmp_path / "b.db", "--max-doc", 2)
    assert refused_import.returncode == 1, refused_import
    assert "refused emoji.txt: 3 UTF-16 units of text is more than --max-doc 2" in refused_import.stderr, \
        refused_import.stderr


def test_admin_commands_on_a_sqlite_file_ignore_a_clusters_redis_setting(tmp_path):
    """Was: with the cluster's environment loaded (COLLAB_DB and COLLAB_REDIS, as docs/deploy.md has operators
    run admin commands), `collab docs --db backup.db` said "--redis is for several processes on one PostgreSQL
    database" and did nothing: only `serve` uses Redis. `serve` itself still refuses, naming the variable."""
    env = {**os.environ, "COLLAB_DB": "postgresql://collab:s3cret-pw@127.0.0.1:1/collab",
           "COLLAB_REDIS": "redis://127.0.0.1:1/0"}
    db = tmp_path / "backup.db"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "doc.txt").write_text("text")
    for args in (["migrate"], ["import", tmp_path / "in"], ["docs"], ["export", tmp_path / "out"],
                 ["backup", tmp_path / "b.db"], ["compact", "--keep-history", 5], ["copy", db, tmp_path / "c.db"],
                 ["docs", "--redis", "redis://127.0.0.1:1/0"]):
        args = args if args[0] == "copy" else [*args, "--db", db]
        result = collab(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    assert (tmp_path / "out" / "doc.txt").read_text() == "text"
    result = collab("serve", "--port", free_port(), "--db", db, env=env)
    assert result.returncode == 2 and "COLLAB_REDIS is for several processes" in result.stderr, result.stderr
