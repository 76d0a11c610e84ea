"""History helpers, pure: the change between two texts, and authorship through the update log.

What lives here, with the costs that make them safe to run on untrusted input:
  * `diff_changes(old, new)`: the ChangeSet a restore sends. A small diff, so
    the cursors of people editing unchanged parts stay where they are: the
    common prefix and suffix are trimmed (C-speed slice compares), the middle
    is diffed line by line with Myers' O((N+M)·D) algorithm, and each changed
    block of lines character by character. Myers stops at a cutoff (at most
    `MAX_D` edits; at most `budget` steps for the whole diff and BLOCK_BUDGET
    for one block, a step being one diagonal visited or one element
    compared), and what it gives up on is replaced whole: the result is
    always correct and the work is bounded by construction (O(N + M +
    budget), whatever the text). The diff works on code points, so it never
    cuts a surrogate pair; the ChangeSet is in UTF-16 units.
  * `Authorship`: who wrote each character, as runs of (UTF-16 length,
    author) with adjacent runs of one author merged. Flat (the stored JSON,
    or [length, author] lists) when stored, cached or answered; while updates
    are applied the runs live in a treap keyed by position (written here,
    small, checked against a list of one author per unit), so each split or
    splice is O(log n) and a replay of k updates over n runs is O(k log n).
  * `replay(spans, rows, ...)`: the authorship after some update rows, and the
    checkpoints worth storing on the way: a pure function over (cached spans,
    update rows) that every store calls through collab/compute.py, off the
    event loop.
  * `text_after(text, changes, count)`: the text of a version, rebuilt from a
    snapshot and the update rows after it (stores' `text_at`, through
    collab/compute.py, off the event loop).
What never lives here: I/O, clocks, threads or processes (see compute.py).
"""

from __future__ import annotations

from array import array
from itertools import accumulate
from random import random

import orjson

from .changes import ChangeSet, utf16_len
from .errors import ChangeError
from .text import Text

# ----------------------------------------------------------------------- diff

MAX_D = 1000              # most edits (inserted + deleted elements) one Myers search looks for
DIFF_BUDGET = 2_000_000   # steps one whole diff may spend in Myers searches (about a second of Python)
BLOCK_BUDGET = 200_000    # steps one character-level search may spend (a changed block, or a small text)
SMALL = 2_000             # texts whose changed middle is this short are diffed per character directly


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slice equality: C-speed comparisons
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    la, lb = len(a), len(b)
    lo, hi = 0, min(la, lb) - limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def myers(a, b, budget: list[int], max_d: int = MAX_D) -> list[tuple[int, int, int, int]] | None:
    """The shortest edit script from sequence `a` to `b` as hunks (i1, i2, j1, j2): a[i1:i2] becomes
    b[j1:j2], in order. None when it needs more than `max_d` edits or more steps than `budget[0]`
    (which is decreased by the steps spent either way).

    Myers' greedy forward search ("An O(ND) difference algorithm", 1986): V[k] is the furthest x
    reached on diagonal k = x - y with d edits; each level's V is kept to walk the path back.
    """
    n, m = len(a), len(b)
    limit = min(max_d, n + m)
    off = limit + 1
    v = [0] * (2 * limit + 3)
    trace: list[array] = []
    steps, allowed = 0, budget[0]
    for d in range(limit + 1):
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[off + k - 1] < v[off + k + 1]):
                x = v[off + k + 1]
            else:
                x = v[off + k - 1] + 1
            y = x - k
            x0 = x
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[off + k] = x
            steps += 1 + x - x0
            if x >= n and y >= m:
                trace.append(array("q", v[off - d:off + d + 1]))
                budget[0] -= steps
                return _hunks(trace, n, m)
            if steps > allowed:
                budget[0] -= steps
                return None
        trace.append(array("q", v[off - d:off + d + 1]))
    budget[0] -= steps
    return None


