"""``Counters``: the few event counts of a worker that no sample can recover.

A queue length can be read at any moment; how many frames arrived since the
last look cannot. These are plain integers on one object kept in
``system.env["counters"]``, bumped from the hot path with one attribute
increment (no lock, no label lookup: a ``prometheus_client.Counter.inc``
takes a lock and costs ~10x more) and read by the ``QueueMonitor`` once per
sample, which turns differences into rates.

Hooks, one line each at the place the event happens::

    counters.frames_in += len(frames)     # transport/tcp.py, data_received
    counters.frames_out += 1              # transport/tcp.py, send
    counters.messages_in += 1             # a chat message stored (sender side)
    counters.messages_out += 1            # a chat message pushed to its recipient
    counters.note_restart(sup, child, reason)   # supervisor/base.py, handle_exit

Everything here belongs to the worker's event loop thread; readers in other
threads get copies through the monitor's published snapshot.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

__all__ = ["Counters", "counters_of", "supervisor_label"]

RECENT_RESTARTS = 50


class Counters:
    """Monotonic counts since the worker started (see the module docstring)."""

    __slots__ = ("frames_in", "frames_out", "bytes_in", "bytes_out", "messages_in",
                 "messages_out", "overload_kills", "restarts", "recent_restarts")

    def __init__(self) -> None:
        self.frames_in = self.frames_out = 0          # wire frames, all types
        self.bytes_in = self.bytes_out = 0            # socket bytes
        self.messages_in = self.messages_out = 0      # chat messages stored / pushed
        self.overload_kills = 0                       # actors killed by the overload killer
        self.restarts: dict[tuple[str, str], int] = {}   # (supervisor, child id) -> restarts
        self.recent_restarts: deque[dict[str, Any]] = deque(maxlen=RECENT_RESTARTS)

    def note_restart(self, supervisor: Any, child_id: Any, reason: Any) -> None:
        """A supervisor is restarting ``child_id`` after it exited with
        ``reason`` (called before the restart, so one that fails counts too,
        as it counts toward the supervisor's intensity)."""
        key = (supervisor_label(supervisor), str(child_id))
        self.restarts[key] = self.restarts.get(key, 0) + 1
        self.recent_restarts.append({"at": time.time(), "supervisor": key[0],
                                     "child": key[1], "reason": repr(reason)[:200]})


def supervisor_label(ref: Any) -> str:
    """A supervisor's stable name: its registered name, else ``Kind#pid``."""
    name = getattr(ref, "name", None)
    return str(name) if name is not None else f"{ref.kind}#{ref.pid}"


def counters_of(system: Any) -> Counters:
    """The worker's ``Counters``, created on first use."""
    counters = system.env.get("counters")
    if counters is None:
        counters = system.env["counters"] = Counters()
    return counters
