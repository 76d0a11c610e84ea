"""The keystroke fast paths of collab/changes.py and collab/text.py, against their general paths.

`ChangeSet.from_json`, `to_json`, `normalized` (also for any set already
normal), `_map` and `Text.apply`, `invert` take a shortcut for one replacement between two keeps
(`[n, [d, "x"], m]`, what typing sends) and hand everything else to `_parse`,
`_to_json`, `_normalized`, `_map_walk`, `_apply`, `_invert`. Each shortcut must be invisible: the same
result (field for field, the text's chunks and cursor included) or the same
ChangeError as the general path, for well-formed and malformed input alike.
The inputs are built around the shortcut's shape, with the values that must
make it step aside (bools, negatives, line breaks, non-ASCII and astral text,
lone surrogates, positions inside a surrogate pair, chunk edges).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from collab import text as text_module
from collab.changes import ChangeError, ChangeSet, utf16_len
from collab.text import Text

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

counts = st.one_of(st.integers(0, 6), st.integers(-2, -1), st.booleans(), st.just(1.0), st.just("1"), st.none())
lines = st.one_of(
    st.sampled_from(["", "x", "ab", " ", "\t", "é", "中", "😀", "a\nb", "\r", "\x00", "\ud800", "a\ud83d"]),
    st.text(max_size=3), st.integers(0, 2), st.none())
parts = st.one_of(st.lists(st.one_of(counts, lines), max_size=4),
                  st.tuples(counts).map(list), st.tuples(counts, lines).map(list),
                  st.tuples(counts, lines, lines).map(list))
small = st.integers(0, 3)
good_lines = st.sampled_from(["", "x", "ab", " ", "é", "😀", "\t"])
keystrokes = st.tuples(small, st.one_of(st.tuples(small).map(list), st.tuples(small, good_lines).map(list),
                                        st.tuples(small, good_lines, good_lines).map(list)), small).map(list)
values = st.one_of(
    keystrokes,  # the shortcut's shape, well-formed (zero lengths included)
    st.tuples(counts, parts, counts).map(list),  # the shortcut's shape, good or bad
    st.lists(st.one_of(counts, parts), max_size=4),
    st.sampled_from([None, 3, "x", (1, [0, "x"], 2), {"a": 1}]),
)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ChangeError as exc:
        return ("error", exc.message)


def fields(cs: ChangeSet) -> tuple:
    return type(cs), cs.sections, cs.inserted, cs.length, cs.new_length


@SETTINGS
@given(values)
@example([3, [1, "x"], 2])
@example([0, [0], 0])
@example([True, [0, "x"], 1])
@example([1, [0, "a\nb"], 1])
@example([1, [0, "\ud800"], 1])
def test_from_json_equals_the_general_parser(value):
    fast, general = outcome(ChangeSet.from_json, value), outcome(ChangeSet._parse, value)
    if fast[0] == "ok" and general[0] == "ok":
        assert fields(fast[1]) == fields(general[1])
    else:
        assert fast == general


@SETTINGS
@given(values)
@example([1, [0, "x"], 0])
@example([0, [1, "x"], 1])
@example([1, [0], 1])
@example([1, [0, ""], 1])
def test_to_json_and_normalized_equal_their_general_paths(value):
    try:
        cs = ChangeSet._parse(value)
    except ChangeError:
        return
    assert cs.to_json() == cs._to_json()
    assert fields(cs.normalized()) == fields(cs._normalized())


@SETTINGS
@given(st.lists(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2)).map(list),
                          st.tuples(st.integers(0, 2), st.sampled_from(["", "x", "😀"])).map(list)), max_size=12))
@example([1, 1])
@example([[0, "x"], [0, "y"]])
@example([[1], [1], 2])
@example([1, [1, "x"], [0, "y"], 1])
def test_normalized_returns_a_set_as_it_is_exactly_when_the_rebuild_would(value):
    """`normalized` returns a set unchanged when its sections would all be kept as they are (`_is_normal`,
    a scan instead of a rebuild: a 1 MiB replace-all pays it on the event loop); on longer sets, with
    zero lengths, neighbouring keeps, deletions and insertions, it equals the rebuild."""
    cs = ChangeSet._parse(value)
    assert fields(cs.normalized()) == fields(cs._normalized())


# ------------------------------------------------------------------ Text

# Documents with astral characters (so positions can cut pairs and chunks are
# "wide"), accented letters and line breaks; inserts that do and do not keep
# a chunk narrow.
DOC_CHARS = "aaaabbbcc  é中😀\n"
INSERTS = ["x", "ab", "", "é", "😀", "a\nb", "\t", "xyz" * 5]


def state(doc: Text) -> tuple:
    return doc.chunks, doc.sizes, doc.length, doc.wide, doc._at, doc._at_pos


def keystroke(rng: random.Random, length: int) -> list:
    """`[n, [d, ...lines], m]` on a document of `length` UTF-16 units (any n, d: they may cut a pair)."""
    start = rng.randint(0, length)
    deleted = rng.choice([0, 0, 1, 1, 2, rng.randint(0, length - start)]) if length > start else 0
    deleted = min(deleted, length - start)
    text = rng.choice(INSERTS)
    return [start, [deleted, *text.split("\n")] if text else [deleted], length - start - deleted]


@pytest.mark.parametrize("chunk", [3, 8, 64])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_text_apply_and_invert_equal_their_general_paths(monkeypatch, chunk, seed):
    monkeypatch.setattr(text_module, "CHUNK", chunk)
    rng = random.Random(seed)
    plain = "".join(rng.choice(DOC_CHARS) for _ in range(rng.randint(0, 4 * chunk)))
    if rng.random() < 0.5:
        plain = plain.replace("😀", "a")  # a narrow document: no chunk is wide
    fast, general = Text(plain), Text(plain)
    for _ in range(40):
        if rng.random() < 0.2:  # move both cursors somewhere else (a peer typing elsewhere)
            pos = rng.randint(0, fast.length)
            fast._locate(pos)
            general._locate(pos)
        js = keystroke(rng, fast.length)
        cs = ChangeSet.from_json(js)
        # On copies: invert reads the text, and where it leaves the cursor (a
        # hint for the next lookup, never visible) may differ.
        inverse, want_inverse = outcome(fast.copy().invert, cs), outcome(general.copy()._invert, cs)
        assert inverse[0] == want_inverse[0]
        assert fields(inverse[1]) == fields(want_inverse[1]) if inverse[0] == "ok" else inverse == want_inverse
        got = outcome(fast.apply, cs)
        want = outcome(general._apply, cs.sections, cs.inserted)
        assert got == want, js
        assert state(fast) == state(general), js
        assert str(fast) == str(general)
        if got[0] == "ok":
            plain = cs.apply_to_str(plain)
        assert str(fast) == plain and fast.length == utf16_len(plain)


def test_a_keystroke_is_applied_where_the_cursor_is_and_elsewhere(monkeypatch):
    monkeypatch.setattr(text_module, "CHUNK", 4)
    doc = Text("abcdefghijklmnop")  # chunks of 4
    doc.apply(ChangeSet.from_json([2, [0, "X"], 14]))   # in the cursor's chunk
    doc.apply(ChangeSet.from_json([15, [1, "Y"], 1]))   # in another chunk
    doc.apply(ChangeSet.from_json([4, [0, "Z"], 13]))   # at a chunk's edge
    doc.apply(ChangeSet.from_json([18, [0, "!"], 0]))   # at the very end
    assert str(doc) == "abXcZdefghijklmnYp!"
    with pytest.raises(ChangeError, match="length"):
        doc.apply(ChangeSet.from_json([1, [0, "x"], 1]))
    assert str(doc) == "abXcZdefghijklmnYp!"


# ---- map: two keystrokes apart ------------------------------------------------------------------

def one_edit(length: int, at: int, deleted: int, text: str) -> ChangeSet:
    """One replacement of `deleted` units at `at` by `text`, in a document of `length`, as a client's JSON."""
    head = [at] if at else []
    tail = [length - at - deleted] if length - at - deleted else []
    return ChangeSet.from_json([*head, [deleted, *text.split("\n")], *tail])


