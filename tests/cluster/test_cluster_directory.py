"""The cluster directory on its own, in an in-process Thespian system
(``simpleSystemBase``, real wakeups): probes stand for the workers and node
supervisors of nodes A and B and record what the directory tells them.

What it must not do: keep a worker slot that is gone. A node restarted with
fewer workers never says its old higher slots died, and a node gone for
good never says anything."""

from __future__ import annotations

import time

import pytest
from thespian.actors import ActorSystem, ActorTypeDispatcher

from supervisor.cluster_directory import (DOWN_AFTER, ClusterDirectory, ClusterView,
                                          DirectoryFound, DirectorySettings, JoinCluster,
                                          NodeDown, NodeHeartbeat, NodeUp, WorkerLost)

pytestmark = pytest.mark.timeout(60)

CLIENT_A, CLIENT_B = ("127.0.0.1", 5222), ("127.0.0.1", 5223)


class Probe(ActorTypeDispatcher):
    """Records what it is sent; ``("send", to, msg)`` sends ``msg`` as itself;
    ``"got?"`` answers (and forgets) what it recorded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.got = []

    def receiveMsg_tuple(self, msg, sender):
        self.send(msg[1], msg[2])

    def receiveMsg_str(self, msg, sender):
        self.send(sender, self.got)
        self.got = []

    def receiveUnrecognizedMessage(self, msg, sender):
        self.got.append(msg)


@pytest.fixture
def asys():
    system = ActorSystem("simpleSystemBase", transientUnique=True)
    try:
        yield system
    finally:
        system.shutdown()


def got(asys, probe) -> list:
    return asys.ask(probe, "got?", 2)


def joined(asys, directory, probe, node, worker, client, users=None, slots=None) -> ClusterView:
    asys.tell(probe, ("send", directory, JoinCluster(node, worker, probe, client, users,
                                                     slots=slots)))
    views = [m for m in got(asys, probe) if isinstance(m, ClusterView)]
    assert views, f"{worker} got no view"
    return views[-1]


def test_a_node_restarted_with_fewer_workers_loses_the_others(asys):
    directory = asys.createActor(ClusterDirectory)
    a0, b0, b1, b0_again = (asys.createActor(Probe) for _ in range(4))
    joined(asys, directory, a0, "A", "A/0", CLIENT_A, (), slots=1)
    joined(asys, directory, b0, "B", "B/0", CLIENT_B, ("+1",), slots=2)
    view = joined(asys, directory, b1, "B", "B/1", CLIENT_B)
    assert set(view.workers) == {"A/0", "B/0", "B/1"}
    got(asys, a0)
    # B comes back (within DOWN_AFTER: never marked down) with one worker
    view = joined(asys, directory, b0_again, "B", "B/0", CLIENT_B, ("+1",), slots=1)
    assert set(view.workers) == {"A/0", "B/0"}, view.workers
    assert view.nodes["B"].slots == 1 and view.homes == {"+1": "B"}
    told = got(asys, a0)
    assert WorkerLost("B/1", b1) in told, told       # A's hubs forget what B/1 said
    ups = [m for m in told if isinstance(m, NodeUp)]
    assert ups and ups[-1].info.slots == 1 and set(ups[-1].workers) == {"B/0"}, ups


def test_the_workers_of_a_node_down_for_good_are_forgotten(asys):
    directory = asys.createActor(ClusterDirectory)
    asys.tell(directory, DirectorySettings(forget_after=0.5))
    a0, a1, b0, b1, b_sup = (asys.createActor(Probe) for _ in range(5))
    joined(asys, directory, a0, "A", "A/0", CLIENT_A, (), slots=2)
    joined(asys, directory, b0, "B", "B/0", CLIENT_B, ("+1",), slots=2)
    joined(asys, directory, b1, "B", "B/1", CLIENT_B)
    # A heartbeats, B has stopped: B is marked down, then its workers forgotten
    deadline = time.monotonic() + DOWN_AFTER + 5
    down_at = None
    while time.monotonic() < deadline:
        asys.tell(a0, ("send", directory, NodeHeartbeat("A")))
        if down_at is None and NodeDown("B") in got(asys, a0):
            down_at = time.monotonic()
        if down_at is not None and time.monotonic() - down_at > 1.0:
            break
        time.sleep(0.1)
    assert down_at is not None, "B was never marked down"
    view = joined(asys, directory, a1, "A", "A/1", CLIENT_A)
    assert set(view.workers) == {"A/0", "A/1"}, view.workers
    assert not view.nodes["B"].up and view.homes == {"+1": "B"}   # still B's users' home
    # B is heard again without having restarted (it was cut off): it is
    # asked to join again, its workers being unknown now
    asys.tell(b_sup, ("send", directory, NodeHeartbeat("B")))
    assert DirectoryFound(directory) in got(asys, b_sup)
    joined(asys, directory, b0, "B", "B/0", CLIENT_B, ("+1",), slots=2)
    view = joined(asys, directory, b1, "B", "B/1", CLIENT_B)
    assert set(view.workers) == {"A/0", "A/1", "B/0", "B/1"} and view.nodes["B"].up
