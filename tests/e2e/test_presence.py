"""Presence, last seen and typing over a real node."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import RawClient, login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000031", "+15550000032"


async def test_presence_online_then_last_seen_on_disconnect(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    bob = await login(node, bob_acct)
    # Step 1: alice has never been online: offline, no last seen.
    ref = bob.send(wire.Subscribe((ALICE,), ref=bob.ref()))
    assert isinstance(await bob.answer(ref), wire.Ack)
    first, _ = await bob.recv_until(lambda f: isinstance(f, wire.Presence))
    assert (first.user, first.online, first.last_seen) == (ALICE, False, None)
    # Step 2: alice logs in: bob sees her online.
    alice = await login(node, alice_acct)
    online, _ = await bob.recv_until(lambda f: isinstance(f, wire.Presence))
    assert (online.user, online.online) == (ALICE, True)
    # Step 3: she disconnects: bob sees her offline, with a last-seen time.
    before = int(time.time() * 1000)
    await alice.close()
    offline, _ = await bob.recv_until(lambda f: isinstance(f, wire.Presence))
    assert offline.online is False and offline.last_seen is not None and offline.last_seen >= before
    # Step 4: subscribing again later still reports that last seen (it is stored).
    ref = bob.send(wire.Subscribe((ALICE,), ref=bob.ref()))
    again, _ = await bob.recv_until(lambda f: isinstance(f, wire.Presence))
    assert again.last_seen == offline.last_seen
    await bob.close()


async def test_subscribe_is_acked_before_its_presence_frames(node):
    """SUBSCRIBE answers "ACK nil, then PRESENCE frames" (docs/protocol.md);
    the server sent the PRESENCE frames first (found by review)."""
    await register(node, ALICE)
    bob = await login(node, await register(node, BOB))
    ref = bob.send(wire.Subscribe((ALICE,), ref=bob.ref()))
    assert await bob.recv() == wire.Ack(None, ref=ref)
    state = await bob.recv()
    assert isinstance(state, wire.Presence) and (state.user, state.online) == (ALICE, False), state
    await bob.close()


async def test_login_ack_carries_the_previous_last_seen(node):
    """LOGIN is answered ``ACK {"last_seen": ms or nil}``: the user's
    previous last-seen time, nil the first time (docs/protocol.md; the
    server answered nil, found by review)."""
    account = await register(node, ALICE)
    client = await RawClient.connect(node)
    await client.hello()
    signature = account.key.sign(wire.login_challenge(client.nonce, ALICE, account.device))
    first = await client.answer(client.send(wire.Login(ALICE, account.device, signature, ref=1)))
    assert first == wire.Ack({"last_seen": None}, ref=1), first
    before = int(time.time() * 1000)
    await client.close()
    mail = node.system.env["mailbox"]
    seen = await wait_for(lambda: mail.get_last_seen(ALICE))   # written on disconnect
    assert seen >= before
    client = await RawClient.connect(node)
    await client.hello()
    signature = account.key.sign(wire.login_challenge(client.nonce, ALICE, account.device))
    again = await client.answer(client.send(wire.Login(ALICE, account.device, signature, ref=1)))
    assert again == wire.Ack({"last_seen": seen}, ref=1), again
    await client.close()


async def test_typing_is_routed_not_stored(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    assert isinstance(await alice.answer(alice.send(wire.Typing(BOB, True, ref=alice.ref()))), wire.Ack)
    event, _ = await bob.recv_until(lambda f: isinstance(f, wire.TypingEvent))
    assert (event.sender, event.typing) == (ALICE, True)
    # Bob reconnects: no typing event is replayed (nothing was stored).
    await bob.close()
    bob = await login(node, bob_acct)
    with pytest.raises(asyncio.TimeoutError):
        await bob.recv(timeout=0.3)
    await alice.close()
    await bob.close()


async def test_heartbeat_is_answered_with_server_time(node):
    alice = await login(node, await register(node, ALICE))
    reply = await alice.answer(alice.send(wire.Ping(ref=alice.ref())))
    assert isinstance(reply, wire.Ack) and isinstance(reply.value, int) and reply.value > 0
    await alice.close()


@pytest.mark.node_config(last_seen_flush=0.3)
async def test_heartbeat_refreshes_of_last_seen_are_stored_together(node):
    """A PING refreshes the user's stored last seen (the first one at once,
    then every LAST_SEEN_EVERY_MS), through the LastSeenWriter: held for
    ``last_seen_flush`` s, then stored for every user as one op."""
    mail = node.system.env["mailbox"]
    users = [f"+1555300{i:04d}" for i in range(5)]
    clients = [await login(node, await register(node, phone)) for phone in users]
    assert all(mail.get_last_seen(u) is None for u in users)
    before = int(time.time() * 1000)
    for client in clients:
        assert isinstance(await client.answer(client.send(wire.Ping(ref=client.ref()))), wire.Ack)
    writer = node.system.whereis("last_seen")._actor
    assert set(writer.held) == set(users)               # held, not yet stored
    assert all(mail.get_last_seen(u) is None for u in users)
    for _ in range(100):                                # then stored together
        if all(mail.get_last_seen(u) is not None for u in users):
            break
        await asyncio.sleep(0.02)
    assert all(mail.get_last_seen(u) >= before for u in users)
    assert writer.held == {}
    for client in clients:
        await client.close()
