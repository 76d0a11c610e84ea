"""Many peers, one authority built on rebase_updates, one fake network.

The authority keeps the accepted updates; a push made at version v becomes
`rebase_in_frames(pushed, accepted[v:], frames)`, appended. Peers are a port of
@codemirror/collab's client side (`receiveUpdates`: own updates recognised by
clientID, in order; unconfirmed updates mapped over the composed remote
changes). Hypothesis picks the interleaving: edits, pushes, re-pushes of
updates already accepted, deliveries, disconnects that lose acknowledgements.

Two network models:
  * "cm", the one @codemirror/collab's own tests use: a push is handled when
    it is sent, and a peer receives all it lacks in one call. Peers must
    converge, whatever the edits.
  * "network", a WebSocket server: pushes wait in flight and are handled in
    any order, each accepted batch is its own frame. A peer maps its pending
    changes frame by frame, and `x.map(a.compose(b))` != `x.map(a).map(b)`
    for an insertion where `a` deleted and `b` inserted, so rebasing over the
    composition (CodeMirror's rebaseUpdates as is) diverges; the authority
    here rebases along the frames the pushing peer receives, as the server
    does (rebase_in_frames), and every run must converge
    (test_split_frames_converge is the smallest case).
"""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import casegen as cg
from collab.changes import ChangeError, ChangeSet
from collab.rebase import Update, rebase_in_frames, rebase_updates


def wire(update: Update) -> Update:
    """An update as it crosses the network: through its JSON form."""
    return Update(update.client_id, ChangeSet.from_json(update.changes.to_json()))


class Authority:
    def __init__(self, doc: str):
        self.accepted: list[Update] = []
        self.history = [doc]                     # text at each version

    @property
    def text(self) -> str:
        return self.history[-1]

    def push(self, version: int, updates: list[Update],
             frames: list[int] | None = None) -> tuple[int, list[Update]] | None:
        """Rebase like the server: frame by frame along `frames` (the ends of the frames the
        pushing peer receives), or over everything at once when there are none."""
        if version > len(self.accepted):
            return None                          # bad-version
        head = len(self.accepted)
        ends = sorted({f - version for f in frames or () if version < f < head})
        result = rebase_in_frames([wire(u) for u in updates], self.accepted[version:], ends)
        start = len(self.accepted)
        for u in result:
            self.history.append(u.changes.apply_to_str(self.text))
            self.accepted.append(u)
        return start, result


class Peer:
    """@codemirror/collab's client state: synced version and unconfirmed changes."""

    def __init__(self, client_id: str, doc: str):
        self.id = client_id
        self.doc = doc
        self.version = 0
        self.unconfirmed: list[ChangeSet] = []
        self.inbox: list[tuple[int, list[Update]]] = []
        self.frame_ends: list[int] = []          # where each frame sent to this peer ends
        self.connected = True

    def edit(self, changes: ChangeSet) -> None:
        self.doc = changes.apply_to_str(self.doc)
        self.unconfirmed.append(changes)

    def sendable(self) -> list[Update]:
        return [Update(self.id, c) for c in self.unconfirmed]

    def receive(self, updates: list[Update]) -> None:
        """receiveUpdates, step for step."""
        self.version += len(updates)
        changes: ChangeSet | None = None
        own = 0
        for update in updates:
            if own < len(self.unconfirmed) and update.client_id == self.id:
                if changes is not None:
                    changes = changes.map(self.unconfirmed[own], True)
                own += 1
            else:
                changes = update.changes if changes is None else changes.compose(update.changes)
        self.unconfirmed = self.unconfirmed[own:]
        if changes is not None and self.unconfirmed:
            mapped = []
            for local in self.unconfirmed:
                mapped.append(local.map(changes))
                changes = changes.map(local, True)
            self.unconfirmed = mapped
        if changes is not None:
            self.doc = changes.apply_to_str(self.doc)

    def receive_frame(self, start: int, updates: list[Update]) -> None:
        if start + len(updates) <= self.version:
            return
        assert start <= self.version, f"{self.id}: gap, at {self.version}, frame from {start}"
        self.receive([wire(u) for u in updates[self.version - start:]])


