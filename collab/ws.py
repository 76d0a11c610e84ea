"""The WebSocket adapter for /ws/{doc}: frames in, room calls, frames out.

What lives here: the upgrade (subprotocol collab.v1, frame size limit, origin
and connection limits, permessage-deflate negotiated by deflate.py instead of
aiohttp: see `Socket`), aiohttp's ping/pong heartbeat, the hello
deadline, the rate limit, taking a welcomed connection over from aiohttp's
request so that an idle one keeps no task and no request, and handling the
frames that need no await as they are read (`Connection`), and
`refuse`, the one place a refusal becomes an `error` frame (and a close when
it carries one): the twin of api.py's `error_answer` (a refusal before the
upgrade is an HTTP answer, and `handle` hands it to that). What never lives
here: document state or ordering decisions (room.py, sequencer.py). Access is
decided at `hello` against the document's current share-link salt, inside
`Rooms.join`, not at the upgrade.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import time
import zlib
from typing import Callable
from urllib.parse import parse_qsl

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, hdrs, web
from aiohttp._websocket import reader_py
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import DEFAULT_CHUNK_SIZE  # what aiohttp's own _post_start uses

from . import deflate, protocol
from .access import origin_allowed
from .errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG,
    CODES,
    SHUTTING_DOWN,
    CollabError,
    ProtocolError,
    ServerError,
)
from .limits import TokenBucket
from .peer import INTERRUPT, NO_DEFLATE, Outbox, Peer, frame_header
from .room import Member, Rooms
from .settings import Settings, entries

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
    hops = [ip_text(h) for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return address


def ip_text(text: str) -> str:
    """An IP address in the one spelling a socket reports it in (`FD00:0::1` is `fd00::1`); other text
    stripped, as it is."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


_DATA_OPCODES = (reader_py.OP_CODE_TEXT, reader_py.OP_CODE_BINARY, reader_py.OP_CODE_CONTINUATION)


def _wire_limit(max_frame: int) -> int:
    """What to give aiohttp's reader for a limit of `max_frame` bytes a message: it refuses a payload of
    its limit or more (and an inflated message only past it), so one more."""
    return max_frame + 1


class _InflatingReader(reader_py.WebSocketReader):
    """aiohttp's frame reader, inflating compressed messages with our per-message `deflate.Inflater`.

    aiohttp's own reader keeps one 15-bit zlib stream per connection from its
    first compressed frame on (about 40 KB that stays while the connection is
    idle); ours keeps none. It is aiohttp's pure-Python reader (the compiled
    one does not let the decompressor be chosen), used only on connections
    that agreed permessage-deflate.

    --max-frame is on the message once inflated (docs/protocol.md), which the
    inflater checks. A compressed message may take a little more than it on
    the wire (deflate stores what it cannot shrink in blocks of 5 more bytes
    each 64 KiB), so aiohttp's check of the wire payload leaves room for that,
    and a message sent uncompressed is held to --max-frame here.
    """

    def __init__(self, queue, max_frame: int, decode_text: bool, client_wbits: int):
        room = max_frame // 8192 + 64  # for deflate's stored blocks (5 bytes each 64 KiB) and its end
        super().__init__(queue, _wire_limit(max_frame + room), compress=True, decode_text=decode_text)
        self._decompressobj = _Inflater(client_wbits, max_frame)
        self._max_frame = max_frame

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes | bytearray, compressed: int) -> None:
        if (fin and compressed != reader_py.COMPRESSED_TRUE and opcode in _DATA_OPCODES
                and len(self._partial) + len(payload) > self._max_frame):
            raise WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, f"a message of more than {self._max_frame} bytes")
        super()._handle_frame(fin, opcode, payload, compressed)


class _Inflater(deflate.Inflater):
    """A message that does not inflate is a protocol error (close 1002), like any other unreadable frame;
    one that inflates past `limit` bytes is too big (1009)."""

    __slots__ = ("limit",)

    def __init__(self, wbits: int, limit: int):
        super().__init__(wbits)
        self.limit = limit

    def decompress_sync(self, data: bytes, max_length: int = 0) -> bytes:
        try:
            message = super().decompress_sync(data, self.limit + 1)
        except zlib.error as exc:
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"the message does not inflate: {exc}") from None
        if len(message) > self.limit:
            raise WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, f"a message that inflates past {self.limit} bytes")
        return message


