"""Sequencer: the single authority that orders one document's updates.

What lives here: deciding whether a push is acceptable, rebasing it over what
was accepted since its version, giving each update its version, keeping the
recent log for rebases, resumes and presence mapping, tracking which
versions are durable, and where the `updates` frames end. What never lives
here: sockets, SQL, clocks, `await`. The room (room.py) feeds it pushes,
hands `take_pending()` to the store, reports back with `committed()` and
broadcasts that batch as one frame; only committed updates are ever broadcast.

Rules that always hold:
  * `text` is the document at `version` (the head), which includes updates
    accepted but not yet committed; `committed_version <= version`;
  * `log[k]` is the update that produced version `log_from + k + 1`, and
    `log_from + len(log) == version`; once committed, the log keeps at most
    `keep` updates and `keep_bytes` of their changes (`weight`), and older
    ones are read from the store when needed (`NeedHistory`);
  * a push is all or nothing: if any of its updates is refused, the text and
    log are exactly as before;
  * versions are contiguous and never reused. If a commit fails the room
    throws this sequencer away and reloads from disk, so nothing that was not
    durable is ever shown to anyone;
  * `frame_ends` are the ends of the `updates` frames, the same for every
    connection: each `committed(v)` is one frame ending at v (the room
    broadcasts that batch as one frame), listed ascending from the version
    this sequencer was loaded at (the oldest dropped once there are more
    than 2 * keep; older ones come with the history read from the store,
    `History.ends`). A push is rebased
    frame by frame along them (`push_frames`, rebase.rebase_in_frames),
    which is what a stock client computes only if it is sent exactly those
    frames: on the connection that pushed or, if that one dropped before the
    client read them, in the resume. So a resume must go out in those same
    frames (`frames_since`; `frames_from` a page at a time), never composed
    into one welcome: a push rebased
    along two frames its connection lost, then resumed as one group, is
    mapped differently by the client (tests/test_rebase_properties.py,
    test_resume_keeps_the_frames_a_lost_connection_was_sent).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import orjson

from .changes import ChangeSet
from .errors import ChangeError, ProtocolError, brief
from .rebase import Update, rebase_in_frames, rebase_work
from .text import Text

# Presence: the most work mapping one selection may take (its ranges x the length of the section lists
# of the changes it moves over, two numbers a section; at most about 50 ns each, so a few milliseconds),
# beyond which it counts as too old to map. A cursor or two behind a thousand keystrokes is a few thousand.
MAP_BUDGET = 50_000


@dataclass(slots=True)
class Accepted:
    """An update with its place in history: it produced `version`."""

    version: int
    update: Update
    author: str
    time: float
    inverse: ChangeSet | None = None  # undoes the update; kept only until it is durable
    restored_from: int | None = None  # set when the update restores an older version
    person: str | None = None         # the stable id of who made it (hello.person), when given
    color: str | None = None          # the colour they chose
    _json: bytes | None = None  # the changes as ChangeSetJSON, serialised once for disk and wire

    @property
    def changes_json(self) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(self.update.changes.to_json())
        return self._json


def _steps(count: int, updates: list[Update]) -> int | None:
    """The work of mapping `count` ranges over `updates` (a range over one number of a change's
    sections, each), or None past MAP_BUDGET."""
    cost = 0
    for u in updates:
        cost += count * len(u.changes.sections)
        if cost > MAP_BUDGET:
            return None
    return cost


@dataclass(slots=True)
class History:
    """Committed updates read back from the store, for a push or resume reaching back before the log.

    `updates[k]` produced version `since + k + 1`; `ends` are the versions
    among them where a frame ended (the store keeps that with each update),
    so a push or resume that far back is still cut into the frames every
    connection was sent, even where `Sequencer.frame_ends` no longer reaches.
    `cut`: a read bounded in bytes stopped there, so more may follow.
    """

    since: int
    updates: list[Update]
    ends: list[int]
    cut: bool = False


def cut_frames(start: int, updates: list[Update], ends) -> list[tuple[int, list[Update]]]:
    """`updates` (producing versions start+1 ..) cut into frames [(from, updates), ...] after each version
    of `ends` (ascending; those outside them are left out); the last frame ends with them."""
    stop = start + len(updates)
    groups, lo = [], start
    for end in [*(e for e in ends if start < e < stop), stop]:
        if end > lo:
            groups.append((lo, updates[lo - start:end - start]))
            lo = end
    return groups


KEEP_BYTES = 16 * 1024 * 1024  # the in-memory log keeps at most `keep` updates and about this much of their changes


def weight(u: Update) -> int:
    """About what an update's changes take as ChangeSetJSON (and so, give or take, in memory): the log's
    measure against KEEP_BYTES."""
    c = u.changes
    return 4 * len(c.sections) + sum(map(len, c.inserted))


def _check_version(version) -> None:
    """bad-message unless a push's `version` is a non-negative integer."""
    if type(version) is not int or version < 0:
        raise ProtocolError("bad-message", f"push.version must be a non-negative integer, got {brief(version)}")