class Sim:
    """One authority, `n` peers, the network between them."""

    def __init__(self, mode: str, doc: str, n: int, editor):
        self.mode = mode
        self.auth = Authority(doc)
        self.peers = [Peer(f"p{i}", doc) for i in range(n)]
        self.inflight: list[tuple[Peer, int, list[Update]]] = []
        self.editor = editor                     # (peer, rng) -> ChangeSet | None

    # -- the actions

    def push(self, peer: Peer) -> None:
        sendable = peer.sendable()
        if not sendable:
            return
        if self.mode == "cm":
            self.handle(peer.version, sendable)
        else:
            self.inflight.append((peer, peer.version, sendable))

    def handle(self, version: int, updates: list[Update], peer: Peer | None = None) -> None:
        done = self.auth.push(version, updates, peer.frame_ends if peer is not None else None)
        if done and done[1]:
            for p in self.peers:
                if p.connected:
                    p.inbox.append(done)
                    p.frame_ends.append(done[0] + len(done[1]))

    def deliver(self, peer: Peer) -> None:
        if self.mode == "cm":
            peer.inbox.clear()
            if peer.version < len(self.auth.accepted):
                peer.receive([wire(u) for u in self.auth.accepted[peer.version:]])
        elif peer.inbox:
            peer.receive_frame(*peer.inbox.pop(0))
        self.check(peer)

    def disconnect(self, peer: Peer, rng: random.Random) -> None:
        peer.connected = False
        peer.inbox.clear()
        peer.frame_ends = [e for e in peer.frame_ends if e <= peer.version]
        if rng.random() < 0.5:                   # its pushes are lost, or still arrive
            self.inflight = [p for p in self.inflight if p[0] is not peer]

    def reconnect(self, peer: Peer, rng: random.Random) -> None:
        peer.connected = True
        peer.inbox.append((peer.version, self.auth.accepted[peer.version:]))
        peer.frame_ends.append(len(self.auth.accepted))
        if rng.random() < 0.7:
            self.push(peer)                      # resend everything unconfirmed

    def step(self, kind: int, who: int, seed: int) -> None:
        rng = random.Random(seed)
        peer = self.peers[who % len(self.peers)]
        if kind < 30:
            changes = self.editor(peer, rng)
            if changes is not None:
                peer.edit(changes)
        elif kind < 48:
            self.push(peer)
        elif kind < 70:
            if self.inflight:
                p, version, updates = self.inflight.pop(rng.randrange(len(self.inflight)))
                self.handle(version, updates, p)
        elif kind < 94:
            if peer.inbox:
                self.deliver(peer)
        elif self.mode == "cm":
            self.push(peer)                      # a re-push of what may be accepted already
        elif kind < 97:
            if peer.connected:
                self.disconnect(peer, rng)
        elif not peer.connected:
            self.reconnect(peer, rng)

    def settle(self) -> None:
        rng = random.Random(0)
        for peer in self.peers:
            if not peer.connected:
                self.reconnect(peer, rng)
        for _ in range(100):
            while self.inflight:
                p, version, updates = self.inflight.pop(rng.randrange(len(self.inflight)))
                self.handle(version, updates, p)
            for peer in self.peers:
                while peer.inbox:
                    self.deliver(peer)
            pending = [p for p in self.peers if p.unconfirmed]
            if not pending:
                return
            for peer in pending:
                self.push(peer)
        raise AssertionError("the network did not settle")

    # -- the invariants

    def check(self, peer: Peer) -> None:
        """A peer's text is the authority's text at its version plus its unconfirmed changes."""
        text = self.auth.history[peer.version]
        for c in peer.unconfirmed:
            text = c.apply_to_str(text)
        assert peer.doc == text, f"{peer.id} at version {peer.version} drifted from the authority"

    def assert_converged(self) -> None:
        for peer in self.peers:
            assert peer.version == len(self.auth.accepted) and not peer.unconfirmed
            assert peer.doc == self.auth.text, f"{peer.id}: {peer.doc!r} != authority {self.auth.text!r}"


actions = st.lists(st.tuples(st.integers(0, 99), st.integers(0, 2), st.integers(0, 2**32 - 1)), min_size=20, max_size=100)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------- insert-only markers

MARKER = re.compile(r"<p\d+\.\d+😀>")


def marker_editor():
    """Peers insert unique markers, only between markers, so each stays whole."""
    typed: list[str] = []
    counters: Counter = Counter()

    def edit(peer: Peer, rng: random.Random) -> ChangeSet:
        bounds, pos = [0], 0
        for m in MARKER.finditer(peer.doc):
            pos += cg.u16(m.group())
            bounds.append(pos)
        spots = sorted(rng.choice(bounds) for _ in range(rng.randint(1, 2)))
        js, at = [], 0
        for spot in spots:
            counters[peer.id] += 1
            marker = f"<{peer.id}.{counters[peer.id]}😀>"
            typed.append(marker)
            if spot > at:
                js.append(spot - at)
            js.append([0, marker])
            at = spot
        if pos > at:
            js.append(pos - at)
        return ChangeSet.from_json(js)

    return edit, typed


def assert_markers_once(text: str, typed: list[str]) -> None:
    found = MARKER.findall(text)
    assert "".join(found) == text, "something other than whole markers in the text"
    counts = Counter(found)
    lost = [m for m in typed if counts[m] == 0]
    doubled = [m for m, k in counts.items() if k > 1]
    assert not lost and not doubled, f"lost {lost}, duplicated {doubled}"
    assert set(counts) == set(typed)


@pytest.mark.parametrize("mode", ["cm", "network"])
@SETTINGS
@given(steps=actions)
def test_insert_only_nothing_lost_or_duplicated(mode, steps):
    edit, typed = marker_editor()
    sim = Sim(mode, "", 3, edit)
    for step in steps:
        sim.step(*step)
    sim.settle()
    sim.assert_converged()
    assert_markers_once(sim.auth.text, typed)


