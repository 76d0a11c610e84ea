"""Text: a document held as a list of string chunks, addressed in UTF-16 units.

Why not one `str`: replacing a few characters in a Python string copies the
whole string, so a 100 KB document typed into character by character costs
100 KB of copying per keystroke (naive slicing replays the automerge trace at
~176k edits/s and slows as the text grows). Here an edit rewrites only the
chunks it touches; a 1 MB document is never copied by an edit of a few
places. One change of so many places that copying a chunk for each would
copy about the whole text (a replace-all) is the exception: it rebuilds
the text in one pass (`_in_one_pass`).

Rules that always hold:
  * `sizes[i]` is the UTF-16 length of `chunks[i]`; `length` is their sum;
  * chunks are whole code points, so a chunk boundary never splits a
    surrogate pair; only positions inside a chunk can;
  * there is at least one chunk (possibly ""), and no chunk but a lone one is
    empty;
  * a remembered cursor (`_at`, `_at_pos`: a chunk index and its start) makes
    edits near the previous one O(1), which is how people type.
Pure: no I/O.
"""

from __future__ import annotations

from .changes import ChangeSet, utf16_len
from .errors import ChangeError

# Target chunk size in code points; chunks grow to 2x before splitting. An edit
# copies its chunk: 512 keeps a keystroke's copy small (at 2048 it was a third
# of replaying automerge-paper), and a walk across a 10 MB text is 20,000 steps.
CHUNK = 512
# Places in one change above which `apply` and `invert` may go over the whole text once instead of place by
# place (`Text._in_one_pass`: only when those places touch about as many characters as the text holds).
BULK = 64


def _split(s: str) -> list[str]:
    if len(s) <= CHUNK:
        return [s]
    return [s[i:i + CHUNK] for i in range(0, len(s), CHUNK)]


def _cp_offset(chunk: str, size: int, off: int) -> int:
    """Code point index in `chunk` of UTF-16 offset `off`; -1 if it splits a pair."""
    if size == len(chunk):
        return off
    raw = chunk.encode("utf-16-le", "surrogatepass")
    if 0 < off < size and 0xDC00 <= int.from_bytes(raw[2 * off:2 * off + 2], "little") <= 0xDFFF:
        return -1
    return len(raw[:2 * off].decode("utf-16-le", "surrogatepass"))


