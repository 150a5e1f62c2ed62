"""The cluster directory: which nodes are in the cluster, which are up, and
the home node of every user (cf. OTP's ``global`` name registry, kept by
one process here). A Thespian actor on the convention leader, a child of
the leader's ``NodeSupervisor``; members find it through a ``Rendezvous``.

How a member finds it: a ``globalName`` is only unique within the system
that registered it (measured: asked from a member, it made a second actor),
so a member's launcher creates a ``Rendezvous`` on the leader (placed by its
capability check: only the leader has ``"Switchboard Leader"``), which looks
the directory up by ``globalName`` there and answers ``WhereIs``.

State (soft, rebuilt by the joins):

- ``nodes``: name -> ``NodeInfo`` (its gateway worker, the client address
  clients are redirected to, up or down). A node is up while its node
  supervisor's ``NodeHeartbeat`` arrives; ``DOWN_AFTER`` seconds without
  one, or Thespian's convention news that its system left, mark it down, and
  every worker of the other nodes hears ``NodeDown`` (their presence hubs
  mark its users offline; what is queued for it waits in LMDB). It stays
  listed (its users' homes and data are there), but its workers are
  forgotten after ``forget_after`` s down; heard again after that, it is
  asked to join again (``DirectoryFound``), as after a leader restart.
- ``homes``: phone -> node. A node's gateway joins with every user
  registered in its LMDB; a registration of a phone nobody holds asks
  ``Assign`` first, so two nodes cannot both become a phone's home.
- ``workers``: every worker of every node, told of every change. A
  gateway joins with its node's worker count (``slots``): a higher slot is
  gone (the node restarted with fewer workers; nobody else says so), here
  and, told by ``NodeInfo.slots``, on the other nodes (actors/federation.py).

Messages: ``DirectorySettings``, ``JoinCluster`` (reply ``ClusterView``;
others get ``NodeUp`` / ``HomesChanged``), ``NodeHeartbeat``, ``WorkerLost``,
``Assign`` / ``Lookup`` (reply ``Assigned``), ``Ping`` (reply ``Pong``: a
member's launcher checks the directory is there and, when the leader was
restarted, finds the new one and tells its node ``DirectoryFound``),
Thespian's ``ActorSystemConventionUpdate`` and ``WakeupMessage``.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import (ActorExitRequest, ActorSystemConventionUpdate, ActorTypeDispatcher,
                             WakeupMessage)

__all__ = ["ClusterDirectory", "Rendezvous", "WhereIs", "DIRECTORY_NAME", "LEADER_CAPABILITY",
           "NODE_CAPABILITY", "NodeInfo", "JoinCluster", "ClusterView", "NodeUp", "NodeDown",
           "HomesChanged", "NodeHeartbeat", "Assign", "Assigned", "Lookup", "Shipment", "Shipped", "Call", "Reply",
           "Ping", "Pong", "DirectoryFound", "WorkerLost", "DirectorySettings",
           "DOWN_AFTER", "FORGET_AFTER"]

DIRECTORY_NAME = "switchboard-cluster-directory"
LEADER_CAPABILITY = "Switchboard Leader"
NODE_CAPABILITY = "Switchboard Node"
DOWN_AFTER = 3.0          # seconds without a heartbeat before a node is marked down
REBUILD = 15.0           # seconds a new directory waits for the nodes to join again
RECENT = 1.5             # seconds: a heartbeat this fresh outweighs a convention "left"
FORGET_AFTER = 60.0      # seconds a node is down before its workers' addresses are dropped
TICK = timedelta(seconds=0.5)


def _log() -> logging.Logger:
    return logging.getLogger("switchboard.cluster_directory")


# -- messages (pickled across processes and machines) ----------------------------------

@dataclass
class WhereIs:
    """To a ``Rendezvous``: reply with the cluster directory's address."""