_RANDOM_BITS = functools.partial(random.Random().getrandbits, 32)
_BACKGROUND_SENDS: set = set()


class _Wakes:
    """What a connection's frame queue adds to aiohttp's: a message queued for a connection that has no
    task reading it starts one (`Connection.wake`). Control frames do not: a ping is answered at once
    (`Connection.pong`; but by a task, which waits for room to write, while the transport's buffer is
    full) and a pong dropped (it answers our heartbeat's ping), as aiohttp's receive() does with both, so
    an idle connection, pinged or not, stays without a task."""

    __slots__ = ()

    def feed_data(self, data, size: int) -> None:
        conn = self.conn
        if conn is not None and data.type is WSMsgType.TEXT and not self._buffer and conn.reading_now():
            data = conn.now(data)  # handled as it is read (see Connection.now)
            if data is None:
                return
        if conn is None or conn.task is not None:
            super().feed_data(data, size)
        elif data.type is WSMsgType.PING and not conn._paused:
            conn.pong(data.data)  # (while the client reads nothing, a task answers, waiting for room to write)
        elif data.type is not WSMsgType.PONG:
            super().feed_data(data, size)
            conn.wake()

    def set_exception(self, *args) -> None:
        super().set_exception(*args)
        if self.conn is not None:
            self.conn.wake()


class _Frames(_Wakes, WebSocketDataQueue):  # aiohttp's compiled queue
    __slots__ = ("conn",)


class _FramesPy(_Wakes, reader_py.WebSocketDataQueue):  # its pure-Python one, for _InflatingReader
    __slots__ = ("conn",)


