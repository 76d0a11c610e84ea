"""Metrics: what an operator watches, through prometheus-client.

One registry per app (so several apps in one test process do not collide).
The figures are recorded where they happen (ws.py, room.py, peer.py,
cluster.py, and api.py's `error_answer` for refusals) through the `Metrics`
object; /metrics renders them in Prometheus' text format and
/status shows the same figures live over a WebSocket for people without
Prometheus.

The figures counted per frame or per update (`Tally`, `Spread`) are plain
attributes bumped without a lock and handed to prometheus-client as a
collector when it renders: its own Counter and Histogram take a lock on every
call, a sixteenth of the event loop's time on a busy document. So they may
only be bumped from the event loop's thread (they are); the rare figures stay
prometheus-client's own.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Tally:
    """A counter for the event loop's thread alone (exposed as `<name>_total`)."""

    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help: str):
        self.name, self.help, self.value = name, help, 0

    def inc(self, n: float = 1) -> None:
        self.value += n

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.help, value=self.value)


class Spread:
    """A histogram for the event loop's thread alone: a bucket count per upper bound (`le`), and a sum."""

    __slots__ = ("bounds", "counts", "help", "name", "sum")

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help = name, help
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(self.name, self.help, buckets=cumulative, sum_value=self.sum)


class _Hot:
    """The Tallies and Spreads of one registry, read when it renders."""

    def __init__(self, registry: CollectorRegistry):
        self.figures: list = []
        registry.register(self)

    def add(self, figure):
        self.figures.append(figure)
        return figure

    def collect(self):
        return [f.family() for f in self.figures]

    def describe(self):
        return self.collect()


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("collab_connections", "Open WebSocket connections", registry=r)
        self.documents = Gauge("collab_documents_loaded", "Documents open in memory", registry=r)
        hot = _Hot(r)
        self.accepted = hot.add(Tally("collab_updates_accepted", "Updates made durable and broadcast"))
        self.rebase_distance = hot.add(Spread("collab_rebase_distance", "Accepted updates a push was rebased over",
                                              (0, 1, 2, 4, 8, 16, 32, 64, 128, 512, 2048)))
        self.commit_seconds = hot.add(Spread("collab_commit_seconds", "Time from taking a batch to its COMMIT",
                                             _FAST))
        self.commit_batch = hot.add(Spread("collab_commit_batch_size", "Updates of one document per commit",
                                           (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)))
        self.fanout_seconds = hot.add(Spread("collab_broadcast_seconds", "Time to hand one batch to every peer",
                                             _FAST))
        self.conflicts = Counter("collab_conflicts", "Commits lost to another process that committed the "
                                 "same document first (pushes sequenced again)", registry=r)
        self.commit_failures = Counter("collab_commit_failures", "Commits of a document that failed (it reloads; "
                                       "its pushers resend), by reason: `unavailable` (the database cannot be "
                                       "used right now) or `error`", ["reason"], registry=r)
        for reason in ("unavailable", "error"):  # at 0 from the start: a healthy server shows what to alert on
            self.commit_failures.labels(reason)
        self.catchup_reads = Counter("collab_catchup_reads", "Reads of updates other processes committed "
                                     "(after a lost commit, a gap, or a check)", registry=r)
        self.bus_up = Gauge("collab_bus_up", "1 while Redis (--redis) is heard (it confirmed this process's "
                            "subscriptions)", registry=r)
        self.bus_gaps = Counter("collab_bus_gaps", "Messages from other processes that jumped ahead "
                                "(the missing updates were read from the database)", registry=r)
        self.bus_received = Counter("collab_bus_received", "Messages received from other processes", registry=r)
        self.bus_published = Counter("collab_bus_published", "Messages published to other processes", registry=r)
        self.bus_dropped = Counter("collab_bus_dropped", "Messages not published: Redis down, refusing them, or "
                                   "too slow (the other processes' database checks make updates good)", registry=r)
        self.errors = Counter("collab_protocol_errors", "Refused frames and requests, by error code",
                              ["code"], registry=r)
        self.bytes_in = hot.add(Tally("collab_bytes_in", "WebSocket message bytes received (after decompression)"))
        self.bytes_out = hot.add(Tally("collab_bytes_out", "WebSocket message bytes sent (before compression)"))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> dict:
        """The figures as plain numbers, for the /status page."""
        out: dict = {}
        for family in text_string_to_metric_families(self.render().decode()):
            for sample in family.samples:
                if sample.name.endswith(("_bucket", "_created")):
                    continue
                key = sample.name + ("" if not sample.labels else
                                     "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}")
                out[key] = sample.value
        return out
