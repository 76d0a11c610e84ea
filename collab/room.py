"""Room: one open document with its connections; Rooms: the registry of open documents.

What lives here: the asynchronous life around a Sequencer: joining (welcome),
pushes, the commit loop that hands accepted updates to the store and
broadcasts them only after COMMIT, presence coalescing, leaving, unloading an
idle document, and flushing on shutdown. Frames arrive already parsed
(protocol.py) and leave as bytes through each Peer's own queue, so one slow
reader never delays the others.

Rules that always hold:
  * a peer is sent updates in version order without gaps, starting at the
    version of its welcome; presence it receives is mapped to a version it
    has already been sent;
  * nothing is broadcast before the store's transaction committed;
  * if a commit fails, the room is discarded (peers closed with 1011, state
    reloaded from disk on the next join): clients re-push what was not acked.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import time
from collections import deque

from aiohttp import WSMsgType, web

from . import protocol
from .access import Access
from .metrics import Metrics
from .errors import CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_REPLACED, ProtocolError
from .sequencer import NeedHistory, Sequencer
from .settings import Settings
from .store import Store, append_fn

log = logging.getLogger("collab")

CLOSE_TRY_AGAIN = 1013  # too far behind: reconnect later and resume
INTERRUPT = "collab: the connection is closing"  # Peer.close cancelling a handler's receive()


async def _finish(coro, fut) -> None:
    """Drive the rest of a coroutine that `_write_now` started, as a Task would.

    The coroutine suspended on `fut`; wait for it, then resume the coroutine,
    which reads the future's outcome itself, until it returns.
    """
    while True:
        try:
            if fut is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([fut])
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            fut = coro.send(None)
        except StopIteration:
            return


def _write_now(coro):
    """Run `ws.send_frame(...)` up to its first suspension, without a task.

    aiohttp writes an uncompressed frame synchronously and suspends only when
    the transport asks for back-pressure, so this usually finishes at once and
    returns None: the frame leaves in the same loop iteration as the commit
    that produced it. Otherwise it returns a coroutine finishing the write.
    """
    try:
        fut = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, fut)


class Peer:
    """One WebSocket connection: identity, last presence, and its outbound queue."""

    __slots__ = ("ws", "session", "client_id", "user", "role", "remote", "queue", "queued",
                 "limit", "writer", "closed", "presence", "presence_sent", "presence_timer", "room",
                 "bytes_out", "admin", "welcome_version", "welcome_from", "handler", "receiving",
                 "close_code", "close_message")

    def __init__(self, ws: web.WebSocketResponse, client_id: str, user: dict, role: str,
                 remote: str, limit: int, bytes_out=None):
        self.ws = ws
        self.session = secrets.token_urlsafe(9)
        self.client_id = client_id
        self.user = user
        self.role = role
        self.remote = remote
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.limit = limit
        self.writer: asyncio.Task | None = None
        self.closed = False
        self.presence: tuple[int, list[tuple[int, int]]] | None = None  # (version, ranges)
        self.presence_sent = 0.0
        self.presence_timer: asyncio.TimerHandle | None = None
        self.room: Room | None = None
        self.bytes_out = bytes_out  # a prometheus Counter, or None
        self.admin = False  # came with the admin token (survives a reset of the share links)
        self.welcome_version = 0   # the version its welcome brought it to
        self.welcome_from: int | None = None  # where a resuming welcome's updates began
        self.handler = asyncio.current_task()  # the ws.py task that reads this connection
        self.receiving = False  # that task is waiting in ws.receive()
        self.close_code: int | None = None  # set once we decided to end the connection
        self.close_message = ""

    def send(self, frame: bytes) -> None:
        """Write a frame now if the socket takes it, else queue it for the drain task.

        A peer whose unsent bytes pass the limit is disconnected: it will
        reconnect and resume from its version, and server memory stays bounded.
        """
        if self.closed:
            return
        if self.bytes_out is not None:
            self.bytes_out.inc(len(frame))
        if self.writer is None and not self.queue:
            try:
                rest = _write_now(self.ws.send_frame(frame, WSMsgType.TEXT))
            except (ConnectionError, RuntimeError):
                self.closed = True
                return
            if rest is not None:  # back-pressure: the rest of this write, then the queue
                self.writer = asyncio.get_running_loop().create_task(self._drain(rest))
            return
        self.queue.append(frame)
        self.queued += len(frame)
        if self.queued + self.ws_buffered() > self.limit:
            log.info("closing %s: %d bytes unsent, over the limit", self.session, self.queued)
            self.close(CLOSE_TRY_AGAIN, "too far behind; reconnect to resume")
            return
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    def _transport(self):
        return self.ws._req.transport if self.ws._req is not None else None

    def ws_buffered(self) -> int:
        transport = self._transport()
        return transport.get_write_buffer_size() if transport is not None else 0

    async def _drain(self, unfinished=None) -> None:
        try:
            if unfinished is not None:
                await unfinished
            while self.queue and not self.closed:
                frame = self.queue.popleft()
                self.queued -= len(frame)
                await self.ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self.closed = True
        finally:
            self.writer = None

    def close(self, code: int, message: str) -> None:
        """End the connection: the handler task sends what is queued, then the close frame.

        Any task may decide to close (a takeover, a revoked link, back-pressure,
        shutdown), but only the handler task may run the closing handshake. If
        another task called `ws.close()` while the handler waits in
        `receive()`, aiohttp would drop the TCP connection at once instead of
        reading until the client's close frame; the frames the client still
        had in flight would then be answered with a reset, and the client would
        never read our error or close code (it sees 1006). So a handler waiting
        in `receive()` is interrupted, and `finish` does the rest from there.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_message = code, message
        if code == CLOSE_TRY_AGAIN:  # it will resume from its version; what it has not read is moot
            self.queue.clear()
            self.queued = 0
        if self.receiving and self.handler is not None:
            self.handler.cancel(msg=INTERRUPT)

    async def finish(self, timeout: float) -> None:
        """Run the closing handshake decided by `close` (from the handler task, after `receive()` returned).

        Within `timeout` seconds: the frames still queued, the close frame,
        then reading (and dropping) whatever the client still sends until its
        own close frame. A client that reads nothing is cut off after that.
        """
        if self.close_code is None:
            return
        try:
            async with asyncio.timeout(timeout):
                if self.writer is not None:
                    await asyncio.wait([self.writer])  # it stops after the frame it is writing
                while self.queue:
                    await self.ws.send_frame(self.queue.popleft(), WSMsgType.TEXT)
                await self.ws.close(code=self.close_code, message=protocol.close_reason(self.close_message))
        except (ConnectionError, RuntimeError):
            pass
        except TimeoutError:
            transport = self._transport()
            if transport is not None:
                transport.abort()
        self.queue.clear()