@dataclass
class NodeInfo:
    gateway: Any                       # the Thespian address of the node's worker 0
    client: tuple[str, int]            # where the node's clients connect
    up: bool = True
    http: tuple[str, int] | None = None    # worker 0's HTTP (dashboard, /api/status)
    media: tuple[str, int] | None = None   # the node's media HTTP (blobs fetched from there)
    slots: int | None = None               # its workers are "<node>/0" .. "<node>/<slots - 1>"


@dataclass
class DirectorySettings:
    """From the leader's node supervisor, after creating the directory."""
    forget_after: float = FORGET_AFTER


@dataclass
class JoinCluster:
    node: str
    worker: str                        # "<node>/<slot>"
    address: Any
    client: tuple[str, int]
    users: tuple[str, ...] | None = None   # the gateway's join: every user homed on the node
    http: tuple[str, int] | None = None
    media: tuple[str, int] | None = None
    slots: int | None = None               # the gateway's join: how many workers the node runs


@dataclass
class ClusterView:
    nodes: dict[str, NodeInfo]
    homes: dict[str, str]
    workers: dict[str, Any]
    secret: str = field(default="", repr=False)    # the node credential (transport/media_auth.py);
                                                    # not in repr: Thespian logs messages


@dataclass
class NodeUp:
    """``node`` is up (``info`` None: not known yet) and/or these of its
    ``workers`` joined."""
    node: str
    info: NodeInfo | None
    workers: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeDown:
    node: str


@dataclass
class WorkerLost:
    """From a node supervisor: its worker ``worker``, the incarnation at
    ``address``, died (it is restarting it); relayed to the other nodes'
    workers, whose hubs forget what it said. (The address: this news may
    arrive after its successor joined, from another sender.)"""
    worker: str
    address: Any = None


@dataclass
class HomesChanged:
    homes: dict[str, str]


@dataclass
class NodeHeartbeat:
    node: str


@dataclass
class Assign:
    """A worker of ``node`` wants to register ``phone``: make ``node`` its
    home unless it has one. Reply ``Assigned``."""
    phone: str
    node: str
    token: int


@dataclass
class Lookup:
    """Where is ``phone`` homed? (reply ``Assigned``, home None: nowhere yet).
    For a phone a worker's replica does not know and its node has no
    account for: the replica may lag a registration made a moment ago."""
    phone: str
    token: int


@dataclass
class Assigned:
    """``settled``: False while a just-started directory may not know every
    home yet (the nodes are still joining again): an unknown phone is then
    not known to be nobody's."""
    token: int
    phone: str
    home: str | None
    settled: bool = True


@dataclass
class Shipment:
    """Gateway to gateway: ``items`` of the origin's outbound queue for the
    receiving node, ``(seq, item)`` oldest first (storage/outq.py);
    ``after``: the last seq of the shipment sent before it (None: the first
    since the origin started or started over)."""
    origin: str
    epoch: str
    items: list
    after: int | None = None
    round: int = 0              # the origin's attempt, echoed in ``Shipped``
    reply_to: Any = None        # where ``Shipped`` goes (the origin's gateway now)

    def __repr__(self) -> str:          # Thespian logs repr() of every message it moves
        return f"Shipment({self.origin}, {len(self.items)} items)"


@dataclass
class Shipped:
    """The receiving gateway applied everything of ``origin``'s queue up to
    ``upto``: the origin may trim it. ``refused``: the shipment ending at
    ``upto`` follows one never applied here (``outq.Gap``): ship again from
    what was confirmed."""
    node: str
    upto: int
    refused: bool = False
    round: int = 0


@dataclass
class Ping:
    """From a member's launcher: is the directory still there? (``Pong``)"""


@dataclass
class Pong:
    nodes: int


@dataclass
class DirectoryFound:
    """To a member's node supervisor and workers: the cluster directory is
    now at ``address`` (the leader restarted): heartbeat and join there."""
    address: Any


