"""``/metrics``: the worker's numbers in Prometheus text format.

Nothing on the hot path touches ``prometheus_client``: the event counters
are plain integers (``actors.counters``) and everything else is measured by
the ``QueueMonitor``. ``SnapshotCollector`` turns the monitor's latest
published snapshot (``Board.latest``, at most one interval old) into metric
families when Prometheus scrapes, in the HTTP thread; each worker has its own
``CollectorRegistry`` (``registry_for``) with the standard process collector
beside it. In a cluster, ``ClusterCollector`` adds the nodes by state (this
worker's replica of the cluster directory) and, on the node's gateway
(worker 0, the one that ships and applies), its outbound queue.
docs/operations.md lists every name.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import exposition, generate_latest
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily,
                                    GaugeHistogramMetricFamily, GaugeMetricFamily, Metric)
from prometheus_client.process_collector import ProcessCollector

from actors.queue_sample import MAILBOX_BUCKETS, OFFLINE_BUCKETS

__all__ = ["SnapshotCollector", "ClusterCollector", "registry_for", "render", "CONTENT_TYPE"]

P = "switchboard_"
# Every name here is a classic one (no dots, no UTF-8), so the output is the
# 0.0.4 text format that every Prometheus version reads; say so.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)
_COUNTERS = {
    "frames_in": "Wire frames received from clients",
    "frames_out": "Wire frames sent to clients",
    "bytes_in": "Bytes received from client sockets",
    "bytes_out": "Bytes written to client sockets",
    "messages_in": "Chat messages stored (accepted from a sender)",
    "messages_out": "Chat messages pushed to their recipient",
    "dead_letters": "Casts to actors that had already exited",
    "overload_kills": "Actors killed by the overload killer",
}


def _gauge(name: str, doc: str, value: float, **labels: str) -> Metric:
    family = GaugeMetricFamily(P + name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _buckets(bounds: tuple[int, ...], cumulative: list[int],
             total: int | None = None) -> list[tuple[str, float]]:
    """Prometheus buckets; ``total`` (every observation, those past the last
    bound too) is ``+Inf``, else the last bucket's count."""
    pairs = [(str(b), float(n)) for b, n in zip(bounds, cumulative)]
    if total is None:
        total = cumulative[-1] if cumulative else 0
    return pairs + [("+Inf", float(total))]


