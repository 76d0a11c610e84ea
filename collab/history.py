"""History helpers, pure: the minimal change between two texts, and authorship.

What lives here: `diff_changes(old, new)`, the ChangeSet a restore sends (a
small diff, so the cursors of people editing unchanged parts stay where they
are), and `Authorship`, the attribution of every character to the person
whose update inserted it, maintained through the update log. No I/O.
"""

from __future__ import annotations

import bisect
import difflib
from itertools import accumulate

from .changes import ChangeSet, utf16_len

_REFINE_LIMIT = 4000  # a changed block up to this size is diffed character by character


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slice equality: C-speed comparisons
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, min(len(a), len(b)) - limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) in code points of `old`, in order, not overlapping."""
    p = _common_prefix(old, new)
    s = _common_suffix(old, new, p)
    a, b = old[p:len(old) - s], new[p:len(new) - s]
    if not a and not b:
        return []
    if not a or not b or len(a) + len(b) <= _REFINE_LIMIT:
        return [(p + i, p + j, b[k:l]) for i, j, k, l in _opcodes(a, b)]
    # Large: match whole lines first, then refine the small changed blocks.
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    offs_a = [0, *accumulate(len(x) for x in la)]
    offs_b = [0, *accumulate(len(x) for x in lb)]
    out = []
    for i, j, k, l in _opcodes(la, lb):
        sa, ea, sb, eb = offs_a[i], offs_a[j], offs_b[k], offs_b[l]
        if (ea - sa) + (eb - sb) <= _REFINE_LIMIT and ea > sa and eb > sb:
            out += [(p + sa + x, p + sa + y, b[sb + u:sb + v]) for x, y, u, v in _opcodes(a[sa:ea], b[sb:eb])]
        else:
            out.append((p + sa, p + ea, b[sb:eb]))
    return out


def _opcodes(a, b):
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def diff_changes(old: str, new: str) -> ChangeSet:
    """A ChangeSet turning `old` into `new`, touching only what differs."""
    sections: list[int] = []
    inserted: list[str] = []
    pos = 0
    for start, end, text in _edits(old, new):
        if start > pos:
            sections += (utf16_len(old[pos:start]), -1)
            inserted.append("")
        sections += (utf16_len(old[start:end]), utf16_len(text))
        inserted.append(text)
        pos = end
    if pos < len(old):
        sections += (utf16_len(old[pos:]), -1)
        inserted.append("")
    return ChangeSet(sections, inserted)


class Authorship:
    """Who wrote each character: runs of (length in UTF-16 units, author), adjacent runs merged."""

    __slots__ = ("lengths", "authors")

    def __init__(self, spans: list[tuple[int, str]] | None = None):
        self.lengths: list[int] = []
        self.authors: list[str] = []
        for n, who in spans or ():
            self._push(n, who)

    def _push(self, n: int, who: str) -> None:
        if n <= 0:
            return
        if self.authors and self.authors[-1] == who:
            self.lengths[-1] += n
        else:
            self.lengths.append(n)
            self.authors.append(who)

    def apply(self, changes: ChangeSet, author: str) -> None:
        """Follow the text through `changes`: kept text keeps its author, inserted text is `author`'s."""
        for start, end, text in reversed(list(changes.changes())):
            self._splice(start, end, utf16_len(text), author)

    def _split(self, pos: int) -> int:
        """Index of the run that starts at `pos`, splitting the run around it if needed."""
        lengths = self.lengths
        ends = list(accumulate(lengths))
        i = bisect.bisect_right(ends, pos)
        start = ends[i - 1] if i else 0
        if i < len(lengths) and start < pos:
            lengths[i:i + 1] = [pos - start, ends[i] - pos]
            self.authors.insert(i, self.authors[i])
            return i + 1
        return i

    def _splice(self, start: int, end: int, n: int, who: str) -> None:
        i = self._split(start)
        j = self._split(end) if end > start else i
        lengths, authors = self.lengths, self.authors
        del lengths[i:j], authors[i:j]
        if n:
            lengths.insert(i, n)
            authors.insert(i, who)
        # Merge equal neighbours around the splice.
        for k in (i, i - 1) if n else (i - 1,):
            if 0 <= k < len(authors) - 1 and authors[k] == authors[k + 1]:
                lengths[k:k + 2] = [lengths[k] + lengths[k + 1]]
                del authors[k + 1]

    def spans(self) -> list[dict]:
        out, pos = [], 0
        for n, who in zip(self.lengths, self.authors):
            out.append({"from": pos, "to": pos + n, "author": who})
            pos += n
        return out

    def to_list(self) -> list:
        return [[n, who] for n, who in zip(self.lengths, self.authors)]
