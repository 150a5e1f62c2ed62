"""Links, monitors and exit signals: the part of ``ActorRef``
(``actors.process``) that ties actors' lives together, as Erlang's
``link``/``monitor`` do. A mixin of ``ActorRef``, whose slots hold the state
(``_links``, ``_monitors``, ``_watching``, ``_exit_reason``, ``_trap_exit``,
``_parent``).

- A link is two-way: when one end exits, the other gets an exit signal
  (``_exit_signal``); linking to an actor already gone is a ``noproc``
  signal at once.
- A monitor is one-way: the watcher gets one ``Down`` with the reason
  (``noproc`` if the target is already gone) and then forgets it.
- Exit signals: ``KILL`` (not from a link) is untrappable; a trapping actor
  gets an ``Exit`` message, except from its parent, which always stops it;
  ``normal`` does not stop a non-trapping actor; anything else does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.exits import KILL, NOPROC, NORMAL
from actors.signals import Down, Exit, MonitorRef

if TYPE_CHECKING:
    from actors.process import ActorRef

__all__ = ["Links", "ALIVE"]

ALIVE = None            # _exit_reason while alive


class Links:
    __slots__ = ()

    def _link(self, other: "ActorRef") -> None:
        if other is self:
            return
        if other._exit_reason is not ALIVE:
            self._exit_signal(other, NOPROC, linked=True)
            return
        if self._links is None:
            self._links = set()
        if other._links is None:
            other._links = set()
        self._links.add(other)
        other._links.add(self)

    def _unlink(self, other: "ActorRef") -> None:
        if self._links is not None:
            self._links.discard(other)
        if other._links is not None:
            other._links.discard(self)

    def _monitor(self, target: "ActorRef", watcher: "ActorRef | None" = None) -> MonitorRef:
        watcher = self if watcher is None else watcher
        mref = MonitorRef(watcher, target)
        if target._exit_reason is not ALIVE:
            watcher._deliver(Down(mref, target, NOPROC))
            return mref
        if target._monitors is None:
            target._monitors = {}
        target._monitors[mref] = watcher
        if watcher._watching is None:
            watcher._watching = set()
        watcher._watching.add(mref)
        return mref

    def _demonitor(self, mref: MonitorRef) -> None:
        if mref.target._monitors is not None:
            mref.target._monitors.pop(mref, None)
        if self._watching is not None:
            self._watching.discard(mref)

    def _exit_signal(self, sender: "ActorRef | None", reason: Any, linked: bool) -> None:
        if self._exit_reason is not ALIVE:
            return
        if reason == KILL and not linked:
            self._kill()
        elif self._trap_exit and (sender is None or sender is not self._parent):
            self._deliver(Exit(sender, reason))
        elif reason == NORMAL and sender is not self and not self._trap_exit:
            return                               # (a trapping actor here has heard its parent)
        else:
            self._terminate_with(reason)

    def _tell_exit(self, reason: Any) -> None:
        """At the exit: drop this actor's own monitors, send ``Down`` to
        its watchers (each monitor fires once, and is forgotten) and an
        exit signal to each linked actor."""
        for mref in self._watching or ():
            if mref.target._monitors is not None:
                mref.target._monitors.pop(mref, None)
        for mref, watcher in (self._monitors or {}).items():
            if watcher._watching is not None:
                watcher._watching.discard(mref)  # a fired monitor is gone (OTP)
            watcher._deliver(Down(mref, self, reason))
        links, self._links = self._links, None
        for other in links or ():
            if other._links is not None:
                other._links.discard(self)
            other._exit_signal(self, reason, linked=True)
        self._monitors = self._watching = None
