"""The algebra of collab.changes, checked with hypothesis.

The laws are the ones CodeMirror documents and tests (codemirror/state,
test/test-change.ts), stated against a reference that works on the JSON form
(tests/casegen.py), plus the boundary contract: every malformed input is a
ChangeError with code "bad-changes", never another exception.

Two things CodeMirror does *not* guarantee, so neither is asserted here:
  * `a.compose(b.map(a))` and `b.compose(a.map(b, True))` give the same
    document but often different JSON (`[[0,"p"],[1]]` vs `[[1],[0,"p"]]`);
    what they share is the joined changes (`casegen.merged_changes`);
  * mapping a position through `a.compose(b)` equals mapping it through `a`
    then `b` only for insert-only sets, or where neither step touches it.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, example, given, settings

import casegen as cg
from collab.changes import ChangeError, ChangeSet, utf16_len

st, docs, inserts, changes_for = cg.strategies()

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
flavours = st.sampled_from(["clean", "raw"])
all_flavours = st.sampled_from(["clean", "raw", "zk"])


@st.composite
def doc_and_changes(draw, flavour=None, insert_only=False, flavour_from=flavours):
    doc = draw(docs)
    fl = flavour or draw(flavour_from)
    return doc, draw(changes_for(doc, fl, insert_only))


@st.composite
def sequential(draw, flavour=None, insert_only=False):
    """(doc, a, b) with b applying to the result of a."""
    doc, a = draw(doc_and_changes(flavour, insert_only))
    fl = flavour or draw(flavours)
    b = draw(changes_for(cg.ref_apply(doc, a), fl, insert_only))
    return doc, a, b


@st.composite
def concurrent(draw, flavour=None):
    """(doc, a, b) both applying to doc."""
    doc, a = draw(doc_and_changes(flavour))
    b = draw(changes_for(doc, flavour or draw(flavours)))
    return doc, a, b


def cs(js) -> ChangeSet:
    return ChangeSet.from_json(js)


def _positions(js):
    return range(cg.lengths(js)[0] + 1)


# ------------------------------------------------------------------- apply


@SETTINGS
@given(doc_and_changes(flavour_from=all_flavours))
def test_apply_matches_reference(case):
    doc, js = case
    x = cs(js)
    assert (x.length, x.new_length) == cg.lengths(js)
    assert x.apply_to_str(doc) == cg.ref_apply(doc, js)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(sorted(set(cg.CHARS + "é\x00\uffff\U0010ffff"))), max_size=20))
def test_utf16_len(text):
    assert utf16_len(text) == cg.u16(text)


# ---------------------------------------------------------------- compose


@SETTINGS
@given(sequential())
def test_compose_applies_like_a_then_b(case):
    doc, a, b = case
    composed = cs(a).compose(cs(b))
    assert composed.length == cg.lengths(a)[0] and composed.new_length == cg.lengths(b)[1]
    assert composed.apply_to_str(doc) == cg.ref_apply(cg.ref_apply(doc, a), b)


@SETTINGS
@given(st.data())
def test_compose_is_associative(data):
    doc, a, b = data.draw(sequential())
    c = data.draw(changes_for(cg.ref_apply(cg.ref_apply(doc, a), b), data.draw(flavours)))
    left = cs(a).compose(cs(b)).compose(cs(c))
    right = cs(a).compose(cs(b).compose(cs(c)))
    assert left.apply_to_str(doc) == right.apply_to_str(doc)
    assert cg.merged_changes(left.to_json()) == cg.merged_changes(right.to_json())


# -------------------------------------------------------------------- map


@SETTINGS
@given(concurrent(), st.booleans())
@example(("a", [[0, "p"], 1], [[1]]), False)      # same doc, different JSON in CodeMirror
@example(("", [[0, "p"]], [[0, "q"]]), True)      # two insertions at one position
def test_map_converges(case, before):
    doc, a, b = case
    if before:
        a, b = b, a
    sa, sb = cs(a), cs(b)
    b_over_a, a_over_b = sb.map(sa), sa.map(sb, True)
    assert b_over_a.length == sa.new_length and a_over_b.length == sb.new_length
    x, y = sa.compose(b_over_a), sb.compose(a_over_b)
    assert x.apply_to_str(doc) == y.apply_to_str(doc)
    assert cg.merged_changes(x.to_json()) == cg.merged_changes(y.to_json())


@SETTINGS
@given(st.data())
def test_map_converges_through_two_changes(data):
    """CodeMirror's "mapping still converges when mapping through multiple changes"."""
    doc, a, b = data.draw(sequential())
    c = data.draw(changes_for(doc, data.draw(flavours)))
    sa, sb, sc = cs(a), cs(b), cs(c)
    c_a = sc.map(sa)
    c_ab = c_a.map(sb)
    a_c = sa.map(sc, True)
    b_ca = sb.map(c_a, True)
    assert sa.compose(sb).compose(c_ab).apply_to_str(doc) == sc.compose(a_c).compose(b_ca).apply_to_str(doc)


