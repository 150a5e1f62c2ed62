"""1:1 chat through a real node over TCP: ticks, dedup, order, offline."""

from __future__ import annotations

import asyncio

import pytest

from transport import wire
from tests.e2e.conftest import login, register

pytestmark = pytest.mark.timeout(30)

ALICE, BOB = "+15550000001", "+15550000002"


async def test_online_chat_with_three_ticks(node):
    # Step 1: both register and log in.
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    # Step 2: alice sends; the ACK (one tick) carries the commit time.
    ref = alice.send(wire.Send("m1", BOB, b"hello bob", ref=alice.ref()))
    ack = await alice.answer(ref)
    assert isinstance(ack, wire.Ack) and isinstance(ack.value, int)
    # Step 3: bob gets it as an inbox item and acks it (two ticks for alice).
    msg, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
    assert (msg.id, msg.sender, msg.body) == ("m1", ALICE, b"hello bob")
    assert isinstance(await bob.answer(bob.send(wire.Received((msg.seq,), ref=bob.ref()))), wire.Ack)
    delivered, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt))
    assert (delivered.kind, delivered.id, delivered.by) == (wire.ReceiptKind.DELIVERED, "m1", BOB)
    # Step 4: bob reads it: alice gets the read receipt.
    assert isinstance(await bob.answer(bob.send(wire.Read(ALICE, ("m1",), ref=bob.ref()))), wire.Ack)
    read, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt) and f.kind == wire.ReceiptKind.READ)
    assert (read.id, read.by) == ("m1", BOB)
    await alice.close()
    await bob.close()


async def test_offline_then_online_in_order(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice = await login(node, alice_acct)
    # Step 1: bob is offline; alice sends ten, each acked after commit.
    for i in range(10):
        assert isinstance(await alice.answer(alice.send(wire.Send(f"m{i}", BOB, b"%d" % i, ref=alice.ref()))), wire.Ack)
    # Step 2: bob logs in and gets all ten, in order.
    bob = await login(node, bob_acct)
    got = [await bob.recv() for _ in range(10)]
    assert [m.id for m in got] == [f"m{i}" for i in range(10)]
    assert [m.seq for m in got] == sorted(m.seq for m in got)
    await alice.close()
    await bob.close()


async def test_resend_is_stored_and_delivered_once(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    first = await alice.answer(alice.send(wire.Send("dup", BOB, b"once", ref=alice.ref())))
    again = await alice.answer(alice.send(wire.Send("dup", BOB, b"once", ref=alice.ref())))
    assert isinstance(again, wire.Ack) and again.value == first.value
    msg = await bob.recv()
    assert msg.id == "dup"
    with pytest.raises(asyncio.TimeoutError):
        await bob.recv(timeout=0.3)
    await alice.close()
    await bob.close()


async def test_received_and_read_then_bye_still_count(node):
    # Step 1: bob holds two messages and, in one write, acks them, reads
    # them and says BYE: the server closes at once.
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    for i in range(2):
        assert isinstance(await alice.answer(alice.send(wire.Send(f"b{i}", BOB, b"x", ref=alice.ref()))), wire.Ack)
    got = [(await bob.recv_until(lambda f: isinstance(f, wire.Message)))[0] for _ in range(2)]
    bob.send_raw(wire.encode(wire.Received(tuple(m.seq for m in got), ref=bob.ref()))
                 + wire.encode(wire.Read(ALICE, ("b0", "b1"), ref=bob.ref()))
                 + wire.encode(wire.Bye(ref=bob.ref())))
    assert await bob.closed()
    # Step 2: alice gets both ticks for both, and bob's next login re-pushes nothing.
    ticks = set()
    while len(ticks) < 4:
        receipt, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt))
        ticks.add((receipt.kind, receipt.id))
    assert {i for _, i in ticks} == {"b0", "b1"}
    bob = await login(node, bob_acct)
    with pytest.raises(asyncio.TimeoutError):
        frame = await bob.recv(timeout=0.5)
        pytest.fail(f"re-pushed after RECEIVED + BYE: {frame}")
    await alice.close()
    await bob.close()


async def test_a_message_whose_nudge_was_lost_arrives_on_the_next_heartbeat(node):
    """The inbox is the truth: a message committed with no nudge (as when a
    sender on another worker routed by a replica that had not yet heard of
    the login) is pushed when the recipient's next PING reads the inbox."""
    await register(node, ALICE)
    bob = await login(node, await register(node, BOB))
    mail = node.system.env["mailbox"]
    stored = await asyncio.wrap_future(mail.store_message(ALICE, "quiet", BOB, b"no nudge",
                                                          1, 10_000))
    with pytest.raises(asyncio.TimeoutError):       # nothing told bob's session
        await bob.recv_until(lambda f: isinstance(f, wire.Message), 0.3)
    assert isinstance(await bob.answer(bob.send(wire.Ping(ref=bob.ref()))), wire.Ack)
    msg, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
    assert (msg.id, msg.sender, msg.body, msg.seq) == ("quiet", ALICE, b"no nudge", stored.seq)
    await bob.close()