@st.composite
def keystroke_pairs(draw):
    length = draw(st.integers(0, 12))
    out = []
    for _ in range(2):
        at = draw(st.integers(0, length))
        deleted = draw(st.integers(0, min(3, length - at)))
        out.append(one_edit(length, at, deleted, draw(st.sampled_from(["", "x", "ab", "😀", "a\nb"]))))
    return out


@SETTINGS
@given(keystroke_pairs(), st.booleans())
@example([one_edit(10, 2, 0, "x"), one_edit(10, 5, 1, "yz")], False)  # a before b
@example([one_edit(10, 6, 1, "x"), one_edit(10, 2, 2, "")], True)    # a after b
@example([one_edit(10, 3, 0, "x"), one_edit(10, 3, 0, "y")], False)  # a tie: the walk decides
@example([one_edit(10, 3, 2, "x"), one_edit(10, 5, 0, "y")], False)  # touching: the walk decides
def test_map_of_two_keystrokes_is_the_walk(pair, before):
    """`_map`'s shortcut for two separate keystrokes gives what the general walk gives, field for field,
    for map (with text) and map_desc of a ChangeDesc (without), whichever comes first."""
    from collab.changes import ChangeDesc, _map, _map_walk
    a, b = pair
    for with_text in (True, False):
        left = a if with_text else ChangeDesc(a.sections, a.inserted, a.length, a.new_length)
        assert fields(_map(left, b, before, with_text)) == fields(_map_walk(left, b, before, with_text))