class Socket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse (its heartbeat included), with permessage-deflate negotiated by
    deflate.py (`agreement`).

    aiohttp's own negotiation keeps a per-connection compression context both
    ways; ours agrees no context takeover either way and a small client window,
    and inflates with `_InflatingReader`. What we send, Peer compresses itself;
    aiohttp writes only control frames here, which are never compressed.
    This overrides private methods of aiohttp 3.14's WebSocketResponse
    (`_handshake`, `_post_start`, `_send_heartbeat`), and after the upgrade
    lets go of two things aiohttp would keep as long as the connection (its
    HTTP parser, the request's cached properties); `Connection` writes into
    more of its private state: pyproject.toml keeps aiohttp below 3.15 for
    it, and tests/test_compression.py, test_heartbeat.py and
    test_connection_memory.py fail if they change.
    """

    __slots__ = ("compress_offers", "agreement", "conn")

    def __init__(self, *, compress_offers: bool, **kwargs):
        super().__init__(compress=False, **kwargs)
        self.compress_offers = compress_offers
        self.agreement: deflate.Agreement | None = None
        self.conn: Connection | None = None  # once detached from aiohttp's request (Connection.detach)

    async def write_eof(self) -> None:
        if self.conn is None:  # aiohttp ends the response once its handler returns: a detached one goes on
            await super().write_eof()

    def _send_heartbeat(self) -> None:
        super()._send_heartbeat()
        if self.conn is not None and self._pong_response_cb is not None:  # a ping went out: nothing came
            self.conn.idle()

    def _handle_ping_pong_exception(self, exc: BaseException) -> None:
        # aiohttp tells a task waiting in receive() that no pong came, then closes the transport, whose
        # connection_lost may wait for ever behind unsent data: a connection no task reads is woken here.
        super()._handle_ping_pong_exception(exc)
        if self.conn is not None:
            self.conn.wake()

    def _handshake(self, request):
        headers, protocol, _, _ = super()._handshake(request)  # compress=False: no extension from aiohttp
        if self.compress_offers:
            # several header lines are one comma-separated list (RFC 7230 section 3.2.2)
            self.agreement = deflate.negotiate(",".join(request.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, ())))
        if self.agreement is None:
            return headers, protocol, 0, False
        headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = self.agreement.response
        return headers, protocol, 0, False  # 0: aiohttp's writer compresses nothing (it writes control frames)

    def _post_start(self, request, protocol, writer) -> None:
        # aiohttp 3.14's _post_start, with our reader when compressed
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        # What every writer of ours would hold alike, shared (about 500 bytes less per connection): the
        # random bits that mask client frames (a server's never are; aiohttp's default draws them from
        # one shared Random too) and the set of its background sends (only compressed ones; ours compresses
        # nothing).
        writer.get_random_bits, writer._background_tasks = _RANDOM_BITS, _BACKGROUND_SENDS
        if self.agreement is None:
            self._reader = _Frames(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
            self._parser = WebSocketReader(self._reader, _wire_limit(self._max_msg_size), compress=False,
                                           decode_text=self._decode_text)
        else:
            self._reader = _FramesPy(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
            self._parser = _InflatingReader(self._reader, self._max_msg_size, self._decode_text,
                                            self.agreement.client_wbits)
        self._reader.conn = None
        request.protocol.set_parser(self._parser,
                                    data_received_cb=None if self._heartbeat is None else self._on_data_received)
        request.protocol.keep_alive(False)
        # The HTTP parser is done: aiohttp 3.14 feeds it only before an upgrade, or after one it declined
        # (no WebSocket parser set), and drops it itself when the connection is lost. Dropped now, not then:
        # it held the upgrade request's header lines as long as the connection (about 1.2 KB). Not if the
        # connection is not marked upgraded: since 3.14.2 aiohttp marks it only once the request's body
        # has all come, and its flow control then still asks the parser to pause (`handle` refuses an
        # upgrade request with a body; this is in case another way to that state appears).
        if request.protocol._upgraded:
            request.protocol._parser = None
        request._cache.clear()  # what the request's properties computed so far (recomputed if asked again)


class Admission:
    """Who may open another connection: per-document and per-address counts against their limits.

    An address's connection counts from the moment it passes `check` (`enter`,
    with no await between) until it ends (`leave`): connections opened at once
    cannot all pass the check before any of them is counted. A document's count
    is of its welcomed sessions, checked here first and again by `Room.join`
    when it registers one (`room.check_cap`).
    """

    def __init__(self, settings: Settings, rooms: Rooms):
        self.settings = settings
        self.rooms = rooms
        self.per_address: dict[str, int] = {}
        self.outbox = Outbox(settings.max_buffered)  # what all connections have queued, against one budget
        self.trusted = trusted_proxies(settings)  # made once: a handler's locals live as long as its connection
        self.live: set[Connection] = set()  # connections taken over from aiohttp (Connection.detach)

    def check(self, name: str, remote: str, viewer: bool) -> None:
        """Refuse (429) a connection over a limit; view sessions leave --reserved-edit-slots to editors."""
        s = self.settings
        self.rooms.check_cap(name, viewer)
        if self.per_address.get(remote, 0) >= s.max_conns_per_addr:
            raise ProtocolError("rate-limited", f"{s.max_conns_per_addr} connections from one address "
                                "is the most allowed")

    def enter(self, remote: str) -> None:
        self.per_address[remote] = self.per_address.get(remote, 0) + 1

    def leave(self, remote: str) -> None:
        left = self.per_address.get(remote, 1) - 1
        if left > 0:
            self.per_address[remote] = left
        else:
            self.per_address.pop(remote, None)

    async def shutdown(self) -> None:
        """Close every connection taken over from aiohttp with 1001 and wait (CLOSE_TIMEOUT at most) for
        their closing handshakes: aiohttp's own shutdown waits only for the requests it still runs."""
        for conn in list(self.live):
            conn.peer.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)
        tasks = [conn.task for conn in self.live if isinstance(conn.task, asyncio.Task)]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT + 1)


