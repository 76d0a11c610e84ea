"""The sequencer's decisions, without an event loop: ordering, rebase, dedup, atomicity, durability."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.changes import ChangeSet
from collab.errors import ChangeError, ProtocolError
from collab.rebase import Update
from collab.sequencer import MAP_BUDGET, History, NeedHistory, Sequencer, weight


def U(client, changes):
    return Update(client, ChangeSet.from_json(changes))


def texts(seq):
    return str(seq.text), seq.committed_text()


def test_versions_are_contiguous_and_rebased():
    s = Sequencer("hello", 10)
    a = s.push("A", 10, [U("A", [5, [0, " world"]])], "ann", 1.0)
    b = s.push("B", 10, [U("B", [[0, "Oh, "], 5])], "bob", 2.0)
    assert [e.version for e in a + b] == [11, 12]
    assert b[0].update.changes.to_json() == [[0, "Oh, "], 11]
    assert str(s.text) == "Oh, hello world"
    assert (a[0].author, b[0].time) == ("ann", 2.0)


def test_concurrent_inserts_at_one_position_order_like_codemirror():
    # The later push goes after the earlier one at the same position
    # (mapped with before=False over the accepted change).
    s = Sequencer("ab", 0)
    s.push("A", 0, [U("A", [1, [0, "X"], 1])], "", 0)
    s.push("B", 0, [U("B", [1, [0, "Y"], 1])], "", 0)
    assert str(s.text) == "aXYb"


def test_repushed_updates_are_not_applied_twice():
    s = Sequencer("", 0)
    s.push("A", 0, [U("A", [[0, "one"]])], "", 0)
    s.push("B", 0, [U("B", [[0, "two "]])], "", 0)
    # A lost its ack and pushes again from version 0, plus a new update.
    s.push("A", 0, [U("A", [[0, "one"]]), U("A", [3, [0, "!"]])], "", 0)
    # B's concurrent insert at 0 went after A's; A's "!" (at the end of its
    # "one") is mapped over B's insertion at that same point and goes after it.
    assert str(s.text) == "onetwo !"
    assert s.version == 3


def test_refusals_leave_everything_unchanged():
    s = Sequencer("abc", 1)
    before = (str(s.text), s.version, list(s.log), list(s.pending))
    cases = [
        ("A", 5, [U("A", [3, [0, "x"]])], "bad-version"),
        ("A", 1, [U("B", [3, [0, "x"]])], "bad-message"),
        ("A", 1, [U("A", [4, [0, "x"]])], "bad-changes"),
        ("A", 1, [U("A", [3, [0, "x"]]), U("A", [3, [0, "y"]])], "bad-changes"),
        ("A", 1, [U("A", [3, [0, "😀"]]), U("A", [4, [0, "y"], 1])], "bad-changes"),  # cuts the emoji
        ("A", "1", [U("A", [3, [0, "x"]])], "bad-message"),
    ]
    for client, version, updates, code in cases:
        with pytest.raises(ProtocolError) as err:
            s.push(client, version, updates, "", 0)
        assert err.value.code == code, (updates, err.value)
        assert (str(s.text), s.version, list(s.log), list(s.pending)) == before


def test_document_size_limit():
    s = Sequencer("abc", 0, max_length=5)
    s.push("A", 0, [U("A", [3, [0, "de"]])], "", 0)
    with pytest.raises(ProtocolError) as err:
        s.push("A", 1, [U("A", [5, [0, "f"]])], "", 0)
    assert err.value.code == "too-large"
    s.push("A", 1, [U("A", [[1], 4])], "", 0)  # shrinking is always fine
    assert str(s.text) == "bcde"


def test_committed_text_hides_what_is_not_durable():
    s = Sequencer("abc", 0)
    s.push("A", 0, [U("A", [3, [0, "d"]])], "", 0)
    batch = s.take_pending()
    s.push("A", 1, [U("A", [[1], 3])], "", 0)
    assert texts(s) == ("bcd", "abc")
    s.committed(batch[-1].version)
    assert texts(s) == ("bcd", "abcd")
    assert [e.version for e in s.take_pending()] == [2]
    s.committed(2)
    assert texts(s) == ("bcd", "bcd") and s.committed_version == 2 and not s.pending


def test_log_is_trimmed_and_older_versions_need_history():
    s = Sequencer("", 0, keep=3)
    history = []
    for k in range(6):
        e = s.push("A", k, [U("A", [k, [0, "x"]])], "", 0)
        history += [x.update for x in e]
        s.take_pending()
        s.committed(k + 1)
    assert (s.log_from, len(s.log)) == (3, 3)
    with pytest.raises(NeedHistory) as need:
        s.push("B", 1, [U("B", [[0, "y"], 1])], "", 0)
    assert (need.value.since, need.value.until) == (1, 3)
    s.push("B", 1, [U("B", [[0, "y"], 1])], "", 0, history=History(1, history[1:3], []))
    assert str(s.text) == "yxxxxxx"
    assert s.updates_since(4) == history[4:]


def test_the_log_keeps_a_bounded_weight_of_changes_too():
    """Was: only `keep` updates bounded the log, each up to a frame's size: a client inserting and deleting
    a large text over and over kept about `keep` x maxFrame of it in memory, whatever the document's length."""
    s = Sequencer("", 0, keep=1000, keep_bytes=10_000)
    history = []
    for k in range(20):  # 3,000 characters in, then out again
        big = s.push("A", 2 * k, [U("A", [[0, "x" * 3000]])], "", 0)
        gone = s.push("A", 2 * k + 1, [U("A", [[3000]])], "", 0)
        history += [x.update for x in big + gone]
        s.take_pending()
        s.committed(2 * k + 2)
        assert s.log_bytes == sum(map(weight, s.log)) <= 10_000
    assert s.log_from > 30 and s.log_bytes > 6000  # what fits stays
    with pytest.raises(NeedHistory):
        s.push("B", 1, [U("B", [[0, "y"], 3000])], "", 0)
    s.push("B", 1, [U("B", [[0, "y"], 3000])], "", 0, history=History(1, history[1:s.log_from], []))
    assert str(s.text) == "y"
    loaded = Sequencer("", 40, history, keep=1000, keep_bytes=10_000)  # a loaded log is held to it as well
    assert loaded.log_from == s.log_from and loaded.log_bytes <= 10_000
    s.push("A", 40, [U("A", [[0, "z" * 20_000]])], "", 0)  # one update over the budget alone
    assert s.log_bytes > 10_000  # kept while it is not durable
    s.take_pending()
    s.committed(42)
    assert (s.log, s.log_from, s.log_bytes) == ([], 42, 0)