@SETTINGS
@given(concurrent())
def test_mapping_over_nothing_changes_nothing(case):
    doc, a, _ = case
    keep_all = cs([cg.u16(doc)] if doc else [])
    assert cs(a).map(keep_all).apply_to_str(doc) == cg.ref_apply(doc, a)
    assert keep_all.map(cs(a)).apply_to_str(cg.ref_apply(doc, a)) == cg.ref_apply(doc, a)


# ------------------------------------------- zero keeps and normalized()
#
# CodeMirror's compose/map are wrong on sets with a zero-length keep (a bare
# 0): fromJSON([0, 3]).compose(fromJSON([[2, "xy"], 1])) inserts "xyxy". Ours
# are a faithful port, so the server runs what clients push through
# `normalized()` (collab/protocol.py). That is only sound if normalising never
# changes what a set means: not its text, and not where a position or a
# concurrent insertion lands (map_pos, map), or the pushing client, which keeps
# its own un-normalised copy, and the server rebase differently.


@SETTINGS
@given(st.data())
def test_laws_hold_after_normalising(data):
    doc, a, b = data.draw(sequential(flavour="zk"))
    c = data.draw(changes_for(doc, "zk"))
    sa, sb, sc = cs(a).normalized(), cs(b).normalized(), cs(c).normalized()
    assert not any(p == 0 for p in sa.to_json() if isinstance(p, int))
    assert sa.compose(sb).apply_to_str(doc) == cg.ref_apply(cg.ref_apply(doc, a), b)
    assert sa.compose(sc.map(sa)).apply_to_str(doc) == sc.compose(sa.map(sc, True)).apply_to_str(doc)


def test_zero_length_keep_compose_regression():
    """The smallest case: CodeMirror 6 gives "xyxyc" for this."""
    composed = cs([0, 3]).normalized().compose(cs([[2, "xy"], 1]).normalized())
    assert composed.apply_to_str("abc") == "xyc"


@SETTINGS
@given(concurrent(flavour="raw"), st.sampled_from([-1, 1]))
@example(("ab", [[2], [0, "x"]], [2, [0, "Y"]]), -1)   # what ChangeSet.of makes of {0-2 deleted}, {insert x at 2}
def test_normalized_keeps_the_meaning(case, assoc):
    doc, a, b = case
    raw, norm, other = cs(a), cs(a).normalized(), cs(b)
    assert norm.apply_to_str(doc) == raw.apply_to_str(doc)
    assert norm.normalized().to_json() == norm.to_json()
    for pos in _positions(a):
        assert norm.map_pos(pos, assoc) == raw.map_pos(pos, assoc), (pos, assoc, norm.to_json())
    after_other = other.apply_to_str(doc)
    assert norm.map(other).apply_to_str(after_other) == raw.map(other).apply_to_str(after_other)
    after_a = raw.apply_to_str(doc)
    assert other.map(norm, True).apply_to_str(after_a) == other.map(raw, True).apply_to_str(after_a)


# ------------------------------------------------------------------ JSON


@SETTINGS
@given(doc_and_changes(flavour="zk"))
@example(("abcde", [0, [0], 5]))
@example(("ab", [[2, ""]]))
@example(("", []))
def test_json_round_trip(case):
    doc, js = case
    x = cs(js)
    assert x.to_json() == cg.expected_roundtrip(js)      # CodeMirror keeps sections as given
    again = cs(x.to_json())
    assert again.to_json() == x.to_json()
    assert (again.length, again.new_length) == (x.length, x.new_length)
    assert again.apply_to_str(doc) == x.apply_to_str(doc)