class SnapshotCollector:
    """A custom collector over a ``Board`` (see the module docstring)."""

    def __init__(self, board: Any):
        self.board = board

    def collect(self) -> Iterator[Metric]:
        snap = self.board.latest
        if snap is None:
            return
        yield from self._actors(snap)
        yield from self._counters(snap)
        yield from self._storage(snap)
        yield from self._alerts(snap)
        process = snap["process"]
        yield _gauge("loop_lag_seconds", "How late the monitor's last timer ran",
                     process["loop_lag_ms"] / 1000)
        yield _gauge("monitor_sample_seconds", "What the last sampling pass cost",
                     process["sample_ms"] / 1000)
        yield from self._mesh(snap.get("mesh"))

    def _mesh(self, mesh: dict[str, Any] | None) -> Iterator[Metric]:
        if mesh is None:
            return
        yield _gauge("mesh_peers", "Other workers of this node in the mesh", len(mesh["peers"]))
        yield _gauge("mesh_remote_users", "Users with a session on another worker",
                     mesh["remote_users"])
        for name, doc in (("sent_items", "Chat events sent to other workers"),
                          ("received_items", "Chat events received from other workers"),
                          ("sent_batches", "Batches (Thespian messages) sent to other workers")):
            family = CounterMetricFamily(P + "mesh_" + name, doc)
            family.add_metric([], mesh[name])
            yield family

    def _actors(self, snap: dict[str, Any]) -> Iterator[Metric]:
        info = GaugeMetricFamily(P + "worker_info", "This worker process",
                                 labels=["worker", "pid"])
        info.add_metric([str(snap["worker"]), str(snap["pid"])], 1)
        yield info
        yield _gauge("connections", "Open client TCP connections", snap["connections"])
        actors = GaugeMetricFamily(P + "actors", "Live light actors", labels=["kind"])
        queued = GaugeMetricFamily(P + "mailbox_queued", "Messages waiting in mailboxes",
                                   labels=["kind"])
        longest = GaugeMetricFamily(P + "mailbox_max", "The longest mailbox", labels=["kind"])
        hist = GaugeHistogramMetricFamily(
            P + "mailbox_length", "Actors by current mailbox length", labels=["kind"])
        for kind, k in sorted(snap["kinds"].items()):
            actors.add_metric([kind], k["count"])
            queued.add_metric([kind], k["queued"])
            longest.add_metric([kind], k["max"])
            hist.add_metric([kind], _buckets(MAILBOX_BUCKETS, k["buckets"]), k["queued"])
        yield from (actors, queued, longest, hist)

    def _counters(self, snap: dict[str, Any]) -> Iterator[Metric]:
        totals = snap["totals"]
        for name, doc in _COUNTERS.items():
            family = CounterMetricFamily(P + name, doc)
            family.add_metric([], totals.get(name, 0))
            yield family
        restarts = CounterMetricFamily(P + "supervisor_restarts",
                                       "Child restarts, per supervisor and child",
                                       labels=["supervisor", "child"])
        for row in snap["restarts"]:
            restarts.add_metric([row["supervisor"], row["child"]], row["count"])
        yield restarts

    def _storage(self, snap: dict[str, Any]) -> Iterator[Metric]:
        store = snap.get("storage")
        if store:
            for name, key, doc in (("store_ops", "ops", "Write ops committed"),
                                   ("store_commits", "batches", "Write transactions committed"),
                                   ("store_failed_ops", "failed_ops", "Write ops rolled back")):
                family = CounterMetricFamily(P + name, doc)
                family.add_metric([], store[key])
                yield family
            yield _gauge("store_pending", "Write ops submitted, not yet in a batch",
                         store["pending"])
            latency = GaugeMetricFamily(
                P + "store_commit_latency_seconds",
                "Commit latency over the last 1024 batches", labels=["quantile"])
            latency.add_metric(["0.5"], store["median_commit_ms"] / 1000)
            latency.add_metric(["0.99"], store["p99_commit_ms"] / 1000)
            yield latency
        offline = snap.get("offline")
        if offline:
            yield _gauge("offline_users", "Users with items waiting in their inbox",
                         offline["users"])
            yield _gauge("offline_messages", "Messages waiting in inboxes", offline["messages"])
            yield _gauge("offline_receipts", "Receipts waiting in inboxes", offline["receipts"])
            hist = GaugeHistogramMetricFamily(P + "offline_queue_length",
                                              "Users by inbox length (items waiting)")
            hist.add_metric([], _buckets(OFFLINE_BUCKETS, offline["buckets"], offline["rows"]),
                            offline["messages"] + offline["receipts"])
            yield hist

    def _alerts(self, snap: dict[str, Any]) -> Iterator[Metric]:
        active = GaugeMetricFamily(P + "alerts_active", "Queue alerts raised now",
                                   labels=["kind"])
        raised = CounterMetricFamily(P + "alerts_raised", "Queue alerts raised",
                                     labels=["kind"])
        for kind in ("actor", "worker"):
            active.add_metric([kind], snap["alerts_active"][kind])
            raised.add_metric([kind], snap["totals"].get(f"alerts_raised_{kind}", 0))
        yield active
        yield raised


class ClusterCollector:
    """The cluster's numbers, read from the worker's ``Federation`` when
    scraped (see the module docstring)."""

    def __init__(self, federation: Any):
        self.federation = federation

    def collect(self) -> Iterator[Metric]:
        from transport.cluster_status import known_nodes, outq
        fed = self.federation
        nodes = known_nodes(fed)
        names = set(nodes) | {fed.node}
        up = sum(1 for name in names if name == fed.node or nodes[name].up)
        states = GaugeMetricFamily(P + "cluster_nodes",
                                   "Nodes of the cluster, by state (the directory's view)",
                                   labels=["state"])
        states.add_metric(["up"], up)
        states.add_metric(["down"], len(names) - up)
        yield states
        if not fed.gateway:
            return
        queue = outq(fed)
        items = GaugeMetricFamily(P + "outq_items",
                                  "Items in the outbound queue, waiting for their node",
                                  labels=["dest"])
        for dest, count in queue["pending"].items():
            items.add_metric([dest], count)
        yield items
        folded = GaugeMetricFamily(P + "outq_folded_items",
                                   "Group items folded past outq_high for their node, beside "
                                   "the queue", labels=["dest"])
        for dest in sorted(set(queue["pending"]) | set(queue["folded"])):
            folded.add_metric([dest], queue["folded"].get(dest, 0))
        yield folded
        for name, doc in (("shipped_items", "Outbound queue items shipped (resends included)"),
                          ("applied_items", "Items from other nodes applied to local inboxes")):
            family = CounterMetricFamily(P + "outq_" + name, doc)
            family.add_metric([], queue[name])
            yield family


def registry_for(board: Any, federation: Any = None) -> CollectorRegistry:
    """A fresh registry: the snapshot collector, the cluster collector in a
    cluster, and the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(board))
    if federation is not None:
        registry.register(ClusterCollector(federation))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
