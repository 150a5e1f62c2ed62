"""Sliding-window rate limits, per key (a phone number, a connection).

``RateLimiter(limit, period)`` admits at most ``limit`` events per key in any
``period`` seconds. The clock is passed in, as for supervisors' restart
windows, so tests need no sleeps. Keys whose window emptied are swept now and
then, so a stream of distinct keys cannot grow it without bound.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Hashable

__all__ = ["RateLimiter"]

_SWEEP_EVERY = 1024


class RateLimiter:
    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic):
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        self.limit, self.period, self.clock = limit, period, clock
        self._events: dict[Hashable, deque[float]] = {}
        self._since_sweep = 0

    def exceeded(self, key: Hashable) -> bool:
        """True if ``key`` has used up its ``limit`` for now."""
        events = self._events.get(key)
        if events is None:
            return False
        self._trim(events, self.clock())
        return len(events) >= self.limit

    def record(self, key: Hashable) -> None:
        """Count one event for ``key``."""
        now = self.clock()
        events = self._events.setdefault(key, deque())
        self._trim(events, now)
        events.append(now)
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self.sweep()

    def allow(self, key: Hashable) -> bool:
        """Admit and count one event for ``key``, unless its limit is used up."""
        if self.exceeded(key):
            return False
        self.record(key)
        return True

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may act again (0 if it may now)."""
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.period - self.clock())

    def sweep(self) -> None:
        now = self.clock()
        self._since_sweep = 0
        for key in [k for k, events in self._events.items() if not self._trim(events, now)]:
            del self._events[key]

    def _trim(self, events: deque[float], now: float) -> int:
        threshold = now - self.period
        while events and events[0] <= threshold:
            events.popleft()
        return len(events)

    def __len__(self) -> int:
        return len(self._events)
