"""Peer's outbound side alone, over a fake transport whose buffer the test fills and drains."""

from __future__ import annotations

import asyncio

from collab.peer import HIGH_WATER, Outbox, Peer


class FakeTransport:
    """What Peer uses of an asyncio transport; `buffered` is what the kernel has not taken yet."""

    def __init__(self, buffered: int = 0):
        self.buffered = buffered
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, pieces) -> None:
        self.written.append(b"".join(pieces))

    def abort(self) -> None:
        pass


async def test_a_writer_woken_after_the_client_closed_writes_nothing_and_counts_nothing_twice():
    """Was: when the client closed first, finish() released the queue but left the writer task waiting
    for room in the socket; woken, it wrote the frame anyway and took its cost off the counts a second
    time (the process's budget drifted below zero for good) and then failed on the released queue."""
    transport, outbox = FakeTransport(buffered=HIGH_WATER + 1), Outbox(1 << 30)
    peer = Peer(None, transport, "c", {}, "edit", "127.0.0.1", 1 << 20, outbox=outbox)
    peer.send(b"x" * 1000)  # the socket is full: queued, and a writer waits for room
    await asyncio.sleep(0.01)
    assert (peer.queued, outbox.queued, transport.written) == (1000, 1000, [])
    await peer.finish(1.0)  # the client closed by itself: no close code of ours
    transport.buffered = 0  # the socket drains
    await asyncio.sleep(0.2)
    assert (peer.queued, outbox.queued, transport.written, peer.writer) == (0, 0, [], None)
    assert peer.closed


async def test_documents_held_by_queued_welcomes_count_once_each_against_the_process_budget():
    """Was: a welcome's document JSON (shared by every welcome of its version) counted nowhere, so welcomes
    of ever-new versions queued for clients that do not read each held a copy of the document unbounded
    by --max-buffered. Now each document queued frames hold counts once, however many frames share it."""
    outbox = Outbox(10_000)
    transports = [FakeTransport(buffered=HIGH_WATER + 1) for _ in range(4)]
    peers = [Peer(None, t, f"c{k}", {}, "edit", "127.0.0.1", 1 << 20, outbox=outbox)
             for k, t in enumerate(transports)]
    v1, v2 = b'"' + b"a" * 3000 + b'"', b'"' + b"b" * 3000 + b'"'
    peers[0].send((b'{"type":"welcome","doc":', v1, b"}"))
    peers[1].send((b'{"type":"welcome","doc":', v1, b"}"))  # the same version: the same bytes, counted once
    await asyncio.sleep(0.01)
    assert outbox.queued == 2 * (24 + 1) + len(v1)
    assert peers[0].queued == peers[1].queued == 25  # a peer's own share stays what it alone holds
    peers[2].send((b'{"type":"welcome","doc":', v2, b"}"))  # a later version: another copy
    await asyncio.sleep(0.01)
    assert outbox.queued == 3 * 25 + len(v1) + len(v2)
    peers[3].send((b'{"type":"welcome","doc":', b'"' + b"c" * 4000 + b'"', b"}"))  # over the budget: 1013
    assert peers[3].closed and peers[3].close_code == 1013 and not any(p.closed for p in peers[:3])
    assert outbox.queued == 3 * 25 + len(v1) + len(v2)
    for transport in transports:
        transport.buffered = 0
    await asyncio.sleep(0.3)
    assert outbox.queued == 0 and [p.queued for p in peers[:3]] == [0, 0, 0]
    assert [len(t.written) for t in transports[:3]] == [1, 1, 1]
