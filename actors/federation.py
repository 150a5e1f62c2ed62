"""``Federation``: a worker's view of the cluster of nodes (the node-level
half of the mesh; ``actors/cluster.py`` is the worker-level half). Found as
``system.env["federation"]`` (None on a node that is not in a cluster).

Where a user's data lives (docs/cluster.md): every user has a *home node*,
the node the phone was registered on. The home holds the account, the
inbox, the dedup records and the live session; a client that connects
elsewhere is sent home (``WRONG_NODE`` with the home's address). So
everything a session does stays on its node, except appending to the inbox
of a user homed elsewhere, which storage turns into an item of a durable
per-destination queue in the same transaction (storage/outq.py): the
sender's ACK still waits for a commit, on the sender's home.

This object keeps:

- a replica of the cluster directory (supervisor/cluster_directory.py):
  ``homes`` (phone -> node), ``nodes`` (gateway and client address, up or
  down), the other nodes' workers (handed to the ``Cluster`` so presence
  broadcasts reach every hub of the cluster);
- on the node's *gateway* (worker 0) the forwarder and the receiving end
  of the queues (the ``Shipping`` mixin, actors/shipping.py);
- ``call``: requests run on the node that holds the data (key fetches,
  group commands, GROUP_INFO, READs of a group's messages).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import replace
from typing import Any

from actors.messages import Acked
from actors.presence import PRESENCE_NAME, PeerGone, TellOnline
from actors.shipping import OUTQ_HIGH, Shipping
from storage.metas import Homes
from storage.records import InboxItem
from supervisor.cluster_directory import (Assign, Assigned, Call, ClusterView, DirectoryFound,
                                          HomesChanged, JoinCluster, Lookup, NodeDown, NodeUp,
                                          Reply, WorkerLost)

__all__ = ["Federation", "RemoteRefused", "NodeUnavailable"]

log = logging.getLogger("switchboard.federation")

ASSIGN_TIMEOUT = 5.0
CALL_TIMEOUT = 5.0


class RemoteRefused(Exception):
    """The node that holds the data refused the call: ``reason`` is the
    error reason it gave (actors/messages.py), answered to the client as is."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


class NodeUnavailable(Exception):
    """The node that holds the data is down or did not answer."""


