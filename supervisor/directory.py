"""The session directory: user id -> the worker holding the user's live
session, for every worker of the node (cf. ejabberd_sm's Mnesia table, and
the seeds' PID table made cluster-wide). A Thespian actor, child of the
``NodeSupervisor``, which restarts it if it dies.

Workers are named ``"<node>/<slot>"``. The directory is the one place that
decides who owns a user, so only one session per user lives on the node:

- ``JoinMesh(worker, address, users)``: a worker came up (or re-joins after
  a directory restart, listing the users it holds). Reply ``MeshView`` (all
  peers and owners); everyone else gets ``PeerUp``.
- ``Claims(worker, users, token)``: users logged in on ``worker``. Each
  becomes owned by ``worker``; a previous owner elsewhere gets ``Evict``
  (it closes that connection with ``session_replaced``). Reply
  ``Claimed(token)`` once recorded; peers get ``OwnersChanged``.
- ``Releases(worker, users)``: users left ``worker`` (ignored for a user
  someone else has claimed since). Peers get ``OwnersChanged``.
- ``WorkerDown(worker, pid)`` (from the node supervisor): its users are
  gone; peers get ``PeerDown``. Ignored when ``pid`` is not the process that
  joined: the restarted worker may have joined before the news of its
  predecessor's death arrived.

Every message is a batch: a worker sends one ``Claims`` per flush of its
logins, answered by one ``Claimed`` at once; the owner changes collect for
``ANNOUNCE_EVERY`` and go to every worker as one ``OwnersChanged`` each (the
latest owner of each user), because a Thespian send costs ~0.4 ms (DESIGN.md)
while a login must cost far less: announcing each ``Claims`` to every peer
kept the directory ~100% busy on 8 workers at ~140 logins/s.
Its state is soft: if it dies, the node supervisor starts a new one and
tells the workers (``DirectoryMoved``), and they re-join with their users.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

TICK = timedelta(seconds=1.0)     # how often the directory checks its supervisor is alive
ANNOUNCE_EVERY = timedelta(milliseconds=50)   # owner changes are sent at most this often
ANNOUNCE = "announce"             # the payload of the wakeup that sends them

__all__ = ["Directory", "StartDirectory", "JoinMesh", "MeshView", "PeerUp", "PeerDown", "Claims", "Claimed",
           "Releases", "OwnersChanged", "Evict", "WorkerDown", "DirectoryMoved", "RouteBatch"]


def _log() -> logging.Logger:
    return logging.getLogger("switchboard.directory")


# -- messages (pickled across processes) --------------------------------------------

@dataclass
class StartDirectory:
    """From the node supervisor, right after creating the directory."""


@dataclass
class JoinMesh:
    worker: str
    address: Any
    users: tuple[str, ...] = ()
    pid: int | None = None    # the worker's process: tells its incarnations apart


@dataclass
class MeshView:
    peers: dict[str, Any]
    owners: dict[str, str]


@dataclass
class PeerUp:
    worker: str
    address: Any


@dataclass
class PeerDown:
    worker: str


@dataclass
class Claims:
    worker: str
    users: tuple[str, ...]
    token: int


@dataclass
class Claimed:
    token: int


@dataclass
class Releases:
    worker: str
    users: tuple[str, ...]


@dataclass
class OwnersChanged:
    """``owners[user]`` is the worker now holding ``user``, None when nobody."""
    owners: dict[str, str | None]


@dataclass
class Evict:
    """Close these users' connections: they logged in on another worker."""
    users: tuple[str, ...]


@dataclass
class WorkerDown:
    worker: str
    pid: int | None = None    # the process that died (None: unknown, drop whatever joined)


@dataclass
class DirectoryMoved:
    """The directory was restarted at ``address``: join it again."""
    address: Any


@dataclass
class RouteBatch:
    """Worker to worker: ``items`` are ``(user, message)`` for a user's session
    (``user`` None: for the receiving worker's presence hub), in send order."""
    source: str
    items: list = field(default_factory=list)

    def __repr__(self) -> str:          # Thespian logs repr() of every message it moves
        return f"RouteBatch({self.source}, {len(self.items)} items)"


# -- the actor ------------------------------------------------------------------------