def _hunks(trace: list[array], x: int, y: int) -> list[tuple[int, int, int, int]]:
    """Walk the search back from (x, y) = (n, m) and group the edits into hunks."""
    moves = []  # (x, y) before each edit, and whether it deletes a[x] (else inserts b[y]), backwards
    for d in range(len(trace) - 1, 0, -1):
        prev = trace[d - 1]  # V for k in -(d-1) .. d-1, at index k + d - 1
        k = x - y
        if k == -d or (k != d and prev[k - 1 + d - 1] < prev[k + 1 + d - 1]):
            px = prev[k + 1 + d - 1]  # came down: inserted b[py]
            py = px - (k + 1)
            moves.append((px, py, False))
        else:
            px = prev[k - 1 + d - 1]  # came right: deleted a[px]
            py = px - (k - 1)
            moves.append((px, py, True))
        x, y = px, py
    hunks: list[list[int]] = []
    for px, py, deletes in reversed(moves):
        if hunks and hunks[-1][1] == px and hunks[-1][3] == py:
            h = hunks[-1]
        else:
            h = [px, px, py, py]
            hunks.append(h)
        if deletes:
            h[1] += 1
        else:
            h[3] += 1
    return [tuple(h) for h in hunks]


def _lines(s: str) -> list[str]:
    parts = s.split("\n")
    last = parts.pop()
    out = [p + "\n" for p in parts]
    if last:
        out.append(last)
    return out


def _edits(old: str, new: str, budget: list[int]) -> list[tuple[int, int, str]]:
    """(start, end, replacement) in code points of `old`, in order, not overlapping."""
    p = _common_prefix(old, new)
    s = _common_suffix(old, new, p)
    a, b = old[p:len(old) - s], new[p:len(new) - s]
    if not a and not b:
        return []
    if len(a) + len(b) <= SMALL or ("\n" not in a and "\n" not in b):
        return _chars(a, b, budget, p)
    # Lines first (each distinct line one number), then each changed block per character.
    la, lb = _lines(a), _lines(b)
    ids: dict[str, int] = {}
    hunks = myers([ids.setdefault(x, len(ids)) for x in la], [ids.setdefault(x, len(ids)) for x in lb], budget)
    if hunks is None:
        return [(p, p + len(a), b)]
    offs_a = [0, *accumulate(map(len, la))]
    offs_b = [0, *accumulate(map(len, lb))]
    out: list[tuple[int, int, str]] = []
    for i1, i2, j1, j2 in hunks:
        sa, ea, sb, eb = offs_a[i1], offs_a[i2], offs_b[j1], offs_b[j2]
        if sa < ea and sb < eb:
            x = _common_prefix(a[sa:ea], b[sb:eb])
            y = _common_suffix(a[sa:ea], b[sb:eb], x)
            out += _chars(a[sa + x:ea - y], b[sb + x:eb - y], budget, p + sa + x)
        else:
            out.append((p + sa, p + ea, b[sb:eb]))
    return out


def _chars(a: str, b: str, budget: list[int], base: int) -> list[tuple[int, int, str]]:
    """A changed stretch per character, spending at most BLOCK_BUDGET steps (else replaced whole)."""
    if a and b and budget[0] > 0:
        local = [min(budget[0], BLOCK_BUDGET)]
        hunks = myers(a, b, local)
        budget[0] -= min(budget[0], BLOCK_BUDGET) - local[0]
        if hunks is not None:
            return [(base + i1, base + i2, b[j1:j2]) for i1, i2, j1, j2 in hunks]
    return [(base, base + len(a), b)]


def diff_changes(old: str, new: str, budget: int = DIFF_BUDGET) -> ChangeSet:
    """A ChangeSet turning `old` into `new`, touching only what differs (within `budget` steps)."""
    sections: list[int] = []
    inserted: list[str] = []
    pos = 0
    for start, end, text in _edits(old, new, [budget]):
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


# ----------------------------------------------------------------- authorship

