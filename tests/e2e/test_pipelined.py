"""Pipelined traffic through a real node: a session turns one drain of its
mailbox into one storage op (group commit inside the session), and a
recipient pushes the items its nudges carry without reading them back.
Order, dedup, acks after commit and receipts stay exactly as one message at
a time would have them."""

from __future__ import annotations

import pytest

from actors.drain_batch import DrainBatch
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(30)

ALICE, BOB, CAROL = "+15550000021", "+15550000022", "+15550000023"


async def test_a_pipelined_burst_shares_storage_ops_and_keeps_order(node):
    # Step 1: alice and bob log in.
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    store = node.system.env["mailbox"].store
    ops_before = store.stats().ops
    # Step 2: alice writes 300 SENDs at once, one id twice (a resend in flight).
    n = 300
    refs = {}
    for i in range(n):
        refs[alice.send(wire.Send(f"m{i}", BOB, b"%d" % i, ref=alice.ref()))] = f"m{i}"
    dup_ref = alice.send(wire.Send("m5", BOB, b"5", ref=alice.ref()))
    # Step 3: every SEND is acked; the resend gets the first commit's time.
    acks = {}
    while len(acks) < n + 1:
        frame, _ = await alice.recv_until(lambda f: isinstance(f, (wire.Ack, wire.Error)))
        assert isinstance(frame, wire.Ack), frame
        acks[frame.ref] = frame.value
    first_m5 = next(r for r, m in refs.items() if m == "m5")
    assert acks[dup_ref] == acks[first_m5]
    # Fewer storage ops than messages: the session grouped them (at most BATCH_MAX each).
    ops = store.stats().ops - ops_before
    assert n // DrainBatch.BATCH_MAX <= ops < n, ops
    # Step 4: bob gets each message once, in send order, with increasing seqs.
    got = []
    while len(got) < n:
        frame, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
        got.append(frame)
    assert [m.id for m in got] == [f"m{i}" for i in range(n)]
    assert [m.seq for m in got] == list(range(got[0].seq, got[0].seq + n))
    # Step 5: bob acks them in one RECEIVED; alice gets n delivered receipts, in order.
    assert isinstance(await bob.answer(bob.send(wire.Received(tuple(m.seq for m in got),
                                                              ref=bob.ref()))), wire.Ack)
    receipts = []
    while len(receipts) < n:
        frame, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt))
        receipts.append(frame)
    assert [r.id for r in receipts] == [f"m{i}" for i in range(n)]
    assert node.system.env["mailbox"].inbox_count(BOB) == 0
    await alice.close()
    await bob.close()


async def test_two_senders_interleaved_reach_one_recipient_in_seq_order(node):
    accounts = [await register(node, who) for who in (ALICE, BOB, CAROL)]
    alice, bob, carol = [await login(node, acct) for acct in accounts]
    # Step 1: alice and bob pipeline to carol at the same time.
    for i in range(100):
        alice.send(wire.Send(f"a{i}", CAROL, b"", ref=alice.ref()))
        bob.send(wire.Send(f"b{i}", CAROL, b"", ref=bob.ref()))
    # Step 2: carol sees 200 messages, seqs 1..200 without gap or repeat, and
    # each sender's messages in the order they were sent.
    got = []
    while len(got) < 200:
        frame, _ = await carol.recv_until(lambda f: isinstance(f, wire.Message))
        got.append(frame)
    assert [m.seq for m in got] == list(range(1, 201))
    assert [m.id for m in got if m.sender == ALICE] == [f"a{i}" for i in range(100)]
    assert [m.id for m in got if m.sender == BOB] == [f"b{i}" for i in range(100)]
    for client in (alice, bob, carol):
        await client.close()
