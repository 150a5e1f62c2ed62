"""Blocking across two nodes (docs/cluster.md, "Known limits"): the
blocked sender is homed on A, the blocker on B. Its SEND is acked at A, its
item shipped to B and dropped there, at B's inbox append: never delivered,
no FAILED receipt; typing is dropped both ways; after an unblock new
messages flow."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.cluster_nodes import cluster
from tests.cluster.mesh_node import next_of
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(120)

ALICE, BOB = "+15550001071", "+15550002072"


async def nothing(client, kinds, seconds: float = 1.5) -> list:
    """Frames of ``kinds`` arriving within ``seconds``."""
    seen = []
    try:
        while True:
            frame = await client.recv(seconds)
            if isinstance(frame, kinds):
                seen.append(frame)
    except asyncio.TimeoutError:
        return seen


async def test_a_block_holds_across_nodes(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a, b = c["A"].node, c["B"].node
        alice, bob = await register(a, ALICE), await register(b, BOB)
        ca, cb = await login(a, alice), await login(b, bob)
        # Step 1: bob (on B) blocks alice (on A), who is homed elsewhere: accepted.
        assert isinstance(await cb.answer(cb.send(wire.Block(ALICE, ref=cb.ref()))), wire.Ack)
        # Step 2: alice's sends are acked at A; nothing reaches bob, no receipt reaches alice.
        for i in range(3):
            assert isinstance(await ca.answer(ca.send(wire.Send(f"s{i}", BOB, b"spam",
                                                                ref=ca.ref()))), wire.Ack)
        assert isinstance(await ca.answer(ca.send(wire.Typing(BOB, True, ref=ca.ref()))), wire.Ack)
        assert await nothing(cb, (wire.Message, wire.TypingEvent)) == []
        assert await nothing(ca, (wire.Receipt,)) == []
        refused = await cb.answer(cb.send(wire.Send("b1", ALICE, b"hi", ref=cb.ref())))
        assert refused.code == wire.ErrorCode.INVALID
        # Step 3: unblocked, a new message crosses and gets its ticks; the spam stays gone.
        assert isinstance(await cb.answer(cb.send(wire.Unblock(ALICE, ref=cb.ref()))), wire.Ack)
        assert isinstance(await ca.answer(ca.send(wire.Send("ok1", BOB, b"hello",
                                                            ref=ca.ref()))), wire.Ack)
        got = await next_of(cb, wire.Message)
        assert (got.id, got.sender) == ("ok1", ALICE)
        cb.send(wire.Received((got.seq,), ref=cb.ref()))
        tick = await next_of(ca, wire.Receipt)
        assert (tick.id, tick.kind) == ("ok1", wire.ReceiptKind.DELIVERED)
        assert await nothing(cb, (wire.Message,), 1.0) == []
        for client in (ca, cb):
            await client.close()
