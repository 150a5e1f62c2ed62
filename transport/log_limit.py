"""A bound on log lines that clients can cause.

Every connection a client closes with a bad frame is worth a line in the
node's log, until someone opens thousands of them a second: the fuzz run
makes ~400 a second, ~40 KB of log a second, forever if an attacker wants,
and the lines cost the worker's loop ~6% of its time. ``LogLimit`` lets
``burst`` lines through per ``period`` and counts the rest; the count is
logged once the period is over (by the next line, or by ``flush`` from a
periodic tick, so a flood that stops is still reported), as syslog's
"last message repeated N times" and journald's rate limit do.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

__all__ = ["LogLimit"]


class LogLimit:
    """At most ``burst`` lines per ``period`` seconds through ``logger``."""

    def __init__(self, logger: logging.Logger, what: str, burst: int = 20,
                 period: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or period <= 0:
            raise ValueError("a log limit needs burst >= 1 and period > 0")
        self.logger, self.what, self.burst, self.period, self.clock = (
            logger, what, burst, period, clock)
        self.started = clock()
        self.passed = self.left_out = 0

    def log(self, level: int, msg: str, *args: object) -> None:
        """Log the line if this period has room, else count it."""
        self.flush()
        if self.passed < self.burst:
            self.passed += 1
            self.logger.log(level, msg, *args)
        else:
            self.left_out += 1

    def flush(self) -> None:
        """If the period is over: say how many lines it left out, start the next."""
        now = self.clock()
        if now - self.started < self.period:
            return
        if self.left_out:
            self.logger.warning("%d more %s in the last %.0f s (at most %d logged per %.0f s)",
                                self.left_out, self.what, now - self.started, self.burst,
                                self.period)
        self.started, self.passed, self.left_out = now, 0, 0
