"""Peer: one WebSocket connection's outbound side (the WebSocket adapter's half of a room member).

What lives here: the connection's identity as the room sees it, its own
outbound queue (so one slow reader never delays the others), back-pressure
(a peer whose unsent bytes pass its limit is closed with 1013 and resumes
later), and the closing handshake. What never lives here: document state.

Rules that always hold:
  * frames leave in the order `send` was called, each exactly once, until the
    peer is closed; after that nothing more is sent but what was queued;
  * only the handler task (ws.py) runs the closing handshake; any other task
    that decides to close a peer interrupts the handler's `receive()` instead
    (see `close`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque

from aiohttp import WSMsgType, web

from . import protocol
from .errors import CLOSE_TRY_AGAIN

log = logging.getLogger("collab")

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
    """One WebSocket connection: who it is, and its outbound queue."""

    __slots__ = ("ws", "transport", "session", "client_id", "user", "role", "admin", "remote", "queue",
                 "queued", "limit", "writer", "closed", "bytes_out", "handler", "receiving", "close_code",
                 "close_message")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, client_id: str,
                 user: dict, role: str, remote: str, limit: int, bytes_out=None, admin: bool = False):
        self.ws = ws
        self.transport = transport
        self.session = secrets.token_urlsafe(9)
        self.client_id = client_id
        self.user = user
        self.role = role
        self.admin = admin  # came with the admin token (survives a reset of the share links)
        self.remote = remote
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.limit = limit
        self.writer: asyncio.Task | None = None
        self.closed = False
        self.bytes_out = bytes_out  # a prometheus Counter, or None
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
        if self.queued + self.buffered() > self.limit:
            log.info("closing %s: %d bytes unsent, over the limit", self.session, self.queued)
            self.close(CLOSE_TRY_AGAIN, "too far behind; reconnect to resume")
            return
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    def buffered(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

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
            if self.transport is not None:
                self.transport.abort()
        self.queue.clear()