class Text:
    __slots__ = ("chunks", "sizes", "length", "wide", "_at", "_at_pos")

    def __init__(self, text: str = ""):
        self.chunks = _split(text)
        self.sizes = [utf16_len(c) for c in self.chunks]
        self.length = sum(self.sizes)
        # How many chunks hold astral characters: while none do, no position
        # can cut a surrogate pair and the checks are skipped.
        self.wide = sum(1 for c, n in zip(self.chunks, self.sizes) if len(c) != n)
        self._at = 0
        self._at_pos = 0

    def __str__(self) -> str:
        return "".join(self.chunks)

    def __len__(self) -> int:
        return self.length

    def copy(self) -> "Text":
        t = Text.__new__(Text)
        t.chunks = list(self.chunks)
        t.sizes = list(self.sizes)
        t.length = self.length
        t.wide = self.wide
        t._at = self._at
        t._at_pos = self._at_pos
        return t

    # -------------------------------------------------------------- lookup

    def _locate(self, pos: int) -> tuple[int, int]:
        """(chunk index, chunk start) of the chunk holding `pos` (the last one at the end)."""
        sizes = self.sizes
        i, start = self._at, self._at_pos
        if pos < start:
            if pos < start - pos:  # closer to the beginning than to the cursor
                i, start = 0, 0
            else:
                while pos < start:
                    i -= 1
                    start -= sizes[i]
        elif self.length - pos < pos - start:  # closer to the end than to the cursor
            i = len(sizes) - 1
            start = self.length - sizes[i]
            while pos < start:
                i -= 1
                start -= sizes[i]
        last = len(sizes) - 1
        while i < last and pos >= start + sizes[i]:
            start += sizes[i]
            i += 1
        self._at, self._at_pos = i, start
        return i, start

    def slice(self, start: int, end: int) -> str:
        """Text between two UTF-16 positions (must not split surrogate pairs)."""
        i, cstart = self._locate(start)
        parts = []
        pos = start
        while pos < end:
            chunk, size = self.chunks[i], self.sizes[i]
            a = _cp_offset(chunk, size, pos - cstart)
            b_off = min(end - cstart, size)
            b = _cp_offset(chunk, size, b_off)
            if a < 0 or b < 0:
                raise ChangeError(f"range {start}-{end} cuts a surrogate pair in half")
            parts.append(chunk[a:b])
            pos = cstart + b_off
            cstart += size
            i += 1
        return "".join(parts)

    def _check_boundary(self, pos: int) -> None:
        i, start = self._locate(pos)
        if _cp_offset(self.chunks[i], self.sizes[i], pos - start) < 0:
            raise ChangeError(f"a change at position {pos} cuts a surrogate pair in half")

    # ------------------------------------------------------------- editing

    def apply(self, changes: ChangeSet) -> None:
        """Apply `changes` in place; on any error the text is left untouched."""
        if changes.length != self.length:
            raise ChangeError(f"changes are for a document of length {changes.length}, "
                              f"this one has {self.length}")
        sections, inserted = changes.sections, changes.inserted
        if len(sections) == 6:
            start, keep, deleted, ins, _, keep_after = sections
            if keep == -1 and keep_after == -1 and ins >= 0:
                # Fast path, a keystroke: one replacement between two keeps.
                if not (deleted or ins):
                    return
                text = inserted[1]
                chunks, sizes = self.chunks, self.sizes
                i = self._at
                first, size = chunks[i], sizes[i]
                off = start - self._at_pos
                # Inside the cursor's chunk, where `_locate` would find it (a
                # position at a chunk's end belongs to the next chunk, but in
                # the last one); a chunk without astral characters has no pair
                # to cut, and ASCII text keeps it so.
                if (0 <= off and off + deleted <= size and (off < size or i == len(sizes) - 1)
                        and len(first) == size and text.isascii()):
                    merged = first[:off] + text + first[off + deleted:]
                    n = len(merged)
                    if n <= 2 * CHUNK and (n or len(chunks) == 1):
                        chunks[i] = merged
                        sizes[i] = n
                        self.length += n - size
                        return
                if not self.wide:
                    self._replace(start, start + deleted, text)
                    return
        self._apply(sections, inserted)

    def _apply(self, sections: list[int], inserted: list[str]) -> None:
        """The general path of `apply` (lengths already checked)."""
        edits = []
        pos = 0
        for k in range(0, len(sections), 2):
            n, ins = sections[k], sections[k + 1]
            if ins >= 0 and (n or ins):
                edits.append((pos, pos + n, inserted[k >> 1]))
            pos += n
        if self._in_one_pass(len(edits)):
            # Many edits (a replace-all): one pass over the whole text, not a chunk copied per edit
            # (100,000 replacements in a 200,000-character text: 125 ms one by one).
            whole, pieces, done = str(self), [], 0
            for start, end, text in edits:
                pieces += (whole[done:start], text)
                done = end
            pieces.append(whole[done:])
            self.__init__("".join(pieces))
            return
        if self.wide:
            for start, end, _ in edits:
                self._check_boundary(start)
                if end != start:
                    self._check_boundary(end)
        for start, end, text in reversed(edits):
            self._replace(start, end, text)

    def _in_one_pass(self, places: int) -> bool:
        """Whether a change of `places` places goes over the whole text at once: more than BULK of them,
        touching about as many characters as the text holds (a chunk each), and no astral character in
        the text, so that positions are string indices. (65 places in 10 MB: 1 ms one by one, 25 ms
        in one pass; the two cross near length / 600 places.)"""
        return places > BULK and places * CHUNK > self.length and not self.wide

    def _replace(self, start: int, end: int, text: str) -> None:
        chunks, sizes = self.chunks, self.sizes
        i, cstart = self._locate(start)
        j, jstart = i, cstart
        while end > jstart + sizes[j] and j + 1 < len(chunks):
            jstart += sizes[j]
            j += 1
        first, last = chunks[i], chunks[j]
        a = _cp_offset(first, sizes[i], start - cstart)
        b = _cp_offset(last, sizes[j], end - jstart)
        merged = first[:a] + text + last[b:]
        n = len(text) if text.isascii() else utf16_len(text)
        delta = n - (end - start)
        if i == j and len(merged) <= 2 * CHUNK and (merged or len(chunks) == 1):
            size = sizes[i] + delta
            if self.wide or n != len(text):
                self.wide += (len(merged) != size) - (len(first) != sizes[i])
            chunks[i] = merged
            sizes[i] = size
        else:
            pieces = _split(merged) if merged else []
            if not pieces and len(chunks) == j - i + 1:
                pieces = [""]
            new_sizes = [utf16_len(p) for p in pieces]
            self.wide += (sum(1 for p, m in zip(pieces, new_sizes) if len(p) != m)
                          - sum(1 for k in range(i, j + 1) if len(chunks[k]) != sizes[k]))
            chunks[i:j + 1] = pieces
            sizes[i:j + 1] = new_sizes
            if not pieces:  # the cursor's chunk vanished: restart from the top
                self._at = self._at_pos = 0
        self.length += delta

    def invert(self, changes: ChangeSet) -> ChangeSet:
        """The changes that undo `changes` on this text (before it is applied)."""
        s = changes.sections
        if len(s) == 6 and s[1] == -1 and s[5] == -1 and s[3] >= 0:
            # Fast path: one replacement between two keeps (what the loop below makes of it).
            a, n = s[0], s[2]
            return ChangeSet([a, -1, s[3], n, s[4], -1], ["", self.slice(a, a + n) if n else "", ""],
                             changes.new_length, changes.length)
        return self._invert(changes)

    def _invert(self, changes: ChangeSet) -> ChangeSet:
        """The general path of `invert`."""
        s = changes.sections
        sections: list[int] = []
        inserted: list[str] = []
        # Many sections: slice one copy of the whole text (positions are code points while no chunk
        # holds an astral character), not the chunks once per section.
        cut = str(self).__getitem__ if self._in_one_pass(len(s) >> 1) else None
        pos = 0
        for k in range(0, len(s), 2):
            n, ins = s[k], s[k + 1]
            if ins < 0:
                sections += (n, -1)
                inserted.append("")
            else:
                sections += (ins, n)
                inserted.append(self.slice(pos, pos + n) if cut is None else cut(slice(pos, pos + n)))
            pos += n
        return ChangeSet(sections, inserted, changes.new_length, changes.length)
