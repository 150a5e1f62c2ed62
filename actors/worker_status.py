"""``WorkerStatus``: samples this worker's light actors once per interval.

Each sample reads every live actor's mailbox length (a ``len()`` of a deque:
it does not disturb the actor) and keeps, per actor kind, the count, the sum
and the maximum of the queue lengths, the worker's total, and the longest
queues. It is the data source of the queue-length gauge; ``GetStatus``
returns the latest ``StatusSample``.

Messages: ``Sample`` (its own timer), ``GetStatus`` (call).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

from actors.actor import Actor

__all__ = ["WorkerStatus", "StatusSample", "KindStats", "GetStatus", "Sample"]


@dataclass(frozen=True)
class Sample:
    """Take a sample now (sent by the actor's own timer)."""


@dataclass(frozen=True)
class GetStatus:
    """Return the latest ``StatusSample``."""


@dataclass
class KindStats:
    count: int = 0
    queued: int = 0
    max_queue: int = 0


@dataclass(frozen=True)
class StatusSample:
    at: float                                  # wall-clock time of the sample
    actors: int
    queued: int                                # sum of every mailbox length
    dead_letters: int
    kinds: dict[str, KindStats] = field(default_factory=dict)
    top: list[tuple[int, str]] = field(default_factory=list)   # (queue length, actor repr)
    sample_seconds: float = 0.0                # what the sample itself cost


class WorkerStatus(Actor):
    def __init__(self, interval: float = 1.0, top: int = 10):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval, self.top_n = interval, top
        self.latest: StatusSample | None = None

    def init(self) -> None:
        self.handle_sample(Sample())

    def handle_sample(self, msg: Sample) -> None:
        self.latest = sample(self.system, self.top_n)
        self.system.send_after(self.interval, self.ref, Sample())

    def handle_get_status(self, msg: GetStatus) -> StatusSample | None:
        return self.latest


def sample(system, top_n: int = 10) -> StatusSample:
    """One pass over the live actors of ``system``."""
    started = time.perf_counter()
    kinds: dict[str, KindStats] = {}
    lengths = []
    total = count = 0
    for ref in system.actors():
        n = ref.mailbox_len
        stats = kinds.get(ref.kind)
        if stats is None:
            stats = kinds[ref.kind] = KindStats()
        stats.count += 1
        stats.queued += n
        if n > stats.max_queue:
            stats.max_queue = n
        total += n
        count += 1
        if n:
            lengths.append((n, ref))
    top = [(n, repr(ref)) for n, ref in heapq.nlargest(top_n, lengths, key=lambda p: p[0])]
    return StatusSample(time.time(), count, total, system.dead_letters, kinds, top,
                        time.perf_counter() - started)
