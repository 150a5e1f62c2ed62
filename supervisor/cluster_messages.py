"""The messages between the nodes of a cluster and its directory
(``supervisor.cluster_directory``), and between the nodes' gateways
(``actors.shipping``, ``actors.federation``): pickled by Thespian across
processes and machines, so each is a plain dataclass and every node must
run the same code. What each means is said where it is handled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORGET_AFTER = 60.0      # seconds a node is down before its workers' addresses are dropped

__all__ = ["FORGET_AFTER", "WhereIs", "NodeInfo", "DirectorySettings", "JoinCluster", "ClusterView", "NodeUp", "NodeDown", "WorkerLost", "HomesChanged", "NodeHeartbeat", "Assign", "Lookup", "Assigned", "Shipment", "Shipped", "Ping", "Pong", "DirectoryFound", "Call", "Reply"]



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