# ---------------------------------------------------------------- map_pos


@SETTINGS
@given(sequential(insert_only=True), st.sampled_from([-1, 1]))
def test_map_pos_through_composition_insert_only(case, assoc):
    doc, a, b = case
    sa, sb = cs(a), cs(b)
    composed = sa.compose(sb)
    for pos in _positions(a):
        assert composed.map_pos(pos, assoc) == sb.map_pos(sa.map_pos(pos, assoc), assoc), (pos, assoc)


@SETTINGS
@given(sequential(), st.sampled_from([-1, 1]))
def test_map_pos_through_composition_away_from_changes(case, assoc):
    doc, a, b = case
    sa, sb = cs(a), cs(b)
    composed = sa.compose(sb)
    checked = 0
    for pos in _positions(a):
        mid = sa.map_pos(pos, assoc)
        if cg.touches(a, pos) or cg.touches(b, mid):
            continue
        checked += 1
        assert composed.map_pos(pos, assoc) == sb.map_pos(mid, assoc), (pos, assoc)
    assume(checked)


@SETTINGS
@given(doc_and_changes(flavour_from=all_flavours), st.sampled_from([-1, 1]))
def test_map_pos_is_monotonic_and_in_range(case, assoc):
    doc, js = case
    x = cs(js)
    mapped = [x.map_pos(p, assoc) for p in _positions(js)]
    assert mapped == sorted(mapped)
    assert all(0 <= m <= x.new_length for m in mapped)
    assert not mapped or (mapped[0] == 0 or assoc > 0) and (mapped[-1] == x.new_length or assoc < 0)


@pytest.mark.parametrize("js,pos,assoc,expected", [
    ([4, [0, "ab"], 4], 4, -1, 4),
    ([4, [0, "ab"], 4], 4, 1, 6),
    ([4, [4], 4], 5, -1, 4),
    ([4, [4], 4], 9, 1, 5),
    ([2, [2, "ab"], 2], 3, -1, 2),
    ([2, [2, "ab"], 2], 3, 1, 4),
    ([[0, "ab"], 2, [0, "ab"], 2, [0, "ab"]], 2, 1, 6),
    ([[2, "ab"], [2, "ab"]], 2, 1, 2),
    ([], 0, 1, 0),
])
def test_map_pos_table(js, pos, assoc, expected):
    """Cases from CodeMirror's own test suite (test-change.ts, "mapPos")."""
    assert cs(js).map_pos(pos, assoc) == expected


# ------------------------------------------------------------ bad input

BAD_JSON = [
    None, {}, "3", 3, True, 1.5, (),
    [True], [False], [1.0], [1.5], ["3"], [-1], [None], [{}], [[]],
    [[True]], [[False, "a"]], [[1.0]], [[1.5, "a"]], [["3"]], [[-1]], [[-1, "a"]],
    [[1, 2]], [[1, None]], [[1, ["a"]]], [[1, True]], [[1, {}]], [[[1], "a"]], [[None, "a"]], [["a"]],
    [[1, "a\nb"]], [[1, "a\rb"]], [[0, "\r"]], [[0, "x", "y\n"]], [[0, "ok", "\r\n"]],
    [[0, "a"], [True]], [0, 1.0], [2, [0, "a"], -3], [[0, "\ud83d"]],
]


@pytest.mark.parametrize("value", BAD_JSON, ids=repr)
def test_malformed_json_is_a_change_error(value):
    with pytest.raises(ChangeError) as info:
        ChangeSet.from_json(value)
    assert info.value.code == "bad-changes" and str(info.value)


def _valid(value) -> bool:
    """The contract, independently: list of n >= 0 or [d >= 0, *lines without CR/LF]."""
    if type(value) is not list:
        return False
    for part in value:
        if type(part) is int:
            if part < 0:
                return False
        elif type(part) is list:
            if not part or type(part[0]) is not int or part[0] < 0:
                return False
            if any(type(line) is not str or "\n" in line or "\r" in line for line in part[1:]):
                return False
        else:
            return False
    return True