def test_uncommitted_entries_are_never_trimmed():
    s = Sequencer("", 0, keep=1)
    for k in range(4):
        s.push("A", k, [U("A", [k, [0, "x"]])], "", 0)
    s.committed(0)
    assert len(s.log) == 4  # nothing durable yet: all stay
    s.take_pending()
    s.committed(2)
    assert (s.log_from, len(s.log)) == (2, 2)


def test_presence_ranges_follow_the_text():
    s = Sequencer("hello world", 0)
    s.push("A", 0, [U("A", [[0, ">> "], 11])], "", 0)
    s.push("A", 1, [U("A", [[3], 11])], "", 0)
    s.push("B", 1, [U("B", [[0, "## "], 14])], "", 0)  # rebased over A's first update
    # A cursor at 5 and a selection 6..11 ("world") at version 0:
    assert s.map_ranges([(5, 5), (6, 11), (11, 6)], 0, 3) == [(8, 8), (9, 14), (14, 9)]
    s.take_pending()
    s.committed(3)
    assert s.map_ranges([(0, 0)], 3, 3) == [(0, 0)]


def test_a_selection_too_costly_to_map_counts_as_too_old():
    """Was: a presence at an old version was mapped over every change since then, range by range and
    section by section, on the event loop: 100 ranges behind one change of 100,000 sections stalled the
    process 0.85 s per frame (view links may send presence)."""
    n = 10_000
    s = Sequencer("x" * n, 0)
    s.push("A", 0, [U("A", [x for _ in range(n) for x in (1, [0, "a"])])], "", 0)  # "xaxa...": 40,000 numbers
    s.push("A", 1, [U("A", [[0, "b"], 2 * n])], "", 0)  # "b" in front: 4 numbers
    assert s.map_ranges([(3, 3)], 0, 2) == [(6, 6)]  # 1 x 40,004: within the budget ("xaxa|" after "b")
    assert s.map_ranges([(3, 3), (5, 6)], 0, 2) is None  # 2 x 40,004: over it
    assert s.map_ranges([(3, 3), (5, 6)], 1, 2) == [(4, 4), (6, 7)]  # over the small change alone: mapped
    assert MAP_BUDGET == 50_000  # what docs/protocol.md says
    # What each of those takes (a presence tick adds them up, and stops near the budget):
    assert [s.map_cost(1, 0, 2), s.map_cost(2, 0, 2), s.map_cost(2, 1, 2), s.map_cost(5, 2, 2)] == [40_004, 0, 8, 0]


