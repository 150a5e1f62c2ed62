"""The mesh's parts on their own: the bridge between a worker's two threads,
and what a batch between workers carries surviving pickling."""

from __future__ import annotations

import asyncio
import pickle
import threading

from actors.messages import InboxAppended, TypingChanged
from storage.records import GroupEvent, InboxItem, KeyNotice, Message, Receipt
from supervisor.bridge import Bridge
from supervisor.directory import RouteBatch


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
