"""The reconnect delay: exponential, capped, jittered (a pure function).

Attempt ``n`` (0 for the first try after a drop) waits
``min(maximum, initial * factor**n)`` scaled down by a random fraction of at
most ``jitter``, so a thousand clients dropped by one server restart do not
all come back in the same millisecond. The delay never exceeds ``maximum``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5        # seconds before the first reconnect attempt (at most)
    maximum: float = 30.0       # the cap on any one delay
    factor: float = 2.0         # growth per failed attempt
    jitter: float = 0.5         # up to this fraction of the delay is taken off at random

    def __post_init__(self) -> None:
        if not (0 <= self.initial <= self.maximum and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"bad backoff policy: {self}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0-based)."""
        base = self.maximum if attempt >= 64 else min(self.maximum, self.initial * self.factor ** attempt)
        return base * (1.0 - self.jitter * rand())
