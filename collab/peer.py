"""Peer: one WebSocket connection's outbound side (the WebSocket adapter's half of a room member).

What lives here: the connection's identity as the room sees it, its own
outbound queue (so one slow reader never delays the others), back-pressure,
writing text frames, and the closing handshake. What never lives here:
document state.

Rules that always hold:
  * frames leave in the order `send` was called, each exactly once, until the
    peer is closed; after that nothing more is sent but what was queued;
  * memory per connection is bounded. A frame is written only while the
    socket's own buffer is under HIGH_WATER; a large frame (a welcome with a
    big document) goes out as a fragmented WebSocket message, one FRAGMENT at
    a time, reading its parts in place (the document's JSON is shared by
    every welcome of that version, never copied per connection). What queued
    frames cost this peer alone (`frame_cost`: not the shared document)
    counts against `limit` (--send-buffer; the frame at the head of the queue
    may be larger on its own) and, across all peers, against the `Outbox`
    budget, which also counts each shared document queued frames hold once;
    over either, the peer is closed with 1013 and resumes from its
    version when it reconnects. A peer that takes nothing for `send_timeout`
    seconds while data waits is closed the same way;
  * only the task that reads the connection (ws.py: the request's handler,
    then a `Connection`'s task) runs the closing handshake; any other task
    that decides to close a peer interrupts that task's `receive()` instead,
    or, when no task reads the connection, has the Connection start one (see
    `close`).

Frames are written to the connection's transport directly (RFC 6455 server
frames: no mask), because aiohttp's writer cannot fragment a message; control
frames aiohttp writes itself (ping, pong, close) may come between fragments,
which the RFC allows. When permessage-deflate was agreed (deflate.py), a frame
of `deflate_min` bytes or more goes out compressed (RSV1 on its first fragment
only), smaller ones never: up to INLINE_DEFLATE bytes it is compressed at once
on the loop; a larger one is compressed by the writer task in a worker thread.
A frame sent to many peers (a broadcast) and a shared part (a document's JSON)
are compressed once for all of them (`_deflate_inline`, `SharedDeflate`).
What a queued frame costs (`frame_cost`) is counted on the frame as queued.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections import OrderedDict, deque

from aiohttp import web

from . import deflate, protocol
from .errors import CLOSE_TRY_AGAIN

log = logging.getLogger("collab")

INTERRUPT = "collab: the connection is closing"  # Peer.close cancelling a handler's receive()
FRAGMENT = 64 * 1024     # bytes: frames above this go out as a fragmented message, a fragment at a time
HIGH_WATER = 256 * 1024  # bytes in the socket's buffer above which nothing more is written yet
INLINE_DEFLATE = 16 * 1024  # bytes: a frame up to this is compressed on the loop (well under a millisecond)
NO_DEFLATE = 1 << 62  # deflate_min of a peer that never compresses

_TEXT, _CONTINUATION, _RSV1 = 0x1, 0x0, 0x40
_NO_QUEUE = ()  # the queue of a peer with nothing queued: a deque is made when a frame must wait (600 bytes)


def frame_header(opcode: int, fin: bool, length: int) -> bytes:
    """An unmasked (server) WebSocket frame header."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame_size(frame: bytes | tuple[bytes, ...]) -> int:
    return len(frame) if type(frame) is bytes else sum(len(p) for p in frame)


def frame_cost(frame: bytes | tuple[bytes, ...]) -> int:
    """The memory a queued frame holds for this peer alone.

    A frame given as parts is (head, shared, tail): its middle part (a
    document's JSON) is shared by every frame that carries it, so it costs
    this peer nothing.
    """
    if type(frame) is bytes:
        return len(frame)
    return len(frame[0]) + len(frame[-1]) if len(frame) == 3 else sum(len(p) for p in frame)


def _fragments(parts: tuple[bytes, ...], size: int):
    """The concatenation of `parts`, in pieces of at most `size` bytes (memoryviews: no copy of big parts)."""
    piece: list = []
    room = size
    for part in parts:
        view = memoryview(part)
        while view:
            take = view[:room]
            piece.append(take)
            view = view[len(take):]
            room -= len(take)
            if room == 0:
                yield piece
                piece, room = [], size
    if piece:
        yield piece