@st.composite
def any_sets(draw, length: int | None = None):
    """A change set as a client may send it, normal or not: keeps (empty ones too, and several in a row),
    deletions, insertions, replacements; of `length` if given."""
    pairs, total = [], 0
    for _ in range(draw(st.integers(0, 7))):
        n = draw(st.integers(0, 4))
        if draw(st.booleans()):
            pairs += [n, -1]
        else:
            pairs += [n, draw(st.sampled_from([0, 1, 2]))]
        total += n
    if length is not None:  # the last keep makes the length (or the draw starts again, kept short)
        if total > length:
            pairs, total = [], 0
        pairs += [length - total, -1]
    inserted = ["x" * ins if ins > 0 else "" for ins in pairs[1::2]]
    return ChangeSet(pairs, inserted)


@st.composite
def keystroke_over_any(draw):
    """(a keystroke, any set) on one document; the keystroke mostly inside one of the set's keeps."""
    b = draw(any_sets())
    at = draw(st.integers(0, b.length))
    deleted = draw(st.integers(0, min(3, b.length - at)))
    return one_edit(b.length, at, deleted, draw(st.sampled_from(["", "x", "ab", "😀", "a\nb"]))), b


@SETTINGS
@given(keystroke_over_any(), st.booleans())
@example((one_edit(20, 10, 1, "x"), ChangeSet.from_json([2, [0, "y"], 3, [2], 13])), False)  # inside the last keep
@example((one_edit(20, 4, 0, "x"), ChangeSet.from_json([2, [0, "y"], 3, [2], 13])), False)  # inside the middle keep
@example((one_edit(20, 5, 0, "x"), ChangeSet.from_json([2, [0, "y"], 3, [2], 13])), False)  # touching: the walk
@example((one_edit(10, 4, 0, "x"), ChangeSet([2, -1, 4, -1, 4, -1], ["", "", ""])), True)  # keeps in a row
def test_map_of_a_keystroke_over_any_set_is_the_walk(pair, before):
    """`_map`'s shortcut for a keystroke strictly inside a stretch the other set keeps, whatever that set
    does elsewhere (several changes: the composition a push is mapped over), gives what the walk gives."""
    from collab.changes import ChangeDesc, _map, _map_walk
    a, b = pair
    for with_text in (True, False):
        left = a if with_text else ChangeDesc(a.sections, a.inserted, a.length, a.new_length)
        assert made(_map, left, b, before, with_text) == made(_map_walk, left, b, before, with_text)


@st.composite
def any_then_keystroke(draw):
    """(any set, a keystroke on its result); half the sets normalised, which the shortcut needs."""
    a = draw(any_sets())
    if draw(st.booleans()):
        a = a.normalized()
    at = draw(st.integers(0, a.new_length))
    deleted = draw(st.integers(0, min(3, a.new_length - at)))
    return a, one_edit(a.new_length, at, deleted, draw(st.sampled_from(["", "x", "ab", "😀", "a\nb"])))


@SETTINGS
@given(any_then_keystroke())
@example((ChangeSet.from_json([2, [0, "y"], 3, [2], 13]), one_edit(19, 10, 1, "x")))  # inside the last keep
@example((ChangeSet.from_json([2, [0, "y"], 3, [2], 13]), one_edit(19, 4, 0, "x")))   # inside the middle keep
@example((ChangeSet.from_json([2, [0, "y"], 3, [2], 13]), one_edit(19, 3, 0, "x")))   # touching: the walk
@example((ChangeSet([2, -1, 4, -1, 4, -1], ["", "", ""]), one_edit(10, 4, 0, "x")))   # not normal: the walk
def test_compose_desc_of_any_set_then_a_keystroke_is_the_walk(pair):
    """`_compose`'s shortcut (composeDesc with a keystroke strictly inside a stretch the first set's
    result keeps, that set normal) gives what the walk gives, field for field."""
    from collab.changes import _compose, _compose_walk
    a, b = pair
    for with_text in (False, True):
        assert made(_compose, a, b, with_text) == made(_compose_walk, a, b, with_text)


def made(fn, *args):
    """What `fn(*args)` makes, field for field, or the ChangeError it raises."""
    try:
        return ("ok", fields(fn(*args)))
    except ChangeError as exc:
        return ("error", exc.message)


def test_the_rebase_shortcuts_are_taken_where_they_apply(monkeypatch):
    """The shortcuts above must not silently stop firing (their tests would still pass, only slower):
    with the walks made to fail, a keystroke over the composition of two others still maps and composes."""
    from collab import changes

    def walk(*args):
        raise AssertionError("the walk ran where the shortcut applies")
    monkeypatch.setattr(changes, "_map_walk", walk)
    monkeypatch.setattr(changes, "_compose_walk", walk)
    first, second = one_edit(20, 3, 1, "y"), one_edit(20, 12, 0, "zz")  # two keystrokes by others
    composed = first.compose_desc(second.map(first))
    assert composed.sections == [3, -1, 1, 1, 8, -1, 0, 2, 8, -1]
    mine = one_edit(20, 7, 0, "x")
    assert mine.map(composed).sections == [7, -1, 0, 1, 15, -1]