class NeedHistory(Exception):
    """The push or resume reaches back before the in-memory log: read `since..log_from` (or a page of
    it) from the store and retry with it."""

    def __init__(self, since: int, until: int):
        super().__init__(since, until)
        self.since = since
        self.until = until


class Sequencer:
    def __init__(self, text: str, version: int, log: list[Update] | None = None,
                 keep: int = 2000, max_length: int | None = None, frame_ends: list[int] | None = None,
                 keep_bytes: int = KEEP_BYTES):
        """`frame_ends`: where the frames of the loaded history ended, if the store kept them.

        Without them the history before `version` counts as one frame: exact
        for every push made from now on, but a client that lost the
        acknowledgement of an update pushed before the reload may have had it
        rebased along frames that a resume can no longer reproduce.
        """
        log = list(log or [])
        self.text = Text(text)
        self.version = version
        self.committed_version = version
        self.log: list[Update] = log
        self.log_from = version - len(log)
        self.log_bytes = sum(map(weight, log))
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.max_length = max_length
        self.pending: list[Accepted] = []  # accepted, not yet durable, in version order
        self._taken = 0                    # how many of `pending` the store is writing
        self.frame_ends = sorted({e for e in frame_ends or () if 0 < e < version} | {version})
        self._trim()

    # ---------------------------------------------------------------- reads

    def length_at(self, version: int) -> int:
        if version == self.version:
            return self.text.length
        return self.log[version - self.log_from].changes.length

    def updates_since(self, version: int, until: int | None = None,
                      history: History | None = None) -> list[Update]:
        """Committed updates from `version` up to `until` (default: committed head).

        `history` supplies updates older than the in-memory log (loaded from
        the store by the caller after a NeedHistory).
        """
        until = self.committed_version if until is None else until
        if version < self.log_from:
            if history is None or history.since > version or \
                    history.since + len(history.updates) < self.log_from:
                raise NeedHistory(version, self.log_from)
            older = history.updates[version - history.since:self.log_from - history.since]
            return older + self.log[:until - self.log_from]
        return self.log[version - self.log_from:until - self.log_from]

    def frames_since(self, version: int, until: int | None = None,
                     history: History | None = None) -> list[tuple[int, list[Update]]]:
        """`updates_since(version, until)` cut where the frames were broadcast: [(from, updates), ...].

        This is how a resume must reach a client: the welcome carries the
        first group, each further one goes out as its own `updates` frame,
        before anything newer (room.py sends them a page at a time:
        `frames_from`, which cuts the same). Empty if there is nothing to send.
        """
        until = self.committed_version if until is None else until
        return cut_frames(version, self.updates_since(version, until, history),
                          self._ends_between(version, until, history))

    def frames_from(self, version: int, history: History | None = None, limit: int = 0,
                    until: int | None = None) -> list[tuple[int, list[Update]]]:
        """The committed frames from `version` up to `until` (a frame end; default: the committed head),
        [(from, updates), ...], as `frames_since` cuts them, but only as far as the in-memory log and
        `history` reach without a gap, whole frames only, and none after the one that brings them to
        `limit` updates or more (0: no limit).

        This is how a long resume goes out a part at a time (room.py). Empty
        when there is nothing after `version`, or when not even the first
        frame is whole in what is known: the caller reads (more) history from
        `version` on.
        """
        head = self.committed_version if until is None else until
        if version >= head:
            return []
        if version >= self.log_from:
            reach, known = head, self.log[version - self.log_from:head - self.log_from]
        elif history is None or not history.since <= version < history.since + len(history.updates):
            return []
        elif history.since + len(history.updates) >= self.log_from:
            reach = head
            known = history.updates[version - history.since:self.log_from - history.since]
            known += self.log[:head - self.log_from]
        else:
            reach, known = history.since + len(history.updates), history.updates[version - history.since:]
        groups, start = [], version
        for end in [*self._ends_between(version, head, history), head]:
            if end > reach or (limit and start - version >= limit):
                break
            groups.append((start, known[start - version:end - version]))
            start = end
        return groups

    def _ends_between(self, since: int, until: int, history: History | None = None) -> list[int]:
        """The known frame ends strictly between `since` and `until`, ascending (those `history` read
        from the store included)."""
        lo = bisect.bisect_right(self.frame_ends, since)
        hi = bisect.bisect_left(self.frame_ends, until)
        ends = self.frame_ends[lo:hi]
        if history is not None and history.ends:
            ends = sorted(set(ends).union(e for e in history.ends if since < e < until))
        return ends

    def push_frames(self, version: int, history: History | None = None) -> list[int]:
        """Where the frames a push based on `version` is moved over end (versions, ascending).

        The broadcast frames after `version`, then the batch the store is
        writing now (it will be one frame); what was accepted after that shares
        the next frame with this push, so it is the last group.
        """
        ends = self._ends_between(version, self.version, history)
        in_flight = self.in_flight_end()
        if in_flight is not None and version < in_flight < self.version:
            ends.append(in_flight)
        return ends

    # ---------------------------------------------------------------- pushes

    def push(self, client_id: str, version, updates: list[Update], author: str, time: float,
             history: History | None = None, frames: list[int] | None = None,
             person: str | None = None, color: str | None = None) -> list[Accepted]:
        """Accept a batch made on top of `version`; return what it became, with versions.

        The push is rebased frame by frame, as the client itself will do
        (rebase.rebase_in_frames), along `push_frames(version)`: the frames
        every connection is sent and every resume is cut into. `frames`
        overrides them (versions where this connection's frames end). No
        room passes it (room.py always takes the default); the tests use it
        to model a room that composes a resume into one welcome, which is
        only right as long as that connection never drops.

        Raises ProtocolError (`bad-version`, `bad-message`, `bad-changes`,
        `too-large`) and leaves everything unchanged, or NeedHistory when the
        base version is older than the in-memory log.
        """
        _check_version(version)
        if not updates:
            self._check(client_id, version, updates, self.version)
            return []
        over = self._check(client_id, version, updates, self.version, history)
        if frames is None:
            frames = self.push_frames(version, history)
        ends = [f - version for f in frames if version < f < self.version]
        rebased = rebase_in_frames(updates, over, sorted(set(ends)))
        if rebased and rebased[0].changes.length != self.text.length:
            # Only possible when re-pushed updates differ from the accepted ones.
            raise ChangeError("re-pushed updates do not match the updates accepted from this client")
        self._check_length(rebased[-1].changes.new_length if rebased else self.text.length)
        inverses = self._apply_all(rebased)

        accepted = []
        for u, inverse in zip(rebased, inverses):
            self.version += 1
            self.log.append(u)
            self.log_bytes += weight(u)
            entry = Accepted(self.version, u, author, time, inverse, person=person, color=color)
            self.pending.append(entry)
            accepted.append(entry)
        return accepted

    def committed_part(self, client_id: str, version: int, updates: list[Update],
                       history: History | None = None, limit: int = 0) -> tuple[int, list[Update], list[int]]:
        """The part of a late push's rebase that only needs durable history, to run elsewhere.

        Returns (base, over, ends): `rebase.rebase_in_frames(updates, over, ends)`
        gives the push moved up to `base` (the committed version, a frame
        end), which `push(client_id, base, those, ...)` then finishes exactly
        as a push at `version` would have: the rebase goes frame by frame, so
        stopping at a frame end and going on from there changes nothing. It
        checks what `push` checks first (raises the same errors, or NeedHistory).

        With `limit`, `base` is only as far as the whole frames of about
        `limit` updates that the log and `history` hold from `version` on
        (`frames_from`): a push from further back than the log is moved up a
        page of history at a time (NeedHistory if not one frame is whole).
        """
        if not limit:
            base = self.committed_version
            over = self._check(client_id, version, updates, base, history)
            return base, over, [e - version for e in self._ends_between(version, base, history)]
        frames = self.frames_from(version, history, limit)
        if not frames:
            raise NeedHistory(version, self.log_from)
        base = frames[-1][0] + len(frames[-1][1])
        over = self._check(client_id, version, updates, base, over=[u for _, group in frames for u in group])
        return base, over, [start - version for start, _ in frames[1:]]

    def rebase_work(self, version, updates: list[Update],
                    history: History | None = None) -> tuple[int, int]:
        """How much work rebasing a push at `version` is (rebase.rebase_work): (the part up to the
        committed head, the part over what is accepted but not yet durable). The second leaves out
        the walks of the push's own sections: waiting for that part's commit, to take it in turns,
        splits only what the updates moved over make. (0, 0) for a push at or past the head or of no
        updates; NeedHistory as `push` raises it. Other refusals are `push`'s to find."""
        if type(version) is not int or not 0 <= version < self.version or not updates:
            return 0, 0  # at the head (the common case), nothing to rebase over
        committed, base = 0, self.committed_version
        if version < base:
            over = self.updates_since(version, base, history)
            committed = rebase_work(updates, over, [e - version for e in self._ends_between(version, base, history)])
            version = base
        ends = [f - version for f in self.push_frames(version) if version < f < self.version]
        return committed, rebase_work(updates, self.log[version - self.log_from:], ends, own=False)

    def check_unborn(self, client_id: str, version, updates: list[Update]) -> None:
        """Raise what `push` would refuse of this push (`bad-version`, `bad-message`, `bad-changes`,
        `too-large`), changing nothing, while nothing was accepted yet (version 0: nothing to rebase
        over): a document is made only by a push it will take."""
        _check_version(version)
        self._check(client_id, version, updates, self.version)
        if updates:
            self._check_length(updates[-1].changes.new_length)

    def _check_length(self, final: int) -> None:
        """too-large if the text would end longer than max_length (and longer than now: shrinking is
        always allowed)."""
        if self.max_length is not None and final > self.max_length and final > self.text.length:
            raise ProtocolError("too-large", f"the document would grow to {final} characters, "
                                f"over the limit of {self.max_length}")

    def _check(self, client_id: str, version: int, updates: list[Update], until: int,
               history: History | None = None, over: list[Update] | None = None) -> list[Update]:
        """What push and committed_part refuse: a future version, another clientID, lengths that do not
        chain from the text at `version`. Returns the updates accepted since `version` up to `until`
        (`over`, if the caller has them)."""
        if version > until:
            raise ProtocolError("bad-version", f"push is based on version {version}, "
                                f"but the document is at version {until}")
        for k, u in enumerate(updates):
            if u.client_id != client_id:
                raise ProtocolError("bad-message", f"update {k} has clientID {brief(u.client_id)}, "
                                    f"but this session is {client_id!r}")
        if not updates:
            return []
        if over is None:
            over = self.updates_since(version, until, history)
        expected = over[0].changes.length if over else self.length_at(until)
        for k, u in enumerate(updates):
            if u.changes.length != expected:
                raise ChangeError(f"update {k} applies to a document of length {u.changes.length}, "
                                  f"but at that point the document has length {expected}")
            expected = u.changes.new_length
        return over

    def _apply_all(self, updates: list[Update]) -> list[ChangeSet]:
        """Apply every update to the head text, or none of them; return their inverses."""
        undo: list[ChangeSet] = []
        try:
            for u in updates:
                inverse = self.text.invert(u.changes)
                self.text.apply(u.changes)
                undo.append(inverse)
        except ChangeError:
            for inverse in reversed(undo):
                self.text.apply(inverse)
            raise
        return undo

    # ------------------------------------------------------------ durability

    def in_flight_end(self) -> int | None:
        """The last version of the batch the store is writing now (its frame ends there)."""
        return self.pending[self._taken - 1].version if self._taken else None

    def committed_text(self) -> str:
        """The text at `committed_version` (what may be shown: it is durable)."""
        if not self.pending:
            return str(self.text)
        doc = self.text.copy()  # copies the chunk list, not the text
        for entry in reversed(self.pending):
            doc.apply(entry.inverse)
        return str(doc)

    def take_pending(self) -> list[Accepted]:
        """The accepted updates not yet handed to the store, in version order."""
        batch = self.pending[self._taken:]
        self._taken = len(self.pending)
        return batch

    def committed(self, version: int) -> None:
        """Everything up to `version` is durable and goes out as one frame; trim the log to `keep` entries."""
        if version > self.frame_ends[-1]:
            self.frame_ends.append(version)  # the batch is broadcast as one frame ending here
            if len(self.frame_ends) > 2 * self.keep:
                del self.frame_ends[:len(self.frame_ends) - max(self.keep, 1)]  # the head's stays
        self.committed_version = max(self.committed_version, version)
        done = 0
        while done < len(self.pending) and self.pending[done].version <= version:
            done += 1
        del self.pending[:done]
        self._taken -= done
        self._trim()

    def _trim(self) -> None:
        """Drop the oldest committed log entries past `keep` updates or `keep_bytes` of changes (never an
        uncommitted one: it is not readable from disk yet)."""
        durable = self.committed_version - self.log_from
        drop = min(max(0, len(self.log) - self.keep), durable)
        left = self.log_bytes - sum(map(weight, self.log[:drop]))
        while left > self.keep_bytes and drop < durable:
            left -= weight(self.log[drop])
            drop += 1
        if drop:
            del self.log[:drop]
            self.log_from += drop
            self.log_bytes = left

    # ------------------------------------------------------ another writer

    def returned(self) -> None:
        """The store gave back the batch it was writing, unwritten (another writer was first)."""
        self._taken = 0

    def rollback(self) -> list[Accepted]:
        """Undo every accepted update that is not durable (none may be with the store); return them.

        For when another writer committed first (the store refused our
        commit): what we accepted was never broadcast, so it is taken back,
        the other writer's updates are applied (`catch_up`), and the original
        pushes are sequenced again.
        """
        if self._taken:
            raise RuntimeError("rollback while the store is writing a batch")
        undone, self.pending = self.pending, []
        for entry in reversed(undone):
            self.text.apply(entry.inverse)
        if undone:
            self.log_bytes -= sum(map(weight, self.log[len(self.log) - len(undone):]))
            del self.log[len(self.log) - len(undone):]
            self.version -= len(undone)
        return undone

    def catch_up(self, updates: list[Update], ends: list[int] = ()) -> None:
        """Apply `updates`, committed by another writer after `committed_version` (nothing may be pending).

        `ends` are the versions, inside that range, where the other writer's
        frames ended; the last update always ends one. Raises ChangeError,
        changing nothing, if they do not fit the text (the room then reloads).
        """
        if self.pending:
            raise RuntimeError("catch_up with updates of our own pending")
        inverses = self._apply_all(updates)
        del inverses
        start = self.version
        self.log.extend(updates)
        self.log_bytes += sum(map(weight, updates))
        self.version += len(updates)
        for end in sorted(e for e in ends if start < e < self.version):
            if end > self.frame_ends[-1]:
                self.frame_ends.append(end)
        self.committed(self.version)

    # -------------------------------------------------------------- presence

    def map_cost(self, count: int, since: int, until: int) -> int:
        """The steps `map_ranges` takes to map `count` ranges from `since` to `until`: 0 when there is
        nothing to map, or when it gives up at once (too old: before the log, or over MAP_BUDGET)."""
        if since == until or since < self.log_from:
            return 0
        return _steps(count, self.log[since - self.log_from:until - self.log_from]) or 0

    def map_ranges(self, ranges: list[tuple[int, int]], since: int, until: int) -> list[tuple[int, int]] | None:
        """Selection ranges at version `since` moved to version `until`; None if too old to map.

        Too old: before the log, or more than MAP_BUDGET steps of work behind
        (a range over one number of a change's sections; mapping walks them).
        """
        if since == until:
            return ranges
        if since < self.log_from:
            return None
        out = []
        steps = self.log[since - self.log_from:until - self.log_from]
        if _steps(len(ranges), steps) is None:
            return None
        for anchor, head in ranges:
            for u in steps:
                # Like CodeMirror's SelectionRange.map: a cursor or a range
                # keeps its inner side (anchor/head each map with assoc -1 at
                # the start of a range and +1 at its end).
                if anchor == head:
                    anchor = head = u.changes.map_pos(anchor, -1)
                elif anchor < head:
                    anchor, head = u.changes.map_pos(anchor, 1), u.changes.map_pos(head, -1)
                else:
                    anchor, head = u.changes.map_pos(anchor, -1), u.changes.map_pos(head, 1)
            out.append((anchor, head))
        return out