def test_a_document_over_a_lowered_limit_can_still_shrink():
    """--max-doc lowered below a document's size: deletions go through, growth does not."""
    seq = Sequencer("x" * 10, 3, max_length=5)
    accepted = seq.push("c", 3, [Update("c", ChangeSet.from_json([[4], 6]))], "a", 0.0)
    assert [e.version for e in accepted] == [4] and seq.text.length == 6
    with pytest.raises(ProtocolError) as err:
        seq.push("c", 4, [Update("c", ChangeSet.from_json([[1, "yy"], 5]))], "a", 0.0)
    assert err.value.code == "too-large"
    seq.push("c", 4, [Update("c", ChangeSet.from_json([[2, "y"], 4]))], "a", 0.0)  # 6 -> 5: fine
    assert str(seq.text) == "yxxxx"


def commit(s):
    """The store writes everything pending as one batch; it is broadcast as one frame."""
    batch = s.take_pending()
    s.committed(batch[-1].version)


def test_each_commit_is_one_frame_and_a_resume_is_cut_the_same_way():
    s = Sequencer("", 0)
    s.push("A", 0, [U("A", [[0, "a"]])], "", 0)
    commit(s)                                                   # frame v0..v1
    s.push("B", 1, [U("B", [1, [0, "b"]])], "", 0)
    s.push("C", 2, [U("C", [2, [0, "c"]]), U("C", [3, [0, "d"]])], "", 0)
    commit(s)                                                   # frame v1..v4
    s.push("A", 4, [U("A", [4, [0, "e"]])], "", 0)              # pending: not sent, not in a resume
    assert s.frame_ends == [0, 1, 4]
    log = s.log
    assert s.frames_since(0) == [(0, log[0:1]), (1, log[1:4])]
    assert s.frames_since(1) == [(1, log[1:4])]
    assert s.frames_since(2) == [(2, log[2:4])]                 # not a frame end: the rest of that frame
    assert s.frames_since(4) == []
    commit(s)
    assert s.frames_since(0, 5) == [(0, log[0:1]), (1, log[1:4]), (4, log[4:5])]


def test_a_push_is_rebased_along_the_frames_every_connection_is_sent():
    """C's push missed two frames: it is moved over them one by one, as C's client will be.

    Over their composition it would come out "ZY" (CodeMirror's rebaseUpdates
    as is); C maps "Z" over v1, then over v2, and has "YZ". Whether C reads
    those frames on the connection it pushed on or, after that one dropped,
    in its resume (frames_since), it is sent exactly those two frames.
    """
    s = Sequencer("a", 0)
    s.push("A", 0, [U("A", [[1]])], "", 0)
    commit(s)
    s.push("B", 1, [U("B", [[0, "Y"]])], "", 0)
    commit(s)
    assert s.push_frames(0) == [1]
    s.push("C", 0, [U("C", [[0, "Z"], 1])], "", 0)
    assert str(s.text) == "YZ"
    commit(s)
    assert [len(u) for _, u in s.frames_since(0)] == [1, 1, 1]
    composed = Sequencer("a", 0)
    composed.push("A", 0, [U("A", [[1]])], "", 0)
    composed.push("B", 1, [U("B", [[0, "Y"]])], "", 0)
    composed.push("C", 0, [U("C", [[0, "Z"], 1])], "", 0, frames=[])   # one group
    assert str(composed.text) == "ZY"


def test_the_batch_being_written_is_a_frame_and_what_follows_shares_the_push_frame():
    s = Sequencer("", 0)
    s.push("A", 0, [U("A", [[0, "a"]])], "", 0)
    commit(s)                                                   # v0..v1 broadcast
    s.push("A", 1, [U("A", [1, [0, "b"]])], "", 0)
    s.take_pending()                                            # v1..v2 being written
    s.push("B", 2, [U("B", [2, [0, "c"]])], "", 0)              # v3: pending, will share a frame
    assert s.push_frames(0) == [1, 2]
    assert s.push_frames(1) == [2]
    assert s.push_frames(2) == [] and s.push_frames(3) == []
    assert s.frames_since(0) == [(0, s.log[0:1])]               # only what is durable


def test_frame_ends_come_from_the_store_and_old_ones_are_dropped():
    s = Sequencer("x" * 10, 10, frame_ends=[3, 7, 12, 0], keep=2)
    assert s.frame_ends == [3, 7, 10]
    s.committed(10)                                             # nothing new: no frame
    assert s.frame_ends == [3, 7, 10]
    for k in range(10, 16):
        s.push("A", k, [U("A", [k, [0, "x"]])], "", 0)
        commit(s)
    assert s.frame_ends[-1] == 16 and len(s.frame_ends) <= 4
    assert s.frame_ends == sorted(s.frame_ends)


