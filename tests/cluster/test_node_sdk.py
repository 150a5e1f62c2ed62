"""The SDK against a real cluster: a client that connects to the wrong node
is sent home (WRONG_NODE) and follows; end-to-end encrypted chat crosses
nodes (the key fetch runs on the peer's home node); a client whose home
dies reconnects to it when it returns, and what it sent meanwhile (kept in
its outbox) goes out then."""

from __future__ import annotations

import asyncio

import pytest

from client import Backoff, Client, Message
from client.events import KeyChanged
from tests.cluster.cluster_nodes import cluster
from transport.crypto import DeviceKey

pytestmark = pytest.mark.timeout(150)

ALICE, BOB = "+15553000001", "+15553000002"
FAST = dict(backoff=Backoff(initial=0.05, maximum=0.5), request_timeout=5.0, connect_timeout=2.0)


async def sdk_user(c, home: str, connect_to: str, phone: str, tmp_path) -> Client:
    """Register ``phone`` on node ``home``, then log in through ``connect_to``."""
    node = c[home].node
    key = DeviceKey()
    first = await Client.connect(node.host, node.port, e2e_dir=str(tmp_path / phone), **FAST)
    await first.register(phone)
    device = await first.confirm(phone, node.codes[phone], key)
    await first.close()
    there = c[connect_to].node
    client = await Client.connect(there.host, there.port, e2e_dir=str(tmp_path / phone), **FAST)
    await client.login(phone, device, key)
    return client


async def next_message(client: Client, timeout: float = 10.0) -> Message:
    async def find():
        async for event in client.events():
            if isinstance(event, Message):
                return event
    return await asyncio.wait_for(find(), timeout)


async def test_sdk_follows_redirects_and_chats_encrypted_across_nodes(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        alice = await sdk_user(c, "A", "A", ALICE, tmp_path)
        bob = await sdk_user(c, "B", "A", BOB, tmp_path)          # connects to A: sent to B
        assert bob.home == ("127.0.0.1", c["B"].node.port)
        await alice.send(BOB, b"hello from A")
        assert (await next_message(bob)).body == b"hello from A"
        await bob.send(ALICE, b"hello from B")
        assert (await next_message(alice)).body == b"hello from B"
        # bob's home dies; bob writes while it is down; it comes back
        port = c["B"].node.port
        c["B"].kill()
        sending = asyncio.ensure_future(bob.send(ALICE, b"written while B was down"))
        await asyncio.sleep(1.0)
        assert not sending.done()
        await asyncio.to_thread(c.restart, "B", port)
        await asyncio.wait_for(sending, 30)
        assert (await next_message(alice, 20)).body == b"written while B was down"
        await alice.close()
        await bob.close()


async def test_a_key_change_reaches_a_contact_on_another_node(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        alice = await sdk_user(c, "A", "A", ALICE, tmp_path)
        bob = await sdk_user(c, "B", "B", BOB, tmp_path)
        await alice.send(BOB, b"hi")                 # alice (A) fetched bob's keys (on B)
        assert (await next_message(bob)).body == b"hi"
        await bob.send(ALICE, b"hi back")            # and bob fetched alice's (on A)
        assert (await next_message(alice)).body == b"hi back"
        await alice.close()
        # alice registers a new device on A: bob, on B, is told
        node = c["A"].node
        again = await Client.connect(node.host, node.port, e2e_dir=str(tmp_path / "new"), **FAST)
        await again.register(ALICE)
        await again.confirm(ALICE, node.codes[ALICE], DeviceKey())
        await again.close()

        async def key_changed():
            async for event in bob.events():
                if isinstance(event, KeyChanged):
                    return event
        event = await asyncio.wait_for(key_changed(), 10)
        assert event.user == ALICE, event
        await bob.close()
