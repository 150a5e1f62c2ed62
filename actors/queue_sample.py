"""One pass over a worker's light actors, and the offline-queue scan: the
measurements behind the ``QueueMonitor``, as plain functions.

``measure(system, top_n)`` reads ``system.kinds`` (live actors per kind,
kept up to date at spawn and exit) and ``system.backlogged()`` (the
non-empty mailboxes, found in one pass without copying the actor table):
an idle actor costs one attribute test, so a pass over 100,000 actors takes
~3.5 ms (docs/benchmarks.md). From those it builds, per actor kind, the
count, the sum and the maximum of the mailbox lengths and a bucketed
histogram, plus the ``top_n`` longest queues.

``scan_inboxes`` reads the per-user inbox counters (``inbox_meta``) a chunk
at a time, so the offline-queue gauge never holds the event loop for more
than one chunk. ``MAILBOX_BUCKETS`` and ``OFFLINE_BUCKETS`` are the upper
bounds of the histograms (``le``), as Prometheus spells them.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from storage.records import unpack

__all__ = ["QueueSample", "measure", "OfflineSizes", "scan_inboxes",
           "MAILBOX_BUCKETS", "OFFLINE_BUCKETS"]

MAILBOX_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000)
OFFLINE_BUCKETS = (0, 1, 10, 100, 1_000, 10_000)


@dataclass
class QueueSample:
    """What one pass saw. ``kinds``: kind -> {count, queued, max, buckets}
    (``buckets[i]``: actors of that kind whose queue is ``<= MAILBOX_BUCKETS[i]``,
    cumulative); ``top``: (queue, ref) longest first; ``backlogged``: the
    refs with a non-empty queue; ``seconds``: what the pass cost."""
    actors: int
    queued: int
    max_queue: int
    kinds: dict[str, dict[str, Any]]
    top: list[tuple[int, Any]]
    backlogged: list[Any] = field(repr=False)
    seconds: float


def measure(system: Any, top_n: int = 10) -> QueueSample:
    """One pass over the live actors of ``system`` (see the module docstring)."""
    started = time.perf_counter()
    busy = system.backlogged()
    nbuckets = len(MAILBOX_BUCKETS)
    kinds = {kind: {"count": n, "queued": 0, "max": 0, "buckets": [0] * nbuckets}
             for kind, n in system.kinds.items()}
    queued = longest = 0
    for ref in busy:
        n = ref.mailbox_len
        stats = kinds.get(ref.kind)
        if stats is None:                       # spawned during init: not counted yet
            stats = kinds[ref.kind] = {"count": 1, "queued": 0, "max": 0,
                                       "buckets": [0] * nbuckets}
        stats["queued"] += n
        if n > stats["max"]:
            stats["max"] = n
        stats["buckets"][min(bisect_left(MAILBOX_BUCKETS, n), nbuckets - 1)] += 1
        queued += n
        if n > longest:
            longest = n
    for stats in kinds.values():             # bucket 0 holds the idle ones; then cumulate
        buckets = stats["buckets"]
        buckets[0] = stats["count"] - sum(buckets[1:])
        for i in range(1, nbuckets):
            buckets[i] += buckets[i - 1]
    top = heapq.nlargest(top_n, ((ref.mailbox_len, ref) for ref in busy), key=lambda p: p[0])
    return QueueSample(sum(system.kinds.values()), queued, longest, kinds, top, busy,
                       time.perf_counter() - started)


@dataclass
class OfflineSizes:
    """Messages and receipts waiting in users' inboxes (LMDB ``inbox_meta``)."""
    users: int = 0            # users with at least one item waiting
    messages: int = 0
    receipts: int = 0
    max_items: int = 0        # the longest inbox
    buckets: list[int] = field(default_factory=lambda: [0] * len(OFFLINE_BUCKETS))
    scanned: int = 0          # inbox_meta rows read
    seconds: float = 0.0      # wall time of the whole scan (chunks and pauses)
    at: float = 0.0           # wall-clock time the scan finished

    def add(self, msgs: int, rcpts: int) -> None:
        items = msgs + rcpts
        self.scanned += 1
        if items:
            self.users += 1
            self.messages += msgs
            self.receipts += rcpts
            self.max_items = max(self.max_items, items)
        index = bisect_left(OFFLINE_BUCKETS, items)
        if index < len(self.buckets):
            self.buckets[index] += 1

    def as_dict(self) -> dict[str, Any]:
        cumulative, total = [], 0
        for n in self.buckets:
            total += n
            cumulative.append(total)
        return {"users": self.users, "messages": self.messages, "receipts": self.receipts,
                "max": self.max_items, "buckets": cumulative, "rows": self.scanned,
                "scan_ms": round(self.seconds * 1000, 1), "at": self.at}


def scan_inboxes(storage: Any, after: bytes | None, chunk: int, into: OfflineSizes
                 ) -> bytes | None:
    """Add up to ``chunk`` rows of ``inbox_meta`` after key ``after`` to
    ``into``; returns the last key read, or None when the table is done.
    Each chunk is its own short read transaction."""
    start = b"" if after is None else after + b"\x00"

    def read(txn: Any) -> list[tuple[bytes, bytes]]:
        return list(txn.range("inbox_meta", start, None, limit=chunk))

    rows = storage.store.read(read)
    for _, raw in rows:
        meta = unpack(raw)
        into.add(int(meta.get("msgs", 0)), int(meta.get("rcpts", 0)))
    return rows[-1][0] if len(rows) == chunk else None