def test_history_read_from_the_store_brings_the_frame_ends_the_sequencer_dropped():
    s = Sequencer("", 0, keep=2)
    history = []
    for k in range(8):                                          # eight frames of one update each
        history += [e.update for e in s.push("A", k, [U("A", [k, [0, "x"]] if k else [[0, "x"]])], "", 0)]
        commit(s)
    assert s.log_from == 6 and s.frame_ends[0] > 2              # where frames 1..4 ended is forgotten
    with pytest.raises(NeedHistory):
        s.frames_since(1)
    read = History(0, history[:6], [1, 2, 3, 4, 5, 6])          # as the store gives it: from version 0
    assert s.frames_since(1, history=read) == [(v, [history[v]]) for v in range(1, 8)]
    assert s.push_frames(1, read) == [2, 3, 4, 5, 6, 7]
    base, over, ends = s.committed_part("B", 1, [U("B", [[0, "y"], 1])], read)
    assert (base, over, ends) == (8, history[1:], [1, 2, 3, 4, 5, 6])
    with pytest.raises(NeedHistory):                            # a history that starts too late is no use
        s.frames_since(1, history=History(2, history[2:6], [3, 4, 5, 6]))


@given(st.lists(st.integers(1, 4), min_size=1, max_size=25), st.integers(0, 6), st.integers(1, 5),
       st.integers(1, 7), st.data())
@settings(max_examples=150, deadline=None)
def test_a_resume_read_a_page_at_a_time_is_the_frames_a_resume_in_one_go_gets(sizes, keep, limit, page, data):
    """frames_from, asked again from where the last answer ended and given pages of history of any
    length (as room._resume reads them), yields exactly frames_since's frames: none split, none merged.
    (keep=0 found that the sequencer dropped even the head's frame end, then failed at the next commit.)"""
    s = Sequencer("", 0, keep=keep)
    stored: list[Update] = []
    ends: list[int] = []
    for size in sizes:  # one commit (a frame) of `size` updates
        for _ in range(size):
            stored += [e.update for e in s.push("A", s.version, [U("A", [[0, "x"], s.text.length]
                                                                    if s.text.length else [[0, "x"]])], "", 0)]
        commit(s)
        ends.append(s.version)
    head = s.version
    start = data.draw(st.integers(0, head))
    whole = History(0, stored, ends)
    expected = s.frames_since(start, head, whole)
    got, version, history = [], start, None
    for _ in range(4 * head + 4):
        if version >= head:
            break
        frames = s.frames_from(version, history, limit)
        if not frames:  # a page of stored updates from `version` on, of any length, or twice the last if it
            # was from there too (it held no whole frame: so room._history_page reads)
            again = history is not None and history.since == version
            until = min(head, version + (2 * len(history.updates) if again else data.draw(st.integers(1, page))))
            history = History(version, stored[version:until], [e for e in ends if version < e <= until])
            continue
        assert sum(len(u) for _, u in frames[:-1]) < limit  # none after the one that reaches the limit
        got += frames
        version = frames[-1][0] + len(frames[-1][1])
    assert got == expected


def test_rollback_takes_back_what_is_not_durable_and_catch_up_applies_another_writers_updates():
    seq = Sequencer("abc", 5)
    seq.push("c", 5, [Update("c", ChangeSet.from_json([3, [0, "X"]]))], "a", 0.0)
    seq.take_pending()
    seq.committed(6)                                  # durable: stays
    seq.push("c", 6, [Update("c", ChangeSet.from_json([[0, "1"], 4]))], "a", 0.0)
    seq.push("c", 7, [Update("c", ChangeSet.from_json([[0, "2"], 5]))], "a", 0.0)
    assert (str(seq.text), seq.version) == ("21abcX", 8)
    undone = seq.rollback()
    assert [e.version for e in undone] == [7, 8]
    assert (str(seq.text), seq.version, seq.committed_version, len(seq.log)) == ("abcX", 6, 6, 1)
    other = [Update("o", ChangeSet.from_json([[0, "o"], 4])), Update("o", ChangeSet.from_json([5, [0, "p"]]))]
    seq.catch_up(other, ends=[7])
    assert (str(seq.text), seq.version, seq.committed_version) == ("oabcXp", 8, 8)
    assert seq.frames_since(6) == [(6, other[:1]), (7, other[1:])]  # the other writer's frames
    # A push made before all this (at 6) is rebased over the other writer's updates, frame by frame.
    accepted = seq.push("c", 6, [Update("c", ChangeSet.from_json([[0, "1"], 4]))], "a", 0.0)
    assert str(seq.text) in ("o1abcXp", "1oabcXp") and accepted[0].version == 9
    seq.take_pending()
    with pytest.raises(RuntimeError):
        seq.rollback()                                 # the store is writing it
    seq.committed(9)
    with pytest.raises(ChangeError):                  # updates that do not fit change nothing
        seq.catch_up([Update("o", ChangeSet.from_json([[0, "z"], 99]))])
    assert seq.version == 9


