"""What the runtime itself puts in an actor's mailbox.

- ``Down``: a monitored actor exited (OTP's ``{'DOWN', Ref, process, Pid,
  Reason}``); handled by ``handle_down``.
- ``Exit``: a linked actor exited and this actor traps exits (OTP's
  ``{'EXIT', Pid, Reason}``); handled by ``handle_exit``.

``MonitorRef`` identifies one monitor, as a reference does in Erlang.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.process import ActorRef

__all__ = ["Down", "Exit", "MonitorRef"]

_monitor_ids = itertools.count(1)


class MonitorRef:
    """One monitor: ``watcher`` hears a ``Down`` when ``target`` exits."""

    __slots__ = ("id", "watcher", "target")

    def __init__(self, watcher: "ActorRef | None", target: "ActorRef"):
        self.id = next(_monitor_ids)
        self.watcher = watcher
        self.target = target

    def __repr__(self) -> str:
        return f"<MonitorRef #{self.id} on {self.target!r}>"


@dataclass(frozen=True, slots=True)
class Down:
    """The actor ``actor`` watched by ``monitor`` exited with ``reason``."""

    monitor: MonitorRef
    actor: "ActorRef"
    reason: Any


@dataclass(frozen=True, slots=True)
class Exit:
    """Linked actor ``actor`` (None for an exit sent from outside any actor)
    exited with ``reason``; delivered only to actors that trap exits."""

    actor: "ActorRef | None"
    reason: Any
