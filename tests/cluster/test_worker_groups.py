"""A group whose members sit on two workers of one node (``run.py node
--workers 2``): each worker may run an actor for the group; the membership
checks in the storage transaction keep them consistent, and fan-out nudges
and per-member receipts cross between the workers through the mesh."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.mesh_node import mesh_node, next_of, spread
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(120)

USERS = [f"+1555100{i:04d}" for i in range(8)]
GID = f"{USERS[0]}/crew"


async def test_a_group_spread_over_two_workers(tmp_path):
    with mesh_node(tmp_path) as mesh:
        node = mesh.node
        # Step 1: 8 members log in, spread over both workers by the kernel.
        accounts = [await register(node, phone) for phone in USERS]
        clients = [await login(node, account) for account in accounts]
        await spread(mesh, clients, accounts)
        creator = clients[0]
        reply = await creator.answer(creator.send(
            wire.GroupCreate("crew", "Crew", tuple(USERS[1:]), ref=creator.ref())))
        assert reply.value == GID
        # Step 2: every member sends once, at the same time, from either worker.
        for i, client in enumerate(clients):
            client.send(wire.GroupSend(f"g{i}", GID, b"hi", ref=client.ref()))
        # Step 3: each member gets every other member's message (and its
        # CREATED event), wherever the sender's actor ran, and each sender a
        # delivered receipt from every other member.
        want = len(USERS) - 1
        got = [set() for _ in USERS]
        by = [set() for _ in USERS]

        async def read(j: int, client) -> None:     # each member reads on its own
            while len(got[j]) < want or len(by[j]) < want:
                frame = await next_of(client, (wire.Message, wire.GroupEvent, wire.Receipt), 10)
                client.send(wire.Received((frame.seq,), ref=client.ref()))
                if isinstance(frame, wire.Message):
                    assert frame.group == GID
                    got[j].add(frame.id)
                elif isinstance(frame, wire.Receipt):
                    assert (frame.id, frame.group, frame.kind) == (
                        f"g{j}", GID, wire.ReceiptKind.DELIVERED)
                    by[j].add(frame.by)
        await asyncio.gather(*(read(j, client) for j, client in enumerate(clients)))
        assert got == [{f"g{i}" for i in range(len(USERS)) if i != j} for j in range(len(USERS))]
        assert by == [set(USERS) - {u} for u in USERS]
        for client in clients:
            await client.close()
