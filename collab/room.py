"""Room: one open document and its members; Rooms: the registry of open documents.

What lives here: the asynchronous life around a Sequencer: joining (welcome),
pushes, handing accepted updates to the store as a `Commit` and broadcasting
them only after COMMIT, presence coalescing, leaving, unloading an idle
document, and flushing on shutdown. Frames arrive already parsed
(protocol.py) and leave as bytes through each member's `Connection.send`,
which queues per connection (peer.py), so one slow reader never delays the
others. No SQL (the store owns it) and no sockets (the adapter owns them):
a room runs in memory with fake connections.

Rules that always hold:
  * a member is sent updates in version order without gaps, starting at the
    version of its welcome; presence it receives is mapped to a version it
    has already been sent. A resume's frames after its welcome go out as
    the client reads them (`_resume`), read a page at a time, while what is
    broadcast meanwhile waits for them (held, counted against
    --send-buffer like a queue), so what one resume holds in memory is
    bounded;
  * nothing is broadcast before the store's transaction committed;
  * if a commit fails, the room is discarded (members closed with 1011, state
    reloaded from the store on the next join): clients re-push what was not
    acknowledged, and the sequencer's de-duplication keeps it exactly once.
    One refused because its document no longer exists (deleted by another
    process, its news not here yet) ends the room as that news would (1008);
  * the HTTP and WebSocket adapters reach open documents only through
    `Rooms`' public methods and a member's room's `push_now`, `push`,
    `presence` and `leave`. What is durable and not held in a room (the list
    of documents, whether a name is taken or was another's, history,
    checkpoints, authorship, people, former names) api.py reads from the
    store, and it names a checkpoint there too (`set_checkpoint`, then
    `Rooms.checkpoint_named` tells the room);
  * a room is unloaded (forgotten, and no longer heard about on the bus) only
    with no members and nothing holding it (`hold`: a join or a restore
    under way); a join refused after the room loaded leaves it to unload;
  * the sequencer takes a push only while no catch-up runs (`_ready`), and
    `settled` waits for a catch-up's pushes too; a catch-up reads what other
    writers committed a page of whole frames at a time (`_news_after`), and
    once it holds pushes to commit it ends with their commit, however much
    news comes meanwhile (a commit lost to it is a lost round, MAX_LOST_ROUNDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import math
import random
import secrets
import time
from collections import OrderedDict, deque
from typing import Callable, Protocol

import orjson

from . import protocol
from .access import Access, token_digest
from .errors import (CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_REPLACED, CLOSE_TRY_AGAIN,
                     SHUTTING_DOWN, ChangeError, CollabError, ProtocolError, ServerError)
from .limits import DiskGuard, Gate, TokenBucket
from .logs import Throttle
from .metrics import Metrics
from .rebase import Update, rebase_in_frames_steps
from .sequencer import MAP_BUDGET, History, NeedHistory, Sequencer, cut_frames, weight
from .settings import Settings
from .storage import (Commit, Loaded, NameTaken, Storage, StorageUnavailable, TooManyDocuments, Turn, TurnLost,
                      VersionCompacted, VersionConflict)

log = logging.getLogger("collab")


class Connection(Protocol):
    """What a room needs of a connection (peer.Peer over a WebSocket; a list in tests)."""

    session: str
    client_id: str
    user: dict
    role: str       # "edit" or "view"
    admin: bool     # came with the admin token
    remote: str     # the client's address
    token: str | None  # the access token it came with, until its hello is answered (then None)
    closed: bool

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, message: str) -> None: ...

    def backlog(self) -> int: ...  # bytes sent that the client has not taken yet

    async def drained(self, below: int) -> None: ...  # returns once backlog() < below, or it is closed


DELETED = "this document was deleted"  # the reason its sessions are closed with (1008), here and elsewhere
MAX_OWNERS = 4096  # clientIDs per document whose proof (resume key, token, address) is remembered
OPENED_WINDOW = 10.0  # seconds: two hellos of one client read closer than this are ordered by hello.opened
JOIN_CATCH_UP_S = 2.0  # seconds a join waits for the versions another process acknowledged its client (then goes on)
MAX_LOST_ROUNDS = 16  # commits in a row lost to another writer before the room gives up and reloads
HEAVY_REBASE = 20_000  # rebase work (rebase.rebase_work: a few ms) above which it takes turns with the loop
HEAVY_ROUNDS = 4       # times a push waits for commits before it goes on regardless (and rounds, twice that)
TURN = 0.005           # seconds of that rebase between two turns of the event loop
TURN_ROUNDS = 8        # rounds of the event loop each turn gives (a request needs several: read, handle, write)
RESUME_PAGE = 1000            # updates of a resume taken at once from the log or the store (a page)
RESUME_PAGE_BYTES = 1 << 20   # and at most about this much of their changes read from the store at once
HISTORY_SLOTS = 8             # pages of history read from the store that the whole process holds at once
SECTIONS_PER_UPDATE = 100     # sections of a push's changes that count as one update against the budgets
# A push whose changes weigh this much (sequencer.weight: about their ChangeSetJSON, many places or many lines)
# took a while to parse and will take as long to apply, then as long to make ready to store: it gives the event
# loop turns before each of those (a 1 MB push: about 0.1 s each; bench/stall.py).
HEAVY_BYTES = 64 * 1024
HEAVY_PAUSE = 0.002  # seconds the event loop is given at each of those points (the push is that much later)
REBUILDS_RUNNING = 2          # texts of versions rebuilt from the store at once (of 3 SQLite readers, 4 PostgreSQL)
REBUILDS_WAITING = 32         # and waiting for their turn; one more is refused (503 unavailable)
RESUME_HOLD = 1.0             # seconds a resume keeps its page (and slot) while its client takes what was sent


def check_cap(settings: Settings, name: str, sessions: int, viewer: bool) -> None:
    """Refuse (rate-limited) one more session of a document that has `sessions` welcomed ones, over
    --max-conns-per-doc; view sessions leave --reserved-edit-slots (at most half) to editors."""
    cap = settings.max_conns_per_doc - (min(settings.reserved_edit_slots, settings.max_conns_per_doc // 2)
                                        if viewer else 0)
    if sessions >= cap:
        raise ProtocolError("rate-limited", f"document {name!r} has {cap} connections, "
                            "the most allowed" + (" for view-only sessions" if viewer else ""))


async def _rebase_taking_turns(updates: list[Update], over: list[Update], ends: list[int]) -> list[Update]:
    """rebase.rebase_in_frames, a step at a time (one update composed or mapped), letting the event loop
    run TURN_ROUNDS rounds every TURN seconds. One step is not divided: over one update of as many
    sections as a frame can carry (--max-frame, 1 MiB: about 200,000) it takes about 0.25 s here, so
    that is how long a round may wait, where before the whole rebase ran in one go (7.3 s for 100 keystrokes pushed
    behind 100,000 sections; with one round a turn, a request needing several waited 0.8 s)."""
    steps = rebase_in_frames_steps(updates, over, ends)
    turn_ends = time.perf_counter() + TURN
    try:
        while True:
            next(steps)
            if time.perf_counter() > turn_ends:
                await give_turns()
                turn_ends = time.perf_counter() + TURN
    except StopIteration as done:
        return done.value


def _heavy(updates: list[Update]) -> bool:
    """Whether a push is heavy (HEAVY_BYTES): the event loop gets turns before and after it is applied."""
    return sum(map(weight, updates)) >= HEAVY_BYTES


async def give_turns(pause: float = 0.0) -> None:
    """Let the event loop run TURN_ROUNDS rounds before the rest of a long piece of work, so what is
    waiting meanwhile (a request needs several rounds: read, handle, write) is not held up by all of it;
    then, with `pause`, as many more as come in that many seconds (a write's trip through the store's
    thread needs more than a few rounds)."""
    for _ in range(TURN_ROUNDS):
        await asyncio.sleep(0)
    if pause:
        await asyncio.sleep(pause)


class Original:
    """A push as it arrived, kept until what it became is durable, so it can be sequenced again.

    When another writer commits first, what this push became is taken back
    (it was never broadcast) and the push itself, not its rebased form, is
    rebased again over the other writer's updates. A heavy push moved up over
    durable history (`Room._sequence`) keeps that form: only what was not yet
    durable is ever taken back, so the next time it is rebased over the news
    since then alone.
    """

    __slots__ = ("member", "client_id", "version", "updates", "author", "time", "restored_from", "last", "done",
                 "person", "color")

    def __init__(self, member: "Member | None", client_id: str, version: int, updates: list[Update], author: str,
                 time: float, restored_from: int | None = None, done: asyncio.Future | None = None):
        self.member = member            # None for a server-made push (a restore)
        self.client_id = client_id
        self.version = version
        self.updates = updates
        self.author = author
        self.time = time
        self.restored_from = restored_from
        self.last = 0                   # the last version it produced, once sequenced
        self.done = done                # resolved with `last` once durable (server-made pushes wait on it)
        self.person = member.conn.user.get("person") if member is not None else None
        self.color = member.conn.user.get("color") if member is not None else None


def _resumed(member: Member, task: asyncio.Task) -> None:
    """The rest of `member`'s resume went out, or stopped (the task ended, however): its frames go on."""
    resumed, member.resumed = member.resumed, None
    if resumed is not None and not resumed.done():
        resumed.set_result(None)


class Member:
    """A connection inside a room: what the room remembers about it."""

    __slots__ = ("conn", "room", "presence", "bucket", "joined", "opened", "held", "held_size", "resumed",
                 "checkpoints")

    def __init__(self, conn: Connection, room: "Room", bucket: TokenBucket, joined: float,
                 opened: int | None = None, checkpoints: bool = False):
        self.conn = conn
        self.room = room
        self.presence: tuple[int, list[tuple[int, int]]] | None = None  # (version, ranges)
        self.bucket = bucket       # updates it may still push (--update-rate)
        # Which of two connections of one client is the one in use (see newer_connection): its
        # hello.opened, and when its hello came.
        self.joined = joined
        self.opened = opened
        self.held: deque | None = None  # while the rest of its resume goes out: what is broadcast meanwhile
        self.held_size = 0
        # While the rest of its resume goes out: done once it has (or has stopped). The frames the client sent
        # after its welcome wait for it (ws.py), so what answers them, an acknowledgement or an error,
        # comes after the frames it was sent before.
        self.resumed: asyncio.Future | None = None
        self.checkpoints = checkpoints  # it asked to hear of named versions (hello.checkpoints)

    @property
    def session(self) -> str:
        return self.conn.session

    def send(self, frame: bytes) -> None:
        """A broadcast to this member; while the rest of its resume goes out (`Room._resume`), held to go
        out behind it. Over --send-buffer held, the member is closed (1013: too far behind, it resumes)."""
        conn = self.conn
        if self.held is None:
            conn.send(frame)
        elif not conn.closed:
            self.held.append(frame)
            self.held_size += len(frame)
            if self.held_size > self.room.settings.send_buffer:
                self.held, self.held_size = deque(), 0
                conn.close(CLOSE_TRY_AGAIN, "too far behind; reconnect to resume")


def newer_connection(opened: int | None, at: float, than_opened: int | None, than_at: float) -> bool:
    """Whether a connection of a client (hello.opened, hello received `at`) is newer than another of it.

    A client says hello again only once it gave up its older connection, so
    the newer one is the one in use, whichever welcome went out first. By the
    client's own `opened` when both hellos carry one and were received within
    OPENED_WINDOW of each other: the order it opened them in, whatever a busy
    process or the network did to when their hellos were read. Else by when
    the server received each hello (hellos further apart are not the race
    `opened` is for, and the client's clock may have been set back between
    them: a page reloaded after that must still win over its old socket).
    """
    if (opened is not None and than_opened is not None and opened != than_opened
            and abs(at - than_at) <= OPENED_WINDOW):
        return opened > than_opened
    return at > than_at


