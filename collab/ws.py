"""The WebSocket adapter for /ws/{doc}: frames in, room calls, frames out.

What lives here: the upgrade (subprotocol collab.v1, aiohttp's ping/pong
heartbeat, frame size limit), the hello deadline, converting every
ProtocolError into an `error` frame (and a close when it carries one), and
leaving the room however the connection ends. What never lives here: document
state or ordering decisions (room.py, sequencer.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from . import protocol
from .access import origin_allowed
from .errors import CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_RATE_LIMITED, CLOSE_TOO_BIG, ProtocolError
from .room import INTERRUPT, Peer, Rooms
from .settings import Settings

log = logging.getLogger("collab")

CLOSE_TIMEOUT = 5.0  # seconds a closing handshake may take before the connection is cut


def client_address(request: web.Request, trusted: frozenset[str]) -> str:
    """The client's address: the socket's peer, or X-Forwarded-For when that peer is a trusted proxy.

    The header is read right to left, skipping our own trusted proxies, so a
    client cannot pretend to be someone else by sending the header itself.
    """
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = peer[0] if peer else "?"
    if address not in trusted:
        return address
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return address


async def handle(request: web.Request, settings: Settings, rooms: Rooms) -> web.StreamResponse:
    name = request.match_info["doc"]
    if not protocol.valid_doc_name(name):
        raise ProtocolError("bad-request", "document names are 1-100 letters, digits, '-' or '_'")
    trusted = trusted_proxies(settings)
    if not origin_allowed(request.headers.get("Origin"), own_origin(request, trusted), allowed_origins(settings)):
        raise ProtocolError("forbidden", "WebSocket connections from another site's pages are refused")
    remote = client_address(request, trusted)
    _check_capacity(rooms, settings, name, remote)
    # decode_text=False: text frames arrive as bytes and orjson checks their
    # UTF-8, so a frame that is not UTF-8 is answered with bad-json like any
    # other unreadable frame, instead of aiohttp failing the connection (1007).
    ws = web.WebSocketResponse(protocols=(protocol.SUBPROTOCOL,), heartbeat=settings.heartbeat or None,
                               max_msg_size=settings.max_frame, compress=False, decode_text=False,
                               timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    metrics = rooms.metrics
    metrics.connections.inc()
    rooms.per_address[remote] = rooms.per_address.get(remote, 0) + 1
    peer: Peer | None = None
    try:
        grant = rooms.access.role(request.query.get("token"), name, await rooms.salt_of(name))
        hello = await _receive_hello(ws, settings)
        if hello is None:
            return ws
        if rooms.closing:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
            return ws
        role = "view" if grant == "view" else "edit"
        peer = Peer(ws, hello.client_id, hello.user, role, remote, settings.send_buffer, metrics.bytes_out)
        peer.admin = grant == "admin"
        room = await rooms.get(name)
        await room.join(peer, hello)
        log.info("open doc=%s session=%s client=%s role=%s addr=%s", name, peer.session, hello.client_id,
                 role, remote)
        bucket = TokenBucket(settings.rate, settings.burst)
        while not peer.closed:
            msg = await _receive(ws, peer)
            if msg is None:
                break
            if msg.type == WSMsgType.TEXT:
                metrics.bytes_in.inc(len(msg.data))
                if not bucket.take(time.monotonic()):
                    _refuse(peer, bucket.refusal())
                    continue
                await _frame(peer, msg.data, settings)
            elif msg.type == WSMsgType.BINARY:
                _refuse(peer, ProtocolError("bad-message", "frames must be UTF-8 JSON text frames"))
            elif msg.type == WSMsgType.ERROR:
                await _frame_error(ws, peer)
                break
            else:  # the client closed, or the connection is gone
                break
    except ProtocolError as exc:
        _count(metrics, exc, name, peer)
        await _close_with(ws, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("connection to doc=%s failed", name)
        await ws.close(code=CLOSE_INTERNAL, message=b"internal error")
    finally:
        try:
            if peer is not None and peer.close_code is not None:
                # Our close code must reach the client; aiohttp may cancel this
                # task once the transport is gone, so the handshake runs shielded.
                await asyncio.shield(peer.finish(CLOSE_TIMEOUT))
        finally:
            metrics.connections.dec()
            left = rooms.per_address.get(remote, 1) - 1
            if left > 0:
                rooms.per_address[remote] = left
            else:
                rooms.per_address.pop(remote, None)
            if peer is not None:
                peer.closed = True
                if peer.room is not None:
                    peer.room.leave(peer)
                log.info("close doc=%s session=%s code=%s", name, peer.session, ws.close_code)
    return ws


async def _receive(ws: web.WebSocketResponse, peer: Peer):
    """The next frame, or None when `Peer.close` interrupted the wait (see there why)."""
    peer.receiving = True
    try:
        return await ws.receive()
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if not (peer.closed and exc.args == (INTERRUPT,)) or task.uncancel() > 0:
            raise  # a real cancellation (the server is stopping), not our own interrupt
        return None
    finally:
        peer.receiving = False


async def _receive_hello(ws: web.WebSocketResponse, settings: Settings) -> protocol.Hello | None:
    try:
        msg = await ws.receive(timeout=settings.hello_timeout)
    except asyncio.TimeoutError:
        await ws.close(code=CLOSE_PROTOCOL, message=b"no hello")
        return None
    if msg.type == WSMsgType.ERROR:
        await _frame_error(ws, None)
        return None
    if msg.type != WSMsgType.TEXT:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        raise ProtocolError("bad-message", "the first frame must be a JSON hello", close=CLOSE_PROTOCOL)
    try:
        frame = protocol.parse(msg.data, settings.max_updates, settings.max_ranges)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, close=CLOSE_PROTOCOL) from None
    if not isinstance(frame, protocol.Hello):
        raise ProtocolError("bad-message", "the first frame must be hello", close=CLOSE_PROTOCOL)
    return frame


async def _frame(peer: Peer, data: bytes, settings: Settings) -> None:
    room = peer.room
    try:
        msg = protocol.parse(data, settings.max_updates, settings.max_ranges)
        if isinstance(msg, protocol.Push):
            await room.push(peer, msg)
        elif isinstance(msg, protocol.Presence):
            room.presence(peer, msg)
        else:
            raise ProtocolError("bad-message", "hello was already received on this connection")
    except ProtocolError as exc:
        _refuse(peer, exc)


class TokenBucket:
    """`rate` frames a second on average, `burst` at once; persistent excess ends the connection."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "refused")

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.refused = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = max(0, self.refused - 1)
            return True
        self.refused += 1
        return False

    def refusal(self) -> ProtocolError:
        if self.refused > self.burst:  # ignored our errors for a whole burst's worth of frames
            return ProtocolError("rate-limited", "persistently over the rate limit", close=CLOSE_RATE_LIMITED)
        return ProtocolError("rate-limited", f"over {self.rate:g} frames a second; this frame was dropped")


