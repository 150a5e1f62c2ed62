"""A group whose members are homed on three nodes: the group lives on its
creator's home node; members elsewhere have their commands run there
(``Federation.call``) and get the fan-out through the outbound queues."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.cluster_nodes import cluster
from tests.cluster.mesh_node import next_of
from tests.e2e.conftest import login, register
from transport import wire

pytestmark = pytest.mark.timeout(120)

HOMES = {"+15552000001": "A", "+15552000002": "B", "+15552000003": "C", "+15552000004": "A"}
USERS = list(HOMES)
GID = f"{USERS[0]}/crew"


async def test_a_group_with_members_on_three_nodes(tmp_path):
    with cluster(tmp_path, ("A", "B", "C")) as c:
        clients = [await login(c[HOMES[u]].node, await register(c[HOMES[u]].node, u))
                   for u in USERS]
        creator, bob = clients[0], clients[1]
        reply = await creator.answer(creator.send(
            wire.GroupCreate("crew", "Crew", tuple(USERS[1:]), ref=creator.ref())))
        assert reply.value == GID, reply
        # bob (on B) sees the group's state through GROUP_INFO, named or not
        for group in (GID, None):
            ref = bob.send(wire.GroupInfo(group, ref=bob.ref()))
            state, _ = await bob.recv_until(lambda f: isinstance(f, wire.GroupState), 5)
            assert state.group == GID and state.members == tuple(USERS), state
            assert (await bob.answer(ref)).value == 1
        # every member sends once; each gets the others' messages, each
        # sender a delivered receipt from every other member
        for i, client in enumerate(clients):     # (answers skipped below: no ERROR may come)
            client.send(wire.GroupSend(f"g{i}", GID, b"hi", ref=client.ref()))
        want = len(USERS) - 1
        got, by = [set() for _ in USERS], [set() for _ in USERS]

        async def read(j: int, client) -> None:
            while len(got[j]) < want or len(by[j]) < want:
                try:
                    frame = await next_of(client, (wire.Message, wire.Receipt, wire.Error), 10)
                except TimeoutError:
                    raise AssertionError(f"{USERS[j]}: got {got}, receipts {by}") from None
                assert not isinstance(frame, wire.Error), (USERS[j], frame)
                client.send(wire.Received((frame.seq,), ref=client.ref()))
                if isinstance(frame, wire.Message):
                    assert frame.group == GID
                    got[j].add(frame.id)
                else:
                    assert (frame.id, frame.kind) == (f"g{j}", wire.ReceiptKind.DELIVERED)
                    by[j].add(frame.by)
        await asyncio.gather(*(read(j, client) for j, client in enumerate(clients)))
        assert got == [{f"g{i}" for i in range(len(USERS)) if i != j} for j in range(len(USERS))]
        # bob (on B) reads the creator's message: the read receipt crosses to A
        reply = await bob.answer(bob.send(wire.Read(USERS[0], ("g0",), GID, ref=bob.ref())), 5)
        assert isinstance(reply, wire.Ack), reply
        read = await next_of(creator, wire.Receipt)
        assert (read.id, read.kind, read.by, read.group) == ("g0", wire.ReceiptKind.READ,
                                                             USERS[1], GID)
        # an admin change made from B is refused there: bob is no admin
        reply = await bob.answer(bob.send(wire.GroupRename(GID, "Mine", ref=bob.ref())), 5)
        assert reply.code == wire.ErrorCode.NOT_ADMIN, reply
        for client in clients:
            await client.close()