async def handle(request: web.Request, settings: Settings, rooms: Rooms, admission: Admission,
                 answer: Callable[[web.Request, BaseException], web.StreamResponse]) -> web.StreamResponse:
    # Until the client is welcomed, this coroutine is the connection's (aiohttp's request handler); then
    # `Connection.detach` takes the connection over and this returns. What its locals hold (and what
    # aiohttp caches on the request) until then is memory per connection, so it keeps only what the
    # connection needs. Nothing of ours awaits it (api.error_middleware): a refusal before the upgrade
    # is answered here, by `answer`.
    try:
        name = protocol.doc_name(request.match_info["doc"])
        if request.body_exists:  # what would follow the head: a body, or the first frames? Neither.
            raise ProtocolError("bad-request", "a WebSocket upgrade request has no body")
        if not origin_allowed(request.headers.get("Origin"), own_origin(request, admission.trusted),
                              allowed_origins(settings)):
            raise ProtocolError("forbidden", "WebSocket connections from another site's pages are refused")
        remote = client_address(request, admission.trusted)
        token = query_token(request.query_string)
        admission.check(name, remote, viewer=rooms.may_only_view(token))
    except Exception as exc:  # noqa: BLE001 - every refusal (a bug: 500, logged) in the one error shape
        return answer(request, exc)
    admission.enter(remote)
    try:
        # decode_text=False: text frames arrive as bytes and orjson checks their
        # UTF-8, so a frame that is not UTF-8 is answered with bad-json like any
        # other unreadable frame, instead of aiohttp failing the connection (1007).
        ws = Socket(protocols=(protocol.SUBPROTOCOL,), heartbeat=settings.heartbeat or None,
                    max_msg_size=settings.max_frame, compress_offers=settings.ws_compress, decode_text=False,
                    timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
    except ConnectionError:  # the client hung up before its 101 went out: nobody is left to answer, and
        admission.leave(remote)  # aiohttp lets go quietly of an answer it cannot write (not a bug of ours)
        return web.Response(status=400)
    except Exception as exc:  # noqa: BLE001 - not a WebSocket request, say (aiohttp's 400), in our shape
        admission.leave(remote)
        return answer(request, exc)
    except BaseException:
        admission.leave(remote)
        raise
    agreed = ws.agreement
    metrics = rooms.metrics
    metrics.connections.inc()
    peer = Peer(ws, request.transport, "", protocol.DEFAULT_USER, "view", remote, settings.send_buffer,
                metrics.bytes_out, outbox=admission.outbox, send_timeout=settings.send_timeout, token=token,
                deflate_min=settings.ws_compress_threshold if agreed else NO_DEFLATE,
                deflate_wbits=agreed.server_wbits if agreed else 15)
    member: Member | None = None
    detached = False
    rooms.arrive(name, peer)
    try:
        hello = await _receive_hello(ws, peer, settings)
        if hello is not None:
            if rooms.closing:
                raise ServerError(SHUTTING_DOWN, close=CLOSE_GOING_AWAY)
            peer.client_id, peer.user = hello.client_id, hello.user
            member = await rooms.join(name, peer, hello, token)
            hello = token = peer.token = None  # nothing more of them is needed (a token of 8 KB, unchecked
            # on a personal instance, was kept as long as the connection)
            _log_open(name, peer)
            conn = Connection(ws, peer, member, name, admission)
            detached = conn.detach(request)
            if not detached:  # the connection is ending already: what is left of it is read here
                await _frames(conn)
    except Exception as exc:  # noqa: BLE001 - a refusal, or a bug (logged); a cancellation goes on
        _failed(exc, peer, member, name, metrics)
    finally:
        if not detached:
            await _end(ws, peer, member, name, rooms, admission)
    return ws


def _failed(exc: Exception, peer: Peer, member: Member | None, name: str, metrics) -> None:
    """What ended a connection's reading with an exception, answered: a refusal as itself, a bug logged and
    answered `internal`."""
    if isinstance(exc, CollabError):
        if member is None and exc.close is None:  # refused at hello: the connection has nothing to do
            code = CODES[exc.code]
            exc.close = code.close or (CLOSE_PROTOCOL if code.peer else CLOSE_INTERNAL)
        refuse(peer, exc, name, metrics)
    else:
        log.error("connection to doc=%s failed", name, exc_info=exc)
        refuse(peer, ServerError("internal error", "internal"), name, metrics)


async def _end(ws: web.WebSocketResponse, peer: Peer, member: Member | None, name: str, rooms: Rooms,
               admission: Admission) -> None:
    """A connection's end, once, by whoever read it last: the closing handshake, then what counted it let go."""
    rooms.depart(name, peer)
    try:
        # Our close code must reach the client; aiohttp may cancel this
        # task once the transport is gone, so the handshake runs shielded.
        await asyncio.shield(peer.finish(CLOSE_TIMEOUT))
    finally:
        rooms.metrics.connections.dec()
        admission.leave(peer.remote)
        peer.closed = True
        transport = peer.transport
        if transport is not None and transport.get_write_buffer_size():
            # closing behind data the client does not read (it half-closed, say): cut off if it never does
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
        if member is not None:
            member.room.leave(member)
            # the code we sent when we closed it (1001 on shutdown, 4001 on takeover...), else the client's
            code = peer.close_code if peer.close_code is not None else ws.close_code
            log.info("close doc=%s session=%s code=%s", name, peer.session, code)


_IDLE = WSMessage(WSMsgType.CONTINUATION, None, None)  # queued by Connection.idle: its task may stop
_PONG = 0xA
_ENDED = object()  # Connection.task once the connection is ending: no task is started for it again


class Connection(BaseProtocol):
    """A welcomed WebSocket connection, taken over from aiohttp's request: from then on the transport's
    protocol, and the task that reads its frames while it has one.

    aiohttp serves a WebSocket from inside the request's handler: a task and a
    chain of coroutines (its connection's, its request's, the middlewares',
    ours) and the parsed upgrade request, all kept as long as the connection
    (about 5 KB of each idle one). Once the client is welcomed, `detach` makes
    this object the transport's protocol and lets aiohttp's request end. The
    frames still go through aiohttp's WebSocketResponse (its reader and queue,
    its writer, its heartbeat and closing handshake), which takes this object
    for its request and payload writer; but no task reads them until there is
    something to read: a message queued (`wake`, from the queue: `_Wakes`), the
    connection lost, or `Peer.close` ending it (`cancel`). Then `run` reads as
    ws.handle did, one frame handled before the next is read, until the
    connection ends (then it runs the closing handshake, `_end`) or aiohttp's
    heartbeat finds it silent for a whole heartbeat period (`idle`: the task
    stops; the next message starts another). With --heartbeat 0 a task, once
    started, reads until the connection ends.

    Most frames need no task at all: a text frame read while nothing is queued
    before it and no task is handling one (`reading_now`) is handled at once,
    from inside the parser (`now`): a keystroke, a cursor. Two kinds go to the
    task instead: a push that needs an await (it makes the document, waits for
    a catch-up, or is heavy: `Room.push_now`), queued parsed already; and
    every frame that comes while the rest of the client's resume goes out,
    which the task handles once it has (`Member.resumed`). Every frame read
    after one of them waits behind it, so frames are still handled in the
    order they came. In docs20x5 (bench/README.md) this took about 5% off the
    server's CPU per edit: the task's wake-up and aiohttp's receive() for
    every frame.
    """

    __slots__ = ("admission", "bucket", "member", "name", "peer", "task", "ws", "_feeding", "_timeout_ceil_threshold")

    method = "GET"  # what aiohttp's WebSocketResponse may print of its request (its repr)
    buffer_size = 0  # ... and ask of its payload writer: nothing buffered (Peer writes to the transport)

    def __init__(self, ws: Socket, peer: Peer, member: Member, name: str, admission: Admission):
        super().__init__(asyncio.get_running_loop())
        self.ws, self.peer, self.member, self.name, self.admission = ws, peer, member, name, admission
        settings = admission.settings
        self.bucket = TokenBucket(settings.rate, settings.burst)  # frames; persistent excess ends the connection
        self.task: asyncio.Task | object | None = None
        self._feeding = False  # inside data_received: what the parser makes now was just read (`reading_now`)
        self._timeout_ceil_threshold = 5

    @property
    def _protocol(self) -> Connection:  # WebSocketResponse reads its heartbeat's rounding from the request's
        return self

    @property
    def path(self) -> str:
        return f"/ws/{self.name}"

    def detach(self, request: web.Request) -> bool:
        """Take the connection over from aiohttp's request (see the class); False if it is ending already
        (then the request's handler reads what is left)."""
        handler, ws = request._protocol, self.ws
        transport = handler.transport
        if (transport is None or transport.is_closing() or not handler._upgraded or ws.closed or ws._closing
                or ws._parser is None or handler._payload_parser is not ws._parser):
            return False
        outer = transport.get_protocol()
        if outer is not handler and getattr(outer, "inner", None) is not handler:
            return False  # a protocol stacked in a way we do not know: aiohttp's request keeps it
        self.transport = transport
        self._paused, self._reading_paused, self._upgraded = handler._paused, handler._reading_paused, True
        self._timeout_ceil_threshold = handler._timeout_ceil_threshold
        if outer is handler:
            transport.set_protocol(self)
        else:  # httpguard's connection (collab serve): it forwards to us now, and still counts the connection
            outer.inner = self
        # aiohttp's side lets go: its request's task ends once ws.handle returns, without the transport to
        # close (force_close: not waiting for another request), and its server forgets the connection.
        handler.transport = None
        handler.force_close()
        handler._manager.connection_lost(handler, None)
        ws._reader._protocol = ws._writer.protocol = self  # the queue's flow control, the writer's drain
        ws._req = ws._payload_writer = self
        ws.conn = ws._reader.conn = self
        self.admission.live.add(self)
        self.peer.handler, self.peer.receiving = self, True
        if self._has_work():  # frames came while it joined
            self.wake()
        return True

    def _has_work(self) -> bool:
        ws, queue = self.ws, self.ws._reader
        return (bool(queue._buffer) or queue.is_eof() or ws.closed or ws._closing or self.peer.closed
                or self.transport is None)

    def wake(self) -> None:
        """Start the task that reads, unless there is one (or the connection is ending)."""
        if self.task is None:
            self.task = self._loop.create_task(self.run())
            self.peer.handler, self.peer.receiving = self.task, False

    def cancel(self, msg: str | None = None) -> None:
        """`Peer.close` interrupting a reader that waits for a frame (see there): with no task, one starts
        to end the connection."""
        self.wake()

    def reading_now(self) -> bool:
        """Whether a frame the parser makes now would be the next one handled: it comes from bytes just
        read (`data_received`), no task is handling one (none runs, or it waits for a frame), the rest of
        the client's resume has gone out (`Member.resumed`) and the connection is not ending.

        Not when aiohttp restarts a parser it paused (its queue was over its limit) from inside the
        task's own read: the message that read takes out of the queue is not handled yet, and the
        frames the restart parses go behind it.
        """
        ws = self.ws
        return (self._feeding and self.peer.receiving and self.member.resumed is None
                and not (self.peer.closed or ws._closing or ws._closed))

    def now(self, msg: WSMessage) -> WSMessage | None:
        """A text frame handled as it is read, from inside the parser (`_Wakes`), when nothing is queued
        before it: nearly every keystroke and cursor move, with no task woken and no coroutine. None once
        handled; or what to queue for the task, when the frame needs an await (`Room.push_now`): the
        message with its frame, counted and parsed already (`_Taken`)."""
        member = self.member
        try:
            frame = _take_frame(msg, member, self.bucket, self.admission.settings)
            if frame is None or _handle_now(frame, member):
                return None
        except Exception as exc:  # noqa: BLE001 - a bug: answered as run() answers one (the connection ends)
            _failed(exc, self.peer, member, self.name, member.room.rooms.metrics)
            return None
        return WSMessage(msg.type, None, _Taken(frame))  # its text is not needed again

    def pong(self, payload: bytes) -> None:
        """Answer a ping that came while no task reads (aiohttp's autoping, which only receive() runs): one
        whole frame, so it may come between a fragmented message's frames, as the RFC allows."""
        ws, transport = self.ws, self.transport
        if not (ws.closed or ws._closing or transport is None or transport.is_closing()):
            transport.write(frame_header(_PONG, True, len(payload)) + payload)

    def idle(self) -> None:
        """aiohttp's heartbeat sent a ping: nothing came for a heartbeat period. A task waiting for frames stops."""
        if isinstance(self.task, asyncio.Task) and self.peer.receiving and not self._has_work():
            self.ws._reader.feed_data(_IDLE, 0)

    async def run(self) -> None:
        """Read frames until the connection ends (then end it) or is idle (then stop, leaving it open)."""
        peer = self.peer
        ended = True
        try:
            ended = await _frames(self)
        except Exception as exc:  # noqa: BLE001 - a refusal, or a bug (logged); a cancellation goes on
            _failed(exc, peer, self.member, self.name, self.member.room.rooms.metrics)
        finally:
            if ended:
                try:  # this task stays `task` meanwhile: no other starts, and a shutdown waits for it
                    await _end(self.ws, peer, self.member, self.name, self.member.room.rooms, self.admission)
                finally:
                    self.task = _ENDED
                    self.admission.live.discard(self)
            else:
                self.task = None
                peer.handler, peer.receiving = self, True

    # ------------------------------------------------ the transport's protocol (aiohttp's RequestHandler's part)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws._heartbeat is not None and not (ws._closed or ws._closing):  # not re-armed once closing
            ws._on_data_received()
        parser = ws._parser
        if parser is not None:  # None once closed
            self._feeding = True
            try:
                parser.feed_data(data)
            finally:
                self._feeding = False

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        parser = self.ws._parser
        if parser is not None:
            parser.feed_eof()
        self.wake()

    async def drain(self) -> None:  # as aiohttp's StreamWriter.drain, for WebSocketResponse.close
        if self.transport is not None and self._paused:
            await self._drain_helper()


async def _frames(conn: Connection) -> bool:
    """Frames until the connection ends (True) or, detached, is idle (False), each handled before the next
    is read."""
    ws, peer, member, bucket = conn.ws, conn.peer, conn.member, conn.bucket
    settings = conn.admission.settings
    while not peer.closed:
        msg = await _receive(ws, peer)
        if msg is None:  # Peer.close interrupted the wait
            break
        if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
            await _data_frame(msg, member, bucket, settings)
            msg = None  # not kept while the next one is awaited (a frame may be a megabyte)
        elif msg is _IDLE:
            if not conn._has_work():
                return False
        elif msg.type == WSMsgType.ERROR or isinstance(ws.exception(), asyncio.TimeoutError):
            # aiohttp's heartbeat: no pong came back (an ERROR if it found us waiting, else a closed socket)
            if isinstance(ws.exception(), asyncio.TimeoutError):
                log.info("dropping session=%s: %s", peer.session, ws.exception())
                if peer.transport is not None:  # what it has not read goes too: it reads nothing
                    peer.transport.abort()
            else:
                refuse(peer, _frame_error(ws), member.room.name, member.room.rooms.metrics)
            break
        else:  # the client closed, or the connection is gone
            break
    return True


class _Taken:
    """A frame `Connection.now` counted and parsed, queued for the task because it needs an await."""

    __slots__ = ("frame",)

    def __init__(self, frame: protocol.Push):
        self.frame = frame


async def _data_frame(msg, member: Member, bucket: TokenBucket, settings: Settings) -> None:
    """A text or binary frame from a welcomed client, read by the task: once the rest of its resume has
    gone out, if it is still going out (`Member.resumed`), as `Connection.now` handles one, then what
    needs an await (`Room.push`)."""
    if member.resumed is not None:
        await member.resumed
    frame = msg.extra.frame if type(msg.extra) is _Taken else _take_frame(msg, member, bucket, settings)
    if frame is None or _handle_now(frame, member):
        return
    room = member.room
    try:
        await room.push(member, frame)
    except CollabError as exc:
        refuse(member.conn, exc, room.name, room.rooms.metrics)


def _take_frame(msg, member: Member, bucket: TokenBucket,
                settings: Settings) -> protocol.Push | protocol.Presence | None:
    """A text or binary frame, counted against the frame rate and parsed; None if refused (answered with
    an error frame, and a close when the refusal carries one)."""
    room, peer = member.room, member.conn
    metrics = room.rooms.metrics
    metrics.bytes_in.inc(len(msg.data))
    if not bucket.take(time.monotonic()):  # every data frame counts for the rate
        refuse(peer, _over_rate(bucket, settings), room.name, metrics)
        return None
    try:
        if msg.type == WSMsgType.BINARY:
            raise ProtocolError("bad-message", "frames must be UTF-8 JSON text frames")
        frame = protocol.parse(msg.data, settings.max_updates, settings.max_ranges, may_push=peer.role == "edit")
        if not isinstance(frame, (protocol.Push, protocol.Presence)):
            raise ProtocolError("bad-message", "hello was already received on this connection")
    except CollabError as exc:
        refuse(peer, exc, room.name, metrics)
        return None
    return frame


def _handle_now(frame: protocol.Push | protocol.Presence, member: Member) -> bool:
    """A parsed frame handled, unless it is a push that needs an await (False: `Room.push_now`)."""
    room = member.room
    try:
        if isinstance(frame, protocol.Presence):
            room.presence(member, frame)
        elif not room.push_now(member, frame):
            return False
    except CollabError as exc:
        refuse(member.conn, exc, room.name, room.rooms.metrics)
    return True


async def _receive(ws: web.WebSocketResponse, peer: Peer):
    """The next frame, or None when `Peer.close` interrupted the wait (see there why)."""
    peer.receiving = True
    try:
        return await ws.receive()
    except asyncio.CancelledError as exc:
        if _interrupted(peer, exc):
            return None
        raise
    finally:
        peer.receiving = False


def _interrupted(peer: Peer, exc: asyncio.CancelledError) -> bool:
    """Whether a cancelled receive() was `Peer.close`'s interrupt (else: a real cancellation, the server
    is stopping)."""
    return peer.closed and exc.args == (INTERRUPT,) and asyncio.current_task().uncancel() == 0


def _log_open(name: str, peer: Peer) -> None:
    # From a plain function: logging looks up its caller's frame, and the frame object it makes for the
    # handler's coroutine would stay as long as the connection (about 400 bytes each).
    log.info("open doc=%s session=%s client=%s role=%s addr=%s", name, peer.session, peer.client_id, peer.role,
             peer.remote)


def query_token(query_string: str) -> str | None:
    """The first `token` of a query string, as request.query.get("token") gives it (without caching the
    parsed query on the request for as long as the connection lasts)."""
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key == "token":
            return value
    return None


async def _receive_hello(ws: web.WebSocketResponse, peer: Peer, settings: Settings) -> protocol.Hello | None:
    """The hello frame; None if the connection ended first (or was closed while waiting)."""
    peer.receiving = True
    try:
        async with asyncio.timeout(settings.hello_timeout):
            msg = await _receive(ws, peer)
    except TimeoutError:
        raise ProtocolError("bad-message", "no hello", close=CLOSE_PROTOCOL) from None
    if msg is None:
        return None
    if msg.type == WSMsgType.ERROR:
        raise _frame_error(ws)
    if msg.type != WSMsgType.TEXT:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        raise ProtocolError("bad-message", "the first frame must be a JSON hello", close=CLOSE_PROTOCOL)
    try:
        return protocol.parse(msg.data, settings.max_updates, settings.max_ranges, first=True)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, close=CLOSE_PROTOCOL) from None