class Directory(ActorTypeDispatcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peers: dict[str, Any] = {}
        self.owners: dict[str, str] = {}
        self.held: dict[str, set[str]] = {}       # worker -> users it owns
        self.pids: dict[str, int | None] = {}     # worker -> the process that joined
        self.changes: dict[str, str | None] = {}  # owner changes not yet announced
        self.announce_at = 0.0                    # monotonic time they are due
        self.tick_at = float("inf")               # monotonic time the TICK is due
        self.ppid = os.getppid()

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        """Dispatch by type, then run the timers that are overdue: Thespian
        drops a wakeup that comes due while the actor is blocked in a
        ``send`` (its transport hands it to the send loop, which ignores
        it), and under a mass login the directory often is. Seen as owner
        changes never announced again after the first few hundred."""
        super().receiveMessage(msg, sender)
        now = time.monotonic()
        if self.changes and now >= self.announce_at:
            self._announce_now()
        if now >= self.tick_at:             # its wakeup may have been dropped
            self._tick()

    def receiveMsg_StartDirectory(self, msg: "StartDirectory", sender) -> None:
        self._arm_tick()

    def receiveMsg_JoinMesh(self, msg: JoinMesh, sender) -> None:
        if msg.worker in self.peers:
            self._drop_worker(msg.worker, announce=False)
        self.peers[msg.worker] = msg.address
        self.pids[msg.worker] = msg.pid
        self.held[msg.worker] = set()
        changed = self._claim(msg.worker, msg.users)
        self.send(msg.address, MeshView(dict(self.peers), dict(self.owners)))
        for worker, address in self.peers.items():
            if worker != msg.worker:
                self.send(address, PeerUp(msg.worker, msg.address))
        self._announce(changed)
        _log().info("worker %s joined the mesh (%d users); %d workers", msg.worker,
                    len(msg.users), len(self.peers))

    def receiveMsg_Claims(self, msg: Claims, sender) -> None:
        if msg.worker not in self.peers:
            self.peers[msg.worker], self.held[msg.worker] = sender, set()
        changed = self._claim(msg.worker, msg.users)
        self.send(sender, Claimed(msg.token))
        self._announce(changed)

    def receiveMsg_Releases(self, msg: Releases, sender) -> None:
        held = self.held.get(msg.worker, set())
        changed = {}
        for user in msg.users:
            if self.owners.get(user) == msg.worker:
                del self.owners[user]
                held.discard(user)
                changed[user] = None
        self._announce(changed)

    def receiveMsg_WorkerDown(self, msg: WorkerDown, sender) -> None:
        joined = self.pids.get(msg.worker)
        if msg.worker in self.peers and (msg.pid is None or joined in (None, msg.pid)):
            self._drop_worker(msg.worker, announce=True)
            _log().info("worker %s left the mesh; %d workers", msg.worker, len(self.peers))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        pass

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        """Announce the owner changes collected (``receiveMessage`` does when
        they are due), or the ``TICK``."""
        if msg.payload != ANNOUNCE and time.monotonic() >= self.tick_at:
            self._tick()                    # (else a stale one: the tick ran on time)

    def _tick(self) -> None:
        """Exit with the node supervisor (OTP's link): a SIGKILLed supervisor
        must not leave its directory running."""
        if os.getppid() != self.ppid:
            self.tick_at = float("inf")
            _log().error("the node supervisor is gone; the directory exits")
            self.send(self.myAddress, ActorExitRequest())
        else:
            self._arm_tick()

    def _arm_tick(self) -> None:
        self.tick_at = time.monotonic() + TICK.total_seconds()
        self.wakeupAfter(TICK)

    # -- internals --------------------------------------------------------------------
    def _claim(self, worker: str, users: tuple[str, ...]) -> dict[str, str]:
        changed: dict[str, str] = {}
        evictions: dict[str, list[str]] = {}
        held = self.held[worker]
        for user in users:
            previous = self.owners.get(user)
            if previous == worker:
                continue
            if previous is not None:
                self.held.get(previous, set()).discard(user)
                evictions.setdefault(previous, []).append(user)
            self.owners[user] = worker
            held.add(user)
            changed[user] = worker
        for previous, evicted in evictions.items():
            address = self.peers.get(previous)
            if address is not None:
                self.send(address, Evict(tuple(evicted)))
        return changed

    def _drop_worker(self, worker: str, announce: bool) -> None:
        for user in self.held.pop(worker, ()):
            if self.owners.get(user) == worker:
                del self.owners[user]
            if self.changes.get(user) == worker:
                self.changes[user] = None
        self.peers.pop(worker, None)
        self.pids.pop(worker, None)
        if announce:
            for address in self.peers.values():
                self.send(address, PeerDown(worker))

    def _announce(self, changed: dict[str, Any]) -> None:
        """Owner changes for every worker (the claimer's own included: it
        drops its users from its replica), sent ``ANNOUNCE_EVERY`` after the
        first; a later change of a user replaces an earlier one, so no
        worker hears an owner older than one it was told."""
        if not changed:
            return
        if not self.changes:
            self.announce_at = time.monotonic() + ANNOUNCE_EVERY.total_seconds()
            self.wakeupAfter(ANNOUNCE_EVERY, payload=ANNOUNCE)
        self.changes.update(changed)

    def _announce_now(self) -> None:
        changes, self.changes = self.changes, {}
        for address in self.peers.values():
            self.send(address, OwnersChanged(changes))