class Room:
    def __init__(self, rooms: "Rooms", doc_id: int, name: str, seq: Sequencer, snapshot_version: int,
                 salt: str = ""):
        self.rooms = rooms
        self.salt = salt
        self.settings = rooms.settings
        self.store = rooms.store
        self.doc_id = doc_id
        self.name = name
        self.seq = seq
        self.last_snapshot = snapshot_version
        self.peers: dict[str, Peer] = {}
        self.by_client: dict[str, Peer] = {}
        self.unload_timer: asyncio.TimerHandle | None = None
        self.broken = False
        self._durable_waiters: list[tuple[int, asyncio.Future]] = []
        self.frame_ends: list[int] = []  # last version of each `updates` frame broadcast (recent ones)

    # ------------------------------------------------------------- joining

    async def join(self, peer: Peer, hello: protocol.Hello) -> None:
        """Register `peer` and send its welcome (resume when possible, else the full text)."""
        history = None
        want = hello.version
        if want is not None and want < self.seq.log_from:
            history = await self.store.updates(self.doc_id, want, self.seq.log_from)
        if self.broken:
            raise ProtocolError("internal", "document is being reloaded; reconnect", close=CLOSE_INTERNAL)
        # From here to the end: no await, so no broadcast can slip between
        # the welcome's version and the peer's registration.
        old = self.by_client.get(hello.client_id)
        if old is not None:
            self._remove(old)
            old.close(CLOSE_REPLACED, "replaced by a newer connection with the same clientID")
        version = self.seq.committed_version
        peers = [self._presence_object(p) for p in self.peers.values() if p.presence]
        updates = None
        if want is not None and want <= version:
            try:
                updates = self.seq.updates_since(want, version, history)
            except NeedHistory:
                updates = None  # compacted away, or the log moved on meanwhile: full text
        if updates is not None:
            frame = protocol.welcome(peer.session, peer.role, version, [p for p in peers if p],
                                     since=want, updates=updates)
        else:
            frame = protocol.welcome(peer.session, peer.role, version, [p for p in peers if p],
                                     doc=self.seq.committed_text())
        peer.welcome_version = version
        peer.welcome_from = want if updates is not None else None
        peer.room = self
        self.peers[peer.session] = peer
        self.by_client[peer.client_id] = peer
        if self.unload_timer is not None:
            self.unload_timer.cancel()
            self.unload_timer = None
        peer.send(frame)

    # -------------------------------------------------------------- pushes

    async def push(self, peer: Peer, msg: protocol.Push) -> None:
        if peer.role != "edit":
            raise ProtocolError("read-only", "this session may only view the document")
        now = time.time()
        behind = self.seq.version - msg.version
        history = None
        for _ in range(3):
            try:
                accepted = self.seq.push(peer.client_id, msg.version, msg.updates,
                                         peer.user["name"], now, history, self.frames_for(peer, msg.version))
                break
            except NeedHistory as need:
                history = await self.store.updates(self.doc_id, need.since, need.until)
                if len(history) < need.until - need.since:
                    raise ProtocolError("bad-version", f"version {msg.version} is too old to rebase "
                                        "(its history was compacted); reconnect with hello") from None
                if self.broken or peer.closed:
                    return
        else:
            raise ProtocolError("bad-version", "the document moved on too fast; push again")
        if accepted:
            self.rooms.metrics.rebase_distance.observe(max(0, behind))
            self.store.schedule(self)

    def frames_for(self, peer: Peer, version: int) -> list[int]:
        """Where the frames `peer` gets after `version` end: its welcome, each broadcast, the batch
        being committed; the updates after that share one frame with this push."""
        ends = []
        if version < peer.welcome_version:
            if peer.welcome_from is not None and version < peer.welcome_from:
                ends.append(peer.welcome_from)
            ends.append(peer.welcome_version)
        after = max(version, peer.welcome_version)
        ends += self.frame_ends[bisect.bisect_right(self.frame_ends, after):]  # ascending
        in_flight = self.seq.in_flight_end()
        if in_flight is not None:
            ends.append(in_flight)
        return ends

    async def submit(self, client_id: str, version: int, updates: list, author: str,
                     restored_from: int | None = None) -> int:
        """A server-made push (a restore): sequenced like any other; returns its version once durable."""
        accepted = self.seq.push(client_id, version, updates, author, time.time())
        if not accepted:
            return self.seq.committed_version
        for entry in accepted:
            entry.restored_from = restored_from
        self.store.schedule(self)
        await self.durable(accepted[-1].version)
        return accepted[-1].version

    async def durable(self, version: int) -> None:
        """Return once `version` is committed (raises if the document could not be saved)."""
        if version <= self.seq.committed_version:
            return
        if self.broken:
            raise RuntimeError("the document could not be saved")
        fut = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((version, fut))
        await fut

    def _wake_durable(self, error: Exception | None = None) -> None:
        keep = []
        for version, fut in self._durable_waiters:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif version <= self.seq.committed_version:
                fut.set_result(None)
            else:
                keep.append((version, fut))
        self._durable_waiters = keep

    # --- the store pulls our pending updates (store.CommitSource) ---

    def take_commit(self):
        """Everything accepted and not yet handed over, as one write for the next transaction."""
        batch = self.seq.take_pending()
        if not batch or self.broken:
            return None
        last = batch[-1].version
        snapshot = None
        if last - self.last_snapshot >= self.settings.snapshot_every and last == self.seq.version:
            snapshot = (last, str(self.seq.text))  # the head is exactly `last` right now
        length = batch[-1].update.changes.new_length
        return append_fn(self.doc_id, batch, length, snapshot), (batch, snapshot, time.perf_counter())

    def commit_done(self, token, error: BaseException | None) -> None:
        """The batch is durable: broadcast it (that is the acknowledgement). Or it failed: reload."""
        if self.broken:
            return
        if error is not None:
            log.error("commit failed for document %s (%s); reloading it from disk", self.name, error)
            self._fail()
            return
        batch, snapshot, started = token
        metrics = self.rooms.metrics
        now = time.perf_counter()
        metrics.commit_seconds.observe(now - started)
        metrics.commit_batch.observe(len(batch))
        metrics.accepted.inc(len(batch))
        last = batch[-1].version
        self.seq.committed(last)
        if snapshot:
            self.last_snapshot = last
        self.frame_ends.append(last)
        if len(self.frame_ends) > 2 * self.settings.keep_updates:
            del self.frame_ends[:len(self.frame_ends) - self.settings.keep_updates]
        frame = protocol.updates_frame(batch)
        for p in self.peers.values():
            p.send(frame)
        metrics.fanout_seconds.observe(time.perf_counter() - now)
        if self._durable_waiters:
            self._wake_durable()

    def revoke(self, everyone: bool, reason: str) -> None:
        """Close the sessions whose access just ended (all, or all but the admin's), with 1008."""
        for p in list(self.peers.values()):
            if everyone or not p.admin:
                self._remove(p)
                p.close(CLOSE_POLICY, reason)

    def _fail(self) -> None:
        self.broken = True
        self._wake_durable(RuntimeError("the document could not be saved"))
        self.rooms.forget(self)
        for p in list(self.peers.values()):
            p.close(CLOSE_INTERNAL, "storage error; reconnect")
        self.peers.clear()
        self.by_client.clear()

    # ------------------------------------------------------------ presence

    def presence(self, peer: Peer, msg: protocol.Presence) -> None:
        """Remember `peer`'s selection and pass it on, at most every presence_interval."""
        if msg.version > self.seq.committed_version:
            raise ProtocolError("bad-version", f"presence is at version {msg.version}, but the document "
                                f"is at version {self.seq.committed_version}")
        limit = self.seq.length_at(msg.version) if msg.version >= self.seq.log_from else None
        if limit is None:
            return  # too old to map: a newer one will follow
        ranges = [(min(a, limit), min(h, limit)) for a, h in msg.ranges]
        peer.presence = (msg.version, ranges)
        if peer.presence_timer is not None:
            return  # a send is already scheduled; it will carry the newest ranges
        wait = peer.presence_sent + self.settings.presence_interval - time.monotonic()
        if wait <= 0:
            self._send_presence(peer)
        else:
            peer.presence_timer = asyncio.get_running_loop().call_later(wait, self._send_presence, peer)

    def _presence_object(self, peer: Peer) -> dict | None:
        version, ranges = peer.presence
        target = self.seq.committed_version
        mapped = self.seq.map_ranges(ranges, version, target)
        if mapped is None:
            peer.presence = None
            return None
        peer.presence = (target, mapped)
        return protocol.presence_object(peer.session, peer.user, target, mapped)

    def _send_presence(self, peer: Peer) -> None:
        peer.presence_timer = None
        if peer.closed or peer.presence is None or peer.session not in self.peers:
            return
        peer.presence_sent = time.monotonic()
        obj = self._presence_object(peer)
        if obj is None:
            return
        frame = protocol.orjson.dumps(obj)
        for p in self.peers.values():
            if p is not peer:
                p.send(frame)

    # ------------------------------------------------------------- leaving

    def leave(self, peer: Peer) -> None:
        if self.peers.get(peer.session) is not peer:
            return
        self._remove(peer)
        self.release()

    def release(self) -> None:
        """Schedule unloading if nobody is connected (after joins leave, or after an API call)."""
        if not self.peers and not self.broken and self.unload_timer is None:
            self.unload_timer = asyncio.get_running_loop().call_later(
                self.settings.unload_after, lambda: asyncio.ensure_future(self.rooms.unload(self)))

    def _remove(self, peer: Peer) -> None:
        self.peers.pop(peer.session, None)
        if self.by_client.get(peer.client_id) is peer:
            del self.by_client[peer.client_id]
        if peer.presence_timer is not None:
            peer.presence_timer.cancel()
            peer.presence_timer = None
        frame = protocol.leave_frame(peer.session)
        for p in self.peers.values():
            p.send(frame)

    async def flush(self) -> None:
        """Wait until everything accepted is durable, then snapshot if there is news."""
        await self.durable(self.seq.version)
        if not self.broken and self.seq.committed_version > self.last_snapshot:
            version = self.seq.committed_version
            await self.store.write_snapshot(self.doc_id, version, self.seq.committed_text())
            self.last_snapshot = version