class SharedDeflate:
    """Compressed copies of parts shared by many frames (a document's JSON), each made once, in a worker thread.

    Keyed by the part object itself (held while cached: its id stays unique),
    and by window; at most `budget` bytes of parts are held (with their
    compressed copies, smaller), oldest dropped first. Every peer that needs a
    part while it is being compressed waits for the same result; a compression
    that failed is tried again by the next peer that needs it.
    """

    def __init__(self, budget: int = 64 << 20):
        self.budget = budget
        self.held = 0
        self.entries: OrderedDict[tuple[int, int], tuple[bytes, asyncio.Future]] = OrderedDict()

    async def get(self, part: bytes, wbits: int) -> bytes:
        key = (id(part), wbits)
        entry = self.entries.get(key)
        if entry is None or entry[0] is not part or (entry[1].done() and (entry[1].cancelled() or entry[1].exception())):
            if entry is not None:
                self.held -= len(self.entries.pop(key)[0])
            future = asyncio.get_running_loop().run_in_executor(None, deflate.chunk, part, wbits)
            entry = self.entries[key] = (part, future)
            self.held += len(part)
            while self.held > self.budget and len(self.entries) > 1:
                old, _ = self.entries.popitem(last=False)[1]
                self.held -= len(old)
        else:
            self.entries.move_to_end(key)
        return await asyncio.shield(entry[1])  # one peer giving up does not cancel it for the others


SHARED_DEFLATE = SharedDeflate()
_RECENT: OrderedDict[tuple[int, int], tuple[object, bytes]] = OrderedDict()  # see _deflate_inline


def _deflate_inline(frame: bytes | tuple[bytes, ...], wbits: int) -> bytes:
    """A small frame's compressed payload, on the loop. A broadcast hands the same frame object to every
    peer in turn (and a second one, clientIDs hidden, to view-only peers): the last few are remembered
    (held, so their ids stay unique), and each is compressed once."""
    key = (id(frame), wbits)
    hit = _RECENT.get(key)
    if hit is not None and hit[0] is frame:
        return hit[1]
    payload = deflate.message(frame if type(frame) is tuple else (frame,), wbits)
    _RECENT[key] = (frame, payload)
    if len(_RECENT) > 4:
        _RECENT.popitem(last=False)
    return payload


class Outbox:
    """What every peer of the process has queued, against one budget (--max-buffered).

    Each queued frame's own cost (`frame_cost`), and each shared part (a
    document's JSON) once, however many queued frames share it: welcomes of
    versions the room has moved on from hold theirs, and nothing else does.
    """

    __slots__ = ("budget", "queued", "_shared")

    def __init__(self, budget: int):
        self.budget = budget
        self.queued = 0
        self._shared: dict[int, int] = {}  # id of a shared part -> queued frames holding it (they keep it alive)

    def hold(self, frame: bytes | tuple[bytes, ...], cost: int) -> None:
        """A frame was queued: its `cost` (frame_cost), and its shared part if no other queued frame holds
        that yet."""
        self.queued += cost
        if type(frame) is tuple and len(frame) == 3:
            key = id(frame[1])
            held = self._shared.get(key, 0)
            if not held:
                self.queued += len(frame[1])
            self._shared[key] = held + 1

    def let_go(self, frame: bytes | tuple[bytes, ...], cost: int) -> None:
        """A queued frame of `cost` (frame_cost) was sent or dropped."""
        self.queued -= cost
        if type(frame) is tuple and len(frame) == 3:
            key = id(frame[1])
            held = self._shared[key] - 1
            if held:
                self._shared[key] = held
            else:
                del self._shared[key]
                self.queued -= len(frame[1])


