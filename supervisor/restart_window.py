"""Restart intensity bookkeeping: a pure copy of OTP's ``add_restart/3``.

A supervisor keeps the times of its recent restarts, newest first. On every
restart the list is trimmed to the last ``period`` seconds and the new time is
pushed; if the list is then longer than ``intensity`` the supervisor has
reached its maximum restart intensity and must shut down (and so escalate to
its parent). The clock is passed in, so tests need no sleeps.

    >>> ok, w = add_restart((), now=0.0, intensity=1, period=5)
    >>> ok, w
    (True, (0.0,))
    >>> add_restart(w, now=4.0, intensity=1, period=5)[0]
    False
    >>> add_restart(w, now=5.5, intensity=1, period=5)
    (True, (5.5,))
"""

from __future__ import annotations

__all__ = ["add_restart"]


def add_restart(
    restarts: tuple[float, ...], now: float, intensity: int, period: float
) -> tuple[bool, tuple[float, ...]]:
    """Record a restart at ``now``; return ``(within_intensity, restarts')``.

    ``restarts`` is newest first. Restarts older than ``now - period`` fall out
    of the window; one exactly ``period`` old stays, as in OTP's
    ``add_restart/3`` (``R >= Threshold``).
    """
    threshold = now - period
    kept = tuple(t for t in restarts if t >= threshold)
    window = (now, *kept)
    return len(window) <= intensity, window