class _Run:
    """A treap node: one run of `n` units by `who`; `size` is the units of its whole subtree."""

    __slots__ = ("n", "who", "prio", "left", "right", "size")

    def __init__(self, n: int, who: str, prio: float):
        self.n, self.who, self.prio = n, who, prio
        self.left = self.right = None
        self.size = n


# Sizes are kept by arithmetic: a split at `pos` leaves exactly `pos` units on its left.

def _split(t: _Run | None, pos: int):
    """(the first `pos` units, the rest) of tree `t`; a run across `pos` is cut in two."""
    if t is None:
        return None, None
    before = t.left.size if t.left is not None else 0
    if pos <= before:
        a, t.left = _split(t.left, pos)
        t.size -= pos
        return a, t
    end = before + t.n
    if pos >= end:
        t.right, b = _split(t.right, pos - end)
        t.size = pos
        return t, b
    tail = _Run(end - pos, t.who, t.prio)  # same priority: still above t.right's
    tail.right = t.right
    tail.size = t.size - pos
    t.n, t.right, t.size = pos - before, None, pos
    return t, tail


def _merge(a: _Run | None, b: _Run | None) -> _Run | None:
    """Tree `a` followed by tree `b`."""
    if a is None:
        return b
    if b is None:
        return a
    if a.prio > b.prio:
        a.size += b.size
        a.right = _merge(a.right, b)
        return a
    b.size += a.size
    b.left = _merge(a, b.left)
    return b


def _first(t: _Run) -> _Run:
    while t.left is not None:
        t = t.left
    return t


def _last(t: _Run) -> _Run:
    while t.right is not None:
        t = t.right
    return t


def _grow_last(t: _Run, k: int) -> None:
    """Lengthen the last run of `t` by `k` units."""
    while True:
        t.size += k
        if t.right is None:
            t.n += k
            return
        t = t.right


def _grow_at(t: _Run, pos: int, k: int) -> None:
    """Lengthen by `k` the run holding unit `pos` (0 <= pos < t.size)."""
    while True:
        t.size += k
        before = t.left.size if t.left is not None else 0
        if pos < before:
            t = t.left
        elif pos < before + t.n:
            t.n += k
            return
        else:
            pos -= before + t.n
            t = t.right


def _who_at(t: _Run, pos: int) -> str:
    """The author of unit `pos` (0 <= pos < t.size)."""
    while True:
        before = t.left.size if t.left is not None else 0
        if pos < before:
            t = t.left
        elif pos < before + t.n:
            return t.who
        else:
            pos -= before + t.n
            t = t.right


def _pop_first(t: _Run):
    """(the first run, the rest of `t`)."""
    if t.left is None:
        return t, t.right
    node, t.left = _pop_first(t.left)
    t.size -= node.n
    return node, t


def _count(t: _Run | None) -> int:
    n, todo = 0, [t] if t is not None else []
    while todo:
        t = todo.pop()
        n += 1
        if t.left is not None:
            todo.append(t.left)
        if t.right is not None:
            todo.append(t.right)
    return n


def _build(runs: list) -> _Run | None:
    """A treap of the runs ([length, author] pairs) in order, in O(n): a Cartesian tree on random priorities."""
    stack: list[_Run] = []
    for n, who in runs:
        node = _Run(n, who, random())
        below = None
        while stack and stack[-1].prio < node.prio:
            below = stack.pop()
        node.left = below
        if stack:
            stack[-1].right = node
        stack.append(node)
    if not stack:
        return None
    root = stack[0]
    order, todo = [], [root]  # sizes bottom-up: a preorder reversed fixes children first
    while todo:
        t = todo.pop()
        order.append(t)
        if t.left is not None:
            todo.append(t.left)
        if t.right is not None:
            todo.append(t.right)
    for t in reversed(order):
        t.size = t.n + (t.left.size if t.left is not None else 0) + (t.right.size if t.right is not None else 0)
    return root