class Rooms:
    """The open documents of this process, loaded on first join and unloaded when idle."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics | None = None,
                 access: Access | None = None):
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.access = access or Access(None)
        self.per_address: dict[str, int] = {}
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self.closing = False

    async def get(self, name: str, create: bool = True) -> Room | None:
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
        try:
            loaded = await self.store.load(name)
            if loaded is None:
                if not create:
                    return None
                await self.store.create_document(name)
                loaded = await self.store.load(name)
            seq = Sequencer(loaded.text, loaded.version, loaded.log, keep=self.settings.keep_updates,
                            max_length=self.settings.max_doc)
            room = Room(self, loaded.doc_id, name, seq, loaded.snapshot_version, loaded.salt)
            self.rooms[name] = room
            self.metrics.documents.set(len(self.rooms))
            return room
        finally:
            del self._loading[name]
            fut.set_result(None)

    def forget(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            self.metrics.documents.set(len(self.rooms))

    async def unload(self, room: Room) -> None:
        """Unload an idle document: flush its commits and write a snapshot first."""
        room.unload_timer = None
        if room.peers or self.rooms.get(room.name) is not room:
            return
        fut = asyncio.get_running_loop().create_future()
        self._loading[room.name] = fut  # joins wait until the room is safely gone
        try:
            await room.flush()
        except Exception:
            log.exception("snapshot of document %s failed while unloading", room.name)
        finally:
            if not room.peers:
                self.forget(room)
            del self._loading[room.name]
            fut.set_result(None)

    async def salt_of(self, name: str) -> str | None:
        """The document's current salt (None if it does not exist)."""
        room = self.rooms.get(name)
        if room is not None and not room.broken:
            return room.salt
        info = await self.store.document(name)
        return info["salt"] if info else None

    async def shutdown(self) -> None:
        """Graceful stop: finish the commits in flight, then close every client with 1001."""
        self.closing = True
        for room in list(self.rooms.values()):
            try:
                await room.flush()
            except Exception:
                log.exception("flushing document %s at shutdown failed", room.name)
            for p in list(room.peers.values()):
                p.close(CLOSE_GOING_AWAY, "server shutting down")
        await asyncio.sleep(0)
