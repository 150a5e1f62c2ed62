"""Blocking a contact over a real node (docs/protocol.md, "Blocking"): when
BOB blocks ALICE, her SENDs are acked and never delivered (not after a
reconnect, not after an unblock), with no receipts; his SENDs to her are
refused; presence and typing are hidden both ways; groups go on; the block
survives a restart of the node."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import login, register
from tests.nodes import running_node
from transport import wire

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, CAROL = "+15550000071", "+15550000072", "+15550000073"
E = wire.ErrorCode


async def ask(client, frame_type, *fields):
    """Send a frame with a fresh ref; its ACK or ERROR."""
    return await client.answer(client.send(frame_type(*fields, ref=client.ref())))


async def quiet(client, predicate, seconds: float = 0.6) -> list:
    """The frames arriving within ``seconds`` that match ``predicate``."""
    seen = []
    try:
        while True:
            frame = await client.recv(seconds)
            if predicate(frame):
                seen.append(frame)
    except asyncio.TimeoutError:
        return seen


def messages(frame) -> bool:
    return isinstance(frame, (wire.Message, wire.Receipt))


async def test_a_blocked_senders_messages_are_acked_and_never_delivered(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    # Step 1: bob blocks alice; his list says so.
    blocked = await ask(bob, wire.Block, ALICE)
    assert isinstance(blocked, wire.Ack) and blocked.value is None, blocked
    ref = bob.send(wire.Blocked(ref=bob.ref()))
    page, _ = await bob.recv_until(lambda f: isinstance(f, wire.BlockList))
    assert page.users == (ALICE,)
    assert await bob.answer(ref) == wire.Ack(1, ref=ref)
    # Step 2: alice's send is acked (one tick) like any other; a resend gets the same ACK.
    first = await ask(alice, wire.Send, "spam1", BOB, b"buy now")
    assert isinstance(first, wire.Ack) and isinstance(first.value, int), first
    again = await ask(alice, wire.Send, "spam1", BOB, b"buy now")
    assert again.value == first.value
    assert await quiet(bob, messages) == []
    # Step 3: bob reconnects: still nothing; alice gets no receipt.
    await bob.close()
    bob = await login(node, bob_acct)
    assert await quiet(bob, messages) == []
    assert node.system.env["mailbox"].inbox_after(BOB) == []
    # Step 4: bob's send to alice is refused, nothing stored.
    refused = await ask(bob, wire.Send, "b1", ALICE, b"hey")
    assert (refused.code, refused.message) == (E.INVALID, "you blocked this user: unblock them first")
    assert node.system.env["mailbox"].inbox_after(ALICE) == []
    # Step 5: bob unblocks: the spam stays undelivered, a resend of it too; new messages flow.
    assert isinstance(await ask(bob, wire.Unblock, ALICE), wire.Ack)
    assert (await ask(alice, wire.Send, "spam1", BOB, b"buy now")).value == first.value
    assert isinstance(await ask(alice, wire.Send, "hello2", BOB, b"sorry"), wire.Ack)
    got, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
    assert (got.id, got.sender) == ("hello2", ALICE)
    assert await quiet(bob, lambda f: isinstance(f, wire.Message)) == []
    assert isinstance(await ask(bob, wire.Received, (got.seq,)), wire.Ack)
    tick, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt))
    assert (tick.id, tick.kind) == ("hello2", wire.ReceiptKind.DELIVERED)
    assert isinstance(await ask(bob, wire.Send, "b2", ALICE, b"ok"), wire.Ack)
    ref = bob.send(wire.Blocked(ref=bob.ref()))
    assert await bob.answer(ref) == wire.Ack(0, ref=ref)
    for c in (alice, bob):
        await c.close()


async def test_no_receipts_while_blocked(node):
    """Messages bob got before blocking: his RECEIVED and READ of them send
    alice no tick while the block holds."""
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    for i in (1, 2):
        assert isinstance(await ask(alice, wire.Send, f"m{i}", BOB, b"x"), wire.Ack)
    one, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message) and f.id == "m1")
    two, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message) and f.id == "m2")
    assert isinstance(await ask(bob, wire.Received, (one.seq,)), wire.Ack)
    tick, _ = await alice.recv_until(lambda f: isinstance(f, wire.Receipt))
    assert tick.id == "m1"                                  # before the block: ticks as usual
    assert isinstance(await ask(bob, wire.Block, ALICE), wire.Ack)
    assert isinstance(await ask(bob, wire.Received, (two.seq,)), wire.Ack)
    assert isinstance(await ask(bob, wire.Read, ALICE, ("m1", "m2")), wire.Ack)
    assert await quiet(alice, lambda f: isinstance(f, wire.Receipt)) == []
    assert node.system.env["mailbox"].inbox_after(ALICE, tick.seq) == []
    for c in (alice, bob):
        await c.close()


async def test_presence_and_typing_are_hidden_both_ways(node):
    alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
    alice, bob = await login(node, alice_acct), await login(node, bob_acct)
    # Step 1: both watch each other and see each other online.
    for me, other in ((alice, BOB), (bob, ALICE)):
        assert isinstance(await ask(me, wire.Subscribe, (other,)), wire.Ack)
        state, _ = await me.recv_until(lambda f: isinstance(f, wire.Presence))
        assert (state.user, state.online) == (other, True)
    # Step 2: bob blocks alice: a new SUBSCRIBE shows each offline, no last seen.
    assert isinstance(await ask(bob, wire.Block, ALICE), wire.Ack)
    for me, other in ((alice, BOB), (bob, ALICE)):
        assert isinstance(await ask(me, wire.Subscribe, (other,)), wire.Ack)
        state, _ = await me.recv_until(lambda f: isinstance(f, wire.Presence))
        assert (state.user, state.online, state.last_seen) == (other, False, None)
    # Step 3: typing either way is acked and not routed.
    assert isinstance(await ask(alice, wire.Typing, BOB, True), wire.Ack)
    assert isinstance(await ask(bob, wire.Typing, ALICE, True), wire.Ack)
    for me in (alice, bob):
        assert await quiet(me, lambda f: isinstance(f, wire.TypingEvent)) == []
    # Step 4: bob goes and comes back: alice is not told; nor is bob of alice's changes.
    await bob.close()
    bob = await login(node, bob_acct)
    assert await quiet(alice, lambda f: isinstance(f, wire.Presence)) == []
    assert isinstance(await ask(bob, wire.Subscribe, (ALICE,)), wire.Ack)
    state, _ = await bob.recv_until(lambda f: isinstance(f, wire.Presence))
    assert (state.online, state.last_seen) == (False, None)
    await alice.close()
    alice = await login(node, alice_acct)
    assert await quiet(bob, lambda f: isinstance(f, wire.Presence)) == []
    # Step 5: unblocked, both see and type again.
    assert isinstance(await ask(bob, wire.Unblock, ALICE), wire.Ack)
    assert isinstance(await ask(alice, wire.Subscribe, (BOB,)), wire.Ack)
    state, _ = await alice.recv_until(lambda f: isinstance(f, wire.Presence))
    assert (state.user, state.online) == (BOB, True)
    assert isinstance(await ask(alice, wire.Typing, BOB, True), wire.Ack)
    typing, _ = await bob.recv_until(lambda f: isinstance(f, wire.TypingEvent))
    assert typing.sender == ALICE
    for c in (alice, bob):
        await c.close()


async def test_group_messages_are_not_affected(node):
    accounts = [await register(node, p) for p in (ALICE, BOB, CAROL)]
    alice, bob, carol = [await login(node, a) for a in accounts]
    assert isinstance(await ask(bob, wire.Block, ALICE), wire.Ack)
    created = await ask(alice, wire.GroupCreate, "g", "Group", (BOB, CAROL))
    assert isinstance(created, wire.Ack), created
    assert isinstance(await ask(alice, wire.GroupSend, "gm1", created.value, b"all"), wire.Ack)
    got, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
    assert (got.id, got.group, got.sender) == ("gm1", created.value, ALICE)
    for c in (alice, bob, carol):
        await c.close()


@pytest.mark.node_config(max_blocked=2)
async def test_bad_input_and_the_limit(node):
    accounts = [await register(node, p) for p in (ALICE, BOB, CAROL, "+15550000074")]
    bob = await login(node, accounts[1])
    assert (await ask(bob, wire.Block, BOB)).code == E.INVALID                 # oneself
    assert (await ask(bob, wire.Block, "+15550000099")).code == E.UNKNOWN_USER  # no account
    for user in (ALICE, CAROL):
        assert isinstance(await ask(bob, wire.Block, user), wire.Ack)
    assert isinstance(await ask(bob, wire.Block, ALICE), wire.Ack)              # again: no-op
    full = await ask(bob, wire.Block, "+15550000074")
    assert full.code == E.INVALID and "blocked 2 users" in full.message, full
    assert isinstance(await ask(bob, wire.Unblock, "+15550000099"), wire.Ack)   # never blocked
    ref = bob.send(wire.Blocked(ref=bob.ref()))
    page, _ = await bob.recv_until(lambda f: isinstance(f, wire.BlockList))
    assert page.users == tuple(sorted((ALICE, CAROL)))
    assert await bob.answer(ref) == wire.Ack(2, ref=ref)
    # a refused block leaves messages from that user flowing
    other = await login(node, accounts[3])
    assert isinstance(await ask(other, wire.Send, "o1", BOB, b"hi"), wire.Ack)
    got, _ = await bob.recv_until(lambda f: isinstance(f, wire.Message))
    assert got.sender == "+15550000074"
    await other.close()
    await bob.close()


async def test_block_before_login_is_out_of_order(node):
    from tests.e2e.conftest import RawClient
    client = await RawClient.connect(node)
    await client.hello()
    reply = await ask(client, wire.Block, ALICE)
    assert reply.code == E.OUT_OF_ORDER
    assert await client.closed()


async def test_a_block_survives_a_restart_of_the_node(tmp_path):
    async with running_node(tmp_path) as node:
        alice_acct, bob_acct = await register(node, ALICE), await register(node, BOB)
        bob = await login(node, bob_acct)
        assert isinstance(await ask(bob, wire.Block, ALICE), wire.Ack)
        await bob.close()
    async with running_node(tmp_path) as node:
        alice, bob = await login(node, alice_acct), await login(node, bob_acct)
        assert isinstance(await ask(alice, wire.Send, "after", BOB, b"x"), wire.Ack)
        assert (await ask(bob, wire.Send, "b1", ALICE, b"x")).code == E.INVALID
        assert await quiet(bob, messages) == []
        bob.send(wire.Blocked(ref=bob.ref()))
        page, _ = await bob.recv_until(lambda f: isinstance(f, wire.BlockList))
        assert page.users == (ALICE,)
        for c in (alice, bob):
            await c.close()
