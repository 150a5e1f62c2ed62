"""Rate limits per key: sliding windows (a phone number, a connection) and
token buckets (a user's sends, a sender flooding one recipient).

``RateLimiter(limit, period)`` admits at most ``limit`` events per key in any
``period`` seconds. The clock is passed in, as for supervisors' restart
windows, so tests need no sleeps. Keys whose window emptied are swept now and
then, so a stream of distinct keys cannot grow it without bound.

``TokenBuckets(rate, burst)`` lets a key save up to ``burst`` events and
then go at ``rate`` a second (transport/flow.py uses them for SENDs per user
and per (sender, recipient)); full buckets are swept the same way.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Hashable

__all__ = ["RateLimiter", "TokenBuckets", "take_all"]

_SWEEP_EVERY = 1024
_EPSILON = 1e-9               # float refills: 0.1 s at 10/s is one token, not 0.99999...


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

    def record(self, key: Hashable) -> float:
        """Count one event for ``key``; returns when it was counted."""
        now = self.clock()
        events = self._events.setdefault(key, deque())
        self._trim(events, now)
        events.append(now)
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self.sweep()
        return now

    def reserve(self, key: Hashable) -> float | None:
        """Count one event for ``key`` now, unless its limit is used up
        (None): an attempt counted before its outcome is known, so that
        attempts in flight at once cannot pass the limit together. Returns
        when it was counted, for ``give_back`` if it turns out not to count."""
        if self.exceeded(key):
            return None
        return self.record(key)

    def give_back(self, key: Hashable, at: float) -> None:
        """Uncount the event ``reserve`` counted for ``key`` at ``at``."""
        events = self._events.get(key)
        if events:
            try:
                events.remove(at)
            except ValueError:          # it has left the window already
                pass

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


class TokenBuckets:
    """Token buckets per key (a user, a (sender, recipient) pair): each key
    earns ``rate`` tokens a second and saves at most ``burst``; an event
    takes one. Unlike ``RateLimiter`` it smooths: a sender may burst, then
    goes at ``rate``. A bucket that has refilled is the same as no bucket, so
    full ones are swept now and then and memory follows the active keys."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self._buckets: dict[Hashable, list[float]] = {}      # key -> [tokens, at]
        self._since_sweep = 0

    def wait(self, key: Hashable, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = self._level(bucket, self.clock() if now is None else now)
        return 0.0 if tokens >= 1.0 - _EPSILON else (1.0 - tokens) / self.rate

    def take(self, key: Hashable, now: float | None = None) -> None:
        """Take one token from ``key`` (callers check ``wait`` first)."""
        self.refilled(key, self.clock() if now is None else now)[0] -= 1.0

    def refilled(self, key: Hashable, now: float) -> list[float]:
        """``key``'s bucket, ``[tokens, at]``, refilled up to ``now`` (a new
        one is full). A caller that checks several buckets before it spends
        from any (``take_all``) reads and writes each once."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._since_sweep += 1
            if self._since_sweep >= _SWEEP_EVERY:
                self.sweep(now)         # before the new bucket: full, a sweep would drop it
            bucket = self._buckets[key] = [self.burst, now]
        else:                           # ``_level``, inlined: a SEND's hot path (~0.7 us)
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        return bucket

    def sweep(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._since_sweep = 0
        full = [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst - _EPSILON]
        for key in full:
            del self._buckets[key]

    def _level(self, bucket: list[float], now: float) -> float:
        return min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)

    def __len__(self) -> int:
        return len(self._buckets)


def take_all(claims: tuple[tuple[TokenBuckets, Hashable], ...], now: float
             ) -> tuple[int, float]:
    """One token from each ``(buckets, key)`` of ``claims`` if every one has
    a token: ``(-1, 0.0)``. Else ``(i, wait)`` for the first claim without
    one, and nothing is taken from any. One lookup per bucket: a SEND is
    checked against two on every message (transport/flow.py)."""
    held = []
    for i, (buckets, key) in enumerate(claims):
        bucket = buckets.refilled(key, now)
        if bucket[0] < 1.0 - _EPSILON:
            return i, (1.0 - bucket[0]) / buckets.rate
        held.append(bucket)
    for bucket in held:
        bucket[0] -= 1.0
    return -1, 0.0
