"""collab/text.py: the chunked document must behave exactly like a plain string.

With a chunk size of a few code points every edit crosses chunk boundaries,
splits and merges chunks, and moves the remembered cursor back and forth, so
the property covers what a 512-code-point chunk only reaches on big
documents.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from casegen import FLAVOURS, rand_changes, rand_doc
from collab import text as text_module
from collab.changes import ChangeSet, utf16_len
from collab.errors import ChangeError
from collab.text import Text


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(text_module, "CHUNK", 3)


def check_invariants(doc: Text) -> None:
    assert doc.sizes == [utf16_len(c) for c in doc.chunks]
    assert doc.length == sum(doc.sizes)
    assert doc.chunks and (len(doc.chunks) == 1 or all(doc.chunks))
    assert doc.wide == sum(1 for c, n in zip(doc.chunks, doc.sizes) if len(c) != n)
    assert all(len(c) <= 2 * text_module.CHUNK for c in doc.chunks)


@pytest.mark.parametrize("bulk", ["edit by edit", "in one pass"])
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 25), flavour=st.sampled_from(FLAVOURS))
def test_applying_to_text_equals_applying_to_a_string(tiny_chunks, monkeypatch, bulk, seed, steps, flavour):
    # "in one pass": every change of two places or more goes the way a replace-all does, while no
    # astral character is in the text (Text._in_one_pass)
    monkeypatch.setattr(Text, "_in_one_pass", (lambda self, places: False) if bulk == "edit by edit"
                        else (lambda self, places: places > 1 and not self.wide))
    rng = random.Random(seed)
    plain = rand_doc(rng)
    doc = Text(plain)
    check_invariants(doc)
    for _ in range(steps):
        changes = ChangeSet.from_json(rand_changes(rng, plain, flavour))
        inverse = doc.invert(changes)
        doc.apply(changes)
        plain = changes.apply_to_str(plain)
        assert str(doc) == plain and len(doc) == utf16_len(plain)
        check_invariants(doc)
        start = rng.randint(0, len(plain))
        end = rng.randint(start, len(plain))
        assert doc.slice(utf16_len(plain[:start]), utf16_len(plain[:end])) == plain[start:end]
        if rng.random() < 0.2:  # the inverse brings the text back, then forward again
            doc.apply(inverse)
            assert inverse.apply_to_str(plain) == str(doc)
            doc.apply(changes)
            assert str(doc) == plain


def test_a_copy_is_independent(tiny_chunks):
    doc = Text("hello 😀 world")
    copy = doc.copy()
    doc.apply(ChangeSet.from_json([[5, "bye"], 9]))
    assert (str(doc), str(copy)) == ("bye 😀 world", "hello 😀 world")


@pytest.mark.parametrize("changes, message", [
    ([7, [0, "x"], 2], "cuts a surrogate pair"),         # between the halves of 😀
    ([6, [2], 1], None),                                 # deletes 😀 whole: fine
    ([6, [1], 2], "cuts a surrogate pair"),              # deletes half of it
    ([3], "length"),                                     # wrong length
])
def test_bad_changes_leave_the_text_untouched(tiny_chunks, changes, message):
    doc = Text("hello 😀 ")
    before = (list(doc.chunks), list(doc.sizes), doc.length, doc.wide)
    cs = ChangeSet.from_json(changes)
    if message is None:
        doc.apply(cs)
        assert str(doc) == "hello  "
        return
    with pytest.raises(ChangeError, match=message):
        doc.apply(cs)
    assert (doc.chunks, doc.sizes, doc.length, doc.wide) == before
