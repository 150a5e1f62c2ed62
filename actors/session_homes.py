"""``RemoteHomes``: what a session does differently in a cluster of nodes (a
mixin of ``actors.session.Session``, kept apart so the session module stays
about one user's messaging; every method is a no-op without a federation).

- **Back-pressure**: a SEND to a user homed on a node whose outbound queue
  is full is refused with RATE_LIMITED (``Federation.behind``).
- **A lagging replica**: a SEND to a recipient this worker's replica does
  not know (or one refused as UNKNOWN_USER) may name a user registered on
  another node a moment ago, or one the directory does not know again yet
  (it was just restarted). The SEND is *parked*: the
  recipient is looked up in the cluster directory (again every
  ``LOOKUP_EVERY`` s while the directory cannot say, for at most
  ``LOOKUP_FOR`` s), and every later SEND to that recipient is parked
  behind it, so the conversation's order holds. Then they are stored
  again, in order (an unknown recipient is then UNKNOWN_USER), or, if the
  directory never answered, refused with INTERNAL (the client resends).
- **Data homed elsewhere**: a READ of a group's messages runs where the
  group lives; GROUP_INFO is gathered from the nodes, beside the session,
  never in it (a slow node must not hold up this mailbox).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from actors.federation import NodeUnavailable
from actors.group import group_home, group_info, remote_answer
from actors.messages import INTERNAL, RATE_LIMITED, Acked, GetGroups, MarkRead, Rejected
from storage import UnknownUser

__all__ = ["RemoteHomes", "HomesLookedUp", "LOOKUP_EVERY", "LOOKUP_FOR", "NONE"]

NONE: frozenset = frozenset()       # an empty set not made yet (see ``init_homes``)

LOOKUP_EVERY = 1.0        # seconds between lookups while the directory cannot say
LOOKUP_FOR = 20.0         # seconds before parked SENDs are refused (INTERNAL: resend)


@dataclass(frozen=True)
class HomesLookedUp:
    """The lookup of ``user`` ended: store its parked SENDs again, or, with
    ``refused``, answer them INTERNAL."""
    user: str
    refused: str | None = None


class RemoteHomes:
    """Mixed into ``Session``: needs ``system``, ``user``, ``ref``, ``mail``,
    ``pending``, ``_queue``, ``_answer``."""

    def init_homes(self) -> None:
        # Sets made on first use (an empty set is 216 B, and a node holds a
        # session per user): until then the shared empty frozenset.
        self.looked_up: set[str] | frozenset = NONE   # SEND ids stored again after a lookup
        self.keys_looked_up: set[Any] | frozenset = NONE  # KEYS_FETCHes made again after one
        self.parked: dict[str, list[Any]] = {}        # recipient -> SENDs waiting, in order

    def held_back(self, msg: Any) -> bool:
        """True if ``msg`` (a SEND) is answered or parked here, not stored now."""
        federation = self.system.env.get("federation")
        if federation is None:
            return False
        behind = federation.behind(msg.to)
        if behind is not None:                      # its node's queue is full
            self._answer(msg, Rejected(msg.ref, RATE_LIMITED, behind))
            return True
        parked = self.parked.get(msg.to)
        if parked is None:
            if msg.to in federation.homes or self.mail.get_account(msg.to) is not None:
                return False
            # A recipient this worker's replica does not know: look it up
            # before storing (a SEND stored meanwhile could overtake it).
            parked = self.parked[msg.to] = []
            asyncio.ensure_future(self._look_up(federation, msg.to))
        self.pending[msg.id] = [msg]
        parked.append(msg)                          # behind the ones being looked up
        return True

    def look_up_first(self, request: Any, error: Any, waiting: list) -> bool:
        """True if ``request``, refused UNKNOWN_USER, is parked for a lookup."""
        federation = self.system.env.get("federation")
        if (not isinstance(error, UnknownUser) or federation is None
                or request.id in self.looked_up or request.to in federation.homes):
            return False
        self.pending[request.id] = waiting
        parked = self.parked.get(request.to)
        if parked is not None:
            parked.append(request)
            return True
        self.parked[request.to] = [request]
        asyncio.ensure_future(self._look_up(federation, request.to))
        return True

    async def _look_up(self, federation: Any, user: str) -> None:
        deadline = time.monotonic() + LOOKUP_FOR
        while True:
            try:
                await federation.home_for(user)
            except NodeUnavailable as unsure:
                if time.monotonic() + LOOKUP_EVERY > deadline:
                    self.ref.notify(HomesLookedUp(user, str(unsure)))
                    return
                await asyncio.sleep(LOOKUP_EVERY)
            else:
                self.ref.notify(HomesLookedUp(user))
                return

    def handle_homes_looked_up(self, msg: HomesLookedUp) -> None:
        for request in self.parked.pop(msg.user, ()):
            if msg.refused is None:
                if not self.looked_up:
                    self.looked_up = set()
                self.looked_up.add(request.id)      # once: unknown now is UNKNOWN_USER
                self._queue(request)
                continue
            for r in self.pending.pop(request.id, [request]):
                self._answer(r, Rejected(r.ref, INTERNAL, msg.refused))

    def read_elsewhere(self, msg: MarkRead) -> bool:
        """True if ``msg`` reads a group homed on another node: run there."""
        federation = self.system.env.get("federation")
        home = (federation.remote(group_home(msg.group))
                if federation is not None and msg.group is not None else None)
        if home is None:
            return False
        federation.call(home, ("read", self.user, msg.peer, msg.ids, msg.group)).add_done_callback(
            lambda done: self._answer(msg, Acked(msg.ref) if done.exception() is None
                                      else remote_answer(msg.ref, done)))
        return True

    def group_info_elsewhere(self, msg: GetGroups) -> None:
        federation = self.system.env["federation"]

        async def gather() -> None:
            for event in await federation.group_info(self.user, msg, group_info):
                self._answer(msg, event)
        asyncio.ensure_future(gather())