def _flatten(t: _Run | None) -> list:
    runs: list = []
    stack: list[_Run] = []
    while stack or t is not None:
        while t is not None:
            stack.append(t)
            t = t.left
        t = stack.pop()
        runs.append([t.n, t.who])
        t = t.right
    return runs


class Authorship:
    """Who wrote each character: runs of (length in UTF-16 units, author), adjacent runs merged.

    Invariants: runs are non-empty and no two neighbours have the same author,
    whichever form holds them: the stored JSON `[[length, author], ...]`
    (bytes: what caches keep, since a server holding millions of small lists
    makes every full garbage collection pause the event loop), the same as
    Python lists, or the treap while `apply` edits them. Each form is made
    from another only when asked for; a list handed in or out is never
    changed in place afterwards (so it may be shared).
    """

    __slots__ = ("_json", "_runs", "_tree", "_count")

    def __init__(self, spans: list | None = None):
        runs: list = []
        for n, who in spans or ():
            if n <= 0:
                continue
            if runs and runs[-1][1] == who:
                runs[-1] = [runs[-1][0] + n, who]
            else:
                runs.append([n, who])
        self._json: bytes | None = None
        self._runs: list | None = runs
        self._tree: _Run | None = None
        self._count = len(runs)

    @classmethod
    def from_list(cls, runs: list) -> "Authorship":
        """Wrap `to_list()` output as it is (trusted: already merged), in O(1)."""
        self = cls.__new__(cls)
        self._json, self._runs, self._tree, self._count = None, runs, None, len(runs)
        return self

    @classmethod
    def from_json(cls, data: bytes | str, runs: int | None = None) -> "Authorship":
        """Wrap `to_json()` output (or the stored text), parsed only when needed."""
        self = cls.__new__(cls)
        self._json = data.encode() if type(data) is str else data
        self._runs, self._tree, self._count = None, None, runs
        return self

    def _flat(self) -> list:
        if self._tree is not None:
            self._runs, self._tree = _flatten(self._tree), None
        elif self._runs is None:
            self._runs = orjson.loads(self._json)
            self._count = len(self._runs)
        return self._runs

    def _root(self) -> _Run | None:
        if self._tree is None:
            runs = self._flat()
            self._runs, self._json = None, None
            self._tree = _build(runs) if runs else None
            if self._tree is None:
                self._runs = []
        return self._tree

    @property
    def runs(self) -> int:
        """How many runs (what the spans answer holds)."""
        if self._count is None:
            self._flat()
        return self._count

    @property
    def length(self) -> int:
        """The text's length in UTF-16 units."""
        return self._tree.size if self._tree is not None else sum(n for n, _ in self._flat())

    def apply(self, changes: ChangeSet, author: str) -> None:
        """Follow the text through `changes`: kept text keeps its author, inserted text is `author`'s."""
        for start, end, text in reversed(list(changes.changes())):
            self._splice(start, end, utf16_len(text), author)

    def apply_json(self, changes: list, author: str) -> None:
        """`apply` for ChangeSetJSON the server stored itself (trusted: not validated again)."""
        edits, pos = [], 0
        for part in changes:
            if type(part) is int:
                pos += part
                continue
            deleted = part[0]
            if len(part) == 1:
                ins = 0
            elif len(part) == 2:
                ins = utf16_len(part[1])
            else:
                ins = sum(utf16_len(line) for line in part[1:]) + len(part) - 2
            if deleted or ins:
                edits.append((pos, pos + deleted, ins))
            pos += deleted
        for start, end, n in reversed(edits):
            self._splice(start, end, n, author)

    def _splice(self, start: int, end: int, n: int, who: str) -> None:
        """Replace units start..end with `n` units written by `who`, merging equal neighbours.

        Run counting leans on the invariant: right after a split, the two
        sides end and start with one author only if the split cut a run.
        """
        root = self._root()
        if end == start:
            if not n:
                return
            # Typing just after one's own text: that run grows (no split, no new run).
            if start > 0 and _who_at(root, start - 1) == who:
                _grow_at(root, start - 1, n)
                return
        left, right = _split(root, start)
        if left is not None and right is not None and _last(left).who == _first(right).who:
            self._count += 1
        if end > start:
            middle, right = _split(right, end - start)
            if right is not None and _last(middle).who == _first(right).who:
                self._count += 1
            self._count -= _count(middle)
        if n:
            if left is not None and _last(left).who == who:
                _grow_last(left, n)
            else:
                left = _merge(left, _Run(n, who, random()))
                self._count += 1
        if left is not None and right is not None and _last(left).who == _first(right).who:
            head, right = _pop_first(right)
            _grow_last(left, head.n)
            self._count -= 1
        self._tree = _merge(left, right)
        if self._tree is None:
            self._runs = []

    def spans(self) -> list[dict]:
        out, pos = [], 0
        for n, who in self._flat():
            out.append({"from": pos, "to": pos + n, "author": who})
            pos += n
        return out

    def to_json(self) -> bytes:
        """The runs as stored: JSON [[length, author], ...]."""
        if self._json is None or self._tree is not None:
            self._json = orjson.dumps(self._flat())
        return self._json

    def to_list(self) -> list:
        """The runs as [length, author] pairs (the stored form); shared, so never change it in place."""
        return self._flat()

    def __eq__(self, other) -> bool:
        return isinstance(other, Authorship) and self._flat() == other._flat()

    def __repr__(self) -> str:
        return f"Authorship({self.to_list()!r})"


