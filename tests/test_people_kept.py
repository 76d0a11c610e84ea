"""The names and colours of people whose updates compaction dropped (the `people` table), on both backends.

/authors names the author of each range of text by person id and maps each id
to the name and colour of that person's latest update (`store.people`). Was:
that mapping was read from the update rows alone, so once `collab compact`
dropped a person's updates, the text they wrote showed their raw person id.
Compaction now keeps each dropped person's latest name and colour; a later
stored update, or a later compaction's, still wins; a copy or backup carries
them and `verify` checks them; deleting the document deletes them.
"""

from __future__ import annotations

from collab import transfer
from collab.changes import utf16_len
from collab.storage import store_at
from conftest import BOTH_BACKENDS
from storeutil import commit, random_edits, raw_sql
from test_pg_copy import run_with, verify_again

# (first version, last version, person, name, colour) of each run of updates; None: made without a person id
RUNS = [(1, 6, "ann-1", "Ann", "#aa0000"), (7, 9, None, "guest", None), (10, 13, "ann-1", "Annie", "#aa1111"),
        (14, 22, "bob-2", "Bob", "#0000bb"), (23, 30, "cy-3", "Cy", None), (31, 33, "bob-2", "Robert", "#0000cc")]


async def with_people(store, name: str = "doc", n: int = 33):
    """A document of `n` updates made by RUNS' people, a commit of three at a time; (id, texts by version)."""
    doc = await store.create_document(name)
    edits = random_edits(n, seed=5)
    for entry, _ in edits:
        first, last, person, author, color = next(run for run in RUNS if run[0] <= entry.version <= run[1])
        entry.person, entry.author, entry.color = person, author, color
    for k in range(0, n, 3):
        batch = edits[k:k + 3]
        await commit(store, doc, [e for e, _ in batch], utf16_len(batch[-1][1]))
    return doc, {e.version: text for e, text in edits}


def compact(store, doc: int, texts: dict, boundary: int, chunk: int):
    store.COMPACT_CHUNK = chunk  # several delete transactions, oldest first
    return store.compact(doc, boundary, texts[boundary], None)


EVERYONE = {"ann-1": {"name": "Annie", "color": "#aa1111"}, "bob-2": {"name": "Robert", "color": "#0000cc"},
            "cy-3": {"name": "Cy", "color": None}}


@BOTH_BACKENDS
async def test_compaction_keeps_the_latest_name_and_colour_of_everyone_whose_updates_it_drops(db, backend, request):
    store = await store_at(db).open()
    try:
        doc, texts = await with_people(store)
        assert await store.people(doc) == EVERYONE
        # Ann's name changed at 10, in the third chunk of four: her first name must not come back.
        assert await compact(store, doc, texts, 13, chunk=4) == 13
        assert await store.people(doc) == EVERYONE, "Ann's updates are all gone, her latest name stays"
        # Bob's latest update (33) is still stored; his older name, dropped now, does not win over it.
        assert await compact(store, doc, texts, 25, chunk=5) == 12
        assert await store.people(doc) == EVERYONE
        # Everything dropped: every name comes from what compaction kept.
        assert await compact(store, doc, texts, 33, chunk=100) == 8
        assert await store.people(doc) == EVERYONE
        # A later update wins over a kept name, and the compaction after it keeps that one.
        later, texts[34] = random_edits(34, seed=5)[-1]  # the same edits: this one follows the 33 above
        later.person, later.author, later.color = "ann-1", "Ann B.", "#abcdef"
        await commit(store, doc, [later], utf16_len(texts[34]))
        assert (await store.people(doc))["ann-1"] == {"name": "Ann B.", "color": "#abcdef"}
        assert await compact(store, doc, texts, 34, chunk=100) == 1
        assert await store.people(doc) == dict(EVERYONE, **{"ann-1": {"name": "Ann B.", "color": "#abcdef"}})
        other, _ = await with_people(store, "other", n=6)
        assert await store.people(other) == {"ann-1": {"name": "Ann", "color": "#aa0000"}}, "per document"
        await store.delete_document(doc)
    finally:
        await store.close()
    pg = request.getfixturevalue("pg_server") if backend == "postgres" else None
    assert raw_sql(db, f"SELECT count(*) FROM people WHERE doc_id = {doc}", pg).strip() == "0", \
        "deleting the document deletes its kept names"


@BOTH_BACKENDS
def test_a_copy_carries_the_kept_names_and_its_check_compares_them(db, make_db, backend, pg_server):
    target = make_db("copy")

    async def build(store) -> None:
        doc, texts = await with_people(store)
        await compact(store, doc, texts, 20, chunk=100)

    async def copy(src) -> tuple[list, list[str], dict, dict, dict]:
        dst = await store_at(target).open()
        try:
            async with src.view() as view:
                copied = await transfer.copy_view(view, dst)
            # The server goes on on the source (allowed): someone new types, Ann takes another name. The
            # copy is of the moment before, and the check compares the names as of the copied version.
            later = random_edits(35, seed=5)[-2:]
            later[0][0].person, later[0][0].author, later[1][0].person, later[1][0].author = \
                "dee-4", "Dee", "ann-1", "Ann C."
            await commit(src, copied[0].source_id, [e for e, _ in later], utf16_len(later[-1][1]))
            problems = (await transfer.verify(src, dst, copied))[0]
            source_id = copied[0].source_id
            return (copied, problems, await src.people(source_id, 33), await dst.people(copied[0].target_id),
                    await src.people(source_id))
        finally:
            await dst.close()

    run_with(db, build)
    copied, problems, theirs, ours, now = run_with(db, copy)
    assert now == dict(EVERYONE, **{"ann-1": {"name": "Ann C.", "color": None},
                                    "dee-4": {"name": "Dee", "color": None}}), "the source went on"
    assert problems == [] and theirs == ours == EVERYONE, "the source's names as of the copied version"
    assert copied[0].rows["people"] == 2, "Ann and Bob were dropped; Bob and Cy are still stored"
    raw_sql(target, f"UPDATE people SET name = 'someone' WHERE doc_id = {copied[0].target_id} "
                    "AND person = 'ann-1'", pg_server if backend == "postgres" else None)
    assert verify_again(db, target, copied) == ["doc: the names and colours of its authors differ"]
