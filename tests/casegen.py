"""Random ChangeSetJSON cases for the differential and property tests.

Everything here is a reference written independently of `collab.changes`:
it works on the JSON form only, counts UTF-16 code units (a character above
U+FFFF counts 2, as in JavaScript) and never puts a change boundary inside a
surrogate pair, because it cuts documents at Python code points.

Three flavours of generated sets:
  * "clean": what CodeMirror itself produces (its `addSection` rules: no
    zero-length keeps, adjacent keeps and deletions merged, `[d, ""]` as `[d]`);
  * "raw": valid JSON CodeMirror never produces but `fromJSON` keeps as given:
    `[0]`, `[d, ""]`, split keeps, adjacent deletions and insertions;
  * "zk": raw plus zero-length keeps (a bare `0`). CodeMirror's own `map` and
    `compose` are wrong on those (duplicated text, "Mismatched change set
    lengths"), so they are checked against the laws, not against CodeMirror.
"""

from __future__ import annotations

import random

# Weighted towards ASCII, with the troublemakers: 2-unit astral characters,
# a 1-unit accented letter, CJK and line breaks.
CHARS = "aaaabbbcc  ééé中文😀😀𝒳𝒳\n\n"
INSERT_PIECES = ["a", "b", "xyz", "é", "中", "😀", "𝒳", "\n", " ", "Q😀", "😀😀", "\n\n"]
FLAVOURS = ("clean", "raw", "zk")


def u16(s: str) -> int:
    """UTF-16 length, what JavaScript's `.length` says."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2






def insert_item(deleted: int, text: str) -> list:
    """The JSON item deleting `deleted` units and inserting `text`."""
    return [deleted] if text == "" else [deleted, *text.split("\n")]


# --------------------------------------------------------------- reference


def sections(js: list) -> list[tuple[int, str | None]]:
    """JSON -> [(len, inserted text or None for a keep)]."""
    out = []
    for part in js:
        if isinstance(part, int):
            out.append((part, None))
        else:
            out.append((part[0], "\n".join(part[1:])))
    return out


def lengths(js: list) -> tuple[int, int]:
    """(length, new_length) of a ChangeSetJSON, in UTF-16 units."""
    a = b = 0
    for n, text in sections(js):
        a += n
        b += n if text is None else u16(text)
    return a, b


def slice16(s: str, start: int, end: int) -> str:
    raw = s.encode("utf-16-le", "surrogatepass")
    return raw[2 * start: 2 * end].decode("utf-16-le", "surrogatepass")


def ref_apply(doc: str, js: list) -> str:
    """Apply a ChangeSetJSON to `doc` (reference; assumes valid boundaries)."""
    assert lengths(js)[0] == u16(doc), (doc, js)
    out, pos = [], 0
    for n, text in sections(js):
        if text is None:
            out.append(slice16(doc, pos, pos + n))
        else:
            out.append(text)
        pos += n
    return "".join(out)


def expected_roundtrip(js: list) -> list:
    """What CodeMirror's `ChangeSet.fromJSON(js).toJSON()` gives: `[d, ""]` -> `[d]`."""
    return [p if isinstance(p, int) else ([p[0]] if p[1:] == [""] else list(p)) for p in js]


def merged_changes(js: list) -> list[tuple[int, int, str]]:
    """(fromA, toA, inserted) per changed range, adjacent changes joined.

    This is CodeMirror's `iterChanges(f, individual=false)`: the effect of a
    set independent of how adjacent insertions and deletions are split into
    sections, which is what `a.compose(b.map(a))` and
    `b.compose(a.map(b, true))` agree on (their JSON often differs).
    """
    out: list[tuple[int, int, str]] = []
    pos = 0
    open_change = False
    for n, text in sections(js):
        if text is None:
            if n:
                open_change = False
        else:
            if open_change:
                f, t, s = out[-1]
                out[-1] = (f, t + n, s + text)
            else:
                out.append((pos, pos + n, text))
                open_change = True
        pos += n
    # Drop no-op changes (a [0] section): they have no effect.
    return [c for c in out if c[0] != c[1] or c[2]]


def touches(js: list, pos: int) -> bool:
    """CodeMirror's `touchesRange(pos)`: some change starts, ends or lies at pos."""
    p = 0
    for n, text in sections(js):
        if text is not None and p <= pos <= p + n:
            return True
        p += n
    return False




# ----------------------------------------------------------- random cases


def rand_text(rng: random.Random, max_chars: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, max_chars)))