def run_count(runs: bytes | str) -> int:
    """How many runs the stored runs JSON holds."""
    return len(orjson.loads(runs))


def spans_json(runs: bytes) -> bytes:
    """The /authors answer's spans, [{"from", "to", "author"}, ...], as JSON, from the stored runs JSON."""
    return orjson.dumps(Authorship.from_json(runs).spans())


def replay(spans: bytes | str, rows: list[tuple[int, str, str]], every: int, saved: int,
           spacing: int) -> tuple[bytes, list[tuple[int, str]], int]:
    """Authorship after the update `rows`, starting from `spans` (the authorship just before them).

    `spans` and the result are the stored JSON form ([[length, author], ...]);
    `rows` are (version, author, changes as stored ChangeSetJSON text), in
    order and contiguous. Returns (the spans after the last row, the
    checkpoints worth storing as (version, spans JSON text), the run count).
    A checkpoint is taken at a multiple of `every` at least `runs / spacing`
    versions after the last one stored (`saved`), so the stored spans grow
    with the history (about `spacing` runs per update at most), never with
    its square, and a later replay starts at most max(every, runs / spacing)
    updates back.
    """
    authors = Authorship.from_json(spans) if spans else Authorship()
    names: dict[str, str] = {}  # one string object per author
    checkpoints: list[tuple[int, str]] = []
    for version, author, changes in rows:
        authors.apply_json(orjson.loads(changes), names.setdefault(author, author))
        if version % every == 0 and (version - saved) * spacing >= authors.runs:
            checkpoints.append((version, authors.to_json().decode()))
            saved = version
    return authors.to_json(), checkpoints, authors.runs


def text_after(text: str, changes: bytes, count: int) -> str:
    """`text` with `count` updates' changes applied in order. `changes` is their stored ChangeSetJSON texts
    joined by commas, as UTF-8 (b",".join(rows)): one bytes object crosses to a worker in one copy, where a
    list of 80,000 took 10 ms to pickle and as long to read back, and a str holding one emoji anywhere is
    four bytes a character. Raises ChangeError, or ValueError (not JSON), when they are not `count` changes
    that chain onto `text` (a row that is not one JSON value is found here, never taken for two)."""
    parts = orjson.loads(b"[" + changes + b"]")
    if len(parts) != count:
        raise ChangeError(f"{count} update rows hold {len(parts)} changes")
    doc = Text(text)
    for one in parts:
        doc.apply(ChangeSet.from_json(one))
    return str(doc)