def proves_owner(owner: tuple[str, str, str], key, token, remote) -> bool:
    """Whether a resume key, or a token hash from an address, proves to be `owner` (its resume key, token
    hash and address): the client that first used the clientID (Room._claim, Room.taken_elsewhere)."""
    owner_key, owner_token, owner_remote = owner
    return (type(key) is str and hmac.compare_digest(key.encode(), owner_key.encode())) \
        or (token == owner_token and remote == owner_remote)


class Room:
    # Slots: a Room has more attributes than CPython shares the keys of in instance dicts (30), so each
    # open document would hold a full dict of its own (about 1.3 KB more), and every push looks them up.
    __slots__ = ("rooms", "salt", "settings", "store", "doc_id", "identity", "name", "seq", "last_snapshot",
                 "members", "by_client", "viewers", "owners", "dirty", "remote_peers", "remote_dirty",
                 "presence_timer", "presence_sent", "bucket", "replay_bytes", "_doc_json", "unload_timer", "holds",
                 "broken", "deleted", "vanished", "originals", "_progress", "_in_flight", "_commit_started", "_lost",
                 "_ready", "_catching", "_news", "_birth", "_restoring")

    def __init__(self, rooms: "Rooms", doc_id: int, name: str, seq: Sequencer, snapshot_version: int,
                 salt: str = "", identity: str | None = None, replay_bytes: int = 0):
        self.rooms = rooms
        self.salt = salt
        self.settings = rooms.settings
        self.store = rooms.store
        self.doc_id = doc_id
        self.identity = identity  # welcome.docId (protocol.doc_identity); None while there is no document
        self.name = name
        self.seq = seq
        self.last_snapshot = snapshot_version
        self.members: dict[str, Member] = {}
        self.by_client: dict[str, Member] = {}
        self.viewers = 0  # members with role "view" (they get updates with hidden clientIDs)
        # clientID -> (resume key, token hash, address): who may take over that clientID (4001)
        self.owners: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self.dirty: dict[str, Member] = {}  # members whose cursor moved since the last presence frame
        # Other processes' sessions (cluster.py): session -> [process, user, version, ranges, last news]
        self.remote_peers: dict[str, list] = {}
        self.remote_dirty: set[str] = set()  # their cursors that moved since the last presence frame
        self.presence_timer: asyncio.TimerHandle | None = None
        self.presence_sent = 0.0
        settings = self.settings
        self.bucket = TokenBucket(settings.doc_update_rate, settings.doc_update_burst, rooms.now())
        self.replay_bytes = replay_bytes  # bytes of update JSON committed since the last snapshot
        self._doc_json: tuple[int, bytes] | None = None  # (version, the committed text as a JSON string)
        self.unload_timer: asyncio.TimerHandle | None = None
        self.holds = 0  # joins and API calls under way (hold/unhold): the room is not unloaded meanwhile
        self.broken = False
        self.deleted = False  # being deleted or renamed, here or elsewhere (its sessions are revoked)
        self.vanished = False  # the store has no row of it any more: another process deleted it (_gone)
        self.originals: list[Original] = []  # pushes accepted and not yet durable, in order
        self._progress: asyncio.Future | None = None  # what `_next_progress` waits on: resolved by _progressed
        self._in_flight: Commit | None = None
        self._commit_started = 0.0
        self._lost = 0                        # commits lost to another writer in a row
        self._ready = asyncio.Event()        # clear while another writer's updates are being caught up
        self._ready.set()
        self._catching: asyncio.Task | None = None
        self._news = False                    # another writer committed while we were catching up
        self._birth: asyncio.Future | None = None  # the creation of an unborn document (doc_id None)
        self._restoring: asyncio.Lock | None = None  # restores take turns (restore_turn); made by the first

    # ------------------------------------------------------------- joining

    async def join(self, conn: Connection, hello: protocol.Hello,
                   authorize: Callable[[str], None] = lambda salt: None, at: float | None = None) -> Member:
        """Register `conn` and send its welcome (resume when possible, else the full text).

        `authorize(salt)` decides the connection's rights against the current
        salt (raising to refuse it); it runs before anything is read for the
        connection, and again after the last await, so no link reset can slip
        between the check and the registration. `at`: when the
        hello came (default: now). A newer connection of the same client
        (`newer_connection`), already here, wins: this one is refused with 4001.
        """
        at = self.rooms.hello_time() if at is None else at
        # Checked first as well: nothing is read for a connection its token does not let in (a resume
        # from far back reads history from the store).
        authorize(self.salt)
        history = None
        cluster = self.rooms.cluster
        ahead = hello.version is not None and hello.version > self.seq.committed_version and cluster is not None
        if self.doc_id is None and (hello.doc_id is not None or ahead):
            # A room of no document, and the client knew one (its docId), or another process acknowledged
            # it past us: the document may have been made meanwhile (news lost, or not here yet).
            await self.find_document()
        if self._other_document(hello) and cluster is not None and self.doc_id is not None:
            await self._still_the_document()
        want = None if self._other_document(hello) else hello.version
        if want is not None and want > self.seq.committed_version and cluster is not None \
                and self.doc_id is not None:
            # The client was acknowledged up to `want` (by another process): that much is durable, so
            # read it before welcoming, rather than answer a version the client is past with the whole text.
            # (With no document of this name in the store, just looked up, there is nothing to read: an
            # acknowledged edit's document is committed before it. The client is welcomed at once, or
            # refused just below if the room is broken, which keeps it from taking a document.)
            if not await self._reach(want, JOIN_CATCH_UP_S) and not self.broken:
                await self._not_caught_up(want)
        for _ in range(5):  # read until the first frame is whole in what we have (the log moves on meanwhile)
            if want is None or want >= self.seq.committed_version or self.seq.frames_from(want, history, 1):
                break
            async with self.rooms.history_slots:
                history = await self._history_page(want, history)
            if not history.updates:
                break  # compacted away: the full text it is
        if self.broken:
            raise ServerError("the document is being reloaded; reconnect", close=CLOSE_INTERNAL)
        if self.deleted:
            raise self._deleted()
        if self.rooms.closing:  # shutdown closed every member already, or is about to wait for them
            raise ServerError(SHUTTING_DOWN, close=CLOSE_GOING_AWAY)
        # From here to the end: no await, so no broadcast (or reset) can slip
        # between the welcome's version and the member's registration.
        authorize(self.salt)
        old = self.by_client.get(hello.client_id)
        # Checked at the handshake too, but sockets opened at once all passed it: counted here for good.
        check_cap(self.settings, self.name, len(self.members) - (old is not None), conn.role == "view")
        resume_key = self._claim(conn, hello, old, at)
        cluster = self.rooms.cluster
        if cluster is not None:  # a connection of this client at another process closes, if this is it
            cluster.publish_takeover(self.name, hello.client_id, {
                "key": hello.resume_key, "t": self.owners[hello.client_id][1], "a": conn.remote, "at": at,
                "o": hello.opened})
        if old is not None:
            self._remove(old)
            old.conn.close(CLOSE_REPLACED, "replaced by a newer connection with the same clientID")
        version = self.seq.committed_version
        peers = self._cursors()
        frames = None
        if self._other_document(hello):  # checked again: an unborn room may have become a document meanwhile
            want = None
        if want is not None and want <= version:
            # A resume goes out in the frames those updates were broadcast in
            # (sequencer.py): pushes were rebased along them, lost or not. The
            # welcome carries the first, `_resume` sends the rest.
            frames = self.seq.frames_from(want, history, 1)
            if not frames and want < version:
                frames = None  # compacted away, or the log moved on meanwhile: full text
        limits = self.rooms.limits
        sent = version
        if frames is not None:
            first = frames[0][1] if frames else []
            sent = want + len(first)
            # Presence objects are at `version`: with frames still to come they follow them.
            frame = protocol.welcome(conn.session, conn.role, sent, [] if sent < version else peers, limits,
                                     resume_key, since=want, updates=first,
                                     hide=self.rooms.hide if conn.role == "view" else None, doc_id=self.identity)
        else:
            frame = protocol.welcome(conn.session, conn.role, version, peers, limits, resume_key,
                                     doc_json=self._committed_json(), doc_id=self.identity)
        settings = self.settings
        member = Member(conn, self, TokenBucket(settings.update_rate, settings.update_burst, self.rooms.now()), at,
                        hello.opened, hello.checkpoints)
        self.members[conn.session] = member
        self.by_client[conn.client_id] = member
        self.viewers += conn.role == "view"
        if self.unload_timer is not None:
            self.unload_timer.cancel()
            self.unload_timer = None
        conn.send(frame)
        if sent < version:
            member.held = deque()
            member.resumed = asyncio.get_running_loop().create_future()
            self.rooms.spawn(self._resume(member, sent, version, peers)).add_done_callback(
                functools.partial(_resumed, member))
        return member

    def _cursors(self) -> list[dict]:
        """Every cursor known here, ours and other processes', mapped to the committed version (as many
        as `_mapping` allows of each; the others go out at the next presence tick)."""
        theirs = ((entry[2], entry[3], functools.partial(self._remote_object, session),
                   functools.partial(self.remote_dirty.add, session))
                  for session, entry in list(self.remote_peers.items()))
        return self._within_budget(itertools.chain(self._local_cursors(), theirs))

    async def _history_page(self, since: int, history: History | None) -> History:
        """Stored updates from version `since` on, for a resume or a far push: RESUME_PAGE of them, at
        most about RESUME_PAGE_BYTES, up to the in-memory log. If `history` read from there already and held no
        whole frame (one commit may hold more), twice as many as it held, whatever their size: a frame
        goes out whole."""
        count, size = RESUME_PAGE, RESUME_PAGE_BYTES
        if history is not None and history.since == since:
            count, size = 2 * len(history.updates), None
        return await self.store.updates(self.doc_id, since, min(self.seq.log_from, since + count), size)

    async def _resume(self, member: Member, version: int, until: int, peers: list[dict]) -> None:
        """Send `member` the rest of its resume, from `version` to `until` (the version of its welcome's
        moment), in its frames, as the client takes them: a frame goes out while nothing sent before
        waits (the socket takes them as they come), out of pages of RESUME_PAGE updates (read from the
        store when they are older than the log, about RESUME_PAGE_BYTES at most; a frame is read whole
        however large). Then the cursors as they were at `until` (a welcome's `peers`), then what was
        broadcast meanwhile (`_broadcast` held it for the member, as it was sent to everyone, restores
        marked), and the member gets broadcasts again. So memory stays bounded however far back it
        resumes (a page, and what is held: over --send-buffer the member is closed, 1013, as a
        connection too far behind), and a client is not closed for what was sent to it at once (it
        would come back for the same). A resume that cannot go on (its history compacted away
        meanwhile, the store unavailable) closes the connection (1013): it resumes from what it got.

        A page read from the store is held with one of the process's HISTORY_SLOTS: a resume waits for
        one before it reads, and lets go of its page and slot when its client has taken nothing more
        for RESUME_HOLD seconds (it reads the page again when the client has), so however many clients
        resume from far back at once, and however slowly they read, at most that many pages are held."""
        conn = member.conn
        hide = self.rooms.hide if conn.role == "view" else None
        frames: deque = deque()  # the page being sent (committed: still right after any await)
        history: History | None = None
        slots = self.rooms.history_slots

        def gone() -> bool:  # after an await: nothing more is sent
            return conn.closed or self.broken or self.members.get(conn.session) is not member

        try:
            while version < until:
                if history is not None and conn.backlog():
                    try:
                        async with asyncio.timeout(RESUME_HOLD):
                            await conn.drained(1)
                    except TimeoutError:  # a slow reader: its page goes, read again when it has taken this
                        history = None
                        frames.clear()
                        slots.release()
                await conn.drained(1)
                if gone():
                    return
                if not frames:
                    if history is not None and version >= history.since + len(history.updates):
                        history = None  # all sent
                        slots.release()
                    frames.extend(self.seq.frames_from(version, history, RESUME_PAGE, until))
                    if not frames:
                        if history is None:
                            await slots.acquire()
                        try:
                            history = await self._history_page(version, history)
                        except BaseException:
                            history = None
                            slots.release()
                            raise
                        if not history.updates:
                            conn.close(CLOSE_TRY_AGAIN, "the history of this resume was compacted away; reconnect")
                            return
                        continue
                while frames:
                    start, updates = frames.popleft()
                    conn.send(protocol.resumed_frame(start, updates, hide))
                    version = start + len(updates)
                    if conn.backlog():
                        break
            await conn.drained(1)
            if gone():
                return
            if peers:
                conn.send(protocol.presences_frame(peers))
            held = member.held  # paced like the resume: what is broadcast meanwhile joins it
            while held:
                if conn.backlog():
                    await conn.drained(1)
                    if gone():
                        return
                frame = held.popleft()
                member.held_size -= len(frame)
                conn.send(frame)
            member.held = None
        except Exception as exc:  # noqa: BLE001 - the client resumes from what it got
            if isinstance(exc, StorageUnavailable):
                self.rooms.unavailable.warning("resuming session %s of %s failed: %s", conn.session, self.name, exc)
            else:
                log.exception("resuming session %s of %s failed", conn.session, self.name)
            conn.close(CLOSE_TRY_AGAIN, "the resume could not be read; reconnect")
        finally:
            if history is not None:
                slots.release()

    def _broadcast(self, frame: bytes, hidden: bytes | None = None) -> None:
        """`frame` to every member (`hidden` to view sessions, if given); to a member whose resume is
        still going out (`_resume`), once that is done."""
        for m in self.members.values():
            m.send(hidden if hidden is not None and m.conn.role == "view" else frame)

    async def _not_caught_up(self, want: int) -> None:
        """A join's catch-up to `want`, the version its client was acknowledged up to (by another process),
        did not get there within JOIN_CATCH_UP_S: a commit of this process's held up, a busy machine. If
        the store has `want`, the client is told to come back (1011 `unavailable`) and resumes then,
        rather than welcomed with the whole text at a version it is past, which would take its
        unconfirmed edits out of the document (into a rescue). If the store is behind `want` too (it was
        restored from an older backup), the whole text it is."""
        head = (await self.store.heads([self.doc_id])).get(self.doc_id)
        if head is not None and head[0] >= want and not self.broken:
            log.warning("document %s: a client acknowledged up to version %d joined, but this process got "
                        "only to %d within %.0f s; it was asked to reconnect", self.name, want,
                        self.seq.committed_version, JOIN_CATCH_UP_S)
            raise ServerError("this document is still catching up with the other servers; reconnect",
                              close=CLOSE_INTERNAL)

    def _other_document(self, hello: protocol.Hello) -> bool:
        """`hello.version` is a version of another document of this name (its `docId` is not this one's,
        or this room has none: that one was deleted, and the name used again or not): nothing can be
        resumed from it, the full text goes out instead (the client offers what it had not saved, as
        after a restore from a backup)."""
        return hello.doc_id is not None and hello.doc_id != self.identity

    async def _still_the_document(self) -> None:
        """With several processes: a hello names another document than this room's. It may be this room
        that is out of date (its document deleted at another process, another made under the name, and
        the news not here yet): then the client is told to come back (1011), after the check that ends
        this room, rather than welcomed to the deleted document's text."""
        info = await self.store.document(self.name)
        if info is None or info["id"] != self.doc_id:
            self.rooms.cluster.check_soon()
            raise ServerError("this document changed at another server; reconnect", close=CLOSE_INTERNAL)

    def _claim(self, conn: Connection, hello: protocol.Hello, old: Member | None, at: float) -> str:
        """Check that `conn` may speak for its clientID; returns the resume key for its welcome.

        A clientID seen before in this document (connected now or not) belongs
        to whoever first used it: another connection may take it over (4001
        for the old one) only with that client's resume key, or with the same
        token from the same address (a reload of the same page). Otherwise
        anyone who read a clientID could cut its owner off, or push in its
        name and make its own pushes look already accepted. A proven hello
        (received `at`) that is older than the client's connection here, `old`
        (`newer_connection`), is refused with 4001: the client gave it up.
        """
        token = token_digest(conn.token) if conn.token else ""
        owner = self.owners.get(hello.client_id)
        if owner is not None and not proves_owner(owner, hello.resume_key, token, conn.remote):
            raise ProtocolError("conflict", "this clientID is in use by another client; a client that "
                                "reconnects sends the resumeKey of its last welcome", close=CLOSE_PROTOCOL)
        if old is not None and newer_connection(old.opened, old.joined, hello.opened, at):
            raise ProtocolError("conflict", "a newer connection of this client came first", close=CLOSE_REPLACED)
        if owner is not None:
            key = owner[0]
            self.owners.move_to_end(hello.client_id)
        else:
            key = secrets.token_urlsafe(18)
            self._forget_owners()
        self.owners[hello.client_id] = (key, token, conn.remote)
        return key

    def _forget_owners(self) -> None:
        """Make room for one more owner: forget the least recently seen whose clientID is not connected
        now (a connected one stays, else 4096 hellos could take a client's clientID from under it; they
        are at most --max-conns-per-doc, so the memory stays bounded)."""
        for _ in range(len(self.owners)):
            if len(self.owners) < MAX_OWNERS:
                return
            client_id, proof = self.owners.popitem(last=False)
            if client_id in self.by_client:
                self.owners[client_id] = proof  # still connected: to the back of the line

    def _committed_json(self) -> bytes:
        """The committed text as a JSON string, made once per version (every welcome shares it)."""
        version = self.seq.committed_version
        if self._doc_json is None or self._doc_json[0] != version:
            self._doc_json = (version, orjson.dumps(self.seq.committed_text()))
        return self._doc_json[1]

    # -------------------------------------------------------------- pushes

    def push_now(self, member: Member, msg: protocol.Push) -> bool:
        """`push`, when it needs no await: nearly every keystroke. False, with nothing done or spent,
        when it does (then `push`): a document not made yet, a catch-up running, a heavy push, or one
        whose rebase is heavy or needs history from the store. Raises what `push` refuses.

        The WebSocket adapter calls it as a frame is read (ws.py, `Connection.now`), so a keystroke
        costs no task wake-up and no coroutine.
        """
        conn = member.conn
        self._may_push(conn)
        if self.doc_id is None or not self._ready.is_set() or conn.closed:
            return False
        version, updates = msg.version, msg.updates
        if _heavy(updates):
            return False
        try:
            committed_work, pending_work = self.seq.rebase_work(version, updates)
        except NeedHistory:
            return False
        if committed_work + pending_work > HEAVY_REBASE:
            return False
        self._spend(member, self._cost(updates))
        behind = self.seq.version - version
        if self._accept(Original(member, conn.client_id, version, updates, conn.user["name"], self.rooms.clock()),
                        version, updates):
            self.rooms.metrics.rebase_distance.observe(max(0, behind))
            self.store.schedule(self)
        return True

    def _may_push(self, conn: Connection) -> None:
        if conn.role != "edit":
            raise ProtocolError("read-only", "this session may only view the document")
        if not self.rooms.disk.ok():
            raise ServerError("the server's disk is nearly full, so edits are not saved for now; "
                              "push again later")

    async def push(self, member: Member, msg: protocol.Push) -> None:
        conn = member.conn
        self._may_push(conn)
        self._spend(member, self._cost(msg.updates))
        heavy = _heavy(msg.updates)
        if heavy:  # others go before it is applied (the connection may close meanwhile: see below)
            await give_turns(HEAVY_PAUSE)
        if self.doc_id is None:  # only a push that would be accepted makes the document
            self.seq.check_unborn(conn.client_id, msg.version, msg.updates)
            if not msg.updates:
                return
            await self._be_born()
        if not self._ready.is_set():
            await self._until_ready()  # another writer's updates first
        if conn.closed:
            # The connection is ending (shutdown, a takeover, too far behind): this push was never
            # acknowledged, so its client pushes it again when it is back.
            return
        behind = self.seq.version - msg.version
        original = Original(member, conn.client_id, msg.version, msg.updates, conn.user["name"], self.rooms.clock())
        if await self._sequence(original):
            self.rooms.metrics.rebase_distance.observe(max(0, behind))
            if not heavy:
                self.store.schedule(self)
                return
            try:
                await give_turns(HEAVY_PAUSE)
            finally:  # accepted: it is stored whatever becomes of this task
                self.store.schedule(self)

    async def _be_born(self) -> None:
        """The first edit of a document nobody made yet: make it now (once, whoever pushes at the same time).

        Refused like any creation (--max-documents, a nearly full disk).
        `Rooms.create` makes the room open under this name that document
        (`born_elsewhere`: if another process made it meanwhile, with text,
        the room catches up with it first).
        """
        birth = self._birth
        if birth is None:
            birth = self._birth = asyncio.ensure_future(self.rooms.create(self.name, exist_ok=True))
        try:
            doc_id = await asyncio.shield(birth)
        except BaseException:
            # Every push waiting on it is told why; the first to wake lets a later push try again.
            if birth.done() and self._birth is birth:
                self._birth = None
            raise
        if self.doc_id is None:  # this room was no longer the one open under its name
            info = await self.store.document(self.name)
            if info is not None and info["id"] == doc_id:
                self.born_elsewhere(doc_id, info["salt"], info["created"])
            else:  # deleted (and perhaps made again) meanwhile: the next commit finds out
                self.born_elsewhere(doc_id, self.salt, None)

    async def find_document(self) -> None:
        """An unborn room: if its name has a document now (made through the API, or by another process),
        it becomes that document (`born_elsewhere`)."""
        info = await self.store.document(self.name)
        if info is not None:
            self.born_elsewhere(info["id"], info["salt"], info["created"])

    def born_elsewhere(self, doc_id: int, salt: str, created: float | None) -> None:
        """The document this unborn room stands for was made meanwhile (through the API, or by another
        process, at `created`: None if not known): the room is that document now, with its links, and
        catches up with its text."""
        if self.doc_id is not None or self.broken:
            return
        self.doc_id, self.salt = doc_id, salt
        self.identity = None if created is None else protocol.doc_identity(created)
        self.catch_up()

    async def _sequence(self, o: Original, catching: bool = False) -> bool:
        """Hand `o` to the sequencer; whether it produced updates.

        A push from further back than the in-memory log is first moved up to
        it over history read from the store a page at a time (`_moved_up`).

        The sequencer takes it only while no catch-up runs (`_ready`), unless
        this is the catch-up sequencing its pushes again (`catching`): one that
        began while this push waited for history or took turns rolled the
        sequencer back and moves it on, so the push waits for it to end.

        A push whose rebase is more work than HEAVY_REBASE (rebase.rebase_work:
        a client back from a long time offline, a keystroke behind one frame of
        thousands of updates or one update of a hundred thousand sections) is
        first rebased up to the committed head a step at a time, giving the
        event loop a turn every few milliseconds, so every other document goes
        on meanwhile (a thread would not do: it holds the GIL in slices long
        enough to stall the loop); the sequencer then finishes it from there
        as usual. The durable part goes first. If what is
        left is heavy because of updates not yet durable, it waits for their
        commit (at most HEAVY_ROUNDS times; never while a catch-up sequences
        it, as that commit waits for the catch-up) and goes round again. A
        push whose connection closed meanwhile is dropped (never acknowledged,
        its client pushes it again).
        """
        version, updates = o.version, o.updates
        rounds = waits = 0
        for _ in range(3):
            try:
                while rounds < 2 * HEAVY_ROUNDS:
                    committed_work, pending_work = self.seq.rebase_work(version, updates)
                    if committed_work + pending_work <= HEAVY_REBASE:
                        break
                    rounds += 1
                    if committed_work:
                        base, over, ends = self.seq.committed_part(o.client_id, version, updates)
                        updates = await _rebase_taking_turns(updates, over, ends)
                        version = base
                        # Durable history is never taken back: sequenced again (a catch-up), the push
                        # goes on from here, over the news since (committed_part: nothing changes).
                        o.version, o.updates = version, updates
                    elif pending_work > HEAVY_REBASE and not catching and waits < HEAVY_ROUNDS:
                        waits += 1
                        await self._until_committed(self.seq.version)
                    else:
                        break
                    if self._dropped(o, catching):
                        return False
                if not catching and not self._ready.is_set():
                    await self._until_ready()
                    if self._dropped(o, catching):  # as after any wait: its session may have ended meanwhile
                        return False
                return self._accept(o, version, updates)
            except NeedHistory:
                moved = await self._moved_up(o, version, updates, catching)
                if moved is None:
                    return False
                version, updates = moved
        raise ProtocolError("bad-version", "the document moved on too fast; push again")

    def _accept(self, o: Original, version: int, updates: list[Update]) -> bool:
        """`o`, moved up to `version` as `updates`, handed to the sequencer; whether it produced updates
        (then it is kept until they are durable). Raises what the sequencer refuses, or NeedHistory."""
        accepted = self.seq.push(o.client_id, version, updates, o.author, o.time, person=o.person, color=o.color)
        if not accepted:
            return False
        for entry in accepted:
            entry.restored_from = o.restored_from
        o.last = accepted[-1].version
        self.originals.append(o)
        return True

    async def _moved_up(self, o: Original, version: int, updates: list[Update],
                        catching: bool) -> tuple[int, list[Update]] | None:
        """A push from further back than the in-memory log, moved up to it over history read from the
        store a page at a time (`_history_page`), rebased along each page's frames in turns with the
        event loop (`committed_part` with a limit): memory stays bounded however far back it is.
        Returns (version, updates) moved up, or None if the push is dropped meanwhile (`_dropped`)."""
        history = None
        while version < self.seq.log_from:
            if not updates:  # every one of them was accepted already (a client pushing again): nothing to move
                return self.seq.log_from, updates
            async with self.rooms.history_slots:  # its page is held with one (see _resume)
                history = await self._history_page(version, history)
                if not history.updates:
                    raise ProtocolError("bad-version", f"version {o.version} is too old to rebase "
                                        "(its history was compacted); reconnect with hello")
                if self._dropped(o, catching):
                    return None
                try:
                    base, over, ends = self.seq.committed_part(o.client_id, version, updates, history, RESUME_PAGE)
                except NeedHistory:
                    continue  # not one whole frame in that page: a longer one
                updates = await _rebase_taking_turns(updates, over, ends)
                version, history, over = base, None, []
            if self._dropped(o, catching):
                return None
        return version, updates

    def _dropped(self, o: Original, catching: bool) -> bool:
        """Whether a push that waited is given up: the room failed, or its connection closed (never
        acknowledged, its client pushes it again; not while a catch-up sequences it again)."""
        return self.broken or (not catching and o.member is not None and o.member.conn.closed)

    async def _until_committed(self, version: int) -> None:
        """Wait until `version` is durable, or taken back (another writer committed first), or the room failed."""
        while not self.broken and self.seq.committed_version < version <= self.seq.version:
            await self._next_progress()

    async def _until_ready(self) -> None:
        """Wait until no catch-up runs (one may begin again between its end and this task's turn)."""
        while not self._ready.is_set():
            await self._ready.wait()

    def _cost(self, updates: list[Update]) -> int:
        """What a push takes from the update budgets: one per update, or one per SECTIONS_PER_UPDATE
        sections of their changes if that is more (parsing and applying a push of a hundred thousand
        places holds the event loop about as long as a thousand keystrokes), but never more than
        --max-updates, so every push the server would take can be taken."""
        sections = sum(len(u.changes.sections) for u in updates) // 2
        return min(max(len(updates), sections // SECTIONS_PER_UPDATE), self.settings.max_updates)

    def _spend(self, member: Member, n: int) -> None:
        """Take `n` updates from the member's and the document's budgets, or refuse the push (rate-limited)."""
        if not n:
            return
        now = self.rooms.now()
        if not member.bucket.take(now, n):
            wait = member.bucket.wait(n)
            raise ProtocolError("rate-limited", f"more than {self.settings.update_rate:g} updates a second from "
                                f"this connection; push again in {wait:.1f} s", retry_after=wait)
        if not self.bucket.take(now, n):
            member.bucket.tokens += n  # not spent after all
            wait = self.bucket.wait(n)
            raise ProtocolError("rate-limited", f"this document takes at most {self.settings.doc_update_rate:g} "
                                f"updates a second; push again in {wait:.1f} s", retry_after=wait)

    async def submit(self, client_id: str, version: int, updates: list[Update], author: str,
                     restored_from: int | None = None, person: str | None = None, color: str | None = None,
                     authorize: Callable[[str], None] | None = None) -> int:
        """A server-made push (a restore): sequenced like any other; returns its version once durable.

        `authorize(salt)`, if given, runs after the wait for a catch-up, right
        before the push is sequenced (raising refuses it).
        """
        if not self.rooms.disk.ok():
            raise ServerError("the server's disk is nearly full, so nothing can be saved for now")
        await self._admit(authorize)
        done = asyncio.get_running_loop().create_future()
        original = Original(None, client_id, version, updates, author, self.rooms.clock(), restored_from, done)
        original.person, original.color = person, color
        sequenced = not self.broken and await self._sequence(original)
        if self.broken:  # it failed meanwhile: nothing would ever commit this
            raise self._failure()
        if not sequenced:
            return self.seq.committed_version
        self.store.schedule(self)
        return await done

    async def _admit(self, authorize: Callable[[str], None] | None) -> None:
        """What a server-made push goes through first: a catch-up under way is waited for, a deleted
        document refuses it, and `authorize(salt)` checks the caller against the current links."""
        await self._until_ready()
        if self.deleted:
            raise self._deleted()
        if authorize is not None:
            authorize(self.salt)

    async def current(self, authorize: Callable[[str], None] | None = None) -> int:
        """The committed version, after the checks a server-made push goes through (`_admit`): what a
        restore answers when it turned out to change nothing."""
        await self._admit(authorize)
        if self.broken:
            raise self._failure()
        return self.seq.committed_version

    async def reach_store_head(self, within: float) -> None:
        """Catch up with everything committed to this document so far, by any process: read its head from
        the store once and return when the room's committed version is there (another process's commit
        whose news has not come yet is read now, not at the next check). Commits made after that read
        are not waited for: on a busy document there may always be one more. Raises not-found if the
        document is gone, and ServerError if the room failed or did not get there within `within` s."""
        head = (await self.store.heads([self.doc_id])).get(self.doc_id)
        if head is None:
            raise self._deleted()
        if not await self._reach(head[0], within):
            raise self._failure() if self.broken else ServerError(
                "this document could not be brought up to date in time; try again")

    async def _reach(self, want: int, within: float) -> bool:
        """Catch up until the room's committed version is at least `want` (a version another process
        committed, so there to read), the room breaks, or `within` seconds pass: whether it got there.
        A catch-up reads until nothing more comes, so one is enough for a `want` the store had; a
        second is started in case of a race, and no more (a client's hello may name a version that
        was never made: no more reads for it), then the news is waited for."""
        catch_ups = 2
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.seq.committed_version < want and not self.broken:
                    if catch_ups:
                        catch_ups -= 1
                        self.catch_up()
                    await self._until_ready()
                    if self.seq.committed_version < want and not self.broken:
                        await asyncio.sleep(0.02)
        return self.seq.committed_version >= want and not self.broken

    async def settled(self) -> None:
        """Return once every push accepted so far is durable, or refused (raises ServerError if the
        document cannot be saved). Pushes accepted meanwhile are not waited for: while anyone types
        there may never be a moment with none pending, and unload and shutdown flush with this."""
        waiting: list[Original] | None = None  # those pushes (held: their ids stay theirs)
        while not self.broken:
            if self._catching is not None:  # it holds pushes out of `originals` while it sequences them again
                await asyncio.wait([self._catching])
                continue
            if waiting is None:
                if not self.originals:
                    break
                waiting = list(self.originals)
                ids = {id(o) for o in waiting}
            elif not any(id(o) in ids for o in self.originals):
                break  # not only the last: a catch-up may refuse any of them and keep the others
            await self._next_progress()
        if self.broken:
            raise ServerError("the document could not be saved")

    async def _next_progress(self) -> None:
        """Wait for the next `_progressed`: a commit finished, a catch-up ended, or the room failed."""
        if self._progress is None:
            self._progress = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._progress)  # shared: one waiter cancelled does not cancel the others

    def _progressed(self) -> None:
        """Wake the `settled` waiters: a commit finished, a catch-up ended, or the room failed."""
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(None)

    # --- the store pulls our pending updates (storage.CommitSource) ---

    def take_commit(self) -> Commit | None:
        """Everything accepted and not yet handed over, as one commit for the next transaction."""
        if self.broken or not self._ready.is_set():
            return None
        try:
            return self._take_commit()
        except Exception:  # a bug: this document starts again from the store, its pushers resend
            log.exception("document %s: taking its pending updates failed; reloading it", self.name)
            self._fail()
            return None

    def _take_commit(self) -> Commit | None:
        batch = self.seq.take_pending()
        if not batch:
            return None
        commit = Commit(self.doc_id, batch[0].version - 1, batch, batch[-1].update.changes.new_length)
        if self._snapshot_due(commit.size):
            commit.snapshot = (commit.version, str(self.seq.text))  # the head: take_pending took everything
        self._commit_started = time.perf_counter()
        self._in_flight = commit
        return commit

    def _snapshot_due(self, more: int = 0) -> bool:
        """Whether the updates since the last snapshot (with `more` bytes of them about to commit) are
        enough for another: --snapshot-ratio of the text's length, and --snapshot-min-bytes."""
        return self.replay_bytes + more >= max(self.settings.snapshot_ratio * self.seq.text.length,
                                               self.settings.snapshot_min_bytes)

    def commit_done(self, commit: Commit, error: BaseException | None) -> None:
        """The batch is durable: broadcast it (that is the acknowledgement). Or another writer got there
        first: catch up and sequence the pushes again. Or it failed: reload."""
        try:
            self._commit_done(commit, error)
        except Exception:  # a bug: this document starts again from the store; what is durable stays
            log.exception("document %s: handling its commit failed; reloading it", self.name)
            try:
                if error is None:  # a restore that was saved is told so, not that it failed
                    self._durable_until(commit.version)
            finally:
                self._fail()

    def _commit_done(self, commit: Commit, error: BaseException | None) -> None:
        self._in_flight = None
        if self.broken:
            return
        if isinstance(error, VersionConflict):
            self.seq.returned()
            if error.found is None:
                self._gone()
                return
            self._lost += 1
            self.rooms.metrics.conflicts.inc()
            if self._lost > MAX_LOST_ROUNDS:
                log.warning("document %s lost %d commits in a row to other writers; reloading it", self.name,
                            self._lost)
                self._fail()
            else:
                self.catch_up()
            return
        if error is not None:
            unavailable = isinstance(error, StorageUnavailable)  # every open document alike: said now and then
            self.rooms.metrics.commit_failures.labels("unavailable" if unavailable else "error").inc()
            say = self.rooms.unavailable.warning if unavailable else log.error
            say("commit failed for document %s (%s); reloading it from the store", self.name, error)
            self._fail()
            return
        self._lost = 0
        batch = commit.entries
        metrics = self.rooms.metrics
        now = time.perf_counter()
        metrics.commit_seconds.observe(now - self._commit_started)
        metrics.commit_batch.observe(len(batch))
        metrics.accepted.inc(len(batch))
        last = commit.version
        self.seq.committed(last)
        if commit.snapshot:
            self.last_snapshot = last
            self.replay_bytes = 0
        else:
            self.replay_bytes += commit.size
        frame = protocol.updates_frame(batch, doc_id=self.identity)
        self._broadcast(frame, protocol.updates_frame(batch, self.rooms.hide, self.identity) if self.viewers else None)
        metrics.fanout_seconds.observe(time.perf_counter() - now)
        if self.rooms.cluster is not None:
            self.rooms.cluster.publish_updates(self.name, self.doc_id, frame)
        if self.remote_dirty:
            self._schedule_presence()  # cursors held until we had their version
        self._durable_until(last)
        self._progressed()
        if self._news and self._catching is None:
            self.catch_up()  # news came while this batch was being written

    def _durable_until(self, last: int) -> None:
        """The pushes whose updates are all at or below version `last` are durable: answer their waiters."""
        k = 0
        while k < len(self.originals) and self.originals[k].last <= last:
            o = self.originals[k]
            if o.done is not None and not o.done.done():
                o.done.set_result(o.last)
            k += 1
        del self.originals[:k]

    # ------------------------------------------------- other writers' updates

    def remote(self, start: int, updates: list[Update]) -> None:
        """Another process committed `updates` from version `start` (news from the bus, at most once)."""
        head = self.seq.committed_version
        if self.broken or start + len(updates) <= head:
            return  # already known
        idle = self._ready.is_set() and self._in_flight is None and self._catching is None
        if start > head and idle:
            self.rooms.metrics.bus_gaps.inc()  # a message was lost (or came late): read what we missed
        if start == head and idle and not self.seq.pending:
            try:
                self._apply_committed(start, updates, [])
                return
            except ChangeError as exc:
                log.error("document %s: another writer's updates do not fit (%s); reloading", self.name, exc)
                self._fail()
                return
        self.catch_up()

    def catch_up(self) -> None:
        """Another writer committed (or may have): read what we missed, then sequence our pushes again."""
        if self.broken:
            return
        self._ready.clear()  # no push is sequenced and no commit taken until this is done
        if self._catching is None:
            self._catching = self.rooms.spawn(self._catch_up())
        else:
            self._news = True

    async def _catch_up(self) -> None:
        waiting = False  # for the commit in flight: its commit_done starts us again
        try:
            while True:
                self._news = False
                if self._in_flight is not None:
                    self._news = waiting = True
                    return
                if self._lost > 1:
                    # Losing again and again to a writer as busy as we are: step aside for a moment,
                    # a random one, so two processes do not keep colliding in lockstep.
                    await asyncio.sleep(random.uniform(0, min(0.1, 0.002 * 2 ** self._lost)))
                    if self._in_flight is not None or self.broken:
                        self._news = waiting = self._in_flight is not None
                        return
                undone = self.seq.rollback()
                head = self.seq.committed_version
                caught, more = 0, True
                while more:  # a page at a time: however long this process was cut off, memory stays bounded
                    news, more = await self._news_after(head)
                    if self.broken:
                        return
                    self.rooms.metrics.catchup_reads.inc()
                    if not news.updates:  # at the head, or (even after a page) compacted away meanwhile
                        if await self._history_gone(head):
                            return
                        break
                    # Sent in the frames the other writer broadcast them in (every process cuts the
                    # same frames, so a push rebased along them here matches a resume anywhere).
                    self._apply_committed(head, news.updates, news.ends)
                    caught += len(news.updates)
                    head = self.seq.committed_version
                originals, self.originals = self.originals, []
                for k, o in enumerate(originals):
                    try:
                        await self._sequence(o, catching=True)
                    except ProtocolError as exc:
                        self._refused(o, exc)
                    except BaseException:
                        self.originals += originals[k:]  # not sequenced again: _fail tells their senders
                        raise
                    if self.broken:  # it failed while this one waited: _fail told only those in `originals`
                        self._tell_failed(originals[k:])
                        return
                if undone or self.seq.pending:
                    log.info("document %s: %d updates of other writers caught up, %d pushes sequenced again",
                             self.name, caught, len(originals))
                if not self._news or self.seq.pending:
                    # With pushes to commit, news that came during this pass waits for their commit (one
                    # that loses to it is a lost round, MAX_LOST_ROUNDS): passing again first went on for
                    # as long as another writer committed faster than a pass took, trying nothing here.
                    break
        except ChangeError as exc:
            log.error("document %s: the updates read back do not fit (%s); reloading", self.name, exc)
            self._fail()
        except StorageUnavailable as exc:
            self.rooms.unavailable.warning("catching up document %s failed (%s); reloading it", self.name, exc)
            self._fail()
        except Exception:
            log.exception("catching up document %s failed; reloading it", self.name)
            self._fail()
        finally:
            self._catching = None
            self._progressed()
            if not self.broken and not waiting:
                self._ready.set()
                if self.seq.pending:
                    self.store.schedule(self)

    async def _news_after(self, head: int) -> tuple[History, bool]:
        """What other writers committed after `head`, in whole frames: RESUME_PAGE updates at most, about
        RESUME_PAGE_BYTES (a frame is read whole however large); and whether more may follow."""
        count, size = RESUME_PAGE, RESUME_PAGE_BYTES
        while True:
            news = await self.store.updates(self.doc_id, head, head + count, size)
            got = len(news.updates)
            more = got == count or news.cut
            if not more or (news.ends and news.ends[-1] == head + got):
                return news, more  # a read that stopped short reached the head: a frame's end
            if news.ends:  # the page's last frame goes on past it: read from its start next time
                upto = news.ends[-1] - head
                return History(head, news.updates[:upto], news.ends), True
            count, size = 2 * got, None  # no whole frame in the page: twice as many, whatever their size

    async def _history_gone(self, head: int) -> bool:
        """Whether a catch-up that read nothing after `head` did so because the store is further on and
        the updates between were compacted away (`collab compact` while this room was behind): then the
        room reloads (its members reconnect and resume from the store), instead of serving `head` for good."""
        info = await self.store.document(self.name)
        if self.broken or info is None or info["id"] != self.doc_id or info["version"] <= head:
            return False
        # The store was at `version` when read, so version head+1 was committed before: its row is there
        # unless compacted. One there now was committed after our first read (not a gap): read again.
        if (await self.store.updates(self.doc_id, head, head + 1)).updates or self.broken:
            self._news = True
            return False
        log.warning("document %s: the updates after version %d were compacted away before this process read "
                    "them (the store is at %d); reloading it", self.name, head, info["version"])
        self._fail()
        return True

    def _apply_committed(self, start: int, updates: list[Update], ends: list[int]) -> None:
        """Updates another writer committed, applied and sent to every member in that writer's frames."""
        frames = cut_frames(start, updates, ends)  # before catch_up: it may trim them out of the log
        self.seq.catch_up(updates, ends)
        hide = self.rooms.hide
        for lo, group in frames:
            self._broadcast(protocol.resumed_frame(lo, group, doc_id=self.identity),
                            protocol.resumed_frame(lo, group, hide, self.identity) if self.viewers else None)
        if self.remote_dirty:
            self._schedule_presence()  # cursors held until we had their version (after the updates: never before)

    def _refused(self, o: Original, exc: ProtocolError) -> None:
        """A push that no longer fits after another writer's updates: its client is told, as any refusal."""
        if o.done is not None and not o.done.done():
            o.done.set_exception(exc)
        elif o.member is not None and not o.member.conn.closed:
            o.member.conn.send(protocol.error_frame(exc.code, exc.message, exc.retry_after))

    def revoke(self, everyone: bool, reason: str) -> None:
        """Close the sessions whose access just ended (all, or all but the admin's), with 1008."""
        for m in list(self.members.values()):
            if everyone or not m.conn.admin:
                self._remove(m)
                m.conn.close(CLOSE_POLICY, reason)
        self.release()  # their leave() finds them gone: unloading is scheduled here

    def _gone(self) -> None:
        """The store has no document of this room's id any more: another process deleted it, and its news
        is not here yet (or was lost), or a delete here removed the row after this room was loaded. Nothing
        of it can be committed again (ids are never given twice): its sessions end as that news would end
        them (1008), not as a lost race caught up again and again, and the room is done."""
        self.vanished = True
        if not self.deleted:
            self.deleted = True
            self.revoke(everyone=True, reason=DELETED)
        self._fail()

    def _fail(self) -> None:
        self.broken = True
        self._tell_failed(self.originals)
        self._progressed()
        self._ready.set()
        self.rooms.forget(self)
        if self.rooms.cluster is not None:  # their cursors leave the other processes now, as on any close
            self.rooms.cluster.publish_leave(self.name, list(self.members))
        for m in list(self.members.values()):
            m.conn.close(CLOSE_INTERNAL, "storage error; reconnect")
        self.members.clear()
        self.by_client.clear()

    def _tell_failed(self, originals: list[Original]) -> None:
        """The server-made pushes among `originals` (a restore's) that still wait hear that the room failed
        (`_failure`); a client's push needs no word: its connection is closed, and it pushes again."""
        for o in originals:
            if o.done is not None and not o.done.done():
                o.done.set_exception(self._failure())

    def _failure(self) -> CollabError:
        """What a server-made push waiting on a room that failed hears: `not-found` if its commit found the
        document gone (`_gone`: deleted by another process), else that it could not be saved (503, try
        again), even while a delete or rename is under way here (`deleted`): that may fail too, and the
        document stays."""
        if self.vanished:
            return self._deleted()
        return ServerError("the document could not be saved; try again")

    def _deleted(self) -> ProtocolError:
        """What a request about this room's document hears once it is deleted (404)."""
        return ProtocolError("not-found", f"document {self.name!r} was deleted")

    # ------------------------------------------------------------ presence

    def presence(self, member: Member, msg: protocol.Presence) -> None:
        """Remember `member`'s selection; it goes out with the next presence frame of this document.

        Presence is batched per document: at most one frame per
        `presence_interval` (a tick), carrying every cursor that moved in it (at
        most `presence_batch`; the rest wait for the next tick), the same
        frame for every member. So a flood of cursor moves costs one frame per
        member per tick, not one per sender per member, and nothing when nobody moves.
        """
        if msg.version > self.seq.committed_version:
            raise ProtocolError("bad-version", f"presence is at version {msg.version}, but the document "
                                f"is at version {self.seq.committed_version}")
        ranges = self._clamped(msg.version, msg.ranges)
        if ranges is None:
            return  # too old to map: a newer one will follow
        member.presence = (msg.version, ranges)
        self.dirty[member.session] = member
        self._schedule_presence()

    def _schedule_presence(self) -> None:
        if self.presence_timer is None:
            loop = asyncio.get_running_loop()
            wait = self.presence_sent + self.settings.presence_interval - loop.time()
            if wait <= 0:
                self._flush_presence()
            else:
                self.presence_timer = loop.call_later(wait, self._flush_presence)

    def _mapped_presence(self, member: Member) -> tuple[int, list[tuple[int, int]]] | None:
        """`member`'s presence mapped to the committed version (None, and forgotten, if too old to map)."""
        version, ranges = member.presence
        target = self.seq.committed_version
        mapped = self.seq.map_ranges(ranges, version, target)
        member.presence = None if mapped is None else (target, mapped)
        return member.presence

    def _presence_object(self, member: Member) -> dict | None:
        mapped = self._mapped_presence(member)
        return None if mapped is None else protocol.presence_object(member.session, member.conn.user, *mapped)

    def _mapping(self, work: int, version: int, ranges: list) -> int | None:
        """`work` (mapping done so far in this presence tick, welcome or republish) with a cursor at
        `version` mapped to the committed version too (Sequencer.map_cost); None if that would take it
        past MAP_BUDGET: one of them maps at most about MAP_BUDGET steps of cursors in all (and each
        cursor's own mapping is bounded by it), the cursors beyond wait for the next tick."""
        cost = self.seq.map_cost(len(ranges), version, self.seq.committed_version)
        return None if work and work + cost > MAP_BUDGET else work + cost

    def _tick_later(self) -> None:
        """A presence tick after the interval, for cursors left for it (not now: a welcome being made
        is not sent yet)."""
        if self.presence_timer is None:
            self.presence_timer = asyncio.get_running_loop().call_later(self.settings.presence_interval,
                                                                        self._flush_presence)

    def _flush_presence(self) -> None:
        """Send the cursors that moved since the last tick: one frame, to every member.

        Our own members' moves also go to the other processes (cluster.py);
        theirs arrive in `remote_presence` and go out here like ours, once we
        have the version they are at (until then they wait).
        """
        loop = asyncio.get_running_loop()
        self.presence_timer = None
        self.presence_sent = loop.time()
        budget = self.settings.presence_batch
        peers, work, over = [], 0, False
        while self.dirty and len(peers) < budget:
            session = next(iter(self.dirty))
            member = self.dirty[session]
            if member.presence is not None and self.members.get(session) is member and not member.conn.closed:
                work = self._mapping(work, *member.presence)
                if work is None:
                    over = True  # mapping work enough for one tick: the rest in the next
                    break
                obj = self._presence_object(member)
                if obj is not None:
                    peers.append(obj)
            del self.dirty[session]
        if peers and self.rooms.cluster is not None:
            self.rooms.cluster.publish_presence(self.name, peers)
        held = set()
        while self.remote_dirty and len(peers) < budget and not over:
            session = self.remote_dirty.pop()
            entry = self.remote_peers.get(session)
            if entry is None:
                continue
            if entry[2] > self.seq.committed_version:
                held.add(session)  # at a version we have not caught up with yet
                continue
            work = self._mapping(work, entry[2], entry[3])
            if work is None:
                held.add(session)
                over = True
                break
            obj = self._remote_object(session)
            if obj is not None:
                peers.append(obj)
        self.remote_dirty |= held
        if peers:
            self._broadcast(protocol.presences_frame(peers))
        if self.dirty or over or len(self.remote_dirty) > len(held):
            self.presence_timer = loop.call_later(self.settings.presence_interval, self._flush_presence)

    def _clamped(self, version: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        """Selection ranges at committed `version`, kept inside its text; None if it is too old to know."""
        if version < self.seq.log_from:
            return None
        limit = self.seq.length_at(version)
        return [(min(a, limit), min(h, limit)) for a, h in ranges]

    def local_presence(self, roster: bool = False) -> list[dict]:
        """Our own members' cursors, mapped to the committed version as far as `_mapping` allows: the
        others are marked moved, and the next presence tick maps them and sends them to everyone. For a
        welcome they are left out; in a `roster` (the periodic republish to other processes, which lists
        every session: one left out would count as gone there) they are given as they are, at their own
        version, which a process that receives them maps itself."""
        return self._within_budget(self._local_cursors(roster))

    def _local_cursors(self, roster: bool = False):
        """Our members' cursors as `_within_budget` takes them (see `local_presence`)."""
        def later(member: Member) -> dict | None:
            self.dirty[member.session] = member
            return protocol.presence_object(member.session, member.conn.user, *member.presence) if roster else None

        return ((*member.presence, functools.partial(self._presence_object, member), functools.partial(later, member))
                for member in list(self.members.values()) if member.presence)

    def _within_budget(self, cursors) -> list[dict]:
        """The presence objects of `cursors` ((version, ranges, make, later) each: `make()` maps one and
        makes its object), as many as `_mapping` allows; for each of the others, `later()` (which the
        next presence tick sends), and the object it gives if it gives one."""
        out, work, left = [], 0, False
        for version, ranges, make, later in cursors:
            # once the budget is spent, only cursors with nothing to map are made (not even costed)
            more = None if left and version != self.seq.committed_version else self._mapping(work, version, ranges)
            if more is None:
                obj, left = later(), True
            else:
                work, obj = more, make()
            if obj is not None:
                out.append(obj)
        if left:
            self._tick_later()
        return out

    def _remote_object(self, session: str) -> dict | None:
        """Another process's session's cursor, mapped to our committed version (None: not yet, or too old)."""
        entry = self.remote_peers.get(session)
        if entry is None or entry[2] > self.seq.committed_version:
            return None
        ranges = self._clamped(entry[2], entry[3])  # it may have come at a version we had not reached then
        mapped = None if ranges is None else self.seq.map_ranges(ranges, entry[2], self.seq.committed_version)
        if mapped is None:
            return None
        entry[2], entry[3] = self.seq.committed_version, mapped
        return protocol.presence_object(session, entry[1], entry[2], mapped)

    def remote_presence(self, process: str, peers: list, now: float, roster: bool = False) -> None:
        """Cursors of another process's sessions (news: checked like any frame from outside). A `roster`
        lists all of that process's sessions with a cursor here: any other of its sessions has left."""
        for p in peers:
            try:
                session, user, version = p["session"], p["user"], p["version"]
                ranges = [(r["anchor"], r["head"]) for r in p["ranges"]][:self.settings.max_ranges]
                if type(session) is not str or type(user) is not dict or type(version) is not int or not all(
                        type(a) is int and type(h) is int and a >= 0 and h >= 0 for a, h in ranges):
                    continue
            except (KeyError, TypeError):
                continue
            if session in self.members:
                continue
            if version <= self.seq.committed_version:
                ranges = self._clamped(version, ranges)
                if ranges is None:
                    continue
            shown = {"name": str(user.get("name", ""))[:protocol.MAX_NAME], "color": str(user.get("color", "#888888"))[:9]}
            if type(user.get("person")) is str:
                shown["person"] = user["person"][:64]
            self.remote_peers[session] = [process, shown, version, ranges, now]
            self.remote_dirty.add(session)
        if roster:  # its `leave` was lost (Redis was away)
            listed = {p.get("session") for p in peers if type(p) is dict}
            self.remote_leave([s for s, entry in self.remote_peers.items() if entry[0] == process and s not in listed])
        if self.remote_dirty:
            self._schedule_presence()

    def remote_leave(self, sessions: list) -> None:
        """Another process's sessions ended: their cursors leave here too."""
        for session in sessions:
            if type(session) is str and self.remote_peers.pop(session, None) is not None:
                self.remote_dirty.discard(session)
                self._broadcast(protocol.leave_frame(session))

    def checkpoints_changed(self, version: int) -> None:
        """The named versions changed at `version` (here or at another process): the members that asked
        (hello.checkpoints) are told, to read them again."""
        frame = protocol.checkpoints_frame(version)
        for m in self.members.values():
            if m.checkpoints:
                m.send(frame)

    def expire_remote(self, before: float) -> float | None:
        """Forget other processes' cursors with no news since `before` (their process may be gone); when the
        oldest news of those left came (None: there are none)."""
        self.remote_leave([s for s, entry in self.remote_peers.items() if entry[4] < before])
        return min((entry[4] for entry in self.remote_peers.values()), default=None)

    def taken_elsewhere(self, client_id, proof: dict) -> None:
        """A connection at another process took `client_id`: ours closes (4001) if that one proved it is it."""
        member = self.by_client.get(client_id) if type(client_id) is str else None
        owner = self.owners.get(client_id) if member is not None else None
        at, opened = proof.get("at"), proof.get("o")
        if owner is None or (type(at) in (int, float) and not newer_connection(
                opened if type(opened) is int else None, at, member.opened, member.joined)):
            return  # none here, or ours is the newer one (the news was late): ours stays
        if proves_owner(owner, proof.get("key"), proof.get("t"), proof.get("a")):
            self._remove(member)
            member.conn.close(CLOSE_REPLACED, "replaced by a newer connection with the same clientID")
            self.release()

    # ------------------------------------------------------------- leaving

    def leave(self, member: Member) -> None:
        if self.members.get(member.session) is not member:
            return
        self._remove(member)
        self.release()

    def restore_turn(self) -> asyncio.Lock:
        """Held by a restore from before it reads the head it diffs against until its commit, so that two
        restores at once do not merge: the later one is diffed against the text the earlier one made, and
        the text ends as it restores. This lock makes the restores of this process take turns; the
        store's turn (storage.Storage.restore_turn), taken next, makes them take turns with those of
        other processes on the same database (`Rooms.restore`). Taken first, it keeps a process to one
        waiter (and one held connection) per document at the store."""
        if self._restoring is None:
            self._restoring = asyncio.Lock()
        return self._restoring

    def hold(self) -> None:
        """A join or an API call uses the room across awaits: it stays loaded until `unhold`.

        Without this, an idle room's unload could forget it while a join waits
        for history (the member would then sit in a room nobody else joins),
        or while a restore is diffed (its update would reach nobody).
        """
        self.holds += 1
        if self.unload_timer is not None:
            self.unload_timer.cancel()
            self.unload_timer = None

    def unhold(self) -> None:
        self.holds -= 1
        self.release()

    def release(self) -> None:
        """Schedule unloading if nobody is connected and nothing holds the room."""
        if not self.members and not self.holds and not self.broken and self.unload_timer is None:
            self.unload_timer = asyncio.get_running_loop().call_later(
                self.settings.unload_after, self.rooms.unload_later, self)

    def _remove(self, member: Member) -> None:
        if self.members.pop(member.session, None) is member:
            self.viewers -= member.conn.role == "view"
        if self.by_client.get(member.conn.client_id) is member:
            del self.by_client[member.conn.client_id]
        self.dirty.pop(member.session, None)
        if self.rooms.cluster is not None:
            self.rooms.cluster.publish_leave(self.name, [member.session])
        self._broadcast(protocol.leave_frame(member.session))

    async def flush(self, always: bool = True) -> None:
        """Wait until everything accepted is durable, then snapshot if there is news: at once (at shutdown,
        a rename, a delete) or, not `always` (an unload), only when a commit would (`_snapshot_due`): a
        document left idle after each keystroke stored its whole text again each time."""
        await self.settled()
        if not self.broken and self.seq.committed_version > self.last_snapshot and (always or self._snapshot_due()):
            version = self.seq.committed_version
            await self.store.write_snapshot(self.doc_id, version, self.seq.committed_text())
            self.last_snapshot, self.replay_bytes = version, 0


def renamed_reason(new_name: str) -> str:
    """The close reason of a renamed document's sessions: the editor moves to the new name (codes.js)."""
    return f"this document was renamed to {new_name}"


async def _flush_at_shutdown(room: Room) -> None:
    try:
        await room.flush()
    except Exception:
        log.exception("flushing document %s at shutdown failed", room.name)


class Rooms:
    """The open documents of this process, loaded on first join and unloaded when idle.

    This is the adapters' one way to a document: `join`, `current`,
    `text_at`, `restore`, `reset_links`, `delete`, `salt_of`, `connections`.
    """

    def __init__(self, settings: Settings, store: Storage, metrics: Metrics | None = None,
                 access: Access | None = None, clock: Callable[[], float] = time.time,
                 now: Callable[[], float] = time.monotonic, disk: DiskGuard | None = None):
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.access = access or Access(None)
        self.clock = clock  # wall time: when updates were made (history)
        self.now = now      # monotonic: rate limits
        self._last_hello = -math.inf  # hello_time's last answer
        self.disk = disk or DiskGuard(None, 0)
        self.cluster = None  # the other processes (cluster.Cluster), on a shared database
        # Hidden clientIDs for view sessions: a keyed hash, the same in every process of one secret.
        self._hide_key = hashlib.sha256(b"collab clientID\0" + (self.access.secret or secrets.token_bytes(32))).digest()
        self.limits = {"maxFrame": settings.max_frame, "maxDoc": settings.max_doc,
                       "maxUpdates": settings.max_updates, "maxRanges": settings.max_ranges}
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future] = {}
        # Names a creation, reset, rename or delete changed in the store while a load of them ran: that
        # load read the document before (no document, its old salt, or one that is gone): it reads again.
        self._stale: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self.history_slots = asyncio.Semaphore(HISTORY_SLOTS)  # pages of history held at once (Room._resume)
        # Texts rebuilt from the store (a snapshot and the updates after it) hold a reader connection while
        # their rows are read, and then a place in the worker pool's queue while they are replayed
        # (compute.text_at): a crowd of them must leave readers to loads and joins, and the pool to the
        # History's other requests.
        self.rebuilds = Gate(REBUILDS_RUNNING, REBUILDS_WAITING, "too many versions of documents are being "
                             "read right now; try again in a moment")
        self._waiting: dict[str, set[Connection]] = {}  # sockets before their hello, by document
        self.closing = False
        # While the database cannot be used, every open document fails alike: one line now and then
        # says so, not one per document and attempt.
        self.unavailable = Throttle(log)

    # ------------------------------------------------------------- lookups

    def open_count(self) -> int:
        return len(self.rooms)

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` in a task the registry holds (shutdown waits for it). Nothing awaits it for its
        outcome: a failure is logged here (a database that cannot be reached, once by the store as a
        warning; anything else, a bug, with its traceback), never left to "exception never retrieved"."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, StorageUnavailable):
            log.error("background work %s failed", task.get_coro().__qualname__, exc_info=exc)

    async def revoked_elsewhere(self, name: str, deleted: bool, renamed_to: str | None = None,
                                doc_id: int | None = None) -> None:
        """Another process reset the document's links, or deleted or renamed it (`renamed_to`): our
        sessions end as theirs did. With `doc_id` (the check found that document gone, or its links
        reset), only while `name` is still that document's: not another document's made under the name
        meanwhile. An open room takes the new salt only from its own document (read by name, after an
        await)."""
        self._changed(name)  # in the store already: a load of it under way here reads it again
        room = self.rooms.get(name)
        if doc_id is not None and (room is None or room.doc_id != doc_id):
            return
        if deleted:
            reason = DELETED if renamed_to is None else renamed_reason(renamed_to)
            self._close_waiting(name, everyone=True, reason=reason)
            if room is not None and not room.deleted:
                room.deleted = True
                room.revoke(everyone=True, reason=reason)
                self.forget(room)
            return
        try:
            info = await self.store.document(name)
        except StorageUnavailable as exc:  # the next check (--check-every) sees the new salt and tries again
            self.unavailable.warning("reading document %s after its links were reset elsewhere failed (%s)",
                                     name, exc)
            return
        if doc_id is not None and (info is None or info["id"] != doc_id):
            return  # the name went to another document (or none) while we read: its links were not reset
        if (room is not None and info is not None and info["id"] == room.doc_id and self.rooms.get(name) is room
                and info["salt"] != room.salt):
            room.salt = info["salt"]
            room.revoke(everyone=False, reason="the share links of this document were reset")
        self._close_waiting(name, everyone=False, reason="the share links of this document were reset")

    def may_only_view(self, token: str | None) -> bool:
        """Whether `token` looks like a view link (a guess for connection slots; hello decides)."""
        return self.access.enabled and bool(token) and token[0] == "v"

    def hide(self, client_id: str) -> str:
        """What a view session sees instead of a clientID: stable, but not the clientID itself."""
        return "h" + hmac.new(self._hide_key, client_id.encode(), hashlib.sha256).hexdigest()[:20]

    def check_cap(self, name: str, viewer: bool) -> None:
        """`check_cap` for a socket about to open (Room.join checks again when it registers it)."""
        room = self.rooms.get(name)
        check_cap(self.settings, name, len(room.members) if room is not None else 0, viewer)

    def loading(self, name: str) -> asyncio.Future | None:
        """The load (or unload) of `name` under way, if any: done when it ends (it never raises)."""
        return self._loading.get(name)

    def hello_time(self) -> float:
        """When a hello came, to tell which of two connections of one client is the newer (`newer_connection`).

        The wall clock, which other processes compare with theirs, but later than every hello before it
        here: a clock set back (NTP stepping it) must not make a reloaded page's hello older than the
        socket it replaces, or the page is refused with 4001 (replaced) and stops reconnecting.
        """
        now = self.clock()
        self._last_hello = now if now > self._last_hello else math.nextafter(self._last_hello, math.inf)
        return self._last_hello

    def _open(self, name: str) -> Room | None:
        """The open, born room of `name` (an unborn one is no document yet: its name leads nowhere)."""
        room = self.rooms.get(name)
        return room if room is not None and not room.broken and room.doc_id is not None else None

    async def _get(self, name: str, create: bool) -> Room | None:
        while True:
            room = self.rooms.get(name)
            if room is not None:
                return room
            pending = self._loading.get(name)
            if pending is None:
                break
            await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._loading[name] = fut
        room = None
        try:
            if self.cluster is not None:
                await self.cluster.watch(name)  # before the load: nothing committed after it is missed
            while True:
                self._stale.discard(name)
                loaded = await self.store.load(name)
                if name not in self._stale:
                    break
            if loaded is None:
                if not create:
                    return None
                # Unborn: a document comes to be at its first edit (Room._be_born), not at a visit.
                loaded = Loaded(None, name, 0, "", [], 0, "")
            seq = Sequencer(loaded.text, loaded.version, loaded.log, keep=self.settings.keep_updates,
                            max_length=self.settings.max_doc, frame_ends=loaded.frame_ends)
            room = Room(self, loaded.doc_id, name, seq, loaded.snapshot_version, loaded.salt,
                        None if loaded.doc_id is None else protocol.doc_identity(loaded.created), loaded.replay_bytes)
            self.rooms[name] = room
            self.metrics.documents.set(len(self.rooms))
            if self.cluster is not None:
                self.cluster.opened(name)  # the others' cursors here, now that their answers find the room
            return room
        finally:
            self._stale.discard(name)
            self._loaded(name, fut)
            if room is None and self.cluster is not None:
                self.cluster.unwatch(name)  # no such document (or the load failed): nothing to hear about

    def arrive(self, name: str, conn: Connection) -> None:
        """`conn` opened a socket to `name` and has not joined yet (it is closed on reset or delete)."""
        self._waiting.setdefault(name, set()).add(conn)

    def depart(self, name: str, conn: Connection) -> None:
        waiting = self._waiting.get(name)
        if waiting is not None:
            waiting.discard(conn)
            if not waiting:
                del self._waiting[name]

    def _close_waiting(self, name: str, everyone: bool, reason: str) -> None:
        for conn in list(self._waiting.get(name, ())):
            if everyone or not conn.admin:
                conn.close(CLOSE_POLICY, reason)

    async def create(self, name: str, text: str = "", author: str = "", client_id: str = "",
                     exist_ok: bool = False, person: str | None = None, color: str | None = None) -> int:
        """Make a document (with `text` as its first update): the one way documents come to be.

        Refused while the disk is nearly full (unavailable), past --max-documents
        (too-large), and for a taken name unless `exist_ok` (conflict).
        """
        if not self.disk.ok():
            raise ServerError("the server's disk is nearly full, so no document can be made for now")
        try:
            doc_id = await self.store.create_document(name, text, author=author, client_id=client_id,
                                                      exist_ok=exist_ok, max_documents=self.settings.max_documents,
                                                      person=person, color=color)
        except NameTaken:
            raise ProtocolError("conflict", f"a document named {name!r} already exists") from None
        except TooManyDocuments as exc:
            raise ProtocolError("too-large", str(exc)) from None
        await self._named(name)
        return doc_id

    async def _named(self, name: str, doc_id: int | None = None) -> None:
        """A document now has `name` (made, or renamed to it: `doc_id`): a load that found none reads
        again, and a room open on the name before it had a document (an admin's editor on a new name)
        becomes it. A room of the renamed document itself, loaded under its new name while the old
        name's room still wrote, reads what that room committed after the load."""
        self._changed(name)
        room = self.rooms.get(name)
        if room is not None and room.doc_id is None:
            await room.find_document()
            await room._until_ready()  # caught up with the text: a join from now on is welcomed to it
        elif room is not None and doc_id is not None and room.doc_id == doc_id and not room.broken:
            room.catch_up()
            await room._until_ready()

    async def join(self, name: str, conn: Connection, hello: protocol.Hello, token: str | None) -> Member:
        """`conn` joins document `name` with the rights `token` gives now; its welcome is sent.

        The token is checked against the document's current salt in the same
        step that registers the member (no await between), so a link reset or
        a deletion either sees the member and closes it, or the join is
        refused; and first of all, before the document is loaded for it (a
        token that gives nothing does not make the server read a document).
        Only a token that may create documents (the admin's, or anyone on a
        personal instance) makes a missing document.
        """
        at = self.hello_time()  # when the hello came (Room.join: of two connections of one client, the newer wins)
        if self.access.enabled:
            salt = await self.salt_of(name)
            if salt is not None:  # a token that gives nothing here is refused before the document is loaded
                self.access.role(token, name, salt)
        room = await self._get(name, create=False)
        if room is None:
            moved = await self.store.renamed_to(name)
            if moved is not None:
                # A page from before a rename follows the document, as live ones did, but only with a token
                # good for the old name (or the admin's): the new name is told to nobody else.
                if self.access.enabled:
                    self.access.role(token, name, await self.salt_of(moved))
                raise ProtocolError("not-found", renamed_reason(moved), close=CLOSE_POLICY)
            if self.access.enabled and self.access.role(token) != "admin":
                raise ProtocolError("forbidden", "this token does not give access here")
            room = await self._get(name, create=True)

        def authorize(salt: str) -> None:
            role = self.access.role(token, name, salt)
            conn.role = "view" if role == "view" else "edit"
            conn.admin = role == "admin"

        room.hold()  # a refused join leaves it to unload; an accepted one is a member
        try:
            return await room.join(conn, hello, authorize, at)
        finally:
            room.unhold()

    async def info(self, name: str) -> dict:
        """The document's row (id, name, version, length, updated, created, salt); version as committed now.

        Raises not-found if there is no such document.
        """
        info = await self.store.document(name)
        if info is None:
            raise ProtocolError("not-found", f"no document named {name!r}")
        room = self._open(name)
        if room is not None and room.doc_id == info["id"]:
            # The store may lag memory by a commit; with several processes, memory may lag the store by
            # another process's commits whose news has not come yet: the later of the two is committed.
            info["version"] = max(info["version"], room.seq.committed_version)
        return info

    async def current(self, name: str) -> tuple[int, str]:
        """(version, text) of a document as committed: from memory when it is open, else from the store."""
        room = self._open(name)
        if room is not None:
            return room.seq.committed_version, room.seq.committed_text()
        info = await self.info(name)
        async with self.rebuilds.enter():
            return info["version"], await self.store.text_at(info["id"], info["version"])

    async def text_at(self, info: dict, version: int, wanted: Callable[[], bool] | None = None) -> str:
        """The text of document `info` at `version` (not-found if compacted away; unavailable while
        REBUILDS_RUNNING others are rebuilt and REBUILDS_WAITING wait). With `wanted`, asked when its
        turn comes: false (the client went away meanwhile) and nothing is rebuilt (unavailable): a
        History scrubbed over 30 versions, its requests for the versions left behind aborted, had the
        30 rebuilt one after the other (15 s of them on 220,000 updates) before the one still asked for."""
        room = self._open(info["name"])
        if room is not None and room.doc_id == info["id"] and version == room.seq.committed_version:
            return room.seq.committed_text()
        try:
            async with self.rebuilds.enter():
                if wanted is not None and not wanted():  # as the pool asks it again, when a worker is free
                    from . import compute
                    raise compute.GivenUp("the request was given up before the text was rebuilt")
                return await self.store.text_at(info["id"], version, wanted)
        except VersionCompacted as exc:
            raise ProtocolError("not-found", str(exc)) from None

    async def salt_of(self, name: str) -> str | None:
        """The document's current salt (None if it does not exist)."""
        room = self._open(name)
        if room is not None:
            return room.salt
        info = await self.store.document(name)
        return info["salt"] if info else None

    # -------------------------------------------------------------- changes

    async def restore(self, name: str, version: int, author: str, person: str | None = None,
                      color: str | None = None, authorize: Callable[[str], None] | None = None) -> tuple[int, bool]:
        """One ordinary update turning the current text into the text at `version`: (its new version, True);
        or, when the text already is that version's, no update: (the current version, False).

        `authorize(salt)` checks the caller's rights again against the current
        salt just before the update is sequenced (the diff takes a while: a
        link reset meanwhile refuses the restore), as `join` does.

        Restores of one document take turns, in this process and across the
        processes on the store (`_restore_turns`), and each is diffed against
        the store's head (`Room.reach_store_head`): two at once, here or at two
        processes, end as the later one brings the text back, never merged.
        """
        info = await self.info(name)
        old = await self.text_at(info, version)
        room = await self._get(name, create=False)
        if room is None or room.doc_id != info["id"]:  # deleted, perhaps made again, while `old` was read
            if room is not None:
                room.release()  # the other document's room, perhaps loaded just now: unloaded when idle
            raise ProtocolError("not-found", f"no document named {name!r}")
        from . import compute  # the diff runs in a worker process, never on the event loop
        room.hold()
        try:
            async with contextlib.AsyncExitStack() as turns:
                held = await self._restore_turns(room, turns)
                # Another process's restore may have committed before it let go of the turn, its news not
                # here yet: the head this one diffs against is the store's.
                await room.reach_store_head(self.settings.history_timeout)
                # Diffed against the text at `base`; edits committed meanwhile are rebased over by submit.
                base = room.seq.committed_version
                changes = await compute.restore_changes(room.seq.committed_text(), old)
                if changes.is_empty:  # the text already is that version's: no update, nobody told of one
                    return await room.current(authorize), False
                update = Update(f"restore-{secrets.token_hex(6)}", changes)
                try:
                    await held()  # the turn is still ours: no other process's restore went ahead meanwhile
                except TurnLost as exc:
                    log.warning("restore of %s refused: %s", name, exc)
                    raise
                return await room.submit(update.client_id, base, [update], author, restored_from=version,
                                         person=person, color=color, authorize=authorize), True
        finally:
            room.unhold()

    async def _restore_turns(self, room: Room, turns: contextlib.AsyncExitStack) -> Turn:
        """The restore's turn at `room`, in this process (`Room.restore_turn`) and then across processes
        (`Storage.restore_turn`), both held until `turns` closes; returns the store's `held`. Another
        restore of the document may be under way; waiting for both takes at most --history-timeout
        (503 after), a budget of its own."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.history_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await turns.enter_async_context(room.restore_turn())
            return await turns.enter_async_context(self.store.restore_turn(room.doc_id, deadline - loop.time()))
        except TimeoutError as exc:  # the store's says why when it is not that (all its turns were busy)
            raise ServerError(str(exc) or "another restore of this document is still under way; try again") \
                from None

    def checkpoint_named(self, name: str, doc_id: int, version: int) -> None:
        """A version of `name` was named, renamed or unnamed (committed): its open room here and at the
        other processes tell the members that asked (`Room.checkpoints_changed`). Without Redis the other
        processes' members learn of it when they next read the named versions."""
        room = self.rooms.get(name)
        if room is not None and room.doc_id == doc_id:
            room.checkpoints_changed(version)
        if self.cluster is not None:
            self.cluster.publish_checkpoint(name, doc_id, version)

    async def reset_links(self, name: str) -> str:
        """A new salt for the document: old share links stop working and their sessions close (1008)."""
        info = await self.info(name)
        salt = await self.store.new_salt(info["id"], name=name)  # not-found if renamed since: "name" is another's
        self._changed(name)
        room = self.rooms.get(name)
        if room is not None:
            room.salt = salt
            room.revoke(everyone=False, reason="the share links of this document were reset")
        self._close_waiting(name, everyone=False, reason="the share links of this document were reset")
        if self.cluster is not None:
            self.cluster.publish_revoke(name, info["id"], deleted=False)
        return salt

    async def rename(self, name: str, new_name: str) -> None:
        """Give the document a new name: its sessions end (1008, saying the new name) and reconnect there.

        Not found if it is no longer called `name` when the store writes (renamed or deleted meanwhile:
        the name leads nowhere, and whatever has it now is left alone). The old name's room is forgotten
        at once, before its last commit is written: from then on the old name is the renamed one's (a
        join there is told the new name) or a new document's. A room loaded under the new name meanwhile
        reads what that last commit wrote (`_named`).
        """
        info = await self.info(name)
        try:
            await self.store.rename_document(info["id"], new_name, name=name)
        except NameTaken:
            raise ProtocolError("conflict", f"a document named {new_name!r} already exists") from None
        self._changed(name)
        reason = renamed_reason(new_name)
        self._close_waiting(name, everyone=True, reason=reason)
        room = self.rooms.get(name)
        if room is not None:
            room.deleted = True  # no new joins in it (one under way is refused)
            room.revoke(everyone=True, reason=reason)
            self.forget(room)
            await room.flush()
        await self._named(new_name, info["id"])  # once the old name's room wrote its last update
        if self.cluster is not None:
            self.cluster.publish_revoke(name, info["id"], deleted=True, renamed_to=new_name)

    async def delete(self, name: str) -> None:
        """Close every session of the document, then remove it with its whole history.

        Not found if it was deleted meanwhile (the store's write finds no such id): a document made again
        under the name since, and its room, are another's and stay as they are.
        """
        info = await self.info(name)
        room = self.rooms.get(name)
        if room is not None and room.doc_id not in (None, info["id"]):  # deleted, perhaps made again, since read
            raise ProtocolError("not-found", f"no document named {name!r}")
        self._close_waiting(name, everyone=True, reason=DELETED)
        if room is not None:
            room.deleted = True
            room.revoke(everyone=True, reason=DELETED)
            await room.flush()
            self.forget(room)
        await self.store.delete_document(info["id"], name=name)  # not-found if renamed since
        self._changed(name)
        late = self.rooms.get(name)
        if late is not None and late is not room:  # a join loaded it while the delete ran: its row is gone
            late._gone()  # nothing of it is written any more; forgotten
        self._close_waiting(name, everyone=True, reason=DELETED)
        if self.cluster is not None:
            self.cluster.publish_revoke(name, info["id"], deleted=True)

    def _changed(self, name: str) -> None:
        """A creation, reset, rename or delete of `name` is in the store: a load of it under way reads it again.

        Called with no await between the store's write and the caller's look
        at `self.rooms`: a load that ended before it is a room the caller
        sees; one that ends after it reads the document again.
        """
        if name in self._loading:
            self._stale.add(name)

    # ------------------------------------------------------------ unloading

    def forget(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            self.metrics.documents.set(len(self.rooms))
            if self.cluster is not None and room.name not in self._loading:
                self.cluster.unwatch(room.name)

    def unload_later(self, room: Room) -> None:
        """Start unloading `room` in a task the registry holds (shutdown waits for it)."""
        self.spawn(self.unload(room))

    async def unload(self, room: Room) -> None:
        """Unload an idle document: flush its commits first (and write a snapshot if one is due)."""
        room.unload_timer = None
        if room.members or room.holds or self.rooms.get(room.name) is not room or room.name in self._loading:
            return  # in use, gone, or being unloaded already (a join held and let go of it meanwhile)
        fut = asyncio.get_running_loop().create_future()
        self._loading[room.name] = fut  # joins wait until the room is safely gone
        try:
            await room.flush(always=False)
        except Exception:
            log.exception("snapshot of document %s failed while unloading", room.name)
        finally:
            # Forgotten during the flush (it failed, or the document was deleted elsewhere): forget did not
            # unwatch then, as this unload stood in `_loading`. Nothing else would: it is done here.
            gone = self.rooms.get(room.name) is not room
            self._loaded(room.name, fut)  # first: forget unwatches only a name nobody is loading
            if room.name not in self._loading:
                self._stale.discard(room.name)  # marked by a change told meanwhile: no load of it to read again
            if not gone and not room.members and not room.holds:
                self.forget(room)
            elif gone and self.cluster is not None and room.name not in self.rooms and room.name not in self._loading:
                self.cluster.unwatch(room.name)

    def _loaded(self, name: str, fut: asyncio.Future) -> None:
        """A load or unload of `name` ended: its entry goes (only its own) and the joins waiting go on."""
        if self._loading.get(name) is fut:
            del self._loading[name]
        fut.set_result(None)

    async def shutdown(self) -> None:
        """Graceful stop: finish the commits and unloads in flight, then close every client with 1001."""
        self.closing = True
        for room in list(self.rooms.values()):
            if room.unload_timer is not None:
                room.unload_timer.cancel()
                room.unload_timer = None
            # Everything pushed so far made durable (and acknowledged); then no more is read from the
            # members, and what they pushed meanwhile is made durable too, with the last snapshot at the
            # head. Their pushes that came too late were never acknowledged: they come again after a restart.
            await _flush_at_shutdown(room)
            for m in list(room.members.values()):
                m.conn.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)
            await _flush_at_shutdown(room)
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await asyncio.sleep(0)