# ----------------------------------------------------------- random edits


def random_editor(peer: Peer, rng: random.Random) -> ChangeSet:
    return ChangeSet.from_json(cg.rand_changes(rng, peer.doc, rng.choice(["clean", "raw"])))


@SETTINGS
@given(doc=st.sampled_from(["", "a", "hello 😀 world", "x\n𝒳y"]), steps=actions)
def test_random_edits_converge_cm_model(doc, steps):
    sim = Sim("cm", doc, 3, random_editor)
    for step in steps:
        sim.step(*step)
    sim.settle()
    sim.assert_converged()


@settings(max_examples=300, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.sampled_from(["", "a", "hello 😀 world", "x\n𝒳y"]), steps=actions)
def test_random_edits_converge_network(doc, steps):
    sim = Sim("network", doc, 3, random_editor)
    for step in steps:
        sim.step(*step)
    sim.settle()
    sim.assert_converged()


def handle_next(sim: Sim) -> None:
    peer, version, updates = sim.inflight.pop()
    sim.handle(version, updates, peer)


def test_split_frames_converge():
    """The smallest case where rebasing over the composition diverges, scripted.

    Text "a". A deletes it (v1). B inserts "Y" into the empty text (v2). C,
    still at v0, inserts "Z" before "a" and pushes; before the authority
    handles that push, C receives v1 and v2 as two frames. Over v1+v2
    composed, CodeMirror's rebaseUpdates gives "ZY" while C (mapping over v1,
    then v2) has "YZ" (checked with real CodeMirror in Node). Rebasing frame
    by frame, as the server does, everyone ends with C's "YZ".
    """
    sim = Sim("network", "a", 3, None)
    a, b, c = sim.peers
    a.edit(ChangeSet.from_json([[1]]))
    sim.push(a)
    handle_next(sim)
    sim.deliver(a)
    sim.deliver(b)
    b.edit(ChangeSet.from_json([[0, "Y"]]))
    sim.push(b)
    handle_next(sim)
    c.edit(ChangeSet.from_json([[0, "Z"], 1]))
    sim.push(c)
    c.receive_frame(*c.inbox.pop(0))              # frame v0..v1
    c.receive_frame(*c.inbox.pop(0))              # frame v1..v2
    handle_next(sim)           # now C's push: v3
    for peer in sim.peers:
        while peer.inbox:
            peer.receive_frame(*peer.inbox.pop(0))
    assert sim.auth.text == "YZ"
    assert [p.doc for p in sim.peers] == ["YZ", "YZ", "YZ"]
    # The composed rebase (one frame) is what CodeMirror's reference authority does: "ZY".
    composed = rebase_updates([Update("p2", ChangeSet.from_json([[0, "Z"], 1]))], sim.auth.accepted[:2])
    assert composed[0].changes.apply_to_str(sim.auth.history[2]) == "ZY"


# --------------------------------------------------------- rebase_updates


@st.composite
def history(draw):
    """A base text, updates accepted from it, and a peer's pending updates on the base."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    base = cg.rand_doc(rng)
    over, text = [], base
    for k in range(draw(st.integers(0, 4))):
        js = cg.rand_changes(rng, text, "clean")
        over.append(Update(f"other{k % 2}", ChangeSet.from_json(js)))
        text = cg.ref_apply(text, js)
    mine, text = [], base
    for _ in range(draw(st.integers(0, 3))):
        js = cg.rand_changes(rng, text, "clean")
        mine.append(Update("me", ChangeSet.from_json(js)))
        text = cg.ref_apply(text, js)
    return base, over, mine


@SETTINGS
@given(history())
def test_rebase_trivial_cases(case):
    base, over, mine = case
    assert rebase_updates(mine, []) == mine
    assert rebase_updates([], over) == []


@SETTINGS
@given(history())
def test_rebased_updates_fit_and_keep_their_authors(case):
    base, over, mine = case
    result = rebase_updates(mine, over)
    assert [u.client_id for u in result] == [u.client_id for u in mine]
    text = base
    for u in over + result:
        text = u.changes.apply_to_str(text)      # raises if a rebased update does not fit


@SETTINGS
@given(history(), st.integers(0, 3))
def test_repushing_accepted_updates_is_deduplicated(case, split):
    """A resend after a lost ack: the accepted prefix is dropped, the rest rebased once."""
    base, over, mine = case
    split = min(split, len(mine))
    auth = Authority(base)
    auth.push(0, over)
    first = auth.push(0, mine[:split])           # accepted, ack lost
    assert first is not None
    before = list(auth.accepted)
    again = auth.push(0, mine)                   # everything resent from version 0
    assert again is not None
    assert len(again[1]) == len(mine) - split
    assert auth.accepted[:len(before)] == before
    # The same end text as if it had all been pushed once.
    once = Authority(base)
    once.push(0, over)
    once.push(0, mine)
    assert auth.text == once.text
