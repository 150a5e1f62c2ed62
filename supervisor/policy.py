"""The restart decision, written once for light and heavy supervisors.

Two pure functions, small and flat like OTP's ``do_restart/3``:

- ``should_restart(restart, reason)``: one clause per (restart type, exit
  reason) case of ``supervisor.erl``.
- ``affected(strategy, ids, failed)``: which children a strategy takes down
  and brings back when ``failed`` exits, in start order.
"""

from __future__ import annotations

from typing import Sequence

from actors.exits import is_normal_exit

__all__ = ["should_restart", "affected"]


def should_restart(restart: str, reason: object) -> bool:
    """OTP's do_restart/3: permanent always, transient on abnormal exit only,
    temporary never. ``normal``, ``shutdown`` and ``("shutdown", term)`` are the
    normal exits for a transient child."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return not is_normal_exit(reason)
    if restart == "temporary":
        return False
    raise ValueError(f"unknown restart type {restart!r}")


def affected(strategy: str, ids: Sequence[object], failed: object) -> list[object]:
    """The children, in start order, that ``strategy`` restarts when ``failed``
    exits: just it (one_for_one, simple_one_for_one), all of them
    (one_for_all), or it and every child started after it (rest_for_one)."""
    if strategy in ("one_for_one", "simple_one_for_one"):
        return [failed]
    if strategy == "one_for_all":
        return list(ids)
    if strategy == "rest_for_one":
        return list(ids[list(ids).index(failed):])
    raise ValueError(f"unknown strategy {strategy!r}")