class Federation(Shipping):
    def __init__(self, node: str, worker: str, directory: Any, client: tuple[str, int],
                 gateway: bool):
        self.node, self.worker, self.directory = node, worker, directory
        self.client, self.gateway = client, gateway
        self.homes: dict[str, str] = {}        # its replica: learn_homes()
        self.remote = Homes(node, self.homes)   # remote(user): its home when not this node
        self.nodes: dict[str, Any] = {}            # node -> NodeInfo
        self.cluster: Any = None
        self.system: Any = None
        self.mail: Any = None
        self.cap = 10_000
        self.tokens = itertools.count(1)
        self.assigning: dict[int, asyncio.Future] = {}
        self.calls: dict[int, asyncio.Future] = {}
        self.init_shipping()
        self.ready = asyncio.Event()                # set by the first ClusterView
        self.secret = ""            # the cluster's node credential, from the ClusterView
        self.addresses: dict[str, Any] = {}     # other nodes' workers -> the last address heard

    def start(self, system: Any, cluster: Any) -> None:
        self.system, self.cluster = system, cluster
        self.mail = system.env["mailbox"]
        self.cap = int(system.env.get("offline_cap", self.cap))
        self.outq_high = int(system.env["config"].get("outq_high", OUTQ_HIGH))
        self.mail.follow_homes(self.remote)
        self._join()
        if self.gateway:
            self.forwarder = asyncio.ensure_future(self._forward())

    def _join(self) -> None:
        cluster, system = self.cluster, self.system
        users = tuple(self.mail.local_users()) if self.gateway else None
        ports = system.env["config"].get("http_ports") or ()
        http = (self.client[0], int(ports[0])) if ports and ports[0] else None
        media_port = system.env["config"].get("media_port")
        media = (self.client[0], int(media_port)) if media_port else None
        slots = system.env["config"].get("worker_count") if self.gateway else None
        cluster.bridge.post(self.directory, JoinCluster(self.node, self.worker,
                                                        cluster.bridge.address, self.client, users,
                                                        http, media, slots))

    def _on_DirectoryFound(self, msg: DirectoryFound) -> None:
        """The leader was restarted: join its new directory (rebuilt from the joins)."""
        self.directory = msg.address
        self._join()

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.cancel()

    # -- questions ------------------------------------------------------------------
    def client_of(self, node: str) -> tuple[str, int] | None:
        info = self.nodes.get(node)
        return None if info is None else tuple(info.client)

    def media_of(self, node: str) -> tuple[str, int] | None:
        """``node``'s media HTTP address (read by the media fetcher's thread)."""
        info = self.nodes.get(node)
        return None if info is None or info.media is None else tuple(info.media)

    def is_up(self, node: str) -> bool:
        info = self.nodes.get(node)
        return info is not None and info.up

    async def home_for(self, phone: str, sure: bool = True) -> str | None:
        """Where ``phone`` must register or log in, when not here (None: here,
        or a phone nobody holds yet). A phone the replica does not know and
        this node has no account for is looked up in the directory: the
        replica may lag a registration made on another node a moment ago.
        ``NodeUnavailable`` when the directory cannot say (it does not answer,
        or it was just started and the nodes may still be joining it, unless
        ``sure`` is False: a registration goes ahead then, see docs/cluster.md)."""
        if phone in self.homes or self.mail.get_account(phone) is not None:
            return self.remote(phone)
        try:
            answer = await self._ask(Lookup, phone)
        except asyncio.TimeoutError:
            raise NodeUnavailable("the cluster directory did not answer; try again") from None
        if not answer.settled and sure:
            raise NodeUnavailable("the cluster directory is being rebuilt; try again")
        return self.remote(phone)

    async def _ask(self, kind: type, phone: str, *args: Any) -> Assigned:
        token = next(self.tokens)
        future = self.assigning[token] = asyncio.get_running_loop().create_future()
        self.cluster.bridge.post(self.directory, kind(phone, *args, token))
        try:
            return await asyncio.wait_for(future, ASSIGN_TIMEOUT)
        finally:
            self.assigning.pop(token, None)

    async def settle_home(self, phone: str) -> None:
        """``phone`` was just confirmed here: make this node its home in the
        directory (``Assign``). Only a confirmed registration does this: a
        REGISTER costs nothing to send, for any number, and must not decide
        a home. Two nodes confirming one new phone at the same moment (the
        same person, two codes) is the one conflict left: the first wins,
        the other's account is never used (logged)."""
        if phone in self.homes:
            return
        try:
            home = (await self._ask(Assign, phone, self.node)).home
        except asyncio.TimeoutError:
            log.warning("the cluster directory did not confirm %s's home; it is told "
                        "again when this node joins it", phone)
            return
        if home != self.node:
            log.error("%s was confirmed here and on node %s at once: %s is its home",
                      phone, home, home)

    # -- calls to another node: data homed there, read or written there ------------------
    def call(self, node: str, request: tuple) -> "asyncio.Future[Any]":
        """Run ``request`` on ``node`` (see ``_serve``); the future fails with
        ``RemoteRefused`` if it refused, ``NodeUnavailable`` if the node is down
        or does not answer within ``CALL_TIMEOUT``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        info = self.nodes.get(node)
        if info is None or not info.up:
            future.set_exception(NodeUnavailable(f"node {node} is down; try again later"))
            return future
        token = next(self.tokens)
        self.calls[token] = future
        self.cluster.bridge.post(info.gateway, Call(self.cluster.bridge.address, token, request))
        loop.call_later(CALL_TIMEOUT, self._call_timed_out, token, node)
        return future

    async def group_info(self, user: str, request: Any, local: Any) -> list[Any]:
        """GROUP_INFO across nodes: a named group from its home node, else
        ``user``'s groups gathered from every node that is up (a node that is
        down or slow is left out of the list rather than failing it)."""
        from actors.group import group_home, remote_answer
        bare = replace(request, client=None)
        if request.group is not None:
            home = self.remote(group_home(request.group))
            if home is None:
                return local(self.mail, user, request)
            future = self.call(home, ("group_info", user, bare))
            try:
                return await future
            except Exception:  # noqa: BLE001 - answered as the refusal it was
                return [remote_answer(request.ref, future)]
        events = local(self.mail, user, request)[:-1]
        others = [n for n, info in self.nodes.items() if n != self.node and info.up]
        answers = await asyncio.gather(*(self.call(n, ("group_info", user, bare)) for n in others),
                                       return_exceptions=True)
        for answer in answers:
            if isinstance(answer, list):
                events.extend(answer[:-1])
        return [*events, Acked(request.ref, len(events))]

    def _call_timed_out(self, token: int, node: str) -> None:
        future = self.calls.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(NodeUnavailable(f"node {node} did not answer; try again"))

    def _on_Reply(self, msg: Reply) -> None:
        future = self.calls.pop(msg.token, None)
        if future is None or future.done():
            return
        if msg.ok:
            future.set_result(msg.value)
        else:
            future.set_exception(RemoteRefused(*msg.value))

    def _on_Call(self, msg: Call) -> None:
        kind, *args = msg.request
        if kind == "group":                 # a member homed elsewhere: the group runs here
            from actors.group import forward
            user, command = args
            port = _ReplyPort(self.cluster.bridge, msg)
            asyncio.ensure_future(forward(self.system, user, replace(command, client=port)))
            return
        if kind == "group_info":            # reads: answered at once
            from actors.group import group_info
            self.cluster.bridge.post(msg.reply_to, Reply(msg.token, True,
                                                         group_info(self.mail, *args)))
            return
        if kind == "fetch_keys":
            done = self.mail.fetch_keys(*args)
        elif kind == "read":                # READ of a group's messages: checked where it lives
            reader, peer, ids, group = args
            done = self.mail.store_read(reader, peer, ids, None, group)
        else:
            self.cluster.bridge.post(msg.reply_to, Reply(msg.token, False,
                                                         ("invalid", f"unknown call {kind!r}")))
            return
        loop = asyncio.get_running_loop()
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._served, msg, f))

    def _served(self, msg: Call, done: Any) -> None:
        from actors.key_directory import refusal_reason
        error = done.exception()
        if error is not None:
            reply = Reply(msg.token, False, (refusal_reason(error), str(error)))
        elif msg.request[0] == "read":
            routed = done.result()
            self._nudge([(r.to, InboxItem(r.seq, "receipt", r.receipt)) for r in routed if r.seq])
            reply = Reply(msg.token, True, len(routed))
        else:
            reply = Reply(msg.token, True, done.result())
        self.cluster.bridge.post(msg.reply_to, reply)

    def _nudge(self, appended: list) -> None:
        """Tell local sessions of items just appended to their inboxes."""
        from actors.router import nudge
        per_user: dict[str, list] = {}
        for user, item in appended:
            per_user.setdefault(user, []).append(item)
        nudge(self.system, per_user)

    # -- from the cluster directory (through Cluster.deliver) ---------------------------
    def _on_ClusterView(self, msg: ClusterView) -> None:
        for node, info in msg.nodes.items():       # a moved gateway: send again at once
            known = self.nodes.get(node)
            if known is not None and known.gateway != info.gateway:
                self.restart_link(node)
            self._count_slots(node, info)
        self.nodes.update(msg.nodes)            # merged: a node not rejoined yet stays known
        self.learn_homes(msg.homes)
        self.secret = msg.secret or self.secret
        far = {w: a for w, a in msg.workers.items()
               if w.split("/")[0] != self.node and self.is_up(w.split("/")[0])
               and not self._past_slots(w)}
        self._forget_old_incarnations(far)
        self.cluster.set_far_peers(far)
        log.info("%s: cluster view: nodes %s, %d homes", self.worker,
                 {n: ("up" if i.up else "down") for n, i in self.nodes.items()}, len(self.homes))
        self._tell_online(tuple(self.cluster.far))
        self.ready.set()
        self.poke.set()

    def _on_NodeUp(self, msg: NodeUp) -> None:
        if msg.info is not None:
            known = self.nodes.get(msg.node)
            if known is None or not known.up:
                log.info("%s: heard of node %s (up)", self.worker, msg.node)
            if known is None or known.gateway != msg.info.gateway:
                self.restart_link(msg.node)    # a new gateway: send again at once
            self._count_slots(msg.node, msg.info)
            self.nodes[msg.node] = msg.info
        if msg.node != self.node:
            self._forget_old_incarnations(msg.workers)
            self.cluster.add_far_peers(msg.workers)
            self._tell_online(tuple(msg.workers))
        self.poke.set()

    def _count_slots(self, node: str, info: Any) -> None:
        """``node`` now runs ``info.slots`` workers: if it ran more before (it
        restarted with fewer; nobody says so of a worker that never comes
        back), the others are gone, and what they said about presence too."""
        known = self.nodes.get(node)
        if (node == self.node or info.slots is None or known is None
                or known.slots in (None, info.slots)):
            return
        for worker in [w for w in self.cluster.far if w.split("/")[0] == node]:
            if int(worker.split("/")[1]) >= info.slots:
                self.cluster.drop_far_worker(worker)
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None and info.slots < known.slots:
            hub.cast(PeerGone(node, info.slots))

    def _past_slots(self, worker: str) -> bool:
        node, _, slot = worker.partition("/")
        info = self.nodes.get(node)
        return info is not None and info.slots is not None and int(slot) >= info.slots

    def _forget_old_incarnations(self, workers: dict[str, Any]) -> None:
        """A worker joining under a name we knew at another address is a new
        incarnation (its node or it restarted, maybe unseen: a leader's death
        is told by nobody): what the old one said about presence is void.
        (Kept apart from ``cluster.far``, which a view without the worker
        empties: a new leader's, before that node joined it again.)"""
        hub = self.system.whereis(PRESENCE_NAME)
        for worker, address in workers.items():
            old, self.addresses[worker] = self.addresses.get(worker), address
            if hub is not None and old is not None and old != address:
                hub.cast(PeerGone(worker))

    def _tell_online(self, workers: tuple[str, ...]) -> None:
        hub = self.system.whereis(PRESENCE_NAME) if workers else None
        if hub is not None:
            hub.cast(TellOnline(workers))

    def _on_NodeDown(self, msg: NodeDown) -> None:
        info = self.nodes.get(msg.node)
        if info is not None:
            info.up = False
        self.restart_link(msg.node)
        self.cluster.drop_far_node(msg.node)
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(PeerGone(msg.node))
        log.warning("%s: node %s is down", self.worker, msg.node)

    def _on_HomesChanged(self, msg: HomesChanged) -> None:
        self.learn_homes(msg.homes)

    def learn_homes(self, homes: dict[str, str]) -> None:
        """Update the replica (and the store's, before any later op)."""
        self.homes.update(homes)
        self.mail.homes_changed(homes)

    def _on_WorkerLost(self, msg: WorkerLost) -> None:
        """One worker of another node died (its node restarts it): what it
        said about presence no longer holds."""
        if msg.address is not None and self.cluster.far.get(msg.worker) not in (None, msg.address):
            return                          # news of an incarnation already replaced
        self.cluster.drop_far_worker(msg.worker)
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(PeerGone(msg.worker))

    def _on_Assigned(self, msg: Assigned) -> None:
        if msg.home is not None:
            self.learn_homes({msg.phone: msg.home})
        future = self.assigning.get(msg.token)
        if future is not None and not future.done():
            future.set_result(msg)


class _ReplyPort:
    """Stands for the client of a request run for another node: its one
    answer goes back as the call's ``Reply`` (what a connection's ``push``
    is to a local request)."""

    def __init__(self, bridge: Any, call: Call):
        self.bridge, self.call, self.answered = bridge, call, False

    def push(self, event: Any) -> None:
        if not self.answered:
            self.answered = True
            self.bridge.post(self.call.reply_to, Reply(self.call.token, True, event))