def rand_doc(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.12:
        return ""
    if r < 0.8:
        return rand_text(rng, 8)
    return rand_text(rng, 30)


def rand_insert(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return ""
    return "".join(rng.choice(INSERT_PIECES) for _ in range(rng.randint(1, 3)))


def _normalize(parts: list[tuple[int, str | None]]) -> list[tuple[int, str | None]]:
    """CodeMirror's addSection/addInsert rules applied to a section list."""
    out: list[list] = []
    for n, text in parts:
        ins = -1 if text is None else u16(text)
        if n == 0 and ins <= 0:
            continue
        if out and ins <= 0 and (-1 if out[-1][1] is None else u16(out[-1][1])) == ins:
            out[-1][0] += n
        elif out and n == 0 and out[-1][0] == 0:
            out[-1][1] += text
        else:
            out.append([n, text])
    return [(n, t) for n, t in out]


def is_canonical(js: list) -> bool:
    """True if `js` is in the form CodeMirror's own constructors build (addSection)."""
    return all(not (isinstance(p, list) and p[1:] == [""]) for p in js) and \
        [(n, t) for n, t in sections(js)] == _normalize(sections(js))


def rand_changes(rng: random.Random, doc: str, flavour: str = "raw", density: float | None = None) -> list:
    """A random valid ChangeSetJSON for `doc` (whose boundaries never split a pair)."""
    if density is None:
        density = rng.choice((0.15, 0.35, 0.6, 0.9))
    raw = flavour != "clean"
    cps = list(doc)
    i = 0
    parts: list[tuple[int, str | None]] = []
    while True:
        remaining = len(cps) - i
        if remaining == 0 and (not parts or rng.random() < 0.65):
            # Maybe a trailing insertion, then stop.
            if rng.random() < density * 0.4:
                parts.append((0, rand_insert(rng) or "z"))
            break
        n = rng.randint(0, min(remaining, 5))
        seg = u16("".join(cps[i:i + n]))
        r = rng.random()
        if r >= density:                                  # keep
            if n == 0:
                if flavour == "zk" and rng.random() < 0.5:
                    parts.append((0, None))
                continue
            if raw and n > 1 and rng.random() < 0.2:         # a keep split in two
                k = rng.randint(1, n - 1)
                first = u16("".join(cps[i:i + k]))
                parts.append((first, None))
                parts.append((seg - first, None))
            else:
                parts.append((seg, None))
        else:
            kind = rng.random()
            if kind < 0.3:                                   # pure deletion
                if n == 0 and not (raw and rng.random() < 0.3):
                    continue
                parts.append((seg, ""))
            elif kind < 0.6:                                 # pure insertion
                n, seg = 0, 0
                parts.append((0, rand_insert(rng) or "y"))
            else:                                            # replacement
                parts.append((seg, rand_insert(rng)))
        i += n
    if flavour == "clean":
        parts = _normalize(parts)
    out: list = []
    for n, text in parts:
        if text is None:
            out.append(n)
        elif text == "" and raw and rng.random() < 0.25:
            out.append([n, ""])                              # serialises back as [n]
        else:
            out.append(insert_item(n, text))
    assert lengths(out)[0] == u16(doc), (doc, out)
    return out


def rand_flavour(rng: random.Random, allow_zero_keeps: bool = True) -> str:
    return rng.choice(FLAVOURS if allow_zero_keeps else FLAVOURS[:2])




def positions_for(rng: random.Random, js: list, count: int) -> list[int]:
    """Positions to map: change boundaries (and their neighbours) and random ones."""
    length = lengths(js)[0]
    bounds, p = {0, length}, 0
    for n, _ in sections(js):
        p += n
        bounds.update((p - 1, p, p + 1))
    bounds = sorted(b for b in bounds if 0 <= b <= length)
    return [rng.choice(bounds) if rng.random() < 0.6 else rng.randint(0, length) for _ in range(count)]


# --------------------------------------------------- hypothesis strategies


def strategies():
    """Hypothesis strategies (imported lazily so Node-only users need no hypothesis)."""
    from hypothesis import strategies as st

    docs = st.text(alphabet=st.sampled_from(sorted(set(CHARS))), max_size=12)
    inserts = st.lists(st.sampled_from(INSERT_PIECES), max_size=3).map("".join)

    # One step: (kind, code points consumed, inserted text).
    steps = st.tuples(
        st.sampled_from(["keep", "delete", "insert", "replace", "zero-keep", "empty-delete"]),
        st.integers(0, 4),
        inserts,
    )

    @st.composite
    def changes_for(draw, doc: str, flavour: str = "raw", insert_only: bool = False):
        """A ChangeSetJSON valid for `doc`; shrinks towards "keep everything"."""
        plan = draw(st.lists(steps, max_size=8))
        empty_as_string = flavour != "clean" and draw(st.booleans())
        cps = list(doc)
        i = 0
        parts: list[tuple[int, str | None]] = []
        for kind, n, text in plan:
            if insert_only and kind in ("delete", "replace", "empty-delete"):
                kind = "insert"
            n = min(n, len(cps) - i)
            seg = u16("".join(cps[i:i + n]))
            if kind == "keep":
                if seg or flavour == "zk":
                    parts.append((seg, None))
            elif kind == "zero-keep":
                if flavour == "zk":
                    parts.append((0, None))
                n = 0
            elif kind == "delete":
                parts.append((seg, ""))
            elif kind == "empty-delete":
                if flavour != "clean":
                    parts.append((0, ""))
                n = 0
            elif kind == "insert":
                parts.append((0, text or "i"))
                n = 0
            else:
                parts.append((seg, text))
            i += n
        rest = u16("".join(cps[i:]))
        if rest:
            parts.append((rest, None))
        if flavour == "clean":
            parts = _normalize(parts)
        out = []
        for n, text in parts:
            if text is None:
                out.append(n)
            elif text == "" and empty_as_string:
                out.append([n, ""])
            else:
                out.append(insert_item(n, text))
        return out

    return st, docs, inserts, changes_for