scalars = st.one_of(
    st.integers(-3, 8), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-2, max_value=8),
    st.text(alphabet="ab\n\r😀", max_size=3),
)
items = st.one_of(scalars, st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=4))
json_like = st.one_of(st.lists(items, max_size=5), scalars, st.dictionaries(st.text(max_size=2), scalars, max_size=2))


@settings(max_examples=600, deadline=None)
@given(json_like)
def test_any_json_parses_or_is_a_change_error(value):
    try:
        x = ChangeSet.from_json(value)
    except ChangeError as e:
        assert e.code == "bad-changes"
        assert not _valid(value), f"valid input refused: {value!r}: {e}"
    else:
        assert _valid(value), f"invalid input accepted: {value!r}"
        assert x.to_json() == cg.expected_roundtrip(value)


@SETTINGS
@given(doc_and_changes(), st.sampled_from(["x", "😀", "é"]), st.booleans())
def test_wrong_document_length_is_a_change_error(case, extra, longer):
    doc, js = case
    if longer:
        other = doc + extra
    else:
        assume(doc)
        other = doc[:-1]
    with pytest.raises(ChangeError) as info:
        cs(js).apply_to_str(other)
    assert info.value.code == "bad-changes"


def _pair_cutting_changes(doc: str, mid: int) -> list[list]:
    """Real changes (something inserted or deleted) with a boundary at `mid`."""
    total = cg.u16(doc)
    out = [
        [mid, [0, "x"], total - mid],                 # insertion inside the pair
        [mid, [1], total - mid - 1],                  # deletion starting inside
        [mid - 1, [1], total - mid],                  # deletion ending inside
        [mid - 1, [1, "y"], total - mid],             # replacement ending inside
        [mid, [total - mid, "z"]],                    # replacement from inside to the end
    ]
    if mid >= 2:
        out.append([mid - 2, [2], total - mid])       # deletion of the unit before, ending inside
    return out


@SETTINGS
@given(docs, st.sampled_from(["😀", "𝒳"]), docs, st.data())
def test_cutting_a_surrogate_pair_is_a_change_error(before, astral, after, data):
    doc = before + astral + after
    mid = cg.u16(before) + 1
    js = data.draw(st.sampled_from(_pair_cutting_changes(doc, mid)))
    x = cs(js)  # the shape is fine; only applying it to this text is wrong
    with pytest.raises(ChangeError) as info:
        x.apply_to_str(doc)
    assert info.value.code == "bad-changes"
    # The same change one unit over, on a pair boundary, is fine.
    ok = [mid - 1, [0, "x"], cg.u16(doc) - mid + 1]
    assert cs(ok).apply_to_str(doc) == before + "x" + astral + after


def _cm_empty(js: list) -> bool:
    """CodeMirror's `ChangeDesc.empty`: no sections, or a single keep."""
    return not js or (len(js) == 1 and isinstance(js[0], int))


@SETTINGS
@given(concurrent(), st.sampled_from(["x", "😀"]), st.integers(0, 2**16))
def test_mismatched_lengths_in_map_and_compose_are_change_errors(case, extra, seed):
    """Like CodeMirror, which throws unless a side is empty (then it short-cuts)."""
    doc, a, _ = case
    rng = random.Random(seed)
    wrong = cg.rand_changes(rng, doc + extra)
    after_a = cg.rand_changes(rng, cg.ref_apply(doc, a) + extra)
    assume(not _cm_empty(a) and not _cm_empty(wrong) and not _cm_empty(after_a))
    with pytest.raises(ChangeError):
        cs(a).map(cs(wrong))
    with pytest.raises(ChangeError):
        cs(wrong).map(cs(a), True)
    with pytest.raises(ChangeError):
        cs(a).compose(cs(after_a))


@SETTINGS
@given(doc_and_changes(flavour_from=all_flavours), st.integers(1, 5), st.sampled_from([-1, 1]))
def test_map_pos_out_of_range_is_a_change_error(case, beyond, assoc):
    doc, js = case
    with pytest.raises(ChangeError):
        cs(js).map_pos(cg.u16(doc) + beyond, assoc)
