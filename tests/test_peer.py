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
