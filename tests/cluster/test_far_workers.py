"""What one worker of node B makes of node A's workers coming and going:
a real ``Federation``, ``Cluster`` and ``PresenceHub`` on a real actor
``System``; the Thespian side (the bridge) only records what would be sent.

The case: A (the leader, 2 workers) dies and comes back with 1 worker.
Nobody tells B that A/0's old incarnation or A/1 died (the directory died
with A), and B may join the new directory before A's workers have: its
view then lists none of A's workers. What A's old workers said about
presence must still be void, the ones that never come back included."""

from __future__ import annotations

import asyncio

from actors.cluster import Cluster
from actors.federation import Federation
from actors.presence import PRESENCE_NAME, PresenceHub, UserOnline, Watch
from actors.system import System
from supervisor.cluster_directory import ClusterView, NodeInfo, NodeUp

ALICE, CAROL = "+15550000001", "+15550000003"       # online on A/0, on A/1


class _Bridge:
    address = "B/0@thespian"

    def __init__(self):
        self.posted = []

    def post(self, address, message):
        self.posted.append((address, message))


class _Mail:
    def homes_changed(self, homes):
        pass


def info(gateway: str, slots: int) -> NodeInfo:
    return NodeInfo(gateway, ("127.0.0.1", 5222), True, None, None, slots)


async def online(hub, users) -> dict[str, bool]:
    changes = await hub.call(Watch("+15550000002", tuple(users)))
    return {c.user: c.online for c in changes}


async def test_a_leader_back_with_fewer_workers_voids_what_its_old_ones_said():
    async with System() as system:
        cluster = Cluster("B/0", _Bridge(), "mesh directory")
        fed = Federation("B", "B/0", "cluster directory", ("127.0.0.1", 5223), gateway=False)
        fed.system, fed.cluster, fed.mail = system, cluster, _Mail()
        cluster.federation = fed
        system.env.update(cluster=cluster, federation=fed)
        hub = await system.spawn(PresenceHub, lambda user: None, name=PRESENCE_NAME)
        # the first directory's view: A runs A/0 and A/1, whose users are online
        cluster.deliver(ClusterView({"A": info("a0", 2), "B": info("b0", 1)}, {},
                                    {"A/0": "a0", "A/1": "a1", "B/0": "b0"}))
        assert set(cluster.far) == {"A/0", "A/1"}
        hub.cast(UserOnline(ALICE, "A/0"))
        hub.cast(UserOnline(CAROL, "A/1"))
        assert await online(hub, (ALICE, CAROL)) == {ALICE: True, CAROL: True}
        # A died and restarted; B joins the new directory before A's workers do
        cluster.deliver(ClusterView({"B": info("b0", 1)}, {}, {"B/0": "b0"}))
        assert await online(hub, (ALICE, CAROL)) == {ALICE: True, CAROL: True}   # nobody said
        # A's gateway joins the new directory: one worker, at a new address
        cluster.deliver(NodeUp("A", info("a0-new", 1), {"A/0": "a0-new"}))
        await asyncio.sleep(0.05)
        assert await online(hub, (ALICE, CAROL)) == {ALICE: False, CAROL: False}
        assert cluster.far == {"A/0": "a0-new"}