def _check_capacity(rooms: Rooms, settings: Settings, name: str, remote: str) -> None:
    room = rooms.rooms.get(name)
    if room is not None and len(room.peers) >= settings.max_conns_per_doc:
        raise ProtocolError("rate-limited", f"document {name!r} has {settings.max_conns_per_doc} connections, "
                            "the most allowed")
    if rooms.per_address.get(remote, 0) >= settings.max_conns_per_addr:
        raise ProtocolError("rate-limited", f"{settings.max_conns_per_addr} connections from one address "
                            "is the most allowed")


def own_origin(request: web.Request, trusted: frozenset[str]) -> str:
    """This server's origin as the browser sees it (scheme from a trusted proxy if there is one)."""
    scheme = request.scheme
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer and peer[0] in trusted:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
    return f"{scheme}://{request.host}"


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in settings.allow_origin.split(",") if o.strip())


def trusted_proxies(settings: Settings) -> frozenset[str]:
    return frozenset(a.strip() for a in settings.trusted_proxy.split(",") if a.strip())


def _count(metrics, exc: ProtocolError, doc: str, peer: Peer | None) -> None:
    """Count and log a refusal: its code only, never the frame's contents."""
    metrics.errors.labels(exc.code).inc()
    log.info("error doc=%s session=%s code=%s%s", doc, peer.session if peer else "-", exc.code,
             f" close={exc.close}" if exc.close else "")


def _refuse(peer: Peer, exc: ProtocolError) -> None:
    room = peer.room
    if room is not None:
        _count(room.rooms.metrics, exc, room.name, peer)
    if exc.code != "internal":
        peer.send(protocol.error_frame(exc.code, exc.message))
    if exc.close is not None:
        peer.close(exc.close, exc.message)


async def _close_with(ws: web.WebSocketResponse, exc: ProtocolError) -> None:
    if ws.closed:
        return
    if exc.code in ("unauthorized", "forbidden") and exc.close is None:
        exc = ProtocolError(exc.code, exc.message, close=CLOSE_POLICY)
    try:
        if exc.code != "internal":
            await ws.send_frame(protocol.error_frame(exc.code, exc.message), WSMsgType.TEXT)
        await ws.close(code=exc.close or CLOSE_PROTOCOL, message=protocol.close_reason(exc.message))
    except (ConnectionError, RuntimeError):
        pass


def _error_close(ws: web.WebSocketResponse) -> int:
    exc = ws.exception()
    code = getattr(exc, "code", None)
    return CLOSE_TOO_BIG if code == WSCloseCode.MESSAGE_TOO_BIG else CLOSE_PROTOCOL


async def _frame_error(ws: web.WebSocketResponse, peer: Peer | None) -> None:
    """A frame aiohttp could not read (too large, bad UTF-8, bad framing): say why, then close."""
    code = _error_close(ws)
    error = ("too-large", "frame over the server's size limit") if code == CLOSE_TOO_BIG else \
        ("bad-message", f"unreadable frame: {ws.exception()}")
    log.info("frame error session=%s: %s", peer.session if peer else "-", ws.exception())
    await _close_with(ws, ProtocolError(*error, close=code))
