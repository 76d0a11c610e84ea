"""Admin commands rebuild texts in the history workers, within the --history-* budgets they are given.

Since a version's text is replayed in a worker process (compute.text_at),
`collab export`, `collab import` (its check of each new document) and the
check `collab copy` runs afterwards go through the pool's budgets like the
server's requests. They took none of the --history-* options (15 s and 2 GB
whatever was given), a refusal ended export with a traceback, and in copy's
check a refusal on both sides read as the same "unreadable" text: a version
that nothing compared counted as checked. Now the options apply, export says
which document and what gives more in one line, copy's check counts an
uncompared version as a problem, and import checks what it made without
rebuilding it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from collab.changes import ChangeSet
from collab.rebase import Update
from collab.sequencer import Accepted
from collab.storage import store_at
from serverproc import ROOT
from storeutil import commit, raw_sql

LINE = "a line of text that makes the update log grow by a hundred bytes or so at every step\n"
UPDATES = 200  # about 20 KB of update JSON after the snapshot: more than a thread rebuilds (compute.py)


def collab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collab", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def build(path: str) -> str:
    """A database with one document, "long", of UPDATES lines each added by an update of its own and no
    snapshot after the empty start; its text."""
    async def go() -> str:
        store = await store_at(path, snapshot_every=1_000_000).open()
        try:
            doc = await store.create_document("long")
            text = ""
            for v in range(1, UPDATES + 1):
                changes = ChangeSet.from_json([len(text), [0, LINE.rstrip("\n"), ""]] if text
                                              else [[0, LINE.rstrip("\n"), ""]])
                entry = Accepted(v, Update(f"c{v % 3}", changes), "ann", 1000.0 + v)
                text += LINE
                await commit(store, doc, [entry], len(text))
            return text
        finally:
            await store.close()

    return asyncio.run(go())


def test_export_takes_the_history_budgets_and_says_a_refusal_in_one_line(tmp_path):
    db, out = str(tmp_path / "collab.db"), tmp_path / "out"
    text = build(db)
    refused = collab("export", "--db", db, "--history-timeout", "0.001", out)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collab export: error: long: its text at version "
                                                   f"{UPDATES} could not be rebuilt"), lines
    assert "--history-timeout" in lines[0], lines
    assert not any(out.iterdir()) if out.exists() else True  # nothing written, not even aside
    done = collab("export", "--db", db, out)
    assert done.returncode == 0, done.stderr
    assert (out / "long.txt").read_text() == text


def test_the_copy_check_counts_a_version_it_could_not_rebuild_as_a_problem(tmp_path):
    source, target = str(tmp_path / "source.db"), str(tmp_path / "target.db")
    build(source)
    refused = collab("copy", source, target, "--history-timeout", "0.001")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr, refused.stderr
    assert f"copy check: long: version {UPDATES} could not be read back to compare" in refused.stderr, \
        refused.stderr
    assert "do not switch to it" in refused.stderr, refused.stderr
    again = str(tmp_path / "again.db")
    checked = collab("copy", source, again)
    assert checked.returncode == 0, checked.stderr
    assert "checked: every version and current text equal" in checked.stdout, checked.stdout


def test_import_checks_what_it_made_without_rebuilding_it(tmp_path):
    """Was: import checked each new document by rebuilding its text, in the history workers; a refusal (a
    file over 8 KB and a short --history-timeout) stopped the import after making that document, said
    nothing of those made before, and the next run refused them all as existing. The check reads the
    document's one update instead: nothing there can be refused."""
    db, src, out = str(tmp_path / "collab.db"), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    texts = {name: LINE * (UPDATES + k) for k, name in enumerate(("a", "b", "c"))}
    for name, text in texts.items():
        (src / f"{name}.txt").write_text(text)
    done = collab("import", "--db", db, "--history-timeout", "0.001", src)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "imported 3 documents" in done.stdout, done.stdout
    assert collab("export", "--db", db, out).returncode == 0
    assert {p.stem: p.read_text() for p in out.iterdir()} == texts
    again = collab("import", "--db", db, src)  # a clash is still told from one's own import
    assert again.returncode == 1 and again.stderr.count("exists already") == 3, again.stderr


def test_compact_of_a_damaged_log_says_so_not_to_run_again(tmp_path):
    """A log that does not replay (compute.Unreplayable) is no passing failure: compact said "run the
    command again later", which would fail the same way."""
    db = str(tmp_path / "collab.db")
    build(db)
    raw_sql(db, "UPDATE updates SET changes = '[5,[0,\"y\"]]' WHERE version = 7")
    refused = collab("compact", "--db", db, "--keep-history", "10")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr, refused.stderr
    assert "long: version" in refused.stderr and "the database is damaged" in refused.stderr, refused.stderr
    assert "again later" not in refused.stderr, refused.stderr
    assert "nothing of it was compacted" in refused.stderr, refused.stderr