@dataclass
class Call:
    """Worker to a node's gateway: run ``request`` there (a read or write of
    data homed on that node, e.g. ``("fetch_keys", fetcher, user)``) and
    send ``Reply(token, ...)`` to ``reply_to``."""
    reply_to: Any
    token: int
    request: tuple


@dataclass
class Reply:
    """``ok``: ``value`` is the result; else ``value`` is ``(reason, text)``,
    the refusal's error reason (actors/messages.py) and message."""
    token: int
    ok: bool
    value: Any


# -- the actors ------------------------------------------------------------------------

class Rendezvous(ActorTypeDispatcher):
    """Created by a member's launcher on the leader (see the module docstring)."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict, requirements: dict) -> bool:
        return bool(capabilities.get(LEADER_CAPABILITY))

    def receiveMsg_WhereIs(self, msg: WhereIs, sender) -> None:
        self.send(sender, self.createActor(ClusterDirectory, globalName=DIRECTORY_NAME))
        self.wakeupAfter(timedelta(seconds=5))      # exiting at once could drop the reply

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        self.send(self.myAddress, ActorExitRequest())


class ClusterDirectory(ActorTypeDispatcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes: dict[str, NodeInfo] = {}
        self.heard: dict[str, float] = {}          # node -> last heartbeat (monotonic)
        self.homes: dict[str, str] = {}
        self.workers: dict[str, Any] = {}
        self.down_since: dict[str, float] = {}     # node marked down -> when (monotonic)
        self.forget_after = FORGET_AFTER
        self.ticking = False
        self.started = time.monotonic()
        # Nodes fetch media from each other with it; drawn anew by a restarted
        # directory, whose views then hand the new one to every worker.
        self.secret = secrets.token_hex(32)

    def receiveMsg_DirectorySettings(self, msg: DirectorySettings, sender) -> None:
        self.forget_after = float(msg.forget_after)

    def receiveMsg_JoinCluster(self, msg: JoinCluster, sender) -> None:
        self._tick_soon()
        self.workers[msg.worker] = msg.address
        self.heard.setdefault(msg.node, time.monotonic())
        changed: dict[str, str] = {}
        if msg.users is not None:
            for phone in msg.users:
                if self.homes.get(phone) != msg.node:
                    if phone in self.homes:
                        _log().error("%s is registered on both %s and %s; keeping %s",
                                     phone, self.homes[phone], msg.node, self.homes[phone])
                        continue
                    self.homes[phone] = changed[phone] = msg.node
            self.nodes[msg.node] = NodeInfo(msg.address, tuple(msg.client), True,
                                            tuple(msg.http) if msg.http else None,
                                            tuple(msg.media) if msg.media else None, msg.slots)
            self.heard[msg.node] = time.monotonic()
            self.down_since.pop(msg.node, None)
            if msg.slots is not None:       # fewer workers than before: the others are gone
                self._forget_workers(msg.node, lambda slot: slot >= msg.slots)
            _log().info("node %s joined the cluster (%d users); nodes %s", msg.node,
                        len(msg.users), sorted(self.nodes))
        self.send(msg.address, self._view())
        up = NodeUp(msg.node, self.nodes.get(msg.node), {msg.worker: msg.address})
        for worker, address in self._listening(skip_node=None):
            if worker != msg.worker:
                self.send(address, up)
                if changed:
                    self.send(address, HomesChanged(changed))

    def receiveMsg_NodeHeartbeat(self, msg: NodeHeartbeat, sender) -> None:
        self._tick_soon()
        self.heard[msg.node] = time.monotonic()
        info = self.nodes.get(msg.node)
        if info is not None and not info.up:
            info.up = True
            self.down_since.pop(msg.node, None)
            _log().info("node %s is up again", msg.node)
            workers = {w: a for w, a in self.workers.items() if w.split("/")[0] == msg.node}
            if not workers:                 # forgotten while it was down: join again
                self.send(sender, DirectoryFound(self.myAddress))
            self._tell_all(NodeUp(msg.node, info, workers), skip_node=msg.node)
            for worker, address in self.workers.items():     # it may have missed changes
                if worker.split("/")[0] == msg.node:
                    self.send(address, self._view())

    def receiveMsg_WorkerLost(self, msg: WorkerLost, sender) -> None:
        if msg.address is not None and self.workers.get(msg.worker) != msg.address:
            return                          # its successor has joined already
        self.workers.pop(msg.worker, None)
        self._tell_all(msg, skip_node=msg.worker.split("/")[0])

    def receiveMsg_Lookup(self, msg: Lookup, sender) -> None:
        home = self.homes.get(msg.phone)
        settled = home is not None or time.monotonic() - self.started > REBUILD
        self.send(sender, Assigned(msg.token, msg.phone, home, settled))

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong(len(self.nodes)))

    def receiveMsg_Assign(self, msg: Assign, sender) -> None:
        home = self.homes.setdefault(msg.phone, msg.node)
        self.send(sender, Assigned(msg.token, msg.phone, home))
        if home == msg.node:
            self._tell_all(HomesChanged({msg.phone: home}), skip_node=None)

    def receiveMsg_ActorSystemConventionUpdate(self, msg: ActorSystemConventionUpdate,
                                               sender) -> None:
        node = (msg.remoteCapabilities or {}).get(NODE_CAPABILITY)
        if (not msg.remoteAdded and node in self.nodes
                and time.monotonic() - self.heard.get(node, 0.0) > RECENT):
            # (a node restarted under the same name registers anew: the news
            # that its old system left must not mark the new one down)
            self._mark_down(node, "its actor system left the convention")

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        now = time.monotonic()
        for node, info in self.nodes.items():
            if info.up and now - self.heard.get(node, now) > DOWN_AFTER:
                self._mark_down(node, f"no heartbeat for {DOWN_AFTER:.0f} s")
            elif not info.up and now - self.down_since.get(node, now) >= self.forget_after:
                self.down_since.pop(node, None)
                self._forget_workers(node, lambda slot: True, tell=False)
        self.wakeupAfter(TICK)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        pass

    # -- internals --------------------------------------------------------------------
    def _tick_soon(self) -> None:
        if not self.ticking:
            self.ticking = True
            self.notifyOnSystemRegistrationChanges(True)
            self.wakeupAfter(TICK)

    def _mark_down(self, node: str, why: str) -> None:
        info = self.nodes[node]
        if not info.up:
            return
        info.up = False
        self.down_since[node] = time.monotonic()
        _log().warning("node %s is down: %s", node, why)
        self._tell_all(NodeDown(node), skip_node=node)

    def _forget_workers(self, node: str, gone: Any, tell: bool = True) -> None:
        """Drop the workers of ``node`` whose slot is ``gone(slot)``; with
        ``tell``, the other nodes' workers hear ``WorkerLost`` (their hubs
        forget what it said; a node down was dropped by all at ``NodeDown``)."""
        for worker in [w for w in self.workers if w.split("/")[0] == node
                       and gone(int(w.split("/")[1]))]:
            address = self.workers.pop(worker)
            _log().info("forgot worker %s", worker)
            if tell:
                self._tell_all(WorkerLost(worker, address), skip_node=node)

    def _view(self) -> ClusterView:
        return ClusterView(dict(self.nodes), dict(self.homes), dict(self.workers), self.secret)

    def _listening(self, skip_node: str | None) -> list[tuple[str, Any]]:
        """The workers to tell: not those of ``skip_node`` nor of a node that
        is down (a send to a dead process only costs Thespian retries)."""
        listening = []
        for worker, address in self.workers.items():
            node = worker.split("/")[0]
            info = self.nodes.get(node)
            if node != skip_node and (info is None or info.up):
                listening.append((worker, address))
        return listening

    def _tell_all(self, msg: Any, skip_node: str | None) -> None:
        for _, address in self._listening(skip_node):
            self.send(address, msg)
