"""``PresenceHub``: who is online, and who asked to know (cf. mod_last and
ejabberd's presence subscriptions, much simplified).

Sessions report ``UserOnline`` when a client attaches and ``UserOffline``
(with the last-seen time, already stored) when it goes. A session that
``Watch``es users gets their current presence at once and every change
after, as ``PresenceChanged`` sent to its session. Subscriptions live as long
as the watching session; they are not stored (clients subscribe again on
login). A user watches at most ``max_watched`` users (node config, default
2,000): past it ``Watch`` is refused, so SUBSCRIBEs to random numbers
cannot grow the hub without bound.

With several workers each has its own hub, and every hub hears every
worker's changes: a hub forwards the ``UserOnline`` / ``UserOffline`` of its
own sessions to the other hubs (``Cluster.broadcast``, batched), marked with
the worker they come from (``where``). A user is online while some worker
says so; ``PeerGone`` (a worker died) drops what that worker said.

Messages: ``UserOnline``, ``UserOffline``, ``Watch`` (call), ``Unwatch``,
``PeerGone``, ``TellOnline`` (a node joined or came back: its workers hear
who is online here, as a worker's hub would have told them live).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

from actors.actor import Actor
from actors.messages import PresenceChanged
from actors.router import route

__all__ = ["PresenceHub", "UserOnline", "UserOffline", "Watch", "Unwatch", "PeerGone", "TellOnline",
           "PRESENCE_NAME"]

PRESENCE_NAME = "presence"
MAX_WATCHED = 2_000           # users one user may watch at a time
SEEN_KEPT = 10_000            # last-seen times kept for users who left (the newest)


@dataclass(frozen=True)
class UserOnline:
    user: str
    where: str = ""           # the worker it happened on; "" for this one


@dataclass(frozen=True)
class UserOffline:
    user: str
    last_seen: int
    where: str = ""


@dataclass(frozen=True)
class PeerGone:
    """Worker ``worker`` (or every worker of node ``worker``, from slot
    ``from_slot`` up) is gone: its users are offline (unless seen elsewhere)."""
    worker: str
    from_slot: int = 0


@dataclass(frozen=True)
class TellOnline:
    """Tell these workers (of another node, just joined) who is online here."""
    workers: tuple[str, ...]


@dataclass(frozen=True)
class Watch:
    """``watcher`` wants the presence of ``users``; returns their current state."""
    watcher: str
    users: tuple[str, ...]


@dataclass(frozen=True)
class Unwatch:
    """``watcher``'s session ended: drop all its subscriptions."""
    watcher: str


class PresenceHub(Actor):
    def __init__(self, last_seen: Callable[[str], int | None] | None = None):
        # user -> the worker it is online on, or a set of them while it moves
        # (a hub holds every online user of the node: a set each was 216 B)
        self.online: dict[str, str | set[str]] = {}
        self.seen: dict[str, int] = {}             # last seen of the latest users who left
        self.watchers: dict[str, set[str]] = {}    # watched user -> watching users
        self.watching: dict[str, set[str]] = {}    # watching user -> watched users
        self._last_seen = last_seen

    def init(self) -> None:
        self.max_watched = int(self.system.env.get("config", {}).get("max_watched", MAX_WATCHED))
        if self._last_seen is None:
            mailbox = self.system.env.get("mailbox")
            self._last_seen = mailbox.get_last_seen if mailbox is not None else (lambda user: None)

    def handle_user_online(self, msg: UserOnline) -> None:
        self._forward(msg)
        user = msg.user
        where = self.online.get(user)
        if where is None:
            self.online[sys.intern(user)] = sys.intern(msg.where)  # one copy with the mesh's
            self._tell(user, PresenceChanged(user, True, None))
        elif type(where) is str:
            if where != msg.where:
                self.online[user] = {where, msg.where}
        else:
            where.add(msg.where)

    def handle_user_offline(self, msg: UserOffline) -> None:
        self._forward(msg)
        user = msg.user
        where = self.online.get(user)
        if type(where) is str:
            if where != msg.where:
                return                      # still online on its worker
            del self.online[user]
        elif where is not None:
            where.discard(msg.where)
            if where:                       # still online on another worker
                if len(where) == 1:
                    self.online[user] = next(iter(where))
                return
            del self.online[user]
        seen = self.seen
        seen.pop(user, None)                # the newest last, the oldest dropped past SEEN_KEPT
        seen[user] = msg.last_seen
        if len(seen) > SEEN_KEPT:           # long committed: the store has them
            del seen[next(iter(seen))]
        self._tell(user, PresenceChanged(user, False, msg.last_seen))

    def handle_peer_gone(self, msg: PeerGone) -> None:
        now = int(time.time() * 1000)
        gone = msg.worker + "/"             # a node's name: all of its workers (from a slot)

        def went(w: str) -> bool:
            return w == msg.worker or (w.startswith(gone)
                                       and int(w[len(gone):] or 0) >= msg.from_slot)
        for user, where in list(self.online.items()):
            for worker in [w for w in _workers(where) if went(w)]:
                self.handle_user_offline(UserOffline(user, now, worker))

    def handle_tell_online(self, msg: "TellOnline") -> None:
        """Workers that just joined (or came back) learn who is online here."""
        cluster = self.system.env.get("cluster")
        if cluster is None:
            return
        mine = [user for user, where in self.online.items() if "" in _workers(where)]
        for worker in msg.workers:
            for user in mine:
                cluster.tell(worker, UserOnline(user, cluster.me))

    def _forward(self, msg: UserOnline | UserOffline) -> None:
        """Tell the other workers' hubs about a change on this worker."""
        cluster = self.system.env.get("cluster")
        if cluster is not None and msg.where == "":
            cluster.broadcast(replace(msg, where=cluster.me))

    def handle_watch(self, msg: Watch) -> list[PresenceChanged] | str:
        """The users' presence now, or why the watch is refused (a str)."""
        mine = self.watching.get(msg.watcher, set())
        if len(mine) + len(set(msg.users).difference(mine)) > self.max_watched:
            return f"a user may watch at most {self.max_watched} users"
        self.watching[msg.watcher] = mine
        for user in msg.users:
            mine.add(user)
            self.watchers.setdefault(user, set()).add(msg.watcher)
        return [self.presence_of(user) for user in msg.users]

    def handle_unwatch(self, msg: Unwatch) -> None:
        for user in self.watching.pop(msg.watcher, ()):
            watchers = self.watchers.get(user)
            if watchers is not None:
                watchers.discard(msg.watcher)
                if not watchers:
                    del self.watchers[user]

    def presence_of(self, user: str) -> PresenceChanged:
        if user in self.online:
            return PresenceChanged(user, True, None)
        seen = self.seen.get(user)          # newer than the store while its write commits
        return PresenceChanged(user, False, seen if seen is not None else self._last_seen(user))

    def _tell(self, user: str, event: PresenceChanged) -> None:
        for watcher in self.watchers.get(user, ()):
            route(self.system, watcher, event)


def _workers(where: str | set[str]) -> tuple[str, ...] | set[str]:
    """The workers in a value of ``PresenceHub.online``."""
    return (where,) if type(where) is str else where
