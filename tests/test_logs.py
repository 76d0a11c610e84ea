"""logs.Throttle: one warning now and then during an outage, and how many were left out."""

from __future__ import annotations

import logging

from collab import logs


def test_a_throttle_logs_once_per_period_and_counts_what_it_left_out(caplog):
    now = [100.0]
    throttle = logs.Throttle(logging.getLogger("collab.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="collab.test"):
        assert throttle.warning("down: %s", "a")
        now[0] += 9.9
        assert not throttle.warning("down: %s", "b")
        assert not throttle.warning("down: %s", "c")
        now[0] += 0.1
        assert throttle.warning("down: %s", "d")
        now[0] += 10.0
        assert throttle.warning("down: %s", "e")
    assert [r.getMessage() for r in caplog.records] == [
        "down: a", "down: d (and 2 more like it since the last one, not logged)", "down: e"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
