"""Frames for the WebSocket fuzzer (tests/test_fuzz.py): generation and an oracle.

Nothing here imports `collab`. The oracle is written from docs/protocol.md:
it says which answers a frame may get (error codes, "ok" for no error, close
codes), so the fuzzer checks the server against the contract rather than
against its own code. Where the contract leaves the choice open (which of two
problems is reported first, whether a frame that is too deep for a JSON
parser is `bad-json`), the oracle allows every reasonable answer.

Lengths and positions are UTF-16 code units, as in the protocol; the texts
handled here never hold lone surrogates (JSON cannot carry them to the server:
`"\\ud800"` in a frame makes it `bad-json`).

State-dependent answers (`bad-version`, a length that does not match, a cut
surrogate pair, `too-large` for the document) depend on what the server holds
when the frame arrives. The fuzzer knows that exactly only when nothing else
is in flight (`Ctx.quiet`); otherwise the oracle allows the codes that may
apply and the final convergence checks do the rest.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass

from hypothesis import strategies as st

ME = "fuzz"          # the fuzzing client's clientID
GOOD = "good"        # the well-behaved client's clientID
BARRIER = '{"type":"sync"}'  # answered with a fixed bad-message error: marks the end of a frame's answers
OK = "ok"            # "no error frame" in an allowed set

CODES = frozenset({"bad-json", "bad-message", "bad-changes", "bad-version", "read-only", "too-large",
                   "rate-limited"})
CLOSE_CODES = frozenset({1001, 1008, 1009, 4000, 4001, 4429})


@dataclass(frozen=True)
class Limits:
    max_frame: int
    max_doc: int
    max_updates: int
    max_ranges: int


# ----------------------------------------------------------------- UTF-16 text

def u16(s: str) -> int:
    return len(s.encode("utf-16-le")) >> 1


def boundaries(text: str) -> list[int]:
    """Every UTF-16 position of `text` that is not inside a surrogate pair."""
    out = [0]
    pos = 0
    for ch in text:
        pos += 2 if ord(ch) > 0xFFFF else 1
        out.append(pos)
    return out


def middles(text: str) -> list[int]:
    """The positions inside a surrogate pair (between its two halves)."""
    out = []
    pos = 0
    for ch in text:
        if ord(ch) > 0xFFFF:
            out.append(pos + 1)
            pos += 2
        else:
            pos += 1
    return out


# ----------------------------------------------------- ChangeSetJSON, reference

def parse_changes(value) -> list[tuple[int, str | None]] | None:
    """ChangeSetJSON as [(length, None) keep | (deleted, inserted) replace], or None if invalid."""
    if type(value) is not list:
        return None
    out = []
    for item in value:
        if type(item) is int:
            if item < 0:
                return None
            out.append((item, None))
        elif type(item) is list:
            if not item or type(item[0]) is not int or item[0] < 0:
                return None
            lines = item[1:]
            if any(type(line) is not str or "\n" in line or "\r" in line or "\x00" in line for line in lines):
                return None  # U+0000 is refused too (PostgreSQL's text cannot hold it)
            out.append((item[0], "\n".join(lines)))
        else:
            return None
    return out


def lengths(parsed) -> tuple[int, int]:
    old = sum(n for n, _ in parsed)
    new = sum(n if ins is None else u16(ins) for n, ins in parsed)
    return old, new


def inserted_deleted(parsed) -> tuple[int, int]:
    return (sum(u16(ins) for n, ins in parsed if ins is not None),
            sum(n for n, ins in parsed if ins is not None))


def cuts_pair(parsed, text: str) -> bool:
    """Whether a replaced range starts or ends inside a surrogate pair of `text`."""
    mids = set(middles(text))
    if not mids:
        return False
    pos = 0
    for n, ins in parsed:
        if ins is not None and (n or ins):
            if pos in mids or (n and pos + n in mids):
                return True
        pos += n
    return False


def apply(parsed, text: str) -> str:
    """The text after the changes (the caller checked lengths and pairs)."""
    raw = text.encode("utf-16-le")
    out = []
    pos = 0
    for n, ins in parsed:
        out.append(raw[2 * pos:2 * (pos + n)] if ins is None else ins.encode("utf-16-le"))
        pos += n
    return b"".join(out).decode("utf-16-le")


def apply_json(changes, text: str) -> str:
    parsed = parse_changes(changes)
    if parsed is None or lengths(parsed)[0] != u16(text) or cuts_pair(parsed, text):
        raise ValueError(f"changes {str(changes)[:200]} do not apply to a text of length {u16(text)}")
    return apply(parsed, text)


def canonical(parsed) -> list:
    """CodeMirror's ChangeSet.fromJSON(x).toJSON(): sections kept as given, `[d, ""]` becomes `[d]`."""
    return [n if ins is None else ([n] if ins == "" else [n, *ins.split("\n")]) for n, ins in parsed]


# ------------------------------------------------------------- frame encoding

@dataclass(frozen=True, eq=False)
class Raw:
    """A piece of JSON text the encoder writes verbatim.

    kind: "invalid" (a JSON parser may refuse it: the frame is bad-json),
    "float" (a number a 64-bit parser reads as a float; it may be a big
    integer, so the server may also judge it as a huge integer), "deep" (valid
    JSON nested deeper than parsers like).  `value` is what the oracle sees.
    """

    text: str
    kind: str
    value: object = None

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"

    def _repr_pretty_(self, printer, cycle) -> None:
        # Hypothesis prints drawn values with its own printer, which walks a dataclass's fields: `value`
        # nested 1,000 deep overflowed the stack and a RecursionError hid the example's real failure.
        printer.text(repr(self))