class Peer:
    """One WebSocket connection: who it is, and its outbound queue."""

    __slots__ = ("admin", "bytes_out", "client_id", "close_code", "close_message", "closed", "deflate_min",
                 "deflate_wbits", "handler", "limit", "midmessage", "outbox", "queue", "queued", "receiving",
                 "remote", "resume_key", "role", "send_timeout", "session", "token", "transport",
                 "user", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, client_id: str,
                 user: dict, role: str, remote: str, limit: int, bytes_out=None, admin: bool = False,
                 outbox: Outbox | None = None, send_timeout: float = 30.0, token: str | None = None,
                 deflate_min: int = NO_DEFLATE, deflate_wbits: int = 15):
        self.ws = ws
        self.transport = transport
        self.session = secrets.token_urlsafe(9)
        self.client_id = client_id
        self.user = user
        self.role = role
        self.admin = admin  # came with the admin token (survives a reset of the share links)
        self.remote = remote
        self.token = token  # its access token, until its hello has been answered (ws.handle lets it go)
        self.resume_key: str | None = None  # proof of this client, from its hello
        self.queue: deque | tuple = _NO_QUEUE
        self.queued = 0  # what queued frames cost this peer (frame_cost), not yet handed to the socket
        self.limit = limit
        self.outbox = outbox or Outbox(1 << 62)
        self.send_timeout = send_timeout
        self.writer: asyncio.Task | None = None
        self.closed = False
        self.bytes_out = bytes_out  # a metrics.Tally (bumped on the event loop only), or None
        # What reads this connection: the ws.py task, or a ws.Connection while no task reads it (its
        # `cancel` starts one); `cancel(msg=INTERRUPT)` interrupts either while it waits for a frame.
        self.handler = asyncio.current_task()
        self.receiving = False  # that task is waiting in ws.receive() (or the Connection for a frame)
        self.close_code: int | None = None  # set once we decided to end the connection
        self.close_message = ""
        self.midmessage = False  # a fragmented message is partly written: no other data frame may start
        self.deflate_min = deflate_min  # frames of this many bytes or more go out compressed
        self.deflate_wbits = deflate_wbits  # the window the client lets us use

    # ---------------------------------------------------------------- sending

    def send(self, frame: bytes | tuple[bytes, ...]) -> None:
        """Send a text frame (bytes, or parts to be joined): now if the socket takes it, else queue it.

        A peer whose queued bytes pass its limit, or the process's budget, is
        disconnected (1013): it reconnects and resumes from its version.
        """
        if self.closed:
            return
        size = frame_size(frame)
        if self.bytes_out is not None:
            self.bytes_out.inc(size)
        if self.writer is None and not self.queue and size <= FRAGMENT and self.buffered() < HIGH_WATER:
            if size < self.deflate_min:
                self._write(_TEXT, True, frame if type(frame) is bytes else b"".join(frame))
                return
            if size <= INLINE_DEFLATE:
                self._write(_TEXT | _RSV1, True, _deflate_inline(frame, self.deflate_wbits))
                return
        if self.queue is _NO_QUEUE:
            self.queue = deque()
        self.queue.append(frame)
        cost = frame_cost(frame)
        self.queued += cost
        self.outbox.hold(frame, cost)
        # The frame at the head of the queue may be larger than the limit on its own (it goes out a
        # fragment at a time): what is queued behind it counts. A peer that does not read it is
        # closed by the send timeout instead.
        behind = self.queued - frame_cost(self.queue[0])
        if behind + self.buffered() > self.limit or self.outbox.queued > self.outbox.budget:
            log.info("closing %s: %d bytes unsent, over the limit", self.session, self.queued)
            self.close(CLOSE_TRY_AGAIN, "too far behind; reconnect to resume")
            return
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    def buffered(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _write(self, opcode: int, fin: bool, payload) -> None:
        """One frame to the socket; `payload` is bytes or a list of byte pieces."""
        if self.transport is None or self.transport.is_closing():
            self.closed = True
            return
        if type(payload) is bytes:
            self.transport.write(frame_header(opcode, fin, len(payload)) + payload)
        else:
            self.transport.writelines([frame_header(opcode, fin, sum(len(p) for p in payload)), *payload])

    def backlog(self) -> int:
        """Bytes sent to this peer that the client has not taken yet (queued here, or in the socket's buffer)."""
        return self.queued + self.buffered()

    async def drained(self, below: int) -> None:
        """Return once less than `below` bytes wait for the client (queued here, or in the socket's
        buffer), or the peer is closed: closed (1013) if it takes nothing for send_timeout seconds."""
        await self._room_to_write(below, queued=True)

    async def _room_to_write(self, below: int, queued: bool = False) -> None:
        """Wait until the socket's buffer (with `queued`, and this peer's queue) is under `below`; close
        the peer if it takes nothing for send_timeout."""
        def waiting() -> int:
            return self.backlog() if queued else self.buffered()

        wait, stalled, last = 0.002, 0.0, waiting()
        while waiting() >= below and not self.closed:
            await asyncio.sleep(wait)
            now = waiting()
            if now < last:
                stalled, wait = 0.0, 0.002
            else:
                stalled += wait
                wait = min(wait * 2, 0.1)
                if stalled >= self.send_timeout:
                    log.info("closing %s: it read nothing for %.0f s", self.session, stalled)
                    self.close(CLOSE_TRY_AGAIN, "not reading; reconnect to resume")
            last = now

    async def _drain(self) -> None:
        try:
            while self.queue and not self.closed:
                frame = self.queue[0]
                size = frame_size(frame)
                parts, opcode = frame if type(frame) is tuple else (frame,), _TEXT
                if size >= self.deflate_min:
                    parts, opcode = await self._deflated(frame, size), _TEXT | _RSV1
                    size = frame_size(parts)
                    if self.closed:
                        break
                if size <= FRAGMENT:
                    await self._room_to_write(HIGH_WATER)
                    if self.closed:
                        break
                    self._write(opcode, True, parts[0] if len(parts) == 1 else b"".join(parts))
                else:
                    await self._write_fragmented(parts, opcode)
                    if self.closed:
                        break
                self._dequeued(frame)
                self.queue.popleft()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self.closed = True
        finally:
            self.writer = None
            if not self.queue:
                self.queue = _NO_QUEUE

    async def _deflated(self, frame: bytes | tuple[bytes, ...], size: int) -> tuple[bytes, ...]:
        """The compressed payload of a message, as parts: off the loop when large, once for every peer."""
        wbits = self.deflate_wbits
        if size <= INLINE_DEFLATE:
            return (_deflate_inline(frame, wbits),)
        if type(frame) is bytes:  # a large broadcast, or one peer's long resume
            return ((await SHARED_DEFLATE.get(frame, wbits))[:-4],)
        if len(frame) == 3:  # (head, shared, tail): see frame_cost
            return deflate.chunk(frame[0], wbits), await SHARED_DEFLATE.get(frame[1], wbits), \
                deflate.last(frame[2], wbits)
        return (await asyncio.get_running_loop().run_in_executor(None, deflate.message, frame, wbits),)

    async def _write_fragmented(self, parts: tuple[bytes, ...], opcode: int = _TEXT) -> None:
        """One message a fragment at a time; `opcode` (with RSV1 if compressed) goes on the first fragment only."""
        pieces = _fragments(parts, FRAGMENT)
        piece = next(pieces)
        for following in pieces:
            await self._room_to_write(FRAGMENT)
            if self.closed:
                return
            self._write(opcode, False, piece)
            self.midmessage = True
            opcode, piece = _CONTINUATION, following
        await self._room_to_write(FRAGMENT)
        if not self.closed:
            self._write(opcode, True, piece)
            self.midmessage = False

    def _dequeued(self, frame: bytes | tuple[bytes, ...]) -> None:
        cost = frame_cost(frame)
        self.queued -= cost
        self.outbox.let_go(frame, cost)

    # ---------------------------------------------------------------- closing

    def close(self, code: int, message: str) -> None:
        """End the connection: the handler task sends what is queued, then the close frame.

        Any task may decide to close (a takeover, a revoked link, back-pressure,
        shutdown), but only the handler task may run the closing handshake. If
        another task called `ws.close()` while the handler waits in
        `receive()`, aiohttp would drop the TCP connection at once instead of
        reading until the client's close frame; the frames the client still
        had in flight would then be answered with a reset, and the client would
        never read our error or close code (it sees 1006). So a handler waiting
        in `receive()` is interrupted, and `finish` does the rest from there;
        a connection no task reads (ws.Connection, idle) starts one to do it.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_message = code, message
        if code == CLOSE_TRY_AGAIN:  # it will resume from its version; what it has not read is moot
            self._drop_queue()
        if self.receiving and self.handler is not None:
            self.handler.cancel(msg=INTERRUPT)

    def _drop_queue(self) -> None:
        for frame in self.queue:
            self._dequeued(frame)
        self.queue = _NO_QUEUE

    async def finish(self, timeout: float) -> None:
        """Run the closing handshake decided by `close` (from the handler task, after `receive()` returned).

        Within `timeout` seconds: the small frames still queued (an error frame
        saying why, say; a large frame not yet sent is dropped, the connection
        is ending, and so is everything queued behind it but error frames: the
        updates a client gets stay contiguous), the close frame, then reading (and dropping) whatever the
        client still sends until its own close frame. A client that reads
        nothing is cut off after that. Whatever happens, the queue is released.
        """
        try:
            self.closed = True  # the client closed, or we did: nothing more is queued
            if self.writer is not None:
                self.writer.cancel()  # it may be waiting for room in the socket; nothing is half-written
                await asyncio.wait([self.writer])
            if self.close_code is None:
                return
            dropped = False
            for frame in self.queue if not self.midmessage else ():
                # A large frame not yet started is dropped, and behind it every frame but an error (the
                # refusal that ends the connection, say): an `updates` frame after a dropped one would
                # leave a gap the client cannot see (it would apply it to the wrong text), and a presence
                # would be at a version it never gets. The client resumes from what it got.
                dropped = dropped or frame_size(frame) > FRAGMENT
                if not dropped or (type(frame) is bytes and protocol.is_error_frame(frame)):
                    self._write(_TEXT, True, frame if type(frame) is bytes else b"".join(frame))
            self._drop_queue()
            async with asyncio.timeout(timeout):
                await self.ws.close(code=self.close_code, message=protocol.close_reason(self.close_message))
        except (ConnectionError, RuntimeError):
            pass
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
        finally:
            self._drop_queue()
