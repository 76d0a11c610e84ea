"""Second audit of ws.Connection (a welcomed WebSocket taken over from aiohttp's request, at 767fe4e).

Tests whose docstring starts "Was, at 767fe4e" failed there because of the bug they describe (fixed since); the
others pin guarantees no other test checks. Every test is bounded in time (a pytest-timeout mark,
and waits with their own deadlines).
"""

from __future__ import annotations

import asyncio
import gc
import socket

import orjson
import pytest
from test_compression import Raw
from test_compression import upgrade_head
from test_detach_audit import _hello, _masked_frame, _members, _peer_of, _push, _slow_joins, _welcomed
from wsutil import until

from collab.app import ADMISSION, METRICS, create_app
from collab.settings import Settings

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------- helpers

async def _deaf_socket(loop, port: int, doc: str, client_id: str | None) -> socket.socket:
    """A raw client that sends the upgrade and its hello (none if no `client_id`) and then reads nothing (a 4 KB
    receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_head(port, doc) + (_masked_frame(_hello(client_id)) if client_id else b""))
    return sock


# ------------------------------------------------------------ 1. pongs written without flow control

async def test_pings_to_an_idle_connection_that_reads_nothing_do_not_grow_the_send_buffer(aiohttp_client, tmp_path):
    """Was, at 767fe4e: A client that pings an idle (taskless) connection as fast as it can and never reads:
    Connection.pong writes each pong straight to the transport, whatever the transport holds already
    (no flow control: neither Connection._paused nor Peer's HIGH_WATER is looked at), while the
    transport goes on reading. The server's send buffer grows by 127 bytes a 125-byte ping, without
    bound (here several MB for one connection; nothing closes it: pings reset the heartbeat, and Peer's
    send timeout only watches Peer's own queue). Before d31e10d aiohttp's receive() answered pings with
    WebSocketWriter.send_frame, which waits for the transport to drain once paused: the frame queue then
    filled, reading paused, and the client's own sends blocked."""
    app = create_app(Settings(db=str(tmp_path / "p.db")))
    client = await aiohttp_client(app)
    loop = asyncio.get_running_loop()
    sock = await _deaf_socket(loop, client.server.port, "pings", "p1")
    try:
        await until(lambda: _peer_of(app, "pings", "p1") is not None, what="welcomed")
        peer = _peer_of(app, "pings", "p1")
        await until(lambda: getattr(peer.ws, "conn", None) is not None, what="taken over")
        conn = peer.ws.conn
        peer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await until(lambda: conn.task is None, what="idle")
        ping = _masked_frame(b"p" * 125, opcode=0x9)
        chunk = ping * 2000  # 262 KB of pings a write
        largest = 0
        try:
            # Without flow control the 10.5 MB go in well under a second; with it the writes stall as soon as
            # the socket buffers are full, and this waits out the rest of the 4 s.
            async with asyncio.timeout(4):
                for _ in range(40):  # 80,000 pings, 10.5 MB, unless the server stops reading (then: fine)
                    await loop.sock_sendall(sock, chunk)
                    largest = max(largest, peer.buffered())
                    if largest > 4 << 20:
                        break
        except TimeoutError:
            pass  # the server stopped reading us: flow control works
        await asyncio.sleep(0.2)
        largest = max(largest, peer.buffered())
        assert largest < 1 << 20, (f"{largest} bytes of pongs wait in the server's send buffer of one connection "
                                   f"that reads nothing (task={conn.task}): no flow control on Connection.pong")
    finally:
        sock.close()


# ------------------------------------------------- 2. a client that half-closes while idle, with unsent data

def _socket_closed(transport) -> bool:
    sock = transport.get_extra_info("socket")
    return sock is None or sock.fileno() == -1


async def _pinged_reader(raw: Raw, inbox: asyncio.Queue) -> None:
    """Reads `raw` for good: answers pings, queues text frames."""
    while True:
        _, _, opcode, payload = await raw.frame(timeout=60)
        if opcode == 0x9:
            raw.send(payload, opcode=0xA)
        elif opcode == 0x1:
            await inbox.put(orjson.loads(payload))
        elif opcode == 0x8:
            return


async def test_an_idle_client_that_half_closes_without_reading_is_let_go_and_its_socket_closed(aiohttp_client, tmp_path):
    """Was, at 767fe4e: An idle (taskless) client that stopped reading while broadcasts were written to it sends
    FIN. The transport's eof_received (Connection inherits asyncio.Protocol's: None) makes the transport
    close itself, which waits for its unsent data to drain: against a zero window, for ever, so
    connection_lost never comes. aiohttp's next heartbeat ping fails ("Cannot write to closing
    transport"), _handle_ping_pong_exception wakes the Connection, whose task ends the session (it leaves
    its room) but, the exception being no TimeoutError, _frames does not abort the transport (ws.py
    `_frames`: only a heartbeat *timeout* aborts) and peer.finish has no close code to send: the socket,
    its file descriptor, its unsent bytes (and under `collab serve` its --max-connections slot, held by
    httpguard's wrapper until connection_lost, with the Connection as its `inner`) stay for good. Not new:
    this test fails the same way at 06b274a (the request's handler ended it the same way)."""
    app = create_app(Settings(db=str(tmp_path / "h.db"), heartbeat=1.0))
    client = await aiohttp_client(app)
    port = client.server.port
    loop = asyncio.get_running_loop()
    writer_raw, welcome = await _welcomed(port, "half", "w")
    inbox: asyncio.Queue = asyncio.Queue()
    reading = asyncio.create_task(_pinged_reader(writer_raw, inbox))
    version = welcome["version"]
    sock = await _deaf_socket(loop, port, "half", "a")
    try:
        await until(lambda: _peer_of(app, "half", "a") is not None, what="A welcomed")
        peer = _peer_of(app, "half", "a")
        await asyncio.sleep(0.2)
        conn = getattr(peer.ws, "conn", None)  # (None before d31e10d: aiohttp's request serves it)
        transport = peer.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for i in range(3):  # 3 broadcasts of 40 KB, written at once to A's transport
            changes = [[0, "x" * 40_000]] if i == 0 else [40_000 * i, [0, "x" * 40_000]]
            writer_raw.send(_push(version, "w", changes))
            while (await asyncio.wait_for(inbox.get(), 10))["type"] != "updates":
                pass
            version += 1
        await asyncio.sleep(0.1)
        assert peer.buffered() > 0, "precondition: data waits in A's transport"
        assert conn is None or conn.task is None, "precondition: A is idle"
        sock.shutdown(socket.SHUT_WR)  # FIN; A still reads nothing
        try:
            await until(lambda: "a" not in _members(app, "half") and _socket_closed(transport), timeout=12,
                         what="A let go and its socket closed")
        except AssertionError:
            raise AssertionError(
                f"members={_members(app, 'half')}, task={conn and conn.task}, "
                f"ws closed={peer.ws.closed} exception={peer.ws.exception()!r}, "
                f"transport closing={transport.is_closing()} socket closed={_socket_closed(transport)}, "
                f"{transport.get_write_buffer_size()} bytes unsent") from None
        assert _members(app, "half") == ["w"] and not reading.done()
    finally:
        sock.close()
        reading.cancel()
        writer_raw.close()


# ---------------------------------------------- 3. collab serve: idle connections ending every way give their slot back

def test_idle_connections_ending_every_way_give_their_connection_slot_back_under_collab_serve(tmp_path):
    """PASSES (pins, under `collab serve` (uvloop, httpguard's wrapper forwarding to the Connection): an
    idle taken-over connection that the client half-closes (FIN: eof_received forwarded to the
    Connection), resets, lets the heartbeat time out (its socket left open), or that a newer connection
    with its clientID replaces (4001), ends and gives its --max-connections slot back: with
    --max-connections 5, three rounds that each need all 5 slots at once all get them.)"""
    from serverproc import ServerProcess
    server = ServerProcess(tmp_path / "slots.db", extra_args=["--max-connections", "5", "--heartbeat", "0.5"])
    server.start()

    async def scenario() -> None:
        deafs = []
        try:
            for round_ in range(3):
                fin, _ = await _welcomed(server.port, "slots", f"fin{round_}")
                rst, _ = await _welcomed(server.port, "slots", f"rst{round_}")
                deaf, _ = await _welcomed(server.port, "slots", f"deaf{round_}")
                deafs.append(deaf)  # never answers a ping, never closes: the heartbeat must drop it
                old, _ = await _welcomed(server.port, "slots", f"same{round_}")
                await asyncio.sleep(0.2)  # taken over, idle
                new, _ = await _welcomed(server.port, "slots", f"same{round_}")  # the 5th slot
                assert await old.closed() == 4001
                old.send((4001).to_bytes(2, "big"), opcode=0x8)
                await asyncio.wait_for(old.reader.read(), 10)
                old.close()
                fin.writer.write_eof()  # FIN, and read on: the server ends its side
                await asyncio.wait_for(fin.reader.read(), 10)
                fin.close()
                rst.writer.transport.abort()
                new.send((1000).to_bytes(2, "big"), opcode=0x8)
                assert await new.closed() == 1000
                await asyncio.wait_for(new.reader.read(), 10)
                new.close()
                await asyncio.sleep(1.5)  # deaf: a ping, no pong within 0.25 s: dropped
        finally:
            for deaf in deafs:
                deaf.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    except Exception as exc:
        raise AssertionError(f"{exc!r}\n{server.log()[-3000:]}") from exc
    finally:
        server.kill()


# ------------------------------------------ 4. a closed connection's heartbeat re-armed by the client's close frame

async def test_a_closed_connection_keeps_no_heartbeat_timer(aiohttp_client, tmp_path):
    """Was, at 767fe4e (minor; at 06b274a too): The server closes an idle connection (Peer.close, here 1008); the client's close
    frame that completes the handshake reaches Connection.data_received, which calls
    ws._on_data_received() even though the WebSocket is closed: aiohttp's heartbeat is re-armed
    (_reset_heartbeat schedules _send_heartbeat) on a closed connection. The loop's timer then holds the
    Socket, and through it the Connection, its Peer, its room Member and its buffers, for a heartbeat
    period (20 s by default), then a pong timeout (10 s more) after a ping that fails on the closed
    transport: every connection ended by the server outlives its end by ~30 s (a reconnect storm of N
    clients holds N dead connections), and gc cannot free them. Not new: aiohttp's RequestHandler did the
    same through its data_received_cb; this test fails the same way at 06b274a."""
    app = create_app(Settings(db=str(tmp_path / "t.db"), heartbeat=5.0))
    client = await aiohttp_client(app)
    raw, _ = await _welcomed(client.server.port, "timer", "t1")
    peer = _peer_of(app, "timer", "t1")
    ws = peer.ws
    await asyncio.sleep(0.1)
    peer.close(1008, "bye")
    assert await raw.closed() == 1008
    raw.send((1008).to_bytes(2, "big"), opcode=0x8)
    await asyncio.wait_for(raw.reader.read(), 10)
    raw.close()
    await until(lambda: not getattr(app[ADMISSION], "live", ()) and not _members(app, "timer"), what="let go")
    await asyncio.sleep(0.1)
    assert ws.closed
    assert ws._heartbeat_cb is None and ws._pong_response_cb is None, (
        f"a closed connection has a heartbeat timer: {ws._heartbeat_cb or ws._pong_response_cb}")


# ------------------------------------------------------ 5. taken over while the transport is paused for writing

async def test_taken_over_while_paused_for_writing_then_served(aiohttp_client, tmp_path, caplog):
    """PASSES (pins Connection.detach while the transport is paused for writing: a 900 KB welcome to a
    client that reads nothing yet; the Connection takes over the paused state, the transport's
    resume_writing reaches it (its assertion holds: nothing logged by asyncio), the client then reads
    the whole welcome, pushes, and closes cleanly.)"""
    caplog.set_level("WARNING")
    app = create_app(Settings(db=str(tmp_path / "w.db")))
    client = await aiohttp_client(app)
    port = client.server.port
    maker, welcome = await _welcomed(port, "paused", "m")
    text = "".join(f"{i:07d} " for i in range(110_000))  # 880 KB
    maker.send(_push(welcome["version"], "m", [[0, text]]))
    await maker.typed("updates")
    maker.send((1000).to_bytes(2, "big"), opcode=0x8)
    await maker.closed()
    maker.close()
    loop = asyncio.get_running_loop()
    sock = await _deaf_socket(loop, port, "paused", None)  # the upgrade only
    try:
        def ours():  # the server's end of `sock`
            return [h.transport for h in client.server.runner.server.connections if h.transport is not None
                    and h.transport.get_extra_info("peername")[1] == sock.getsockname()[1]]

        await until(ours, what="the upgrade request")
        ours()[0].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await loop.sock_sendall(sock, _masked_frame(_hello("p")))
        await until(lambda: _peer_of(app, "paused", "p") is not None, what="welcomed")
        peer = _peer_of(app, "paused", "p")
        await until(lambda: getattr(peer.ws, "conn", None) is not None, what="taken over")
        conn = peer.ws.conn
        await asyncio.sleep(0.3)
        assert conn._paused and peer.writer is not None, "precondition: paused for writing, the welcome queued"
        sock.setblocking(True)
        reader, writer = await asyncio.open_connection(sock=sock)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        raw = Raw(reader, writer, head.decode())
        got, _, _ = await raw.typed("welcome", timeout=20)
        assert got["doc"] == text
        assert not conn._paused
        raw.send(_push(got["version"], "p", [len(text), [0, "!"]]))
        assert (await raw.typed("updates"))[0]["updates"][0]["changes"] == [len(text), [0, "!"]]
        raw.send((1000).to_bytes(2, "big"), opcode=0x8)
        assert await raw.closed() == 1000
        await asyncio.wait_for(raw.reader.read(), 10)
        raw.close()
        await until(lambda: conn not in app[ADMISSION].live, what="let go")
    finally:
        sock.close()
    bad = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not bad, bad


# ------------------------------------------------ 6. taken over with the client's close frame already queued

async def test_a_close_frame_sent_with_the_hello_is_answered_once_taken_over(aiohttp_client, tmp_path):
    """PASSES (pins Connection.detach with the client's close frame already in the frame queue (it came
    right behind the hello while the document loaded): the welcome, then our close frame, then the
    server's end of TCP; the session is let go and counted out.)"""
    app = create_app(Settings(db=str(tmp_path / "c.db")))
    _slow_joins(app, 0.3)
    client = await aiohttp_client(app)
    port = client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_head(port, "early") + _masked_frame(_hello("e1"))
                 + _masked_frame((4321).to_bytes(2, "big"), opcode=0x8))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 101")
    raw = Raw(reader, writer, "")
    try:
        assert (await raw.typed("welcome"))[0]["type"] == "welcome"
        assert await raw.closed() == 1000  # aiohttp answers a client's close with 1000
        await asyncio.wait_for(reader.read(), 10)
    finally:
        raw.close()
    await until(lambda: not app[ADMISSION].live and not app[ADMISSION].per_address and not _members(app, "early"),
                 what="let go")
    assert app[METRICS].connections._value.get() == 0


async def test_a_replaced_client_that_reads_nothing_has_its_socket_closed(aiohttp_client, tmp_path):
    """PASSES (pins: an idle client that stopped reading, with a few KB unsent (under the high-water mark,
    so not paused), replaced by a newer connection with its clientID, has its socket aborted, not left
    closing for ever against a zero window. It holds only because Peer.finish's asyncio.timeout
    (CLOSE_TIMEOUT) starts just before, and so fires before, ws.close()'s own (Socket's timeout=CLOSE_TIMEOUT):
    aiohttp's, caught inside ws.close(), would only *close* the transport and Peer.finish would not abort.
    Make the two differ, or catch it in ws.close, and this fails.)"""
    app = create_app(Settings(db=str(tmp_path / "r.db")))
    client = await aiohttp_client(app)
    port = client.server.port
    loop = asyncio.get_running_loop()
    writer_raw, welcome = await _welcomed(port, "replace", "w")
    sock = await _deaf_socket(loop, port, "replace", "a")
    new = None
    try:
        await until(lambda: _peer_of(app, "replace", "a") is not None, what="A welcomed")
        peer = _peer_of(app, "replace", "a")
        await until(lambda: getattr(peer.ws, "conn", None) is not None, what="A taken over")
        conn, transport = peer.ws.conn, peer.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer_raw.send(_push(welcome["version"], "w", [[0, "x" * 40_000]]))
        await writer_raw.typed("updates")
        await asyncio.sleep(0.2)
        assert 0 < peer.buffered() < 64 * 1024 and not conn._paused and conn.task is None, (
            f"precondition: A idle, {peer.buffered()} bytes unsent, paused={conn._paused}")
        new, _ = await _welcomed(port, "replace", "a")  # replaces A (4001)
        try:
            await until(lambda: _socket_closed(transport), timeout=12, what="A's socket closed")
        except AssertionError:
            raise AssertionError(
                f"A replaced {peer.close_code}, members={_members(app, 'replace')}, task={conn.task}, "
                f"ws closed={peer.ws.closed} exception={peer.ws.exception()!r}, transport closing="
                f"{transport.is_closing()}, {transport.get_write_buffer_size()} bytes unsent: the socket stays") from None
    finally:
        sock.close()
        writer_raw.close()
        if new is not None:
            new.close()


# ----------------------------------------------------------------- 7. nothing keeps ended connections alive

async def test_ended_connections_are_all_freed(aiohttp_client, tmp_path):
    """PASSES (pins: once connections have ended, every way (the client's close, a reset, our close, a
    takeover, the heartbeat's timeout, idle or with a task), nothing global keeps their Connection (nor its
    Socket, Peer, buffers) alive: not Admission.live, aiohttp's shared background-send set, the loop's
    timers (after the heartbeat re-armed by a closing handshake has run out: see
    test_a_closed_connection_keeps_no_heartbeat_timer), nor the tasks. They are cycles, freed by the
    cyclic GC, not by reference counts.)"""
    from collab.ws import Connection
    # Every connection must still be open when its turn below comes: the ones welcomed first answer no
    # ping until then, so the heartbeat would drop them heartbeat * 1.5 s after their welcome. The
    # set-up takes about 0.16 s; at 0.5 s a whole-suite run once took longer (a pong written to a socket
    # the heartbeat had closed: BrokenPipeError), so the heartbeat leaves 2.25 s.
    heartbeat = 1.5
    app = create_app(Settings(db=str(tmp_path / "g.db"), heartbeat=heartbeat))
    client = await aiohttp_client(app)
    port = client.server.port
    admission = app[ADMISSION]

    def ours() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is Connection and o.admission is admission)

    raws = []
    for i in range(24):
        raw, welcome = await _welcomed(port, "gc", f"g{i}")
        raws.append(raw)
    for i, raw in enumerate(raws[:12]):  # half of them with a task reading
        raw.send(_push(welcome["version"] + i, f"g{i}", [[0, "a"]] if i == 0 else [i, [0, "a"]]))
        await raw.typed("updates")
    answering = []
    for i, raw in enumerate(raws):
        kind = i % 6
        if kind == 0:  # the client closes
            raw.send((1000).to_bytes(2, "big"), opcode=0x8)
            await raw.closed()
            raw.close()
        elif kind == 1:  # reset
            raw.writer.transport.abort()
        elif kind == 2:  # we close
            _peer_of(app, "gc", f"g{i}").close(1008, "bye")
            assert await raw.closed() == 1008
            raw.send((1008).to_bytes(2, "big"), opcode=0x8)
            answering.append(raw)
        elif kind == 3:  # replaced
            new, _ = await _welcomed(port, "gc", f"g{i}")
            assert await raw.closed() == 4001
            raw.send((4001).to_bytes(2, "big"), opcode=0x8)
            answering += [raw]
            new.send((1000).to_bytes(2, "big"), opcode=0x8)
            await new.closed()
            answering.append(new)
        elif kind == 4:  # FIN
            raw.writer.write_eof()
            answering.append(raw)
        # kind 5: never answers a ping: the heartbeat drops it
    await until(lambda: not admission.live and not admission.per_address, timeout=10, what="all let go")
    for raw in raws + answering:
        raw.close()
    await asyncio.sleep(1.5 * heartbeat + 0.45)  # a heartbeat and its pong timeout, re-armed after a handshake
    gc.collect()
    assert ours() == 0, f"{ours()} ended connections are still alive"