def refuse(peer: Peer, exc: CollabError, doc: str, metrics) -> None:
    """The one place a refusal is answered over a WebSocket: counted, logged, an `error` frame, maybe a close.

    The close code is the error's own (a frame before hello: 4000; over the
    rate limit for good: 4429; ...) or else the table's for codes that always
    end a connection (unauthorized/forbidden 1008, unavailable/internal 1011).
    Logs carry the code, never the frame's contents.
    """
    if peer.closed:
        return
    close = exc.close if exc.close is not None else CODES[exc.code].close
    metrics.errors.labels(exc.code).inc()
    log.info("error doc=%s session=%s code=%s%s", doc, peer.session, exc.code, f" close={close}" if close else "")
    peer.send(protocol.error_frame(exc.code, exc.message, exc.retry_after))
    if close:
        peer.close(close, exc.message)


def _over_rate(bucket: TokenBucket, settings: Settings) -> ProtocolError:
    if bucket.refused > settings.burst:  # ignored our errors for a whole burst's worth of frames
        return ProtocolError("rate-limited", "persistently over the rate limit", close=CLOSE_RATE_LIMITED)
    wait = bucket.wait()
    return ProtocolError("rate-limited", f"over {settings.rate:g} frames a second; this frame was dropped",
                         retry_after=wait)


def own_origin(request: web.Request, trusted: frozenset[str]) -> str:
    """This server's origin as the browser sees it (scheme from a trusted proxy if there is one)."""
    scheme = request.scheme
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer and peer[0] in trusted:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
    return f"{scheme}://{request.host}"


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(o.rstrip("/").lower() for o in entries(settings.allow_origin))


def trusted_proxies(settings: Settings) -> frozenset[str]:
    """--trusted-proxy's addresses, spelled as the socket spells a peer (see `ip_text`)."""
    return frozenset(ip_text(a) for a in entries(settings.trusted_proxy))


def _frame_error(ws: web.WebSocketResponse) -> ProtocolError:
    """A frame aiohttp could not read (too large, bad framing): the refusal, and the close it needs."""
    exc = ws.exception()
    if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
        return ProtocolError("too-large", "frame over the server's size limit", close=CLOSE_TOO_BIG)
    return ProtocolError("bad-message", f"unreadable frame: {exc}", close=CLOSE_PROTOCOL)
