"""``Cluster``: a worker's side of the mesh of workers (the asyncio half; the
Thespian half is ``supervisor/bridge.py`` in ``WorkerProcess``).

It keeps a replica of the session directory (``supervisor/directory.py``):
``owners`` maps every user with a live session on another worker to that
worker, updated by the directory's batched ``OwnersChanged``. So routing to
a user on another worker is a dict lookup, never a round trip:

- ``route(user, msg)``: append to the outbound batch of the owner's worker.
  One batch per destination (WhatsApp kept one outbound queue per
  destination node) is flushed as one Thespian message when it reaches
  ``BATCH_MAX`` items or ``FLUSH_AFTER`` seconds after its first item, so a
  Thespian send (~0.4 ms) carries hundreds of chat events. Batches to one
  worker leave in order and Thespian keeps the order between two actors,
  so order per conversation holds.
- ``broadcast(msg)``: the same, to every peer (presence changes), held up
  to ``PRESENCE_EVERY`` so that the presence of many logins goes out
  together: each broadcast reaches every peer, so it costs a Thespian
  message per peer where a chat nudge costs one.
- ``claim(user)``: before a session attaches, the directory records this
  worker as the owner (evicting any other); awaited by the session
  registry, batched like everything else. ``release(user)`` when it leaves.

What arrives from peers goes to ``deliver``: routed items are cast to local
sessions (a user who left meanwhile is skipped: what matters is in LMDB),
presence items to the local presence hub, ``Evict`` to the session registry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from typing import Any

from actors.presence import PRESENCE_NAME, PeerGone
from actors.router import route_local
from actors.session_registry import REGISTRY_NAME, EvictUsers, clients_of
from supervisor.directory import (Claimed, Claims, DirectoryMoved, Evict, JoinMesh, MeshView,
                                  OwnersChanged, PeerDown, PeerUp, Releases, RouteBatch)

__all__ = ["Cluster", "BATCH_MAX", "FLUSH_AFTER"]

log = logging.getLogger("switchboard.cluster")

BATCH_MAX = 512           # items per Thespian message
FLUSH_AFTER = 0.001       # seconds a batch may wait for more items
FLUSH_EVERY = 0.01        # ... and at least this long after the last flush
PRESENCE_EVERY = 0.1      # seconds a presence broadcast may wait for others


class Cluster:
    """One worker's member of the mesh, found as ``system.env["cluster"]``
    (None on a node of one worker)."""

    def __init__(self, me: str, bridge: Any, directory: Any):
        self.me, self.bridge, self.directory = me, bridge, directory
        self.system: Any = None
        self.peers: dict[str, Any] = {}           # worker -> Thespian address
        self.far: dict[str, Any] = {}             # the other nodes' workers -> address
        self.federation: Any = None               # actors/federation.py, in a cluster of nodes
        self.owners: dict[str, str] = {}          # user -> worker (other than me)
        self.outbound: dict[str, list] = {}       # worker -> items not yet flushed
        self.presence: list = []                  # broadcasts not yet queued for the peers
        self.claims: list[str] = []
        self.waiting: dict[int, list[asyncio.Future]] = {}
        self.claimed: dict[int, tuple[str, ...]] = {}   # token -> users claimed
        self.rejoining: list[asyncio.Future] = []        # claims to answer on MeshView
        self.releases: list[str] = []
        self.tokens = itertools.count(1)
        self.flush_scheduled = False
        self.last_flush = float("-inf")
        self.sent_batches = self.sent_items = self.received_items = 0

    def start(self, system: Any, local_users: tuple[str, ...] = ()) -> None:
        """Serve the bridge on this loop and join the mesh."""
        self.system = system
        self.bridge.serve(asyncio.get_running_loop(), self.deliver)
        self.bridge.post(self.directory, JoinMesh(self.me, self.bridge.address, local_users,
                                                  os.getpid()))

    # -- outbound ---------------------------------------------------------------------
    def route(self, user: str, msg: Any) -> bool:
        """Queue ``msg`` for ``user``'s session on another worker; False if
        no other worker holds the user."""
        worker = self.owners.get(user)
        if worker is None or worker not in self.peers:
            home = self.federation.remote(user) if self.federation is not None else None
            if home is None or f"{home}/0" not in self.far:
                return False
            worker = f"{home}/0"                # its node's gateway routes it there
        self._queue(worker, (user, msg))
        return True

    def broadcast(self, msg: Any) -> None:
        """Queue ``msg`` for every peer's presence hub, on every node, within
        ``PRESENCE_EVERY`` (in order with the other broadcasts)."""
        if not self.presence:
            asyncio.get_running_loop().call_later(PRESENCE_EVERY, self._broadcast_held)
        self.presence.append(msg)

    def _broadcast_held(self) -> None:
        held, self.presence = self.presence, []
        for worker in (*self.peers, *self.far):
            for msg in held:
                self._queue(worker, (None, msg))

    def tell(self, worker: str, msg: Any) -> None:
        """Queue ``msg`` for ``worker``'s presence hub."""
        if worker in self.peers or worker in self.far:
            self._queue(worker, (None, msg))

    # -- the other nodes' workers (kept by the federation) -----------------------------
    def set_far_peers(self, workers: dict[str, Any]) -> None:
        self.far = dict(workers)

    def add_far_peers(self, workers: dict[str, Any]) -> None:
        self.far.update(workers)

    def drop_far_worker(self, worker: str) -> None:
        self.far.pop(worker, None)
        self.outbound.pop(worker, None)

    def drop_far_node(self, node: str) -> None:
        for worker in [w for w in self.far if w.split("/")[0] == node]:
            del self.far[worker]
            self.outbound.pop(worker, None)

    def claim(self, user: str) -> "asyncio.Future[None]":
        future = asyncio.get_running_loop().create_future()
        self.claims.append(user)
        self.waiting.setdefault(0, []).append(future)      # token assigned at flush
        self._schedule()
        return future

    def release(self, user: str) -> None:
        self.releases.append(user)
        self._schedule()

    def _queue(self, worker: str, item: tuple) -> None:
        batch = self.outbound.get(worker)
        if batch is None:
            batch = self.outbound[worker] = []
        batch.append(item)
        if len(batch) >= BATCH_MAX:
            self._send(worker, self.outbound.pop(worker))
        else:
            self._schedule()

    def _schedule(self) -> None:
        """Flush ``FLUSH_AFTER`` from now, or ``FLUSH_EVERY`` after the last
        flush if that is later: an isolated item waits 1 ms, a stream of
        them (a mass login's claims and presence) goes out in at most 100
        Thespian messages a second per peer, each costing its receiver
        ~0.5 ms of Thespian's own work (docs/benchmarks.md, "Connections")."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_later(max(FLUSH_AFTER, self.last_flush + FLUSH_EVERY - loop.time()),
                            self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        self.last_flush = asyncio.get_running_loop().time()
        outbound, self.outbound = self.outbound, {}
        for worker, items in outbound.items():
            self._send(worker, items)
        if self.claims:
            token = next(self.tokens)
            self.waiting[token] = self.waiting.pop(0)
            users, self.claims = tuple(self.claims), []
            self.claimed[token] = users
            self.bridge.post(self.directory, Claims(self.me, users, token))
        if self.releases:
            users, self.releases = tuple(self.releases), []
            self.bridge.post(self.directory, Releases(self.me, users))

    def _send(self, worker: str, items: list) -> None:
        address = self.peers.get(worker) or self.far.get(worker)
        if address is None:
            return                              # the peer went down: its users are gone
        self.sent_batches += 1
        self.sent_items += len(items)
        self.bridge.post(address, RouteBatch(self.me, items))

    # -- inbound (on the loop, from the bridge) -------------------------------------------
    def deliver(self, msg: Any) -> None:
        name = "_on_" + type(msg).__name__
        handler = getattr(self, name, None)
        if handler is None and self.federation is not None:
            handler = getattr(self.federation, name, None)
        if handler is None:
            log.warning("unexpected mesh message %r", type(msg).__name__)
            return
        handler(msg)

    def _on_RouteBatch(self, msg: RouteBatch) -> None:
        self.received_items += len(msg.items)
        hub = None
        far = msg.source.split("/")[0] != self.me.split("/")[0]
        for user, item in msg.items:
            if user is not None:
                worker = self.owners.get(user) if far else None
                if worker is not None and worker in self.peers:
                    self._queue(worker, (user, item))    # from another node, for a sibling
                else:
                    route_local(self.system, user, item)
            else:
                hub = hub or self.system.whereis(PRESENCE_NAME)
                if hub is not None:
                    hub.cast(item)

    def _on_MeshView(self, msg: MeshView) -> None:
        self.peers = {w: a for w, a in msg.peers.items() if w != self.me}
        self.owners = {u: w for u, w in msg.owners.items() if w != self.me}
        for future in self.rejoining:
            if not future.done():
                future.set_result(None)
        self.rejoining.clear()
        log.info("%s joined the mesh: peers %s", self.me, sorted(self.peers))

    def _on_PeerUp(self, msg: PeerUp) -> None:
        if msg.worker != self.me:
            self.peers[msg.worker] = msg.address

    def _on_PeerDown(self, msg: PeerDown) -> None:
        self.peers.pop(msg.worker, None)
        self.outbound.pop(msg.worker, None)
        self.owners = {u: w for u, w in self.owners.items() if w != msg.worker}
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(PeerGone(msg.worker))

    def _on_OwnersChanged(self, msg: OwnersChanged) -> None:
        owners, me, intern = self.owners, self.me, sys.intern
        for user, worker in msg.owners.items():
            if worker is None or worker == me:
                owners.pop(user, None)
            else:                   # interned: one copy of each name with the presence hub's
                owners[intern(user)] = intern(worker)

    def _on_Claimed(self, msg: Claimed) -> None:
        for user in self.claimed.pop(msg.token, ()):
            self.owners.pop(user, None)          # ours now, whatever a peer said before
        for future in self.waiting.pop(msg.token, ()):
            if not future.done():
                future.set_result(None)

    def _on_Evict(self, msg: Evict) -> None:
        registry = self.system.whereis(REGISTRY_NAME)
        if registry is not None:
            registry.cast(EvictUsers(msg.users))

    def _on_DirectoryMoved(self, msg: DirectoryMoved) -> None:
        """Join the new directory with every user held here, and those whose
        claims the old one took with it (answered when the new one has them)."""
        self.directory = msg.address
        users = set(clients_of(self.system))
        for token in [t for t in self.waiting if t != 0]:   # 0: not flushed yet
            users.update(self.claimed.pop(token, ()))
            self.rejoining.extend(self.waiting.pop(token))
        self.bridge.post(msg.address, JoinMesh(self.me, self.bridge.address, tuple(users),
                                               os.getpid()))
