"""Logging helpers: JSON-lines formatting for `--log-json`, and `Throttle`, which keeps a passing
outage (a database or a resource that cannot be used for a while) to one warning now and then instead
of one per request or per document."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import orjson

QUIET_FOR = 10.0  # seconds: at most one warning of a kind per this long


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class Throttle:
    """`warning(msg, *args)` logs to `logger` at most one line per `every` seconds; the lines left out
    in between are counted, and the next line logged says how many there were. Safe to share between
    threads (it is called only when something fails, so its lock costs nothing that matters)."""

    __slots__ = ("logger", "every", "_clock", "_quiet_until", "_left_out", "_lock")

    def __init__(self, logger: logging.Logger, every: float = QUIET_FOR,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.every = every
        self._clock = clock
        self._quiet_until = float("-inf")
        self._left_out = 0
        self._lock = threading.Lock()

    def warning(self, msg: str, *args) -> bool:
        """Log `msg % args` as a warning unless one was logged less than `every` seconds ago; True if logged."""
        with self._lock:
            now = self._clock()
            if now < self._quiet_until:
                self._left_out += 1
                return False
            self._quiet_until = now + self.every
            left_out, self._left_out = self._left_out, 0
        if left_out:
            msg, args = msg + " (and %d more like it since the last one, not logged)", (*args, left_out)
        self.logger.warning(msg, *args)
        return True