@pytest.mark.parametrize("seed", range(60))
def test_a_late_push_rebased_in_two_steps_is_the_same_as_in_one(seed):
    """committed_part + rebase_in_frames elsewhere + push at the committed head == push at the old version
    (what the room does with a push far behind, off the event loop), re-pushes of updates already
    accepted (a lost acknowledgement) included."""
    import copy
    import random
    from collab.rebase import rebase_in_frames
    rng = random.Random(seed)

    def edit(length, who):
        p = rng.randint(0, length)
        d = rng.randint(0, min(2, length - p))
        ins = rng.choice(["", "a", "bc", "é"]) or ("z" if not d else "")
        return Update(who, ChangeSet.from_json(([p] if p else []) + [[d, *ins.split("\n")]]
                                               + ([length - p - d] if length - p - d else [])))

    def commit_batch(seq, who, updates):
        seq.push(who, seq.version, updates, who, 0.0)
        seq.take_pending()
        seq.committed(seq.version)

    def others(seq, n):
        for _ in range(n):
            who = rng.choice("ab")
            batch, length = [], seq.text.length
            for _ in range(rng.randint(1, 3)):
                batch.append(edit(length, who))
                length = batch[-1].changes.new_length
            commit_batch(seq, who, batch)

    seq = Sequencer("hello world", 0)
    others(seq, rng.randint(0, 5))
    base_version, length = seq.committed_version, seq.text.length
    mine = []
    for _ in range(rng.randint(1, 4)):
        mine.append(edit(length, "me"))
        length = mine[-1].changes.new_length
    if rng.random() < 0.5:  # the first of them were accepted already, their ack lost
        others(seq, rng.randint(0, 3))
        k = rng.randint(1, len(mine))
        seq.push("me", base_version, mine[:k], "me", 0.0)
        seq.take_pending()
        seq.committed(seq.version)
    others(seq, rng.randint(1, 6))
    if rng.random() < 0.5:  # something accepted and not yet durable on top
        seq.push("a", seq.version, [edit(seq.text.length, "a")], "a", 0.0)
    one, two = copy.deepcopy(seq), copy.deepcopy(seq)
    direct = one.push("me", base_version, mine, "me", 0.0)
    base, over, ends = two.committed_part("me", base_version, mine)
    stepped = two.push("me", base, rebase_in_frames(mine, over, ends), "me", 0.0)
    assert [(e.version, e.update.changes.to_json()) for e in direct] == \
        [(e.version, e.update.changes.to_json()) for e in stepped]
    assert str(one.text) == str(two.text)


def test_rebase_work_splits_what_is_durable_from_what_is_not_and_counts_sections():
    """rebase_work is what the room judges a push's rebase by (taking turns with the event loop above
    HEAVY_REBASE): it grows with the sections of the changes moved over, not with their number, is split
    at the committed head (the pending part without the walks of the push's own sections, which waiting
    for a commit does not split), and is nothing for a push at or past the head."""
    seq = Sequencer("x" * 100, 0)
    keystroke = Update("a", ChangeSet.from_json([50, [0, "o"], 50]))
    seq.push("a", 0, [keystroke], "a", 0.0)
    seq.take_pending()
    seq.committed(1)
    wide = Update("a", ChangeSet.from_json([x for _ in range(101) for x in (1, [0, "w"])]))
    seq.push("a", 1, [wide], "a", 0.0)  # accepted, not yet durable
    mine = [Update("b", ChangeSet.from_json([10, [0, "m"], 90]))]
    committed, pending = seq.rebase_work(0, mine, None)
    assert 0 < committed < 50 < 400 < pending  # 6 numbers of sections behind, then 404
    assert seq.rebase_work(1, mine * 0, None) == (0, 0)
    assert seq.rebase_work(1, [Update("b", ChangeSet.from_json([101, [0, "m"]]))], None)[0] == 0
    for bad in (-1, 3, "1", None, 1.0):
        assert seq.rebase_work(bad, mine, None) == (0, 0)
    seq.take_pending()
    seq.committed(2)
    # Durable now, the second frame counts in full: with the walk of the push's own sections over it.
    assert seq.rebase_work(0, mine, None) == (committed + pending + len(mine[0].changes.sections), 0)
