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
from datetime import timedelta
from typing import Any

from thespian.actors import (ActorExitRequest, ActorSystemConventionUpdate, ActorTypeDispatcher,
                             WakeupMessage)

from supervisor.cluster_messages import (  # the cluster's messages, importable from here too
    FORGET_AFTER, Assign, Assigned, Call, ClusterView, DirectoryFound, DirectorySettings,
    HomesChanged, JoinCluster, Lookup, NodeDown, NodeHeartbeat, NodeInfo, NodeUp, Ping, Pong, Reply,
    Shipment, Shipped, WhereIs, WorkerLost)

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
TICK = timedelta(seconds=0.5)


def _log() -> logging.Logger:
    return logging.getLogger("switchboard.cluster_directory")


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
