"""ChangeSet: CodeMirror 6's change algebra in pure Python, counted in UTF-16 units.

What lives here: parsing and validating ChangeSetJSON, `map`, `compose`,
`map_pos` and `to_json`, with results identical (section for section) to
`@codemirror/state`, because clients compare nothing but clientIDs and must
reach the same text as the server. What never lives here: I/O, clocks, the
document store. The server's document text is `collab.text.Text`; applying to
a plain `str` (`apply_to_str`) is for history and tests.

Representation, as in CodeMirror: `sections` is a flat list of pairs
`[len, ins, len, ins, ...]`. `ins == -1` keeps `len` units; `ins >= 0`
replaces `len` units with `ins` units of new text, held in `inserted[k]` for
pair `k` ("" where nothing is inserted). Inserted text is a Python str whose
lines are joined by "\\n"; its UTF-16 length is `ins`.

The algebra (tested with hypothesis and against CodeMirror in Node):
  * `a.compose(b)` applies like `a` then `b` (b.length == a.new_length);
  * for `a`, `b` on the same document, `a.compose(b.map(a))` and
    `b.compose(a.map(b, True))` produce the same document: `before=True`
    puts this set's insertions before the other's at the same position;
  * `map_pos` follows a position through the changes, `assoc` choosing the
    side of an insertion made exactly at the position.
"""

from __future__ import annotations

from .errors import ChangeError

KEEP = -1
_new = object.__new__


