"""The mesh's parts on their own: the bridge between a worker's two threads,
and what a batch between workers carries surviving pickling."""

from __future__ import annotations

import asyncio
import pickle
import threading

from actors.cluster import Cluster
from actors.messages import InboxAppended, TypingChanged
from storage.records import GroupEvent, InboxItem, KeyNotice, Message, Receipt
from supervisor.bridge import Bridge
from supervisor.directory import Claimed, Claims, DirectoryMoved, JoinMesh, MeshView, RouteBatch


def test_a_batch_survives_pickling_and_reprs_cheaply():
    items = [
        ("+1", InboxAppended(7, (InboxItem(6, "message", Message("m1", "+2", 5, b"\x00body", "g/1")),
                                 InboxItem(7, "receipt", Receipt("read", "m0", "+3", 6))))),
        ("+4", InboxAppended(2, (InboxItem(2, "group", GroupEvent("g/1", "added", "+1", ("+4",),
                                                                  "team", 9, 0)),))),
        ("+5", TypingChanged("+1", True)),
        ("+6", KeyNotice("+1", 2, 10)),
    ]
    batch = RouteBatch("node/0", items * 100)
    again = pickle.loads(pickle.dumps(batch))
    assert again.source == "node/0" and again.items == batch.items
    assert repr(batch) == "RouteBatch(node/0, 400 items)"


async def test_the_bridge_wakes_thespian_once_per_burst_and_delivers_on_the_loop():
    bridge = Bridge()
    delivered = []
    loop = asyncio.get_running_loop()
    bridge.serve(loop, delivered.append)
    try:
        # asyncio -> Thespian: a burst of posts leaves one wake-up byte, and a
        # drain sends everything in order.
        for i in range(100):
            bridge.post("addr", i)
        assert len(bridge._reader.recv(16)) == 1
        sent = []
        assert bridge.drain(lambda address, message: sent.append((address, message))) == 100
        assert sent == [("addr", i) for i in range(100)]
        assert bridge.drain(lambda *a: sent.append(a)) == 0
        # Thespian -> asyncio: delivered from another thread, run on the loop.
        thread = threading.Thread(target=lambda: [bridge.deliver(i) for i in range(10)])
        thread.start()
        thread.join()
        for _ in range(100):
            if len(delivered) == 10:
                break
            await asyncio.sleep(0.01)
        assert delivered == list(range(10))
    finally:
        bridge.close()
    assert not bridge.deliver("late")


class RecordingBridge:
    """The bridge's asyncio-side surface, recording what the Cluster posts."""

    address = "me-addr"

    def __init__(self):
        self.posted = []

    def serve(self, loop, handler):
        self.handler = handler

    def post(self, address, message):
        self.posted.append((address, message))


class NoSystem:
    env: dict = {}

    def whereis(self, name):
        return None


async def test_claims_lost_with_the_old_directory_are_made_again_to_the_new_one():
    bridge = RecordingBridge()
    cluster = Cluster("node/0", bridge, "old-dir")
    cluster.start(NoSystem())
    # Step 1: a claim is flushed to the old directory, which dies unanswered.
    claim = cluster.claim("+1")
    cluster.flush()
    assert isinstance(bridge.posted[-1][1], Claims) and bridge.posted[-1][0] == "old-dir"
    # Step 2: another claim is queued, not yet flushed; then the directory moves.
    later = cluster.claim("+2")
    cluster.deliver(DirectoryMoved("new-dir"))
    address, join = bridge.posted[-1]
    assert address == "new-dir" and isinstance(join, JoinMesh) and "+1" in join.users
    # Step 3: the new directory's view answers the lost claim; the queued one
    # goes to the new directory with the next flush and is answered there.
    cluster.deliver(MeshView({"node/0": "me-addr"}, {"+1": "node/0"}))
    assert claim.done() and not later.done()
    cluster.flush()
    address, claims = bridge.posted[-1]
    assert address == "new-dir" and claims.users == ("+2",)
    cluster.deliver(Claimed(claims.token))
    assert later.done()
