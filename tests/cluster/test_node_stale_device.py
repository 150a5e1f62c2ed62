"""A recipient's replaced device across two real nodes: Bob is homed on B,
Alice on A. Alice's node cannot know Bob's device, so it accepts her SENDs
(one tick) and ships them; B refuses those sealed for Bob's replaced device
and sends back FAILED receipts, with which A frees their ids; Alice's SDK
seals them again for Bob's new device and sends them again under the same
ids: Bob's new device reads every one, in order, once, and Alice never sees
a failure."""

from __future__ import annotations

import asyncio

import pytest

from client import Client
from client.events import Receipt, Sent
from tests.client.client_testkit import texts
from tests.cluster.cluster_nodes import cluster
from tests.cluster.test_node_sdk import FAST, sdk_user
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(150)

ALICE, BOB = "+15553000011", "+15553000012"


async def test_messages_for_a_replaced_device_on_another_node_are_sealed_again(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        outbox = str(tmp_path / "alice.outbox")
        # Step 1: a conversation across the nodes; Alice's session is with Bob's device 1
        key = DeviceKey()
        alice = await Client.connect(a.host, a.port, e2e_dir=str(tmp_path / ALICE),
                                     outbox_path=outbox, **FAST)
        await alice.register(ALICE)
        device = await alice.confirm(ALICE, a.codes[ALICE], key)
        await alice.login(ALICE, device, key)
        bob = await sdk_user(c, "B", "B", BOB, tmp_path)
        await alice.send(BOB, "hello")
        assert await texts(bob, 1, 30.0) == ["hello"]
        await alice.close()
        await bob.close()
        # Step 2: Bob registers a new device on B and logs in (its keys published)
        bob = await Client.connect(b.host, b.port, e2e_dir=str(tmp_path / "new-bob"), **FAST)
        await bob.register(BOB)
        new_key = DeviceKey()
        new_device = await bob.confirm(BOB, b.codes[BOB], new_key)
        await bob.login(BOB, new_device, new_key)
        # Step 3: Alice, offline, wrote three messages sealed for the old device
        alice = await Client.connect(a.host, a.port, e2e_dir=str(tmp_path / ALICE),
                                     outbox_path=outbox, **FAST)
        pending = [asyncio.ensure_future(alice.send(BOB, f"old {i}", id=f"old-{i}"))
                   for i in range(3)]
        await asyncio.sleep(0.3)
        assert len(alice.outbox) == 3
        # Step 4: she logs in at A: A accepts them (Bob is B's), B refuses them,
        # her SDK seals them again: Bob's new device reads each, in order, once
        await alice.login(ALICE, device, key)
        sent = await asyncio.gather(*pending)
        assert [s.id for s in sent] == ["old-0", "old-1", "old-2"]
        assert await texts(bob, 3, 30.0) == ["old 0", "old 1", "old 2"]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(texts(bob, 1), 1.0)
        # Step 5: A acknowledged each twice (it cannot tell; B refused the first), and
        # the FAILED receipts were the SDK's business: no failure shown
        assert all(alice.status(f"old-{i}").name in ("SENT", "DELIVERED", "READ") for i in range(3))
        events = []
        while not alice._receiver._queue.empty():
            events.append(alice._receiver._queue.get_nowait())
        assert not [e for e in events if isinstance(e, Receipt) and e.kind.name == "FAILED"]
        assert sorted(e.id for e in events if isinstance(e, Sent)) == [
            "old-0", "old-0", "old-1", "old-1", "old-2", "old-2"]
        await alice.close()
        await bob.close()