def utf16_len(s: str) -> int:
    """Length of `s` in UTF-16 code units (what JavaScript's .length says)."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) >> 1


def slice16(s: str, start: int, end: int | None = None) -> str:
    """`s[start:end]` with UTF-16 offsets (JavaScript's String.slice)."""
    if s.isascii() or len(s) == utf16_len(s):
        return s[start:end]
    raw = s.encode("utf-16-le", "surrogatepass")
    return raw[2 * start: None if end is None else 2 * end].decode("utf-16-le", "surrogatepass")


def _text_length(lines: list, where: int) -> tuple[str, int]:
    """Join validated insert lines; reject non-strings, CR/LF and lone surrogates."""
    for line in lines:
        if type(line) is not str:
            raise ChangeError(f"item {where}: inserted lines must be strings, got {type(line).__name__}")
        if "\n" in line or "\r" in line:
            raise ChangeError(f"item {where}: an inserted line contains a line break (CR or LF)")
    text = lines[0] if len(lines) == 1 else "\n".join(lines)
    if text.isascii():
        return text, len(text)
    try:
        return text, len(text.encode("utf-16-le")) >> 1
    except UnicodeEncodeError:
        raise ChangeError(f"item {where}: inserted text contains a lone surrogate") from None


class ChangeSet:
    """An immutable set of changes to a document of `length` UTF-16 units."""

    __slots__ = ("sections", "inserted", "length", "new_length")

    def __init__(self, sections: list[int], inserted: list[str],
                 length: int | None = None, new_length: int | None = None):
        # Trusted constructor: callers pass consistent lists (from_json validates)
        # and, when they have them at hand, the two lengths.
        self.sections = sections
        self.inserted = inserted
        if length is None or new_length is None:
            length = new_length = 0
            for i in range(0, len(sections), 2):
                n, ins = sections[i], sections[i + 1]
                length += n
                new_length += n if ins < 0 else ins
        self.length = length
        self.new_length = new_length

    # ---------------------------------------------------------------- JSON

    @classmethod
    def from_json(cls, value) -> "ChangeSet":
        """Parse ChangeSetJSON, keeping its sections exactly as given (as CodeMirror does).

        Stricter than CodeMirror: lengths must be non-negative integers (not
        bools or floats), inserted lines strings without CR/LF or lone
        surrogates. Whether the set fits a document is checked when applying.
        """
        # Fast path, a keystroke: `[n, [d, "line"], m]` with one plain ASCII line,
        # or a deletion `[n, [d], m]`. Exactly what the general parser below
        # builds for these shapes; anything else, or anything doubtful, goes there.
        if type(value) is list and len(value) == 3:
            before, part, after = value
            if type(before) is int and type(after) is int and type(part) is list and before >= 0 and after >= 0:
                k = len(part)
                if k == 2:
                    deleted, line = part
                    if (type(deleted) is int and type(line) is str and deleted >= 0 and line.isascii()
                            and "\n" not in line and "\r" not in line):
                        n = len(line)
                        cs = _new(cls)  # __init__ skipped: the fields are set right here
                        cs.sections = [before, KEEP, deleted, n, after, KEEP]
                        cs.inserted = ["", line, ""]
                        cs.length = before + deleted + after
                        cs.new_length = before + n + after
                        return cs
                elif k == 1:
                    deleted = part[0]
                    if type(deleted) is int and deleted >= 0:
                        cs = _new(cls)
                        cs.sections = [before, KEEP, deleted, 0, after, KEEP]
                        cs.inserted = ["", "", ""]
                        cs.length = before + deleted + after
                        cs.new_length = before + after
                        return cs
        return cls._parse(value)

    @classmethod
    def _parse(cls, value) -> "ChangeSet":
        """The general parser behind `from_json`."""
        if type(value) is not list:
            raise ChangeError(f"changes must be a list, got {type(value).__name__}")
        sections: list[int] = []
        inserted: list[str] = []
        length = new_length = 0
        for i, part in enumerate(value):
            kind = type(part)
            if kind is int:
                if part < 0:
                    raise ChangeError(f"item {i}: negative length {part}")
                sections += (part, KEEP)
                inserted.append("")
                length += part
                new_length += part
            elif kind is list:
                if not part:
                    raise ChangeError(f"item {i}: empty replacement, expected [deleted, ...lines]")
                deleted = part[0]
                if type(deleted) is not int:
                    raise ChangeError(f"item {i}: deleted length must be an integer, got {_kind(deleted)}")
                if deleted < 0:
                    raise ChangeError(f"item {i}: negative deleted length {deleted}")
                length += deleted
                if len(part) == 1:
                    sections += (deleted, 0)
                    inserted.append("")
                    continue
                line = part[1]
                if len(part) == 2 and type(line) is str and line.isascii() and "\n" not in line and "\r" not in line:
                    text, n = line, len(line)  # the common case: one plain line
                else:
                    text, n = _text_length(part[1:], i)
                sections += (deleted, n)
                inserted.append(text)
                new_length += n
            else:
                raise ChangeError(f"item {i}: expected a length or a [deleted, ...lines] list, got {_kind(part)}")
        return cls(sections, inserted, length, new_length)

    def to_json(self) -> list:
        """CodeMirror's ChangeSet.toJSON()."""
        sections, inserted = self.sections, self.inserted
        if len(sections) == 6 and sections[1] == KEEP and sections[5] == KEEP and sections[3] >= 0:
            # Fast path: one replacement between two keeps (what typing makes).
            n = sections[2]
            return [sections[0], [n, *inserted[1].split("\n")] if sections[3] else [n], sections[4]]
        return self._to_json()

    def _to_json(self) -> list:
        """The general serialiser behind `to_json`."""
        sections, inserted = self.sections, self.inserted
        out: list = []
        for i in range(0, len(sections), 2):
            n, ins = sections[i], sections[i + 1]
            if ins < 0:
                out.append(n)
            elif ins == 0:
                out.append([n])
            else:
                out.append([n, *inserted[i >> 1].split("\n")])
        return out

    def __eq__(self, other) -> bool:
        return (isinstance(other, ChangeSet) and self.sections == other.sections
                and self.to_json() == other.to_json())

    def __hash__(self):  # pragma: no cover - sets are not hashed
        raise TypeError("ChangeSet is not hashable")

    def __repr__(self) -> str:
        return f"ChangeSet({self.to_json()!r})"

    def normalized(self) -> "ChangeSet":
        """The same changes with empty sections dropped and like neighbours merged.

        Sets that CodeMirror builds are left exactly as they are; `fromJSON`
        keeps whatever it is given, and its compose/map misbehave on some
        un-normalised sets (e.g. a zero-length keep: [0, 3] composed with
        [[2, "xy"], 1] inserts "xy" twice). The server normalises what clients
        push, so such sets never reach a rebase.
        """
        if _one_replacement(self.sections) or _is_normal(self.sections):
            # Normalised already (a keystroke, most pushes): `_normalized` would rebuild it as it is.
            return self
        return self._normalized()

    def _normalized(self) -> "ChangeSet":
        """The general normaliser behind `normalized`."""
        s, texts = self.sections, self.inserted
        sections: list[int] = []
        values: list[str] = []
        for i in range(0, len(s), 2):
            # No forced joins: a deletion followed by an insertion stays two
            # sections, since merging them would move tie-breaks and positions.
            _add_section(sections, s[i], s[i + 1])
            if s[i + 1] > 0:
                _add_insert(values, sections, texts[i >> 1])
        return _finish(sections, values)

    @property
    def is_empty(self) -> bool:
        s = self.sections
        return not s or (len(s) == 2 and s[1] < 0)

    def changes(self):
        """Yield (fromA, toA, text) for every replaced range, in document order."""
        pos = 0
        sections, inserted = self.sections, self.inserted
        for i in range(0, len(sections), 2):
            n, ins = sections[i], sections[i + 1]
            if ins >= 0 and (n or ins):
                yield pos, pos + n, inserted[i >> 1]
            pos += n

    def counts(self) -> tuple[int, int]:
        """(inserted, deleted) UTF-16 units, for history summaries."""
        ins_total = del_total = 0
        sections = self.sections
        for i in range(0, len(sections), 2):
            if sections[i + 1] >= 0:
                del_total += sections[i]
                ins_total += sections[i + 1]
        return ins_total, del_total

    # ------------------------------------------------------------- applying

    def apply_to_str(self, text: str) -> str:
        """The text after these changes; refuses a wrong length or a cut surrogate pair."""
        doc_len = utf16_len(text)
        if doc_len != self.length:
            raise ChangeError(f"changes are for a document of length {self.length}, this one has {doc_len}")
        if text.isascii() or len(text) == doc_len:
            pieces, last = [], 0
            for start, end, ins in self.changes():
                pieces.append(text[last:start])
                pieces.append(ins)
                last = end
            pieces.append(text[last:])
            return "".join(pieces)
        raw = text.encode("utf-16-le", "surrogatepass")
        pieces_b, last = [], 0
        for start, end, ins in self.changes():
            for p in (start, end):
                if 0 < p < doc_len and 0xDC00 <= int.from_bytes(raw[2 * p:2 * p + 2], "little") <= 0xDFFF:
                    raise ChangeError(f"a change at position {p} cuts a surrogate pair in half")
            pieces_b.append(raw[2 * last:2 * start])
            pieces_b.append(ins.encode("utf-16-le", "surrogatepass"))
            last = end
        pieces_b.append(raw[2 * last:])
        return b"".join(pieces_b).decode("utf-16-le", "surrogatepass")

    # ------------------------------------------------------------ positions

    def map_pos(self, pos: int, assoc: int = -1) -> int:
        """Where `pos` ends up after the changes (CodeMirror's MapMode.Simple).

        A position inside a replaced range moves to its start when `assoc < 0`
        and to its end otherwise; at an insertion point `assoc` picks the side.
        """
        pos_a = pos_b = 0
        sections = self.sections
        for i in range(0, len(sections), 2):
            n, ins = sections[i], sections[i + 1]
            end_a = pos_a + n
            if ins < 0:
                if end_a > pos:
                    return pos_b + (pos - pos_a)
                pos_b += n
            else:
                if end_a > pos or (end_a == pos and assoc < 0 and not n):
                    return pos_b if (pos == pos_a or assoc < 0) else pos_b + ins
                pos_b += ins
            pos_a = end_a
        if pos > pos_a:
            raise ChangeError(f"position {pos} is out of range for changes of length {pos_a}")
        return pos_b

    # ------------------------------------------------------------- algebra

    # The shortcuts below (returning a set unchanged, un-normalised, when the
    # other is empty) are CodeMirror's; they decide whether the JSON of a
    # result is normalised, so they are kept exactly.

    def map(self, other: "ChangeSet", before: bool = False) -> "ChangeSet":
        """These changes moved over `other` (both apply to the same document)."""
        return self if other.is_empty else _map(self, other, before, True)

    def map_desc(self, other: "ChangeSet", before: bool = False) -> "ChangeSet":
        """`map` without its shortcut: CodeMirror's `ChangeSet.mapDesc` override.

        In @codemirror/state a ChangeSet's `mapDesc(other, before)` is
        `mapSet(this, other, before, true)`: it keeps the inserted text (so the
        result is still a ChangeSet) and, unlike `map` and the base class's
        `ChangeDesc.mapDesc`, it maps even when `other` is empty (which
        normalises the result). `before` means: these changes happened
        first, so at one position they go before `other`'s insertions.
        """
        return _map(self, other, before, True)

    def compose(self, other: "ChangeSet") -> "ChangeSet":
        """One set equivalent to applying self, then `other`."""
        if self.is_empty:
            return other
        return self if other.is_empty else _compose(self, other, True)

    def compose_desc(self, other: "ChangeSet") -> "ChangeSet":
        """Like `compose` but the result carries no text (CodeMirror's composeDesc)."""
        if self.is_empty:
            return other
        return self if other.is_empty else _compose(self, other, False)


class ChangeDesc(ChangeSet):
    """A change set without its inserted text (CodeMirror's ChangeDesc): positions only.

    Used while rebasing, where only the shape of the accepted changes matters.
    """

    __slots__ = ()

    def map_desc(self, other: ChangeSet, before: bool = False) -> "ChangeDesc":
        return self if other.is_empty else _map(self, other, before, False)

    def to_json(self) -> list:
        raise TypeError("a ChangeDesc has no text to serialise")


# ---------------------------------------------------------------------------
# Building results. Both algorithms append sections through `_add_section`,
# which merges neighbours the way CodeMirror does, so that our JSON equals
# theirs section for section.


def _kind(value) -> str:
    """What a JSON value is, for an error: its type, but an integer past 64 bits (which orjson reads as a
    float) is said to be one."""
    if type(value) is float and value.is_integer() and abs(value) >= 2 ** 63:
        return "a number too large (over 64 bits)"
    return type(value).__name__


def _add_section(sections: list[int], n: int, ins: int, force_join: bool = False) -> None:
    if n == 0 and ins <= 0:
        return
    last = len(sections) - 2
    if last >= 0 and ins <= 0 and ins == sections[last + 1]:
        sections[last] += n
    elif last >= 0 and n == 0 and sections[last] == 0:
        sections[last + 1] += ins
    elif force_join:
        sections[last] += n
        sections[last + 1] += ins
    else:
        sections += (n, ins)


def _is_normal(s: list[int]) -> bool:
    """Whether `_add_section` would append every pair of `s` as it is (none empty, none merged into the
    one before), so normalising it changes nothing: a scan, a fifth of the cost of a rebuild."""
    prev_n, prev_ins = -1, -3
    for n, ins in zip(s[0::2], s[1::2]):
        if (ins <= 0 and (n == 0 or ins == prev_ins)) or (n == 0 and prev_n == 0):
            return False
        prev_n, prev_ins = n, ins
    return True


def _add_insert(values: list[str], sections: list[int], text: str) -> None:
    """Attach `text` to the last section (appending if that section already has text)."""
    if not text:
        return
    index = (len(sections) - 2) >> 1
    if index < len(values):
        values[-1] += text
    else:
        values.extend([""] * (index - len(values)))
        values.append(text)


def _finish(sections: list[int], values: list[str] | None) -> ChangeSet:
    count = len(sections) >> 1
    if values is None:
        return ChangeDesc(sections, [""] * count)
    if len(values) < count:
        values.extend([""] * (count - len(values)))
    return ChangeSet(sections, values)


# Both algorithms walk two sets side by side with a cursor on each, kept in
# local variables (a cursor object with methods cost a third of a rebase):
#   i*   index just past the current pair (pairs are told apart by it)
#   *len, *ins  what is left of the current pair; ins == -2: the walk is done
#   *off how far into the current pair we are (into its text, for an insertion)
# "next" below loads the following pair:
#   if i < n: len, ins = s[i], s[i + 1]; i += 2  else: len, ins = 0, -2;  off = 0
# "forward(k)": if k == len: next  else: len -= k; off += k


def _one_replacement(s: list[int]) -> bool:
    """Whether `sections` are a keystroke: one non-empty replacement between two non-empty keeps."""
    return (len(s) == 6 and s[1] == KEEP and s[5] == KEEP and s[3] >= 0 and s[0] > 0 and s[4] > 0
            and (s[2] > 0 or s[3] > 0))


def _keep_around(s: list[int], start: int, end: int, output: bool) -> tuple[int, int, int] | None:
    """The keep of `s` that holds `start`..`end` strictly inside it (neither end on its edges), counted
    in what `s` applies to or, with `output`, in what it makes: (its pair's index, where it starts, what
    the pairs before it add), or None if no keep does."""
    at = shift = 0
    for i in range(0, len(s), 2):
        n, ins = s[i], s[i + 1]
        if ins < 0:
            if start < at + n:
                return (i, at, shift) if at < start and end < at + n else None
            at += n
        else:
            shift += ins - n
            at += ins if output else n
    return None


def _empty_keep_at_end(s: list[int]) -> bool:
    """Whether an empty keep comes after the last non-empty pair of `s` (never in a normal set): mapping
    over it, CodeMirror's walk and ours find the other set done first and refuse the lengths."""
    k = len(s) - 2
    while k >= 0 and s[k] == 0:
        if s[k + 1] < 0:
            return True
        k -= 2
    return False


def _mismatch(a: ChangeSet, b: ChangeSet, what: str) -> ChangeError:
    return ChangeError(f"cannot {what} change sets of lengths {a.length} and {b.length} / {b.new_length}")


def _map(a: ChangeSet, b: ChangeSet, before: bool, with_text: bool) -> ChangeSet:
    """Move `a` over `b`: ranges `b` deleted vanish from `a`, `b`'s insertions are kept.

    Changes are ordered by start position, then by length; at one position an
    insertion of `b` comes first unless `before` is set. `inserted` remembers
    which of `a`'s sections has already been emitted, so a replaced range of
    `a` split by `b` inserts its text only once.
    """
    if a.length != b.length:
        raise ChangeError(f"cannot map changes of length {a.length} over changes of length {b.length}")
    sa = a.sections
    if _one_replacement(sa):
        # Fast path: a keystroke strictly inside a stretch b keeps (no tie to break,
        # whatever b does elsewhere). What the walk below builds: a's replacement,
        # shifted by what b's changes before it add, between two keeps (all that
        # b does becomes kept text for a, and merges into them).
        pa, da, ia = sa[0], sa[2], sa[3]
        sb = b.sections
        around = _keep_around(sb, pa, pa + da, False)
        if around is not None and not _empty_keep_at_end(sb):
            at = pa + around[2]  # where a's replacement starts in b's output
            cs = _new(ChangeSet if with_text else ChangeDesc)
            cs.sections = [at, KEEP, da, ia, b.new_length - at - da, KEEP]
            cs.inserted = ["", a.inserted[1], ""] if with_text else ["", "", ""]
            cs.length = b.new_length
            cs.new_length = b.new_length - da + ia
            return cs
    return _map_walk(a, b, before, with_text)


def _map_walk(a: ChangeSet, b: ChangeSet, before: bool, with_text: bool) -> ChangeSet:
    """The general `_map` (lengths checked by the caller): both sets walked side by side."""
    sa, sb = a.sections, b.sections
    sections: list[int] = []
    values: list[str] | None = [] if with_text else None
    ta = a.inserted
    na, nb = len(sa), len(sb)
    if na:
        alen, ains, ia = sa[0], sa[1], 2
    else:
        alen, ains, ia = 0, -2, 0
    if nb:
        blen, bins, ib = sb[0], sb[1], 2
    else:
        blen, bins, ib = 0, -2, 0
    aoff = 0
    inserted = -1
    add = _add_section
    while True:
        if (ains == -2 and blen) or (bins == -2 and alen):
            raise _mismatch(a, b, "map")
        if ains == -1 and bins == -1:
            # Both keep: copy the common stretch.
            n = alen if alen < blen else blen
            add(sections, n, KEEP)
            if n == alen:
                if ia < na:
                    alen, ains = sa[ia], sa[ia + 1]
                    ia += 2
                else:
                    alen, ains = 0, -2
                aoff = 0
            else:
                alen -= n
                aoff += n
            if n == blen:
                if ib < nb:
                    blen, bins = sb[ib], sb[ib + 1]
                    ib += 2
                else:
                    blen, bins = 0, -2
            else:
                blen -= n
        elif bins >= 0 and (ains < 0 or inserted == ia or
                            (aoff == 0 and (blen < alen or (blen == alen and not before)))):
            # A change of b comes first: its result is kept text for us;
            # the parts of a it covers disappear (their insertions survive).
            n = blen
            add(sections, bins, KEEP)
            while n:
                piece = alen if alen < n else n
                if ains >= 0 and inserted < ia and alen <= piece:
                    add(sections, 0, ains)
                    if values is not None:
                        _add_insert(values, sections, ta[(ia - 2) >> 1] if ia >= 2 else "")
                    inserted = ia
                if piece == alen:
                    if ia < na:
                        alen, ains = sa[ia], sa[ia + 1]
                        ia += 2
                    else:
                        alen, ains = 0, -2
                    aoff = 0
                else:
                    alen -= piece
                    aoff += piece
                n -= piece
            if ib < nb:
                blen, bins = sb[ib], sb[ib + 1]
                ib += 2
            else:
                blen, bins = 0, -2
        elif ains >= 0:
            # A change of a: it covers b's kept text and b's pure deletions
            # up to the next change of b that inserts.
            n, left = 0, alen
            while left:
                if bins == -1:
                    piece = left if left < blen else blen
                    n += piece
                    left -= piece
                    if piece == blen:
                        if ib < nb:
                            blen, bins = sb[ib], sb[ib + 1]
                            ib += 2
                        else:
                            blen, bins = 0, -2
                    else:
                        blen -= piece
                elif bins == 0 and blen < left:
                    left -= blen
                    if ib < nb:
                        blen, bins = sb[ib], sb[ib + 1]
                        ib += 2
                    else:
                        blen, bins = 0, -2
                else:
                    break
            add(sections, n, ains if inserted < ia else 0)
            if values is not None and inserted < ia:
                _add_insert(values, sections, ta[(ia - 2) >> 1] if ia >= 2 else "")
            inserted = ia
            k = alen - left
            if k == alen:
                if ia < na:
                    alen, ains = sa[ia], sa[ia + 1]
                    ia += 2
                else:
                    alen, ains = 0, -2
                aoff = 0
            else:
                alen -= k
                aoff += k
        elif ains == -2 and bins == -2:
            return _finish(sections, values)
        else:
            raise _mismatch(a, b, "map")


def _compose(a: ChangeSet, b: ChangeSet, with_text: bool) -> ChangeSet:
    """`a` then `b` as one set (see `_compose_walk`)."""
    if a.new_length != b.length:
        raise ChangeError(f"cannot compose changes producing length {a.new_length} "
                          f"with changes of length {b.length}")
    sb = b.sections
    if not with_text and _one_replacement(sb):
        # Fast path (composeDesc, as rebasing composes the keystrokes a push moves
        # over): a keystroke strictly inside a stretch a's result keeps. What the
        # walk builds when a is normal (nothing of it merges): a's pairs, that
        # stretch split in two around b's replacement.
        pb, db = sb[0], sb[2]
        sa = a.sections
        around = _keep_around(sa, pb, pb + db, True)
        if around is not None and _is_normal(sa):
            i, out, _ = around
            sections = sa[:i]
            sections += (pb - out, KEEP, db, sb[3], out + sa[i] - pb - db, KEEP)
            sections += sa[i + 2:]
            cs = _new(ChangeDesc)
            cs.sections = sections
            cs.inserted = [""] * (len(sections) >> 1)
            cs.length = a.length
            cs.new_length = b.new_length
            return cs
    return _compose_walk(a, b, with_text)


def _compose_walk(a: ChangeSet, b: ChangeSet, with_text: bool) -> ChangeSet:
    """`a` then `b` as one set: walk a's output against b's input (lengths checked by the caller).

    `open` joins consecutive pieces that belong to one replaced range into
    one section, as CodeMirror does.
    """
    sections: list[int] = []
    values: list[str] | None = [] if with_text else None
    sa, ta, sb, tb = a.sections, a.inserted, b.sections, b.inserted
    na, nb = len(sa), len(sb)
    if na:
        alen, ains, ia = sa[0], sa[1], 2
    else:
        alen, ains, ia = 0, -2, 0
    if nb:
        blen, bins, ib = sb[0], sb[1], 2
    else:
        blen, bins, ib = 0, -2, 0
    aoff = boff = 0
    open_ = False
    add = _add_section
    while True:
        if ains == -2 and bins == -2:
            return _finish(sections, values)
        if ains == 0:
            # A deletion in a: nothing of it reaches b.
            add(sections, alen, 0, open_)
            if ia < na:
                alen, ains = sa[ia], sa[ia + 1]
                ia += 2
            else:
                alen, ains = 0, -2
            aoff = 0
        elif blen == 0 and bins != -2:
            # A pure insertion in b.
            add(sections, 0, bins, open_)
            if values is not None:
                _add_insert(values, sections, tb[(ib - 2) >> 1] if ib >= 2 else "")
            if ib < nb:
                blen, bins = sb[ib], sb[ib + 1]
                ib += 2
            else:
                blen, bins = 0, -2
            boff = 0
        elif ains == -2 or bins == -2:
            raise ChangeError(f"cannot compose changes producing length {a.new_length} "
                              f"with changes of length {b.length}")
        else:
            n = alen if ains < 0 else ains
            if blen < n:
                n = blen
            before_len = len(sections)
            if ains == -1:
                ins_b = -1 if bins == -1 else (0 if boff else bins)
                add(sections, n, ins_b, open_)
                if values is not None and ins_b:
                    _add_insert(values, sections, tb[(ib - 2) >> 1] if ib >= 2 else "")
            elif bins == -1:
                add(sections, 0 if aoff else alen, n, open_)
                if values is not None:
                    _add_insert(values, sections, slice16(ta[(ia - 2) >> 1] if ia >= 2 else "", aoff, aoff + n))
            else:
                add(sections, 0 if aoff else alen, 0 if boff else bins, open_)
                if values is not None and not boff:
                    _add_insert(values, sections, tb[(ib - 2) >> 1] if ib >= 2 else "")
            open_ = (ains > n or (bins >= 0 and blen > n)) and (open_ or len(sections) > before_len)
            # a moves on by n of its output: its kept length, or its inserted length.
            if ains == -1:
                if n == alen:
                    if ia < na:
                        alen, ains = sa[ia], sa[ia + 1]
                        ia += 2
                    else:
                        alen, ains = 0, -2
                    aoff = 0
                else:
                    alen -= n
                    aoff += n
            elif n == ains:
                if ia < na:
                    alen, ains = sa[ia], sa[ia + 1]
                    ia += 2
                else:
                    alen, ains = 0, -2
                aoff = 0
            else:
                ains -= n
                aoff += n
            if n == blen:
                if ib < nb:
                    blen, bins = sb[ib], sb[ib + 1]
                    ib += 2
                else:
                    blen, bins = 0, -2
                boff = 0
            else:
                blen -= n
                boff += n
