"""collab serve with its durable commit left out: what the commit costs, for benchmarks only.

NOT a server to run. It is `python -m collab serve` with one change made
before it starts: every group of updates that would commit on the event loop
(store.Store._commit_inline: the commit each docs20x5 or typing10 edit gets,
with `--sync normal`), and every larger one too, is answered as committed
without a statement run, so every edit is acknowledged and broadcast exactly
as usual but nothing of it is written (snapshots neither). Queued writes
(creating a document, say) are made as usual. Only SQLite; a document's
stored version stays behind what the room serves, so the database is useless
afterwards (the benchmark deletes it).

    bench/load.py compare-reference --only docs20x5 --without-commit

runs it as one more column beside collab and the reference: collab minus
this column is what the durable commit costs per edit in the same run.

    .venv/bin/python bench/no_commit.py serve --db /tmp/x.db --port PORT [collab serve's options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's collab

from collab import store  # noqa: E402
from collab.cli import main  # noqa: E402


def _not_written(self, batch: list, taken: list, work: list) -> list | None:
    """Store._commit_inline without the commit: the same outcomes as a successful one, nothing written
    (a group with queued writes goes to the writer thread, as usual)."""
    if batch:
        return None
    return [(True, None)] * len(work)


if __name__ == "__main__":
    store.Store._commit_inline = _not_written
    sys.argv[0] = "collab"
    main()
