"""Limits on how fast and how much: token buckets, gates and the free-disk guard. No I/O but one statvfs.

Rules that always hold:
  * a `TokenBucket` allows `rate` units a second on average and `burst` at
    once; `take(now, n)` is all or nothing, and the clock is passed in;
  * a `Gate` lets `running` callers in at once and `waiting` more wait in
    line; one more is refused at once (`unavailable`), never queued;
  * a `DiskGuard` answers from a reading at most `every` seconds old, so
    checking it on every push costs a comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

from .errors import ServerError


class TokenBucket:
    """`rate` units a second on average, `burst` at once."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "refused")

    def __init__(self, rate: float, burst: float, now: float | None = None):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now
        self.refused = 0  # refusals in a row, less one per later success

    def take(self, now: float, n: float = 1) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            self.refused = max(0, self.refused - 1)
            return True
        self.refused += 1
        return False

    def wait(self, n: float = 1) -> float:
        """Seconds until `n` units would be there (as of the last `take`)."""
        return max(0.0, (n - self.tokens) / self.rate)


class Gate:
    """At most `running` at once and `waiting` more in line, for work that holds a shared resource (a
    reader connection) long enough that a crowd of it would starve everything else using it."""

    def __init__(self, running: int, waiting: int, busy: str):
        self._slots = asyncio.Semaphore(running)
        self.waiting_max = waiting
        self.waiting = 0
        self.busy = busy  # the message of a refusal

    @contextlib.asynccontextmanager
    async def enter(self):
        if self._slots.locked() and self.waiting >= self.waiting_max:
            raise ServerError(self.busy)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


class DiskGuard:
    """Whether the filesystem holding `path` has at least `minimum` bytes free (None path: always yes)."""

    def __init__(self, path: str | Path | None, minimum: int, every: float = 1.0, clock=time.monotonic):
        self.path = Path(path) if path is not None else None
        self.minimum = minimum
        self.every = every
        self.clock = clock
        self._checked = -every
        self._ok = True
        self.free: int | None = None

    def ok(self) -> bool:
        if self.path is None or self.minimum <= 0:
            return True
        now = self.clock()
        if now - self._checked >= self.every:
            self._checked = now
            try:
                self.free = shutil.disk_usage(self.path).free
            except OSError:
                return self._ok  # the folder is gone or unreadable: keep the last answer
            self._ok = self.free >= self.minimum
        return self._ok