def encode(value, ascii: bool = False) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(encode(k, ascii) + ":" + encode(v, ascii) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)


def resolve(value):
    """What a parser makes of `value`: Raw pieces replaced by their values."""
    if isinstance(value, Raw):
        return value.value
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Raw) else k): resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def raw_kinds(value, out: set | None = None) -> set:
    out = set() if out is None else out
    if isinstance(value, Raw):
        out.add(value.kind)
    elif isinstance(value, dict):
        for k, v in value.items():
            raw_kinds(k, out)
            raw_kinds(v, out)
    elif isinstance(value, list):
        for v in value:
            raw_kinds(v, out)
    return out


@functools.lru_cache(maxsize=None)
def nested(depth: int, obj: bool = False):
    """A value nested `depth` deep (cached: the oracle only reads it)."""
    value = {} if obj else []
    for _ in range(depth - 1):
        value = {"a": value} if obj else [value]
    return value


@functools.lru_cache(maxsize=None)
def deep(depth: int, obj: bool = False) -> Raw:
    text = ('{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)) if obj else "[" * depth + "]" * depth
    return Raw(text, "deep", nested(depth, obj))


INVALID_NUMBERS = [Raw(t, "invalid") for t in ("NaN", "Infinity", "-Infinity", "1e400", "-1e999", "01", "+1",
                                               ".5", "1.", "0x1F", "-", "1e", "undefined")]
LONE_SURROGATES = [Raw(t, "invalid") for t in ('"\\ud800"', '"\\udc00"', '"a\\ud83dz"', '"\\ude00\\ud83d"',
                                               '"x\\udfff"', '"\\ud83d"')]
FLOATS = [Raw(t, "float", v) for t, v in (("1.0", 1.0), ("1E2", 100.0), ("0.0", 0.0), ("2.5e1", 25.0),
                                          ("18446744073709551616", float(2 ** 64)),
                                          ("-9223372036854775809", -float(2 ** 63)),
                                          ("1" + "0" * 30, 1e30), ("-" + "9" * 25, -1e25),
                                          ("123456789012345678901234567890.5", 1.2345678901234568e29))]
# Parsers limit nesting (orjson at 1024); Python's repr of a value nested ~1000 deep overflows the stack.
# (hypothesis favours the first elements of a sampled_from: the window of trouble comes first)
depths = st.sampled_from([1000, 1010, 995, 1020, 990, 1023, 980, 1030, 960, 20, 300, 900, 5000])


@dataclass
class Frame:
    """One frame the fuzzer sends: its bytes, and what the server should make of it."""

    label: str                       # which generator made it (statistics and reports)
    data: str | bytes
    binary: bool = False
    bad_utf8: bool = False           # a text frame whose bytes are not UTF-8
    value: object = None             # the JSON value as written (with Raw pieces), None if not JSON
    not_json: bool = False           # the text is not JSON at all

    def payload(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.encode("utf-8")

    def __repr__(self) -> str:
        data = self.data if isinstance(self.data, str) else repr(self.data)
        short = data if len(data) <= 300 else f"{data[:240]}...({len(data)} chars)...{data[-40:]}"
        kind = "binary " if self.binary else "bad-utf8 " if self.bad_utf8 else ""
        return f"<{self.label} {kind}{short}>"


def json_frame(label: str, value, ascii: bool = False) -> Frame:
    return Frame(label, encode(value, ascii), value=value)


# ------------------------------------------------------------------ strategies
#
# Hypothesis draws frame *templates* that do not depend on the document: the
# parts that must fit it (a version, a position, changes for the text at some
# version) are holes, filled by `make_frame(template, ctx)` when the frame is
# sent. So the choices hypothesis makes never depend on what the server did,
# and its generation stays deterministic (derandomize) even though the
# fuzzer's state does not.

@dataclass
class Ctx:
    """What the fuzzer knows of the document when it makes (and judges) a frame."""

    texts: list[str]                 # texts[v]: the document at version v, for every known version
    a_versions: list[int]            # versions produced by the fuzzing client's updates
    head_hi: int                     # the server's version is between head_lo and head_hi
    a_unknown: bool                  # the fuzzer may have accepted updates it has not seen yet
    limits: Limits

    @property
    def head_lo(self) -> int:
        return len(self.texts) - 1

    @property
    def quiet(self) -> bool:
        return self.head_hi == self.head_lo and not self.a_unknown

    def a_after(self, version: int) -> int:
        return sum(1 for v in self.a_versions if v > version)


@dataclass(frozen=True)
class V:
    """A version hole: the known head, a past version (x picks which) or one past the server's."""

    kind: str
    x: int = 0

    def fill(self, ctx: Ctx) -> int:
        if self.kind == "head":
            return ctx.head_lo
        if self.kind == "past":
            return self.x % (ctx.head_lo + 1)
        return ctx.head_hi + 1 + self.x % 3


@dataclass(frozen=True)
class P:
    """A position hole: x/1000 of the document's length."""

    x: int

    def fill(self, length: int) -> int:
        return length * self.x // 1000


@dataclass(frozen=True)
class C:
    """A ChangeSetJSON hole, made for the text it will apply to.

    kind: valid, cut (a replaced range starts or ends inside a surrogate
    pair, when the text has one), length (valid but for a text of another
    length), crlf (valid but for a CR or LF inside an inserted line), long
    (a long insertion: `size` units of `unit`). The positions and inserted
    strings come from a PRNG seeded by hypothesis (one draw instead of
    dozens: generation is most of the fuzzer's CPU time).
    """

    kind: str
    seed: int
    size: int | None = None
    unit: str = ""

    def fill(self, text: str, limits: Limits) -> list:
        rng = random.Random(self.seed)
        if self.kind == "long":
            sizes = [100, 1000, limits.max_doc // 2, limits.max_doc + 1, 3 * limits.max_doc]
            n = sizes[self.size % len(sizes)] if self.size is not None else rng.choice(sizes)
            unit = self.unit or rng.choice(["x", "😀", "é", "ab\n"])
            s = (unit * n)[:n] if len(unit) == 1 else unit * (n // 3 + 1)
            return [[0, *s.split("\n")], *([u16(text)] if text else [])]
        if self.kind == "cut":
            mids = middles(text)
            if mids:
                m = rng.choice(mids)
                how = rng.randrange(3)
                length = u16(text)
                if how == 0:
                    return [m, [0, *_insert(rng).split("\n")], length - m]
                if how == 1:
                    return [m, [1], length - m - 1]
                return [m - 1, [1]] + ([length - m] if length > m else [])
        items = _valid(rng, text)
        if self.kind == "crlf":  # a line that holds a line break: lines are split on "\n" already
            bad = rng.choice(["\r", "\n", "\r\n", "a\rb", "a\nb"])
            inserts = [k for k, item in enumerate(items) if type(item) is list and len(item) > 1]
            if inserts:
                item = items[rng.choice(inserts)]
                line = rng.randrange(1, len(item))
                item[line] = item[line] + bad
            else:
                items.append([0, bad])
            return items
        if self.kind == "length":
            how, k = rng.randrange(3), rng.randint(1, 3)
            if how == 0:
                return items + [k]
            if how == 1 and items and type(items[-1]) is int and items[-1] > 0:
                return items[:-1] + [items[-1] - 1]
            return [[k + u16(text)]]
        return items


INSERT_POOL = list("aaaab  xyz\né中😀😀𝒳")


def _insert(rng: random.Random) -> str:
    out = []
    for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3, 5, 8])):
        if rng.random() < 0.9:
            out.append(rng.choice(INSERT_POOL))
        else:
            c = rng.randint(0x20, 0x10FFFF)
            out.append(chr(c) if not 0xD800 <= c < 0xE000 else "\ufffd")
    return "".join(out)


def _valid(rng: random.Random, text: str) -> list:
    """Random valid ChangeSetJSON, raw forms included: [0], [d, ""], split and zero keeps."""
    bounds = boundaries(text)
    length = bounds[-1]
    cuts = sorted(rng.choice(bounds) for _ in range(rng.randrange(5)))
    if len(cuts) % 2:
        cuts.append(length)
    items: list = []
    pos = 0
    for start, end in zip(cuts[::2], cuts[1::2]):
        if start > pos:
            items.extend(_keep(rng, start - pos))
        elif rng.random() < 0.1:
            items.append(0)
        ins = _insert(rng)
        items.append([end - start] if ins == "" and rng.random() < 0.5 else [end - start, *ins.split("\n")])
        pos = end
    if pos < length:
        items.extend(_keep(rng, length - pos))
    if rng.random() < 0.08:
        items.insert(rng.randrange(len(items) + 1), [0])
    return items


def _keep(rng: random.Random, n: int) -> list:
    if n > 1 and rng.random() < 0.12:  # a keep in two (it may split a pair: that is not a change)
        k = rng.randint(1, n - 1)
        return [k, n - k]
    return [n]


@dataclass
class Template:
    """A JSON frame with holes; `dup` writes one key twice (a decoy value first)."""

    label: str
    value: object
    ascii: bool = False
    dup: tuple | None = None


def make_frame(template, ctx: Ctx) -> Frame:
    """The frame to send now: holes filled from what the fuzzer knows."""
    if isinstance(template, Frame):
        return template
    value = _fill(template.value, ctx)
    frame = json_frame(template.label, value, template.ascii)
    if template.dup is not None and isinstance(value, dict) and template.dup[0] in value:
        key, decoy = template.dup
        frame = Frame("dupkey", "{" + encode(key) + ":" + encode(decoy) + "," + frame.data[1:], value=value)
    return frame


def _fill(value, ctx: Ctx, text: str | None = None, length: int | None = None):
    if isinstance(value, V):
        return value.fill(ctx)
    if isinstance(value, P):
        return value.fill(u16(ctx.texts[-1]) if length is None else length)
    if isinstance(value, C):
        return value.fill(ctx.texts[-1] if text is None else text, ctx.limits)
    if isinstance(value, list):
        return [_fill(v, ctx, text, length) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    version = _fill(value["version"], ctx) if "version" in value else None
    known = type(version) is int and 0 <= version <= ctx.head_lo
    out = {}
    for k, v in value.items():
        if k == "version":
            out[k] = version
        elif k == "updates" and kind == "push" and isinstance(v, list):
            out[k] = _fill_updates(v, ctx, ctx.texts[version] if known else "")
        elif k == "ranges" and kind == "presence":
            out[k] = _fill(v, ctx, length=u16(ctx.texts[version]) if known else 10)
        else:
            out[k] = _fill(v, ctx, text, length)
    return out


def _fill_updates(updates: list, ctx: Ctx, text: str) -> list:
    """Each update's changes are made for the text the previous ones (if valid) leave."""
    out = []
    for u in updates:
        if isinstance(u, dict) and isinstance(u.get("changes"), C):
            u = dict(u)
            u["changes"] = u["changes"].fill(text, ctx.limits)
            parsed = parse_changes(u["changes"])
            ok = parsed is not None and lengths(parsed)[0] == u16(text) and not cuts_pair(parsed, text)
            text = apply(parsed, text) if ok else ""
        else:
            u = _fill(u, ctx)
        out.append(u)
    return out


CHARS = "ab c\n\t\"\\/é中😀𝒳\u2028\x00\uffff\u200d"
# Every strategy object below is built once: hypothesis validates each new
# strategy object, and building them per frame cost more than the server.


def _random_text(seed: int) -> str:
    """Up to 12 characters: mostly troublemakers from CHARS, some anywhere in Unicode (no surrogates)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rng.choice([0, 1, 1, 2, 3, 4, 6, 12])):
        c = rng.choice(CHARS) if rng.random() < 0.7 else chr(rng.randint(1, 0x10FFFF))
        out.append(c if not 0xD800 <= ord(c) < 0xE000 else "\ufffd")
    return "".join(out)


# A string: a few draws from hypothesis (a seed), not one per character.
any_text = st.one_of(st.sampled_from(["", "a", "fuzz", "good", "push", "type", " ", "😀", "\n", "\x00"]),
                     st.builds(_random_text, st.integers(0, 2 ** 32)))
edge_ints = st.sampled_from([0, 1, -1, 2, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63,
                             2 ** 64 - 1, -2 ** 63])
raw_values = st.sampled_from(INVALID_NUMBERS + LONE_SURROGATES + FLOATS)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 50), edge_ints,
                    st.floats(allow_nan=False, allow_infinity=False), any_text)
json_values = st.recursive(scalars | st.sampled_from(FLOATS),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(any_text, inner, max_size=4), max_leaves=6)
deep_values = st.builds(deep, depths)
# a value that is not a non-negative integer, of any JSON type
not_count = st.one_of(st.sampled_from([-1, -2 ** 63, 1.5, -0.5, "3", "", None, True, False, [], {}, [1], {"v": 1}]),
                      raw_values, deep_values, any_text, st.floats(allow_nan=False, allow_infinity=False))
fractions = st.integers(0, 10 ** 6)
seeds = st.integers(0, 2 ** 32)
change_holes = st.builds(C, st.sampled_from(["valid"] * 8 + ["cut", "cut", "length", "crlf"]), seeds)
clean_holes = st.builds(C, st.sampled_from(["valid"] * 12 + ["cut", "length", "crlf"]), seeds)
long_holes = st.builds(C, st.just("long"), seeds)
malformed_changes = st.one_of(
    st.sampled_from(["abc", {}, None, 5, True, [-1], [1.5], [True], [[]], [["1"]], [[0, 5]], [[0, "a\nb"]],
                     [[0, "a\rb"]], [[-2]], [[0, None]], [[1.0]], [[0, "x", 3]], [[False, "x"]], [None],
                     [[0, ["x"]]], [{"keep": 1}], [[0, "ok"], "3"], [[2 ** 63, "x"]], [2 ** 64 - 1],
                     [[0, "x"], -0.0]]),
    st.lists(json_values, min_size=1, max_size=4),
    st.builds(lambda r: [[0, r]], st.sampled_from(LONE_SURROGATES)),
    st.builds(lambda r: [r], st.sampled_from(FLOATS)),
    st.builds(lambda d: [d], deep_values),
)
changes_values = st.one_of(change_holes, change_holes, change_holes, change_holes, malformed_changes, long_holes)
past = st.builds(V, st.just("past"), fractions)
future = st.builds(V, st.just("future"), st.integers(0, 2))
good_versions = st.one_of(st.just(V("head")), st.just(V("head")), past)
versions = st.one_of(st.just(V("head")), st.just(V("head")), st.just(V("head")), past, future,
                     st.sampled_from([2 ** 31, 2 ** 53, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]), not_count)
positions = st.one_of(st.builds(P, st.integers(0, 1000)), st.builds(P, st.integers(0, 1000)), edge_ints, not_count)
good_ranges = st.lists(st.builds(lambda a, h: {"anchor": a, "head": h}, st.builds(P, st.integers(0, 1000)),
                                 st.builds(P, st.integers(0, 1000))), max_size=3)
UPDATE_WHO = st.sampled_from([ME] * 12 + [GOOD, "other", "missing", "wrong"])
WRONG_IDS = st.sampled_from([None, 5, [], {}, True, Raw('"\\ud800"', "invalid")])
NOT_UPDATES = st.sampled_from([None, 1, "u", [ME, [0]]])
LIST_KIND = st.sampled_from(["list"] * 12 + ["many", "wrong", "missing"])
small = st.integers(0, 3)
rare = st.integers(0, 20)


@st.composite
def _update_value(draw):
    """One {clientID, changes}, mostly right, sometimes wrong."""
    changes = draw(changes_values)
    who = draw(UPDATE_WHO)
    value: dict = {}
    if who == "wrong":
        value["clientID"] = draw(WRONG_IDS)
    elif who != "missing":
        value["clientID"] = draw(any_text) if who == "other" else who
    if draw(rare) != 0:
        value["changes"] = changes
    if draw(rare) == 0:
        value[draw(any_text)] = draw(json_values)
    if draw(rare) == 0:
        return draw(NOT_UPDATES)
    return value


update_values = _update_value()
wrong_updates = st.one_of(not_count, st.just({"clientID": ME, "changes": []}))
wrong_ranges = st.one_of(not_count, st.just({"anchor": 0, "head": 0}))
ANCHOR_OR_HEAD = st.sampled_from(["anchor", "head"])
extra_key = st.tuples(any_text, json_values)


def _push_frames(limits: Limits):
    many = st.integers(limits.max_updates + 1, limits.max_updates + 2)

    @st.composite
    def push_frame(draw) -> Template:
        value: dict = {"type": "push"}
        if draw(rare):
            value["version"] = draw(versions)
        kind = draw(LIST_KIND)
        if kind == "wrong":
            value["updates"] = draw(wrong_updates)
        elif kind != "missing":
            n = draw(small) if kind == "list" else draw(many)
            value["updates"] = [draw(update_values) for _ in range(n)]
        if draw(rare) == 0:
            key, extra = draw(extra_key)
            value.setdefault(key, extra)
        return Template("push", value, ascii=draw(st.booleans()))

    return push_frame()


def _presence_frames(limits: Limits):
    many = st.integers(limits.max_ranges + 1, limits.max_ranges + 3)

    @st.composite
    def presence_frame(draw) -> Template:
        value: dict = {"type": "presence"}
        if draw(rare):
            value["version"] = draw(versions)
        kind = draw(LIST_KIND)
        if kind == "wrong":
            value["ranges"] = draw(wrong_ranges)
        elif kind != "missing":
            n = draw(small) if kind == "list" else draw(many)
            ranges = []
            for _ in range(n):
                r = {"anchor": draw(positions), "head": draw(positions)} if draw(rare) else draw(json_values)
                if isinstance(r, dict) and draw(rare) == 0:
                    r.pop(draw(ANCHOR_OR_HEAD), None)
                ranges.append(r)
            value["ranges"] = ranges
        return Template("presence", value, ascii=draw(st.booleans()))

    return presence_frame()


@st.composite
def _clean_push(draw) -> Template:
    """A well-formed push of this session's updates (that may still not fit the document)."""
    updates = draw(st.lists(clean_holes, min_size=1, max_size=3))
    return Template("clean-push", {"type": "push", "version": draw(good_versions),
                                   "updates": [{"clientID": ME, "changes": c} for c in updates]},
                    ascii=draw(st.booleans()))


@st.composite
def _clean_presence(draw) -> Template:
    return Template("clean-presence", {"type": "presence", "version": draw(good_versions),
                                       "ranges": draw(good_ranges)})


clean_push, clean_presence = _clean_push(), _clean_presence()
COLORS = ["#3366ff", "#abc", "#ABCD", "#00ff0080", "#000000"]
HELLO_VERSIONS = st.one_of(st.none(), past, future, edge_ints.filter(lambda i: i >= 0))
USERS = st.builds(lambda n, c: {"name": n, "color": c}, st.text(max_size=30), st.sampled_from(COLORS))
BROKEN = st.sampled_from(["cid", "version", "user", "name", "color", "opened", "checkpoints"])
GOOD_OPENED = st.one_of(st.just(0), st.integers(min_value=0, max_value=2 ** 53 - 1))
BAD_OPENED = st.sampled_from([-1, 1.5, "7", True, 2 ** 53, [], {}])
BAD_CHECKPOINTS = st.sampled_from(["yes", "true", 1, 0, [], {}])
BAD_IDS = st.sampled_from(["", None, 7, [], {}, ["fuzz"]])
BAD_USERS = st.sampled_from(["Ann", 5, [], True])
BAD_NAMES = st.sampled_from([5, None, [], {}, "x" * 500])
BAD_COLORS = st.sampled_from(["red", "#12", "#1234567", "", 3, None, "red;background:url(x)", "#gggggg"])
client_ids = st.text(min_size=1, max_size=40).filter(lambda c: c not in (ME, GOOD) and "\x00" not in c)  # U+0000: refused


@st.composite
def _hello_value(draw, valid: bool):
    """A hello: valid (its clientID is neither ME nor GOOD) or with one field wrong."""
    value = {"type": "hello", "clientID": draw(client_ids), "version": draw(HELLO_VERSIONS)}
    if draw(st.booleans()):
        value["user"] = draw(USERS)
    if draw(st.booleans()):
        value["opened"] = draw(GOOD_OPENED)
    if draw(st.booleans()):
        value["checkpoints"] = draw(st.sampled_from([True, False, None]))
    if valid:
        return value
    broken = draw(BROKEN)
    if broken == "cid":
        value["clientID"] = draw(BAD_IDS)
    elif broken == "version":
        value["version"] = draw(not_count.filter(lambda v: v is not None))
    elif broken == "user":
        value["user"] = draw(BAD_USERS)
    elif broken == "name":
        value["user"] = {"name": draw(BAD_NAMES), "color": "#123456"}
    elif broken == "opened":
        value["opened"] = draw(BAD_OPENED)
    elif broken == "checkpoints":
        value["checkpoints"] = draw(BAD_CHECKPOINTS)
    else:
        value["user"] = {"name": "x", "color": draw(BAD_COLORS)}
    return value


good_hellos, bad_hellos = _hello_value(True), _hello_value(False)


def hello_value(valid: bool):
    return good_hellos if valid else bad_hellos


GARBAGE = ["", " ", "{", "}", '{"type":"push"', "{'type':'push'}", '{"type":"push",}', "{type:push}",
           "\ufeff{}", "{}garbage", "{} {}", "nul", "tru", "01", "1.", ".5", "+1", "0x10", '"\\x41"', '"\\u12"',
           '"unterminated', '"tab\tin"', "[1,]", '{"a" 1}', "//c\n{}", "/*c*/{}", "\x00", "{}\x00",
           "true false", "NaN", "[NaN]", '{"type":"presence","version":Infinity,"ranges":[]}']
garbage_frames = st.one_of(
    st.builds(lambda t: Frame("garbage", t, not_json=True), st.sampled_from(GARBAGE)),
    st.builds(lambda a, b: Frame("garbage", a + b, not_json=True), st.sampled_from(["}", "]", "x", ":", "'", ","]),
              any_text))
TYPES = st.sampled_from(["hello", "push", "presence", "junk", "", "PUSH", "missing", "nonstr", "text"])
NONSTR_TYPES = st.sampled_from([None, 1, [], {}, True, ["push"]])
FIELDS = st.lists(st.sampled_from(["version", "updates", "ranges", "clientID", "user", "changes"]),
                  max_size=3, unique=True)
extras = st.dictionaries(any_text, json_values, max_size=3)


@st.composite
def _object_frame(draw) -> Template:
    """A random object, maybe with a frame type and the field names the protocol uses."""
    value = {}
    t = draw(TYPES)
    if t == "nonstr":
        value["type"] = draw(NONSTR_TYPES)
    elif t == "text":
        value["type"] = draw(any_text.filter(lambda s: s != "sync"))
    elif t != "missing":
        value["type"] = t
    for key in draw(FIELDS):
        value[key] = draw(json_values)
    for key, extra in draw(extras).items():
        value.setdefault(key, extra)
    return Template("object", value, ascii=draw(st.booleans()))


object_frames = _object_frame()
WHERE = st.sampled_from(["push.version", "presence.version", "hello.version", "changes", "updates",
                         "ranges", "clientID", "type", "extra", "top"])
quarter = st.integers(0, 3)


@st.composite
def _deep_frame(draw) -> Template | Frame:
    """Valid JSON nested deep in one field of an otherwise plausible frame."""
    d = deep(draw(depths), draw(quarter) == 0)
    where = draw(WHERE)
    head = V("head")
    if where == "push.version":
        value = {"type": "push", "version": d, "updates": []}
    elif where == "presence.version":
        value = {"type": "presence", "version": d, "ranges": []}
    elif where == "hello.version":
        value = {"type": "hello", "clientID": "z", "version": d}
    elif where == "changes":
        value = {"type": "push", "version": head, "updates": [{"clientID": ME, "changes": d}]}
    elif where == "updates":
        value = {"type": "push", "version": head, "updates": d}
    elif where == "ranges":
        value = {"type": "presence", "version": head, "ranges": [d]}
    elif where == "clientID":
        value = {"type": "push", "version": head, "updates": [{"clientID": d, "changes": [0]}]}
    elif where == "type":
        value = {"type": d}
    elif where == "extra":
        value = {"type": "presence", "version": head, "ranges": [], "x": d}
    else:
        return Frame("deep", d.text, value=d)
    return Template("deep", value)


deep_frames = _deep_frame()
nonobject_frames = st.builds(lambda v, a: Template("nonobject", v, ascii=a),
                             json_values.filter(lambda v: not isinstance(v, dict)), st.booleans())
binary_frames = st.builds(lambda d: Frame("binary", d, binary=True),
                          st.one_of(st.binary(max_size=40), st.sampled_from([b'{"type":"push"}', BARRIER.encode()])))
hello_frames = st.builds(lambda v: Template("hello", v), st.one_of(good_hellos, bad_hellos))
KINDS = st.sampled_from(["clean-push"] * 9 + ["clean-presence"] * 3 + ["push"] * 8 + ["presence"] * 3
                        + ["object"] * 3 + ["nonobject"] * 2 + ["garbage"] * 2
                        + ["hello", "binary", "deep", "deep", "dupkey", "long"])
LONG_SIZES = st.sampled_from(["5000", "30000", "half", "almost"])
LONG_UNITS = st.sampled_from(["x", "é", "😀", "\\"])
LONG_WHERE = st.sampled_from(["insert", "clientID", "type", "version"])
BAD_UTF8 = st.sampled_from([b"\xff", b'{"type":"push","x":"\xc3"}', b'"\xed\xa0\x80"', b"\xc0\xaf",
                                b'{"type":"\xf4\x90\x80\x80"}', b"abc\x80"])
FIRST_KIND = st.sampled_from(["frame"] * 6 + ["badhello"] * 3 + ["closing"])


def frame_strategies(limits: Limits):
    """(a_frame, first_frame, closing_frame) strategies for a server with these limits."""
    push_frames, presence_frames = _push_frames(limits), _presence_frames(limits)
    dupkeys = st.tuples(st.one_of(push_frames, presence_frames), json_values, st.integers(0, 9))
    over = st.sampled_from([1, 100, limits.max_frame])

    @st.composite
    def a_frame(draw):
        """Any frame the fuzzing client may send on an open connection (after its hello)."""
        kind = draw(KINDS)
        if kind == "clean-push":
            return draw(clean_push)
        if kind == "clean-presence":
            return draw(clean_presence)
        if kind == "push":
            return draw(push_frames)
        if kind == "presence":
            return draw(presence_frames)
        if kind == "object":
            return draw(object_frames)
        if kind == "nonobject":
            return draw(nonobject_frames)
        if kind == "garbage":
            return draw(garbage_frames)
        if kind == "hello":
            return draw(hello_frames)
        if kind == "binary":
            return draw(binary_frames)
        if kind == "deep":
            return draw(deep_frames)
        if kind == "dupkey":
            template, decoy, k = draw(dupkeys)
            keys = list(template.value)
            template.dup = (keys[k % len(keys)], decoy)
            return template
        # a long string somewhere: an insert, a clientID, an unknown type (up to a little under max_frame)
        n = {"5000": 5000, "30000": 30_000, "half": limits.max_frame // 2,
             "almost": limits.max_frame - 200}[draw(LONG_SIZES)]
        s = draw(LONG_UNITS) * (n // 4)
        where = draw(LONG_WHERE)
        if where == "insert":
            value = {"type": "push", "version": V("head"),
                     "updates": [{"clientID": ME, "changes": C("long", 0, 3, s[0])}]}
        elif where == "clientID":
            value = {"type": "push", "version": V("head"), "updates": [{"clientID": s, "changes": []}]}
        elif where == "type":
            value = {"type": s}
        else:
            value = {"type": "presence", "version": s, "ranges": []}
        return Template("long", value, ascii=draw(st.booleans()))

    @st.composite
    def closing_frame(draw) -> Frame:
        """A frame over max_frame (the transport refuses it: 1009) or a text frame that is not UTF-8."""
        if draw(st.booleans()):
            n = limits.max_frame + draw(over)
            inner = draw(st.sampled_from(["x", "😀"]))
            text = ('{"type":"push","version":0,"updates":[{"clientID":"fuzz","changes":[[0,"'
                    + inner * (n // len(inner.encode())) + '"]]}]}')
            return Frame("oversize", text)
        return Frame("bad-utf8", draw(BAD_UTF8), bad_utf8=True)

    a_frames, closing_frames = a_frame(), closing_frame()

    @st.composite
    def first_frame(draw):
        """The first frame of a fresh connection that is not a valid hello."""
        kind = draw(FIRST_KIND)
        if kind == "badhello":
            return Template("badhello", draw(bad_hellos))
        if kind == "closing":
            return draw(closing_frames)
        template = draw(a_frames)
        if isinstance(template, Template) and isinstance(template.value, dict) \
                and template.value.get("type") == "hello":
            template.value["type"] = "helo"
        return template

    return a_frames, first_frame(), closing_frames



# ---------------------------------------------------------------------- oracle

@dataclass
class Expect:
    """The answers a frame may get."""

    allowed: frozenset                       # error codes, and OK when "no error" is fine
    closes: frozenset = frozenset()          # close codes the frame may cause
    must_close: bool = False
    accepted: int | None = None              # exactly this many updates must be accepted (when known)
    texts: list | None = None                # and leave exactly these texts (a push at the head)
    effect: bool = False                     # a presence that must reach the other clients
    welcome: bool = False                    # a hello that must be welcomed

    def __repr__(self) -> str:
        parts = [f"allowed={sorted(self.allowed)}"]
        if self.closes:
            parts.append(f"closes={sorted(self.closes)}{' (required)' if self.must_close else ''}")
        if self.accepted is not None:
            parts.append(f"accepted={self.accepted}")
        return "Expect(" + ", ".join(parts) + ")"


def _is_count(v) -> bool:
    return type(v) is int and v >= 0


def judge(frame: Frame, ctx: Ctx, first: bool = False) -> Expect:
    """What the server may answer to `frame` (on a fresh connection when `first`)."""
    if len(frame.payload()) > ctx.limits.max_frame:
        return Expect(frozenset({OK, "too-large"}), frozenset({1009}), must_close=True)
    closes = frozenset({4000}) if first else frozenset()
    if frame.bad_utf8:  # unreadable JSON like any other, not a transport failure
        return Expect(frozenset({"bad-json"}), closes, must_close=first)
    if frame.binary:
        return Expect(frozenset({"bad-message"}), closes, must_close=first)
    if frame.not_json or "invalid" in raw_kinds(frame.value):
        return Expect(frozenset({"bad-json"}), closes, must_close=first)
    kinds = raw_kinds(frame.value)
    value = resolve(frame.value)
    if first:
        exp = _judge_first(value, ctx)
    else:
        exp = _judge_open(value, ctx)
    extra = set()
    if "deep" in kinds:
        extra.add("bad-json")  # parsers may refuse deep nesting
    if "float" in kinds:
        extra |= {"bad-message", "bad-version", "bad-changes"}  # a big integer read as a float, or not
    if frame.label == "dupkey":
        extra.add("bad-json")  # a parser may refuse a key given twice (or keep the last, as orjson does)
    if extra:
        exp.allowed = exp.allowed | extra
        exp.accepted = exp.texts = None
        if first and exp.welcome:
            exp.closes, exp.must_close = frozenset({4000}), False
    return exp


def _judge_first(value, ctx: Ctx) -> Expect:
    closes = frozenset({4000})
    if isinstance(value, dict) and value.get("type") == "hello":
        ok, borderline = hello_ok(value)
        if ok:
            return Expect(frozenset({OK}), welcome=True)
        return Expect(frozenset({"bad-message"}) | ({OK} if borderline else set()), closes,
                      must_close=not borderline, welcome=borderline)
    allowed = {"bad-message"}
    if isinstance(value, dict) and value.get("type") == "push":
        allowed |= _push_structure(value, ctx)[0]
    elif isinstance(value, dict) and value.get("type") == "presence":
        allowed |= _presence_structure(value, ctx)[0]
    return Expect(frozenset(allowed), closes, must_close=True)


def hello_ok(value: dict) -> tuple[bool, bool]:
    """(valid, borderline): borderline hellos are over limits the protocol leaves to the server."""
    cid = value.get("clientID")
    if type(cid) is not str or not cid or "\x00" in cid:
        return False, False
    person, key = value.get("person"), value.get("resumeKey")
    if person is not None and (type(person) is not str or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", person)):
        return False, False
    if key is not None and (type(key) is not str or not 0 < len(key) <= 128):
        return False, False
    opened = value.get("opened")
    if opened is not None and not (_is_count(opened) and opened <= 2 ** 53 - 1):
        return False, False
    if value.get("checkpoints") is not None and type(value["checkpoints"]) is not bool:
        return False, False
    version = value.get("version")
    if version is not None and not _is_count(version):
        return False, False
    user = value.get("user", {})
    if type(user) is not dict:
        return False, False
    name, color = user.get("name", "x"), user.get("color", "#888888")
    if type(name) is not str or type(color) is not str:
        return False, False
    good_color = color in COLORS
    if not good_color and not (color.startswith("#") and len(color) in (4, 5, 7, 9)
                               and all(c in "0123456789abcdefABCDEF" for c in color[1:])):
        return False, False
    if len(cid) > 64 or len(name) > 50:
        return False, True
    return True, False


def _judge_open(value, ctx: Ctx) -> Expect:
    if type(value) is not dict:
        return Expect(frozenset({"bad-message"}))
    kind = value.get("type")
    if kind == "hello":
        # hello was already received: refused; a server may also end the connection
        return Expect(frozenset({"bad-message"}), frozenset({4000}))
    if kind == "push":
        return _judge_push(value, ctx)
    if kind == "presence":
        return _judge_presence(value, ctx)
    return Expect(frozenset({"bad-message"}))


def _push_structure(value: dict, ctx: Ctx):
    """(definite structural codes, [parsed changes] or None, every update is ours)."""
    codes = set()
    if not _is_count(value.get("version")):
        codes.add("bad-message")
    updates = value.get("updates")
    if type(updates) is not list:
        codes.add("bad-message")
        return codes, None, False
    if len(updates) > ctx.limits.max_updates:
        codes.add("too-large")
    parsed = []
    ours = True
    for u in updates:
        if type(u) is not dict or type(u.get("clientID")) is not str or "changes" not in u:
            codes.add("bad-message")
            parsed = None
            continue
        if u["clientID"] != ME:
            ours = False
        cs = parse_changes(u["changes"])
        if cs is None:
            codes.add("bad-changes")
            parsed = None
        elif parsed is not None:
            parsed.append(cs)
    return codes, parsed, ours


def _judge_push(value: dict, ctx: Ctx) -> Expect:
    definite, parsed, ours = _push_structure(value, ctx)
    possible = set()
    if not ours:
        definite.add("bad-message")  # an update that is not this session's
    version = value.get("version")
    accepted = after = None
    if _is_count(version):
        if version > ctx.head_hi:
            definite.add("bad-version")
        elif version > ctx.head_lo:
            possible |= {"bad-version", "bad-changes", "too-large"}
        elif parsed:
            text = ctx.texts[version]
            at_head = ctx.quiet and version == ctx.head_lo
            dup = ctx.a_after(version)
            uncertain = ctx.a_unknown or dup > 0
            if uncertain:
                possible.add("bad-changes")  # re-pushed updates that differ from the accepted ones
            ok_chain = True
            ins_total = del_total = 0
            after = []
            for cs in parsed:
                old, new = lengths(cs)
                if old != u16(text):
                    definite.add("bad-changes")
                    ok_chain = False
                    break
                if cuts_pair(cs, text):
                    (definite if at_head else possible).add("bad-changes")
                    ok_chain = False
                    break
                ins, dele = inserted_deleted(cs)
                ins_total += ins
                del_total += dele
                text = apply(cs, text)
                after.append(text)
            if ok_chain:
                head_len = u16(ctx.texts[ctx.head_lo])
                if ctx.quiet and not uncertain:
                    lo, hi = head_len + ins_total - del_total, head_len + ins_total
                    if at_head:
                        lo = hi = u16(text)
                    if lo > ctx.limits.max_doc:
                        definite.add("too-large")
                    elif hi > ctx.limits.max_doc:
                        possible.add("too-large")
                    elif not definite:
                        accepted = len(parsed)
                elif ins_total:
                    possible.add("too-large")
                if ctx.quiet and dup and not definite and "too-large" not in possible:
                    # deduplication: the first min(n, dup) pushed updates are taken as already accepted
                    accepted = None if len(parsed) > dup else 0
        elif parsed is not None and ctx.quiet:
            accepted = 0  # an empty push
    if definite:
        return Expect(frozenset(definite | possible))
    return Expect(frozenset(possible | {OK}), accepted=accepted,
                  texts=after if accepted and ctx.quiet and version == ctx.head_lo else None)


def _presence_structure(value: dict, ctx: Ctx):
    codes = set()
    if not _is_count(value.get("version")):
        codes.add("bad-message")
    ranges = value.get("ranges")
    if type(ranges) is not list:
        codes.add("bad-message")
        return codes, None
    if len(ranges) > ctx.limits.max_ranges:
        codes.add("too-large")
    for r in ranges:
        if type(r) is not dict or not _is_count(r.get("anchor")) or not _is_count(r.get("head")):
            codes.add("bad-message")
    return codes, ranges


def _judge_presence(value: dict, ctx: Ctx) -> Expect:
    definite, ranges = _presence_structure(value, ctx)
    possible = set()
    version = value.get("version")
    effect = False
    if _is_count(version):
        if version > ctx.head_hi:
            definite.add("bad-version")
        elif version > ctx.head_lo:
            possible |= {"bad-version", "bad-message"}
        elif ranges is not None:
            length = u16(ctx.texts[version])
            if any(r["anchor"] > length or r["head"] > length for r in ranges if isinstance(r, dict)
                   and _is_count(r.get("anchor")) and _is_count(r.get("head"))):
                possible.add("bad-message")  # beyond the document: clamping or refusing are both fair
            effect = ctx.quiet and version == ctx.head_lo
    if definite:
        return Expect(frozenset(definite | possible))
    return Expect(frozenset(possible | {OK}), effect=effect and not possible)

