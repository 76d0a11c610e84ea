"""Metrics: what an operator watches, through prometheus-client.

One registry per app (so several apps in one test process do not collide).
The figures are recorded where they happen (ws.py, room.py) through the
`Metrics` object; /metrics renders them in Prometheus' text format and /status
shows the same figures live over a WebSocket for people without Prometheus.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("collab_connections", "Open WebSocket connections", registry=r)
        self.documents = Gauge("collab_documents_loaded", "Documents open in memory", registry=r)
        self.accepted = Counter("collab_updates_accepted", "Updates made durable and broadcast", registry=r)
        self.rebase_distance = Histogram(
            "collab_rebase_distance", "Accepted updates a push was rebased over",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 512, 2048), registry=r)
        self.commit_seconds = Histogram("collab_commit_seconds", "Time from taking a batch to its COMMIT",
                                        buckets=_FAST, registry=r)
        self.commit_batch = Histogram("collab_commit_batch_size", "Updates of one document per commit",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), registry=r)
        self.fanout_seconds = Histogram("collab_broadcast_seconds", "Time to hand one batch to every peer",
                                        buckets=_FAST, registry=r)
        self.conflicts = Counter("collab_conflicts", "Commits lost to another process that committed the "
                                 "same document first (pushes sequenced again)", registry=r)
        self.catchup_reads = Counter("collab_catchup_reads", "Reads of updates other processes committed "
                                     "(after a lost commit, a gap, or a check)", registry=r)
        self.bus_up = Gauge("collab_bus_up", "1 while Redis (--redis) is reachable", registry=r)
        self.bus_gaps = Counter("collab_bus_gaps", "Messages from other processes that jumped ahead "
                                "(the missing updates were read from the database)", registry=r)
        self.bus_received = Counter("collab_bus_received", "Messages received from other processes", registry=r)
        self.bus_published = Counter("collab_bus_published", "Messages published to other processes", registry=r)
        self.errors = Counter("collab_protocol_errors", "Refused frames and requests, by error code",
                              ["code"], registry=r)
        self.bytes_in = Counter("collab_bytes_in", "WebSocket payload bytes received", registry=r)
        self.bytes_out = Counter("collab_bytes_out", "WebSocket payload bytes sent", registry=r)

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
